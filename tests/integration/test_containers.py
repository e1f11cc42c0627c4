"""Containers on a real migrd host: run, list, logs, stop, rm, and adoption after a migrd
restart. Real namespaces, real cgroups, real processes."""

import os
import time

import pytest


@pytest.fixture
def host(make_cluster):
    return make_cluster(1)["h1"]


def entry(h, name):
    return next((w for w in h.migctl("list")["workloads"] if w["name"] == name), None)


def nspid(pid):
    """The pid a process has in each PID namespace, outermost first."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("NSpid:"):
            return [int(x) for x in line.split()[1:]]
    return []


def test_run_list_logs_stop_rm(host):
    r = host.migctl("run", "web1", "--memory", "64M", "--env", "GREETING=hello", "--",
                    "sh", "-c", 'echo "$GREETING from $(hostname) as pid $$"; '
                    'echo oops >&2; exec sleep 1000')
    pid = r["pid"]
    # CMD is PID 1 of its own PID namespace, and in its own UTS namespace.
    assert nspid(pid)[-1] == 1
    for ns in ("pid", "uts", "ipc", "mnt"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
    w = entry(host, "web1")
    assert w["kind"] == "container" and w["state"] == "running" and w["host"] == "h1"
    assert w["pid"] == pid
    cg = open(f"/proc/{pid}/cgroup").read()
    assert "h1.web1" in cg, cg
    host.wait_for(lambda: "hello from web1 as pid 1" in host.migctl("logs", "web1", json=False),
                  5, "the container's output in its log")
    assert "oops" in host.migctl("logs", "web1", json=False)
    table = host.migctl("list", json=False)
    assert "web1" in table and "running" in table

    # sleep is PID 1 of its namespace, which the kernel shields from SIGTERM without a
    # handler: the stop timeout has to kill it.
    t0 = time.monotonic()
    r = host.migctl("stop", "web1", "--timeout", "2")
    assert r["state"] == "stopped"
    assert 2 <= time.monotonic() - t0 < 8
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert entry(host, "web1")["state"] == "stopped"
    assert "hello" in host.migctl("logs", "web1", json=False)   # the log outlives it
    host.migctl("rm", "web1")
    assert entry(host, "web1") is None


def test_stop_graceful_then_forced(host):
    # A PID 1 that handles SIGTERM ends at once ...
    host.migctl("run", "polite", "--", "sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done")
    time.sleep(0.5)
    t0 = time.monotonic()
    assert host.migctl("stop", "polite", "--timeout", "10")["state"] == "stopped"
    assert time.monotonic() - t0 < 5
    # ... one that ignores it is killed with its whole cgroup after the timeout.
    host.migctl("run", "stubborn", "--", "sh", "-c", "trap '' TERM; while :; do sleep 1; done")
    t0 = time.monotonic()
    r = host.migctl("stop", "stubborn", "--timeout", "1")
    assert r["state"] == "stopped" and 1 <= time.monotonic() - t0 < 8


def test_exit_is_recorded(host):
    host.migctl("run", "short", "--", "sh", "-c", "exit 3")
    host.wait_for(lambda: entry(host, "short")["state"] == "exited", 5, "the container to end")


def test_containers_survive_migrd_restart(host):
    pid = host.migctl("run", "keeper", "--", "sleep", "1000")["pid"]
    assert host.stop_migrd() == 0
    assert os.path.exists(f"/proc/{pid}")      # migrd gone, the container runs on
    host.start_migrd()
    w = entry(host, "keeper")
    assert w["state"] == "running" and w["pid"] == pid
    assert "adopted" in open(host.path("migrd.log")).read()
    assert host.migctl("stop", "keeper")["state"] == "stopped"


def test_run_refuses_a_cgroup_with_strangers(host):
    """A container whose cgroup already holds processes (left by a migrd that lost its state)
    is refused, not mixed with them; its log is not cut."""
    pid = host.migctl("run", "probe", "--", "sleep", "1000")["pid"]
    mnt = next(l.split()[1] for l in open("/proc/self/mounts") if l.split()[2] == "cgroup2")
    rel = next(l.split("::", 1)[1].strip() for l in open(f"/proc/{pid}/cgroup")
               if l.startswith("0::"))
    host.migctl("rm", "probe", "--force")
    stale = os.path.join(mnt + os.path.dirname(rel), "h1.stale")
    os.makedirs(stale, exist_ok=True)
    sleeper = host.spawn("stranger", ["sleep", "1000"])
    try:
        with open(os.path.join(stale, "cgroup.procs"), "w") as f:
            f.write(str(sleeper.pid))
        cp = host.migctl_raw("run", "stale", "--", "sleep", "1")
        assert cp.returncode == 1, cp
        assert (f"The cgroup of stale already holds 1 process (pid {sleeper.pid} first), "
                "which this migrd does not know" in cp.stderr), cp.stderr
        assert entry(host, "stale") is None
        assert open(os.path.join(stale, "cgroup.procs")).read().split() == [str(sleeper.pid)]
    finally:
        sleeper.kill()
        sleeper.wait()
    # Once they are gone, the name runs.
    host.wait_for(lambda: open(os.path.join(stale, "cgroup.procs")).read() == "", 5,
                  "the stranger to leave the cgroup")
    assert host.migctl("run", "stale", "--", "sleep", "1000")["pid"] > 0
    host.migctl("rm", "stale", "--force")


def test_bad_requests(host):
    cp = host.migctl_raw("run", "../evil", "--", "true")
    assert cp.returncode == 1 and "invalid-params" in cp.stderr
    cp = host.migctl_raw("run", "x1", "--", "/no/such/program")
    assert cp.returncode == 1 and "No such file or directory" in cp.stderr, cp.stderr
    assert entry(host, "x1") is None
    host.migctl("run", "dup", "--", "sleep", "1000")
    cp = host.migctl_raw("run", "dup", "--", "sleep", "1")
    assert cp.returncode == 1 and "exists" in cp.stderr
    cp = host.migctl_raw("rm", "dup")
    assert cp.returncode == 1 and "stop it first" in cp.stderr
    host.migctl("rm", "dup", "--force")
    cp = host.migctl_raw("stop", "nosuch")
    assert cp.returncode == 1 and "not-found" in cp.stderr
    assert host.status()["quorate"]


def test_list_shows_every_hosts_containers(make_cluster):
    c = make_cluster(2)
    h1, h2 = c["h1"], c["h2"]
    h2.migctl("run", "elsewhere", "--", "sleep", "1000")
    h1.wait_for(lambda: (entry(h1, "elsewhere") or {}).get("host") == "h2", 5,
                "h1 to list h2's container")
    w = entry(h1, "elsewhere")
    assert w["kind"] == "container" and w["state"] == "running"
    assert "elsewhere" in h1.migctl("list", json=False)
    # Once h2 is gone, so is what it said it runs.
    h2.kill()
    h1.wait_for(lambda: entry(h1, "elsewhere") is None, 10, "h2's container to leave h1's list")
