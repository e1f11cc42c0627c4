"""Checkpoint and restore of containers on a real migrd host: the self-checking fixtures of
tests/fixtures/ct and unmodified programs, killed and restored or left running, with their
pids checked after every restore; refusals and damaged images. Real processes, real kernel."""

import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from migrd_host import default_build_dir

FIXTURES = os.path.join(default_build_dir(), "tests", "fixtures", "ct")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures", "ct"))
import echo_client  # noqa: E402


@pytest.fixture
def host(make_cluster):
    return make_cluster(1)["h1"]


def fixture(name):
    return os.path.join(FIXTURES, name)


def image(name):
    """The image directory as migrd sees it (inside the host)."""
    return f"/var/lib/migrd/images/{name}"


def image_outside(h, name):
    return h.path("lib", "migrd", "images", name)


def entry(h, name):
    return next((w for w in h.migctl("list")["workloads"] if w["name"] == name), None)


def logs(h, name):
    return h.migctl("logs", name, json=False)


def ready_ids(h, name, timeout=60):
    """The pids and tids the fixture reported at start."""
    h.wait_for(lambda: "READY" in logs(h, name), timeout, f"{name} to report READY")
    line = next(l for l in logs(h, name).splitlines() if l.startswith("READY"))
    ids = set()
    for key in ("pids", "tids"):
        m = re.search(rf"\b{key}=([0-9,]+)", line)
        if m:
            ids |= {int(x) for x in m.group(1).split(",")}
    return ids


def last_ok(h, name):
    oks = [l for l in logs(h, name).splitlines() if l.startswith("OK ")]
    return int(oks[-1].split()[1]) if oks else 0


def assert_healthy(h, name, after, more=5, timeout=30):
    """The fixture goes on past OK number `after` and has not failed."""
    def progressed():
        text = logs(h, name)
        assert "FAIL" not in text, text[-2000:]
        return last_ok(h, name) >= after + more
    h.wait_for(progressed, timeout, f"{name} to keep reporting OK")


def container_ids(pid):
    """Every live task of the container whose PID 1 is pid (host view), by its pid inside
    (exited children waiting to be reaped are not tasks of the image)."""
    ids = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        ids.add(ns_pid(int(task)))
    children = [pid]
    while children:
        p = children.pop()
        if open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
            continue
        ids.add(ns_pid(p))
        for t in os.listdir(f"/proc/{p}/task"):
            ids.add(ns_pid(int(t)))
            with open(f"/proc/{p}/task/{t}/children") as f:
                children += [int(c) for c in f.read().split()]
    return ids


def signal_actions(pid):
    """Which signals each live process of the container (by its pid inside) handles and
    ignores."""
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        with open(f"/proc/{p}/status") as f:
            st = dict(l.split(":", 1) for l in f.read().splitlines() if ":" in l)
        if st["State"].split()[0] != "Z":
            out[int(st["NSpid"].split()[-1])] = (st["SigCgt"].strip(), st["SigIgn"].strip())
        for t in os.listdir(f"/proc/{p}/task"):
            with open(f"/proc/{p}/task/{t}/children") as f:
                todo += [int(c) for c in f.read().split()]
    return out


def ns_pid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    raise AssertionError(f"no NSpid for {pid}")


def checkpoint(h, name, *extra):
    return h.migctl("checkpoint", name, "--dir", image(name), *extra, timeout=120)


def restore(h, name, src=None):
    return h.migctl("restore", name, "--from", image(src or name), timeout=120)


def image_ids(h, name):
    """Every pid and tid recorded in the image."""
    shown = h.migctl("image", "show", image(name))
    return {t["tid"] for p in shown["processes"] for t in p["threads"]}


def kill_and_restore(h, name, ids=None):
    """Checkpoint (kill), restore, and check that every task has its pid back: those the
    image recorded, and (for the fixtures, whose tree does not change) those it reported."""
    pid0 = entry(h, name)["pid"]
    actions = signal_actions(pid0)
    r = checkpoint(h, name)
    assert r["left_running"] is False and r["processes"] >= 1
    # The pages files were allocated before the freeze; none is left under its temporary name
    # (a restore refuses a file longer than its contents, so each one was cut to size).
    assert r["reserve_ms"] > 0, r
    assert [f for f in os.listdir(image_outside(h, name)) if f.startswith(".")] == []
    h.wait_for(lambda: entry(h, name)["state"] == "checkpointed", 10, "the checkpoint's kill")
    assert not os.path.exists(f"/proc/{pid0}") or open(f"/proc/{pid0}/stat").read().split()[2] == "Z"
    recorded = image_ids(h, name)
    if ids is not None:
        assert recorded == ids, "the image has other pids than the fixture reported"
    r = restore(h, name)
    assert entry(h, name)["state"] == "running"
    assert container_ids(r["pid"]) == recorded, (
        "the restored tasks have other pids\n" + h.migctl("image", "show", image(name), json=False))
    # Nothing of migrd's own signal handling (the restore's first process is a fork of it).
    assert signal_actions(r["pid"]) == actions
    return r


@pytest.mark.parametrize("name,argv", [
    ("counter", ["fixture-ct-counter", "256"]),
    ("pipes", ["fixture-ct-pipes"]),
    ("signals", ["fixture-ct-signals"]),
    ("shm", ["fixture-ct-shm"]),
    ("fds", ["fixture-ct-fds"]),
    # 200 pipe fds and 400 of unix socketpairs at gapped numbers, and an epoll watching 200
    # of them: handed to the restored task in messages of up to 253; the epoll's 200 calls,
    # each with its event in the batch's data, in four batches (a call whose data came in
    # one batch and that ran in the next lost it to the third).
    ("manyfds", ["fixture-ct-counter", "16", "256", "0", "200", "0", "400"]),
    # 300 fds of its executable, each its own description at an offset of its own, at every
    # other number from 3 up: opened by path in batches of 64, moved into place.
    ("manyfiles", ["fixture-ct-counter", "16", "256", "0", "0", "300"]),
])
def test_fixture_kill_and_restore(host, name, argv):
    host.migctl("run", name, "--", fixture(argv[0]), *argv[1:])
    ids = ready_ids(host, name)
    assert_healthy(host, name, 0, more=3)
    kill_and_restore(host, name, ids)
    assert_healthy(host, name, last_ok(host, name))
    # And once more from the restored copy.
    host.run(["rm", "-rf", image(name)])
    kill_and_restore(host, name, ids)
    assert_healthy(host, name, last_ok(host, name))
    host.migctl("stop", name, "--timeout", "2")


@pytest.mark.parametrize("name,argv,min_pages", [
    # One heap page in 7 is zero, so nearly every window stores fewer pages than it read, and
    # the window read beside it, placed after all of its room, is moved down when recorded.
    # (Zero pages may have become the kernel's zero page; then no window reads them.)
    ("placed", ["fixture-ct-counter", "64", "256", "7"], 64 * 256 * 6 // 7),
    # Several processes (each its own pages file) and shared memory (written, not placed).
    ("placedshm", ["fixture-ct-shm"], 1),
    ("placedpipes", ["fixture-ct-pipes"], 1),
])
def test_tmpfs_image_pages_read_straight_in(host, name, argv, min_pages):
    """On tmpfs the pages are read straight into the image's reserved files: the restored
    fixture must still check out, twice over."""
    d = f"/dev/shm/{name}-img"
    host.migctl("run", name, "--", fixture(argv[0]), *argv[1:])
    ids = ready_ids(host, name)
    assert_healthy(host, name, 0, more=3)
    for i in range(2):
        r = host.migctl("checkpoint", name, "--dir", d, timeout=120)
        assert r["reserve_ms"] > 0 and r["direct_pages"] >= min_pages, r
        assert [f for f in host.run(["ls", "-A", d]).stdout.split() if f.startswith(".")] == []
        host.wait_for(lambda: entry(host, name)["state"] == "checkpointed", 10,
                      "the checkpoint's kill")
        # The restore copies the pages straight from the files it verified, under a read
        # lease; the second time the files are open for writing here, so cannot be leased,
        # and are read and checked again instead.
        writer = None
        if i == 1:
            files = [f"{d}/{f}" for f in host.run(["ls", d]).stdout.split()
                     if f.startswith("pages-")]
            writer = host.spawn("writer", [
                "python3", "-c", "import sys, time\n"
                "fs = [open(f, 'r+b') for f in sys.argv[1:]]\n"
                "print('holding', len(fs), flush=True)\ntime.sleep(300)", *files])
            host.wait_for(lambda: f"holding {len(files)}" in open(host.path("writer.log")).read(),
                          10, "the files held open for writing")
        try:
            r = host.migctl("restore", name, "--from", d, timeout=120)
        finally:
            if writer:
                writer.kill()
                writer.wait()
        assert r["mapped_pages"] == (r["pages"] if i == 0 else 0), r
        assert r["pages"] >= min_pages, r
        assert container_ids(r["pid"]) == ids
        assert_healthy(host, name, last_ok(host, name))
        host.run(["rm", "-rf", d])
    host.migctl("stop", name, "--timeout", "2")


def run_and_checkpoint_running(h, name, *argv):
    """Runs a fixture, checkpoints it with --leave-running, and checks that it went on
    unharmed; returns the ids it reported."""
    h.migctl("run", name, "--", *argv)
    ids = ready_ids(h, name)
    assert_healthy(h, name, 0, more=3)
    checkpoint(h, name, "--leave-running")
    assert_healthy(h, name, last_ok(h, name), more=12)
    return ids


def test_vma_advice_kept(host):
    """madvise, mlock and mseal state, MAP_NORESERVE, MAP_GROWSDOWN, MAP_DROPPABLE and guard
    pages come back with the memory: the fixture checks its own smaps, locked size, resident
    pages, seal and guard pages, and forks on demand to check DONTFORK and WIPEONFORK."""
    name = "vmflags"
    ids = run_and_checkpoint_running(host, name, fixture("fixture-ct-vmflags"))
    host.run(["rm", "-rf", image(name)])
    kill_and_restore(host, name, ids)

    vmas = [v for p in host.migctl("image", "show", image(name))["processes"]
            for v in p["mm"]["vmas"]]
    advice = {v["advice"] for v in vmas}
    for want in ("dontfork", "wipeonfork", "dontdump", "hugepage", "nohugepage", "mergeable",
                 "locked", "locked,lockonfault", "sealed", "droppable"):
        assert want in advice, (want, advice)
    flags = [int(v["flags"], 16) for v in vmas]
    assert any(f & 0x4000 for f in flags), "no MAP_NORESERVE mapping in the image"
    assert sum(1 for f in flags if f & 0x100) >= 2, "no MAP_GROWSDOWN mapping beside the stack"
    guards = [g for p in host.migctl("image", "show", image(name))["processes"]
              for g in p["mm"]["guards"]]
    assert [(int(e, 16) - int(s, 16)) // 4096 for s, e in guards] == [2, 1], guards

    # The fixture's full check runs every second: two of them after the restore.
    assert_healthy(host, name, last_ok(host, name), more=21)
    os.kill(entry(host, name)["pid"], signal.SIGUSR1)
    host.wait_for(lambda: re.search(r"forks=1$", logs(host, name), re.M), 10,
                  "the fork check after the restore")
    assert_healthy(host, name, last_ok(host, name), more=12)
    host.migctl("stop", name, "--timeout", "2")


def thread_creds(pid):
    """Per task of process pid (host view): (Uid, Gid, CapEff, NoNewPrivs, Seccomp) lines."""
    out = {}
    for tid in sorted(os.listdir(f"/proc/{pid}/task")):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            fields = dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)
        out[ns_pid(int(tid))] = tuple(fields.get(k) for k in
                                      ("Uid", "Gid", "Groups", "CapEff", "CapBnd",
                                       "NoNewPrivs", "Seccomp", "Seccomp_filters"))
    return out


CREDS_PROGRAM = r"""
import os, socket, threading, time
listener = socket.create_server(("127.0.0.1", 7123))
os.setgroups([4, 24])
os.setresgid(1001, 1002, 1003)
os.setresuid(1004, 1005, 1006)
threading.Thread(target=lambda: time.sleep(100000), daemon=True).start()
threading.Thread(target=lambda: time.sleep(100000), daemon=True).start()
print("READY", flush=True)
time.sleep(100000)
"""


def test_every_thread_gets_its_credentials_back(host):
    """Credentials belong to each thread: a restore that set them on the main thread only
    would leave the others with the restorer's root and full capabilities."""
    name = "creds"
    host.migctl("run", name, "--", "python3", "-c", CREDS_PROGRAM)
    host.wait_for(lambda: "READY" in logs(host, name), 30, "the program to start")
    before = thread_creds(entry(host, name)["pid"])
    assert len(before) == 3 and len(set(before.values())) == 1, before
    assert next(iter(before.values()))[0] == "1004\t1005\t1006\t1005", before

    # A restore that fails once the tasks exist (its listener's port is taken by the
    # original) must clean up and answer, with PID 1 multi-threaded: its last thread waits in
    # the kernel for the others to be reaped.
    checkpoint(host, name, "--leave-running")
    cp = host.migctl_raw("restore", "creds2", "--from", image(name), timeout=60)
    assert cp.returncode != 0 and "Address already in use" in cp.stderr, cp.stderr
    assert entry(host, "creds2") is None and entry(host, name)["state"] == "running"
    host.run(["rm", "-rf", image(name)])

    kill_and_restore(host, name)
    after = thread_creds(entry(host, name)["pid"])
    assert after == before
    host.migctl("rm", name, "--force")


ATTRS_PROGRAM = r"""
import ctypes, os, signal, threading, time
libc = ctypes.CDLL(None, use_errno=True)
last_cpu = max(os.sched_getaffinity(0))

def prctl_int(op):
    v = ctypes.c_int(-1)
    assert libc.prctl(op, ctypes.byref(v), 0, 0, 0) == 0
    return v.value

def setup(nice, policy, cpu, pdeathsig, slack, ioprio):
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    os.sched_setscheduler(0, policy, os.sched_param(0))
    os.sched_setaffinity(0, {cpu})
    assert libc.prctl(1, pdeathsig, 0, 0, 0) == 0      # PR_SET_PDEATHSIG
    assert libc.prctl(29, slack, 0, 0, 0) == 0         # PR_SET_TIMERSLACK
    assert libc.syscall(251, 1, 0, ioprio) == 0        # ioprio_set(IOPRIO_WHO_PROCESS, self)

def state():
    return (f"nice={os.getpriority(os.PRIO_PROCESS, 0)} policy={os.sched_getscheduler(0)} "
            f"cpus={sorted(os.sched_getaffinity(0))} pdeathsig={prctl_int(2)} "
            f"slack={libc.prctl(30, 0, 0, 0, 0)} ioprio={libc.syscall(252, 1, 0)}")

states = {}
def second():
    setup(3, os.SCHED_IDLE, last_cpu, signal.SIGURG, 654321, (2 << 13) | 3)
    while True:
        states["second"] = state()
        time.sleep(0.1)

setup(7, os.SCHED_BATCH, 0, signal.SIGWINCH, 123456, (2 << 13) | 5)
assert libc.prctl(4, 0, 0, 0, 0) == 0                  # PR_SET_DUMPABLE 0
assert libc.prctl(36, 1, 0, 0, 0) == 0                 # PR_SET_CHILD_SUBREAPER
assert libc.prctl(41, 1, 0, 0, 0) == 0                 # PR_SET_THP_DISABLE
assert libc.prctl(65, 1, 0, 0, 0) == 0                 # PR_SET_MDWE, refuse exec gain
with open("/proc/self/oom_score_adj", "w") as f:
    f.write("345")
threading.Thread(target=second, daemon=True).start()
while True:
    time.sleep(0.1)
    if "second" in states:
        print(f"STATE main: {state()} dumpable={libc.prctl(3, 0, 0, 0, 0)} "
              f"subreaper={prctl_int(37)} thp={libc.prctl(42, 0, 0, 0, 0)} "
              f"mdwe={libc.prctl(66, 0, 0, 0, 0)} "
              f"oom={open('/proc/self/oom_score_adj').read().strip()}"
              f" | second: {states['second']}", flush=True)
"""


def last_state(h, name):
    lines = [l for l in logs(h, name).splitlines() if l.startswith("STATE ")]
    return lines[-1] if lines else None


def test_scheduling_and_process_attributes_kept(host):
    """Per thread: nice, policy, CPU affinity, I/O priority, timer slack, parent death
    signal; per process: dumpable, child subreaper, THP disabled, memory-deny-write-execute,
    oom_score_adj. The program reports them
    itself, before the checkpoint and after the restore."""
    name = "attrs"
    host.migctl("run", name, "--", "python3", "-c", ATTRS_PROGRAM)
    host.wait_for(lambda: last_state(host, name), 30, "the program to report")
    before = last_state(host, name)
    assert "nice=7 policy=3 cpus=[0] pdeathsig=28 slack=123456 ioprio=16389 dumpable=0 " \
        "subreaper=1 thp=1 mdwe=1 oom=345 | second: nice=3 policy=5" in before, before
    kill_and_restore(host, name)
    shown = host.migctl("image", "show", image(name))["processes"][0]
    assert (shown["oom_score_adj"], shown["dumpable"], shown["child_subreaper"],
            shown["thp_disable"], shown["mdwe"]) == (345, 0, True, 1, 1), shown
    assert [t["sched"]["nice"] for t in shown["threads"]] == [7, 3], shown["threads"]
    n = len(logs(host, name).splitlines())
    host.wait_for(lambda: len(logs(host, name).splitlines()) > n + 2, 30, "reports after it")
    text = logs(host, name)
    assert "Traceback" not in text, text[-2000:]
    assert last_state(host, name) == before
    host.migctl("rm", name, "--force")


def test_seccomp_and_no_new_privs_kept(host):
    """A sandboxed process keeps its sandbox: no_new_privs and its seccomp filters, shared by
    its threads (a TSYNC filter added after the restore must reach both). One filter refuses
    executable mappings, so the checkpoint cannot place its batch loop in the process and
    injects its calls one by one: that way must work as well."""
    name = "seccomp"
    ids = run_and_checkpoint_running(host, name, fixture("fixture-ct-seccomp"))
    shown = host.migctl("image", "show", image(name))["processes"][0]
    assert shown["no_new_privs"] is True
    assert shown["seccomp"] == {"mode": "filter", "filters": [
        {"instructions": 4, "log": True}, {"instructions": 4, "log": False},
        {"instructions": 6, "log": False}]}, shown["seccomp"]
    log = open(host.path("migrd.log")).read()
    assert re.search(rf"pid {entry(host, name)['pid']}: no batches of calls: "
                     r"Operation not permitted", log), "the batch loop was placed after all"
    host.run(["rm", "-rf", image(name)])

    kill_and_restore(host, name, ids)
    pid = entry(host, name)["pid"]
    for task in os.listdir(f"/proc/{pid}/task"):
        status = open(f"/proc/{pid}/task/{task}/status").read()
        assert "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status, status
    assert_healthy(host, name, last_ok(host, name), more=12)
    os.kill(pid, signal.SIGUSR1)
    host.wait_for(lambda: re.search(r"tsync=1$", logs(host, name), re.M), 10,
                  "a filter for every thread after the restore")
    assert_healthy(host, name, last_ok(host, name), more=12)
    host.migctl("stop", name, "--timeout", "2")


def test_avx_threads_leave_running_then_restore(host):
    if not open("/proc/cpuinfo").read().count(" avx "):
        pytest.skip("this CPU has no AVX")
    host.migctl("run", "avx", "--", fixture("fixture-ct-avxloop"), "4")
    ids = ready_ids(host, "avx")
    assert len(ids) == 5
    assert_healthy(host, "avx", 0, more=3)
    pid = entry(host, "avx")["pid"]
    r = checkpoint(host, "avx", "--leave-running")
    assert r["left_running"] and r["threads"] == 5
    assert entry(host, "avx")["pid"] == pid and entry(host, "avx")["state"] == "running"
    assert_healthy(host, "avx", last_ok(host, "avx"))
    host.migctl("stop", "avx", "--timeout", "2")
    host.migctl("restore", "avx", "--from", image("avx"), timeout=120)
    assert_healthy(host, "avx", last_ok(host, "avx"))
    assert container_ids(entry(host, "avx")["pid"]) == ids


def echo_clients(h, n, port):
    """Clients in the host's network namespace, outside the container, driven over stdin."""
    argv = h._argv([sys.executable if os.path.exists(sys.executable) else "python3",
                    os.path.join(os.path.dirname(echo_client.__file__), "echo_client.py"),
                    "--port", str(port), "-n", str(n), "--rounds", "3", "--hold"])
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=h._env())


def test_tcp_connections_survive(host):
    port = 7007
    host.migctl("run", "echo", "--", fixture("fixture-ct-echo"), str(port))
    ids = ready_ids(host, "echo")
    clients = echo_clients(host, 4, port)
    try:
        assert clients.stdout.readline().strip() == "HELD"
        checkpoint(host, "echo", "--leave-running")
        assert entry(host, "echo")["state"] == "running"
        host.run(["rm", "-rf", image("echo")])
        kill_and_restore(host, "echo", ids)
        clients.stdin.write("\n")
        clients.stdin.flush()
        out = clients.stdout.read()
        assert clients.wait(30) == 0 and "PASS" in out, out
    finally:
        clients.kill()
    assert_healthy(host, "echo", last_ok(host, "echo"))


HEAVY_ECHO = r"""
import os, socket, threading
heap = os.urandom(24 << 20)   # slow to compress: the checkpoint lasts
srv = socket.create_server(("127.0.0.1", 7301))   # SO_REUSEADDR, which accepted sockets inherit
print("ready", flush=True)
def serve(c):
    while (b := c.recv(4096)):
        c.sendall(b)
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""

LINE_CLIENT = ("import socket, sys; s = socket.create_connection(('127.0.0.1', 7301), timeout=20); "
               "print('connected', flush=True)\n"
               "for l in sys.stdin:\n"
               "    s.sendall(l.encode()); print(s.recv(4096).decode().strip(), flush=True)")


def tcp_sockets(pid):
    """{fd: (TCP_REPAIR, SO_REUSEADDR)} of the established TCP sockets of process pid (host
    view), read through duplicates (pidfd_getfd)."""
    import ctypes
    import socket
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    out = {}
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            fd = int(name)
            try:
                if not stat.S_ISSOCK(os.stat(f"/proc/{pid}/fd/{fd}").st_mode):
                    continue
            except FileNotFoundError:
                continue
            ours = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
            if ours < 0:
                continue
            s = socket.socket(fileno=ours)
            try:
                if (s.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == socket.IPPROTO_TCP and
                        s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] == 1):
                    out[fd] = (s.getsockopt(socket.IPPROTO_TCP, 19),  # TCP_REPAIR
                               s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR))
            finally:
                s.detach()
                os.close(ours)
    finally:
        os.close(pidfd)
    return out


def cgroup_frozen(pid):
    """Whether the cgroup (v2) of process pid is frozen."""
    mnt = next(l.split()[1] for l in open("/proc/self/mounts") if l.split()[2] == "cgroup2")
    path = next(l.split("::", 1)[1].strip() for l in open(f"/proc/{pid}/cgroup")
                if l.startswith("0::"))
    with open(f"{mnt}{path}/cgroup.events") as f:
        return dict(l.split() for l in f)["frozen"] == "1"


def test_migrd_killed_mid_checkpoint(host):
    """migrd dies (SIGKILL) while a checkpoint holds the container: its processes run on, and
    the next migrd takes its connection out of the repair mode the dump had put it in (where it
    neither sends nor receives). A checkpoint left running keeps the connection's
    SO_REUSEADDR, which repair mode hides."""
    name = "heavy"
    host.migctl("run", name, "--", "python3", "-c", HEAVY_ECHO)
    host.wait_for(lambda: "ready" in logs(host, name), 30, "the server")
    pid = entry(host, name)["pid"]
    client = subprocess.Popen(host._argv(["python3", "-c", LINE_CLIENT]), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=host._env())

    def echo(word):
        client.stdin.write(word + "\n")
        client.stdin.flush()
        return client.stdout.readline().strip()

    try:
        assert client.stdout.readline().strip() == "connected"
        assert echo("one") == "one"
        host.wait_for(lambda: len(tcp_sockets(pid)) == 1, 10, "the accepted connection")
        assert list(tcp_sockets(pid).values()) == [(0, 1)]
        # A live checkpoint gives the connection back as it was.
        checkpoint(host, name, "--leave-running")
        assert list(tcp_sockets(pid).values()) == [(0, 1)]
        assert echo("two") == "two"
        host.run(["rm", "-rf", image(name)])

        done = []
        slow = threading.Thread(target=lambda: done.append(host.migctl_raw(
            "checkpoint", name, "--dir", image(name), "--compress", "19", timeout=120)))
        slow.start()
        # The dump copies memory with the cgroup frozen and the connection in repair mode.
        host.wait_for(lambda: cgroup_frozen(pid) and
                      [r for r, _ in tcp_sockets(pid).values()] == [1], 30,
                      "the dump to copy memory", interval=0.005)
        host.procs["migrd"].kill()
        host.procs.pop("migrd").wait()
        slow.join()
        assert done[0].returncode != 0
        # migrd's end let the processes go, not killed by the SIGTRAP of the dump's last
        # single-step; they wait in the freezer, the connection still in repair mode.
        time.sleep(0.3)
        assert open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] in "RS", pid
        assert cgroup_frozen(pid)
        assert [r for r, _ in tcp_sockets(pid).values()] == [1]

        host.start_migrd()
        w = entry(host, name)
        assert w["state"] == "running" and w["pid"] == pid
        assert [r for r, _ in tcp_sockets(pid).values()] == [0] and not cgroup_frozen(pid)
        assert "1 TCP connection out of repair mode" in open(host.path("migrd.log")).read()
        assert echo("three") == "three"
        # The partial image is the operator's to remove; the next checkpoint works.
        host.run(["rm", "-rf", image(name)])
        checkpoint(host, name, "--leave-running")
        assert echo("four") == "four"
    finally:
        client.kill()
        client.wait()
    host.migctl("stop", name, "--timeout", "2")


def test_unmodified_programs(host):
    host.migctl("run", "web", "--cwd", "/tmp", "--", "python3", "-m", "http.server", "8080",
                "--bind", "127.0.0.1")
    host.migctl("run", "loop", "--", "bash", "-c",
                'n=0; while :; do n=$((n+1)); echo "n=$n"; sleep 2; done')
    host.migctl("run", "sleeper", "--", "sleep", "1000")
    get = ["python3", "-c", "import urllib.request as u; "
           "print(u.urlopen('http://127.0.0.1:8080/', timeout=5).status)"]
    host.wait_for(lambda: host.run(get, check=False).stdout.strip() == "200", 20, "http.server")
    for name in ("web", "loop", "sleeper"):
        kill_and_restore(host, name)
    assert host.run(get).stdout.strip() == "200"
    n0 = int(logs(host, "loop").split("n=")[-1].split()[0])
    # Its sleep (2 s, so that the pids can be compared before the loop forks the next one)
    # runs on; then the loop counts on.
    host.wait_for(lambda: int(logs(host, "loop").split("n=")[-1].split()[0]) >= n0 + 2, 10,
                  "the bash loop to count on")
    assert os.path.exists(f"/proc/{entry(host, 'sleeper')['pid']}")


def test_image_is_private_and_checked(host):
    host.migctl("run", "priv", "--", "sleep", "1000")
    checkpoint(host, "priv")
    d = image_outside(host, "priv")
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    for f in os.listdir(d):
        st = os.stat(os.path.join(d, f))
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0, f
    shown = host.run(["migctl", "image", "show", image("priv")]).stdout
    assert "sleep" in shown
    # A file others may write is refused, before any process exists.
    victim = os.path.join(d, "inventory.img")
    os.chmod(victim, 0o666)
    cp = host.migctl_raw("restore", "priv", "--from", image("priv"), timeout=60)
    assert cp.returncode != 0 and "inventory.img" in cp.stderr, cp.stderr
    os.chmod(victim, 0o600)
    # So is a file root does not own.
    os.chown(victim, 65534, 65534)
    cp = host.migctl_raw("restore", "priv", "--from", image("priv"), timeout=60)
    assert cp.returncode != 0 and "inventory.img" in cp.stderr and "owned" in cp.stderr, \
        cp.stderr
    os.chown(victim, 0, 0)
    assert restore(host, "priv")["pid"] > 0


CGROUP_ROOTS = ["/sys/fs/cgroup/unified/migrd", "/sys/fs/cgroup/migrd"] + [
    f"/sys/fs/cgroup/{c}/migrd" for c in ("freezer", "memory", "cpu,cpuacct", "cpu")]


def cgroup_dirs(h, name):
    """The container's cgroup directories, on whichever layout migrd chose."""
    return [os.path.join(r, f"{h.name}.{name}") for r in CGROUP_ROOTS
            if os.path.isdir(os.path.join(r, f"{h.name}.{name}"))]


def memory_limit(h, name):
    for d in cgroup_dirs(h, name):
        for f in ("memory.max", "memory.limit_in_bytes"):
            if os.path.exists(os.path.join(d, f)):
                return int(open(os.path.join(d, f)).read())
    return None


def test_restore_on_the_same_host_keeps_the_limits(host):
    # The restored copy gets a fresh cgroup (the killed one goes) with the limits of the run;
    # a failed restore leaves no cgroup behind, here or under a new name.
    host.migctl("run", "lim", "--memory", "64M", "--", "sleep", "1000")
    assert memory_limit(host, "lim") == 64 << 20
    checkpoint(host, "lim")
    host.wait_for(lambda: entry(host, "lim")["state"] == "checkpointed", 10,
                  "the checkpoint's kill")
    victim = os.path.join(image_outside(host, "lim"), "inventory.img")
    os.chmod(victim, 0o666)
    for name in ("lim", "lim2"):
        cp = host.migctl_raw("restore", name, "--from", image("lim"), timeout=60)
        assert cp.returncode != 0 and "inventory.img" in cp.stderr, cp.stderr
        assert cgroup_dirs(host, name) == []
    assert entry(host, "lim")["state"] == "checkpointed" and entry(host, "lim2") is None
    os.chmod(victim, 0o600)
    pid = restore(host, "lim")["pid"]
    assert memory_limit(host, "lim") == 64 << 20
    assert f"/{host.name}.lim\n" in open(f"/proc/{pid}/cgroup").read()
    host.migctl("rm", "lim", "--force")
    assert cgroup_dirs(host, "lim") == []


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_image_refused(host, damage):
    host.migctl("run", "bad", "--", fixture("fixture-ct-counter"), "16")
    ready_ids(host, "bad")
    checkpoint(host, "bad")
    d = image_outside(host, "bad")
    pages = next(f for f in sorted(os.listdir(d)) if f.startswith("pages-"))
    path = os.path.join(d, pages)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if damage == "flip":
            f.seek(size // 2)
            b = f.read(1)
            f.seek(size // 2)
            f.write(bytes([b[0] ^ 0x40]))
        else:
            f.truncate(size - 4096)
    before = set(os.listdir("/proc"))
    cp = host.migctl_raw("restore", "bad", "--from", image("bad"), timeout=60)
    assert cp.returncode != 0 and pages in cp.stderr, cp.stderr
    assert entry(host, "bad")["state"] == "checkpointed"
    # No task of the image was created on the way.
    new = [p for p in set(os.listdir("/proc")) - before if p.isdigit()]
    for p in new:
        try:
            assert "fixture-ct-counter" not in open(f"/proc/{p}/cmdline").read()
        except FileNotFoundError:
            pass


def refuse(h, name, argv, expect, ready=None, who="pid", opts=()):
    """Runs argv (with migctl run's opts), checkpoints it (after its log shows ready, or a
    second), and checks that the checkpoint is refused with expect, names the container (and
    by default a pid), and leaves the container running and nothing behind."""
    h.migctl("run", name, *opts, "--", *argv)
    if ready:
        h.wait_for(lambda: ready in logs(h, name), 20, f"{name} to report {ready}")
    else:
        time.sleep(1.0)
    pid = entry(h, name)["pid"]
    cp = h.migctl_raw("checkpoint", name, "--dir", image(name), timeout=60)
    assert cp.returncode != 0, cp.stdout
    assert re.search(expect, cp.stderr), cp.stderr
    assert f"{name}: {who}" in cp.stderr or "cannot seize" in cp.stderr, cp.stderr
    # It runs on, untouched, and nothing is left behind: no image, no pages file allocated
    # before the freeze, not even the directory the checkpoint made.
    w = entry(h, name)
    assert w["state"] == "running" and w["pid"] == pid
    d = image_outside(h, name)
    assert not os.path.exists(d), os.listdir(d)
    return cp.stderr


def test_refusals(host):
    refuse(host, "inot", ["python3", "-c", "import ctypes, time; "
                          "ctypes.CDLL(None).inotify_init(); time.sleep(1000)"],
           r"pid 1 fd \d+: inotify is not supported")
    host.spawn("outside", ["python3", "-c", "import socket, time; s=socket.socket("
                           "socket.AF_UNIX); s.bind('/run/outside.sock'); s.listen(); "
                           "c = s.accept(); time.sleep(1000)"])
    host.wait_for(lambda: os.path.exists(host.path("run", "outside.sock")), 10, "the server")
    refuse(host, "outside", ["python3", "-c", "import socket, time; s=socket.socket("
                             "socket.AF_UNIX); s.connect('/run/outside.sock'); time.sleep(1000)"],
           r"connected to outside the container is not supported")
    refuse(host, "traced", ["sh", "-c", "sleep 1000 & exec strace -o /dev/null -p $!"],
           r"cannot seize|ptrace|Operation not permitted")
    # One thread alone changed its uid with the raw system call (libc would change them all).
    refuse(host, "onethread", ["python3", "-c", "import ctypes, threading, time; "
                               "threading.Thread(target=lambda: (ctypes.CDLL(None).syscall("
                               "117, 1000, 1000, 1000), time.sleep(1000))).start(); "
                               "time.sleep(1000)"],
           r"pid 1 thread \d+: its credentials, no_new_privs or seccomp filters differ from its "
           r"process's, which is not supported")
    # A directory that holds anything is refused before the container is frozen, and what was
    # there stays.
    name = "stale"
    host.migctl("run", name, "--", "sleep", "1000")
    pid = entry(host, name)["pid"]
    d = image_outside(host, name)
    os.makedirs(d)
    with open(os.path.join(d, "notes"), "w") as f:
        f.write("kept")
    cp = host.migctl_raw("checkpoint", name, "--dir", image(name), timeout=60)
    assert cp.returncode != 0, cp.stdout
    assert f"cannot create the image in {image(name)}: it is not an empty directory" in cp.stderr, \
        cp.stderr
    w = entry(host, name)
    assert w["state"] == "running" and w["pid"] == pid
    assert os.listdir(d) == ["notes"]


IPC_PROGRAM = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
what = sys.argv[1]
if what == "sem":
    ok = libc.semget(0x5e3, 2, 0o1600) >= 0
elif what == "msg":
    ok = libc.msgget(0x5e5, 0o1600) >= 0
else:
    fd = libc.mq_open(b"/jobs", os.O_CREAT | os.O_RDWR, 0o600, None)
    ok = fd >= 0
    if what == "mq":
        os.close(fd)  # the queue stays, in the namespace alone
    else:
        libc.mq_unlink(b"/jobs")  # the fd alone holds it
print("ready" if ok else f"failed: errno {ctypes.get_errno()}", flush=True)
time.sleep(1000)
"""


def test_namespace_contents_refused(host):
    """What lives in the container's IPC and mount namespaces and in no process (a restore
    starts from new ones) and is not supported is refused by name, not lost: POSIX message
    queues, mounts the container made."""
    for what, expect in [
            ("mq", r"its IPC namespace holds the POSIX message queue /jobs, which is not "
                   r"supported")]:
        refuse(host, f"ipc-{what}", ["python3", "-c", IPC_PROGRAM, what], expect,
               ready="ready", who="its IPC namespace")
    # Part of a System V attachment unmapped: what is left is not a whole segment.
    refuse(host, "shm-part", ["python3", "-c", "import ctypes, time; "
                              "l = ctypes.CDLL(None); l.shmat.restype = ctypes.c_void_p; "
                              "a = l.shmat(l.shmget(0, 3 * 4096, 0o1600), None, 0); "
                              "l.munmap(ctypes.c_void_p(a + 4096), 4096); "
                              "print('ready', flush=True); time.sleep(1000)"],
           r"pid 1: System V shared memory \d+ is attached in part at 0x[0-9a-f]+, which is "
           r"not supported", ready="ready")
    # Unlinked, the queue is only in the fd, which had been taken for a file named /jobs.
    refuse(host, "ipc-mqfd", ["python3", "-c", IPC_PROGRAM, "mqfd"],
           r"pid 1 fd \d+: the POSIX message queue /jobs \(deleted\) is not supported",
           ready="ready")
    refuse(host, "ownmount", ["sh", "-c", "mkdir -p /run/ownmount && "
                              "mount -t tmpfs scratch /run/ownmount && "
                              "echo data > /run/ownmount/f && echo ready && exec sleep 1000"],
           r"its mount namespace has a mount that migrd's has not \(tmpfs scratch on "
           r"/run/ownmount\), which a restore would lose: not supported",
           ready="ready", who="its mount namespace")


def test_fd_path_must_lead_back(host):
    """A file is restored by opening its path again, in a copy of migrd's mount namespace: a
    path that now leads to another file there is refused instead of opening that one."""
    host.run("mkdir -p /run/covered && echo original > /run/covered/f")
    name = "covered"
    host.migctl("run", name, "--", "sh", "-c", "exec 7</run/covered/f; echo ready; "
                "exec sleep 1000")
    host.wait_for(lambda: "ready" in logs(host, name), 20, "the container")
    # The host covers the directory; the container, whose mounts are its own copy, does not
    # see it and still holds the original.
    host.run("mount -t tmpfs cover /run/covered && echo other > /run/covered/f")
    try:
        pid = entry(host, name)["pid"]
        cp = host.migctl_raw("checkpoint", name, "--dir", image(name), timeout=60)
        assert cp.returncode != 0, cp.stdout
        assert (f"{name}: pid 1 fd 7: its path /run/covered/f leads to another file where the "
                "restore would open it") in cp.stderr, cp.stderr
        w = entry(host, name)
        assert w["state"] == "running" and w["pid"] == pid
    finally:
        host.run("umount /run/covered")
    # Uncovered, the same file is found again, and the container moves as before.
    r = kill_and_restore(host, name)
    assert r["processes"] == 1
    out = host.run(["sh", "-c", f"cat /proc/{entry(host, name)['pid']}/fdinfo/7 >/dev/null && "
                    f"cat /proc/{entry(host, name)['pid']}/fd/7"]).stdout
    assert out == "original\n", out


LOCKS_PROGRAM = r"""
import fcntl, os, struct, time
os.makedirs("/run/locks", exist_ok=True)
a = open("/run/locks/a", "w"); fcntl.flock(a, fcntl.LOCK_EX)
b = open("/run/locks/b", "w+")
fcntl.lockf(b, fcntl.LOCK_EX, 10, 5)      # bytes 5-14, write
fcntl.lockf(b, fcntl.LOCK_SH, 0, 100)     # from byte 100 to the end, read
c = open("/run/locks/c", "w+")
fcntl.fcntl(c, 37, struct.pack("hhqqi4x", fcntl.F_RDLCK, 0, 0, 0, 0))  # F_OFD_SETLK
d = os.dup(a.fileno())                    # the same description: one flock
if os.fork() == 0:                        # shares a's description; a POSIX lock of its own
    e = open("/run/locks/e", "w"); fcntl.lockf(e, fcntl.LOCK_EX)
    print("child ready", flush=True)
    time.sleep(1000)
time.sleep(0.2)
print("ready", flush=True)
time.sleep(1000)
"""

# Each lock tried from outside the container, without waiting: "held" when it conflicts.
LOCK_PROBE = r"""
import fcntl, os, struct
def probe(path, kind, write, start=0, length=0):
    fd = os.open(path, os.O_RDWR)
    try:
        if kind == "flock":
            fcntl.flock(fd, (fcntl.LOCK_EX if write else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        else:
            fcntl.fcntl(fd, 37 if kind == "ofd" else fcntl.F_SETLK,
                        struct.pack("hhqqi4x", fcntl.F_WRLCK if write else fcntl.F_RDLCK, 0,
                                    start, length, 0))
        return "free"
    except OSError:
        return "held"
    finally:
        os.close(fd)
print(",".join([probe("/run/locks/a", "flock", False),
                probe("/run/locks/b", "posix", True, 0, 5),
                probe("/run/locks/b", "posix", False, 5, 10),
                probe("/run/locks/b", "posix", False, 100, 0),
                probe("/run/locks/b", "posix", True, 200, 1),
                probe("/run/locks/c", "ofd", False),
                probe("/run/locks/c", "ofd", True),
                probe("/run/locks/e", "posix", False)]))
"""
LOCKS_HELD = "held,free,held,free,held,free,held,held"


SYSV_PROGRAM = r"""
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
GETVAL, GETALL, SETVAL, SETALL, IPC_NOWAIT = 12, 13, 16, 17, 0o4000
IPC_RMID, SHM_RDONLY = 0, 0o10000
class sembuf(ctypes.Structure):
    _fields_ = [("num", ctypes.c_ushort), ("op", ctypes.c_short), ("flg", ctypes.c_short)]
class msgbuf(ctypes.Structure):
    _fields_ = [("mtype", ctypes.c_long), ("text", ctypes.c_char * 64)]
MSGS = [(2, b"second type, first"), (1, b"hello"), (2, b"bye")]
MARKS = [(0, b"alpha"), (5000, b"beta"), (12380, b"end")]
for name, value in [("kernel/msgmnb", "32768"), ("kernel/sem", "250 64000 64 256"),
                    ("fs/mqueue/msg_max", "50")]:
    with open(f"/proc/sys/{name}", "w") as f:  # the container's own IPC namespace's
        f.write(value)
sem = libc.semget(0x5e3, 3, 0o1640)
libc.semctl(sem, 0, SETALL, (ctypes.c_ushort * 3)(3, 0, 7))
priv = libc.semget(0, 1, 0o1600)                      # IPC_PRIVATE
libc.semctl(priv, 0, SETVAL, 5)
q = libc.msgget(0x5e5, 0o1620)
for t, text in MSGS:
    libc.msgsnd(q, ctypes.byref(msgbuf(t, text)), len(text), 0)
seg = libc.shmget(0x5e4, 12388, 0o1640)                # three pages and 100 bytes
a = libc.shmat(seg, None, 0)
for off, text in MARKS:
    ctypes.memmove(a + off, text, len(text))
if os.fork() == 0:
    # The child has the parent's attachment, and one of its own, read-only, of a segment
    # marked for removal: it lives on while attached.
    gone = libc.shmget(0, 4096, 0o1600)
    ro = libc.shmat(gone, None, SHM_RDONLY)
    libc.shmctl(gone, IPC_RMID, None)
    print("child ready", flush=True)
    while not os.path.exists("/run/ipc-check"):
        time.sleep(0.05)
    for _ in range(100):
        if ctypes.string_at(a + 100, 5) == b"after":
            break
        time.sleep(0.05)
    ok = ctypes.string_at(a + 100, 5) == b"after" and ctypes.string_at(ro, 16) == bytes(16)
    print("child", "ok" if ok else "BAD", flush=True)
    time.sleep(1000)
time.sleep(0.3)
print("ready", sem, priv, q, seg, flush=True)
while not os.path.exists("/run/ipc-check"):
    time.sleep(0.05)
got = (ctypes.c_ushort * 3)()
libc.semctl(sem, 0, GETALL, got)
ok = (libc.semget(0x5e3, 0, 0) == sem and list(got) == [3, 0, 7]
      and libc.semctl(priv, 0, GETVAL) == 5 and libc.shmget(0x5e4, 0, 0) == seg)
msgs = []
while True:
    m = msgbuf()
    n = libc.msgrcv(q, ctypes.byref(m), 64, 0, IPC_NOWAIT)
    if n < 0:
        break
    msgs.append((m.mtype, m.text[:n]))
ok = ok and msgs == MSGS
ok = ok and libc.semop(sem, ctypes.byref(sembuf(0, -3, IPC_NOWAIT)), 1) == 0
marks = [ctypes.string_at(a + off, len(text)) for off, text in MARKS]
ok = ok and marks == [text for _, text in MARKS]
ctypes.memmove(a + 100, b"after", 5)                  # the child must see it
print("ipc", "ok" if ok else f"BAD {list(got)} {msgs} {marks}", flush=True)
time.sleep(1000)
"""


def sysv_table(h, pid, kind, columns):
    """The container's /proc/sysvipc/KIND, each object's first columns."""
    out = h.run(["nsenter", "-t", str(pid), "-i", "cat", f"/proc/sysvipc/{kind}"]).stdout
    return [l.split()[:columns] for l in out.splitlines()[1:]]


def test_sysv_ipc_kept(host):
    """System V shared memory, semaphore sets and message queues live in the IPC namespace:
    they come back at their ids, with their keys, owners, modes, contents, values and queued
    messages; the processes' attachments come back at their addresses, shared as before, a
    segment marked for removal included; and so do the namespace's own sysctls."""
    name = "sysv"
    host.run(["rm", "-f", "/run/ipc-check"])
    host.migctl("run", name, "--", "python3", "-c", SYSV_PROGRAM)
    host.wait_for(lambda: "child ready" in logs(host, name) and "\nready" in
                  "\n" + logs(host, name), 20, "the objects")

    def tables():
        pid = entry(host, name)["pid"]
        # shm: key shmid perms size, nattch uid gid; sem: key semid perms nsems uid gid;
        # msg: key msqid perms cbytes qnum, uid gid (the pids in between are the restore's).
        shm = [r[:4] + r[6:9] for r in sysv_table(host, pid, "shm", 9)]
        msg = [r[:5] + r[7:9] for r in sysv_table(host, pid, "msg", 9)]
        sysctls = host.run(["nsenter", "-t", str(pid), "-i", "sh", "-c",
                            "cat /proc/sys/kernel/msgmnb /proc/sys/kernel/sem "
                            "/proc/sys/fs/mqueue/msg_max"]).stdout.split()
        return shm, sysv_table(host, pid, "sem", 6), msg, sysctls

    before = tables()
    assert before[3] == ["32768", "250", "64000", "64", "256", "50"], before
    assert [r[2] for r in before[0]] == ["640", "1600"], before    # the second: SHM_DEST
    assert [r[4] for r in before[0]] == ["2", "1"], before         # attachments
    assert len(before[1]) == 2 and len(before[2]) == 1, before
    r = kill_and_restore(host, name)
    assert r["processes"] == 2
    shown = host.migctl("image", "show", image(name))["ipc"]
    assert [s["values"] for s in shown["semaphore_sets"]] == [[3, 0, 7], [5]], shown
    assert [(q["messages"], q["bytes"], q["mode"]) for q in shown["message_queues"]] == \
        [(3, 26, "620")], shown
    assert [(m["size"], m["removed"]) for m in shown["shared_memory"]] == \
        [(12388, False), (4096, True)], shown
    assert tables() == before
    host.run(["touch", "/run/ipc-check"])
    host.wait_for(lambda: re.search(r"^ipc ", logs(host, name), re.M) and
                  re.search(r"^child (ok|BAD)", logs(host, name), re.M), 10, "the programs' checks")
    assert "ipc ok" in logs(host, name) and "child ok" in logs(host, name), logs(host, name)


def test_file_locks_kept(host):
    """flock, POSIX and OFD locks are taken back by the restored processes, each once; a lock
    that another process took in the meantime fails the restore by name."""
    name = "locks"
    host.migctl("run", name, "--", "python3", "-c", LOCKS_PROGRAM)
    host.wait_for(lambda: "child ready" in logs(host, name) and "\nready" in
                  "\n" + logs(host, name), 20, "the locks to be taken")
    assert host.run(["python3", "-c", LOCK_PROBE]).stdout.strip() == LOCKS_HELD
    checkpoint(host, name)
    host.wait_for(lambda: entry(host, name)["state"] == "checkpointed", 10, "the kill")
    locks = sorted((f["path"], l["kind"], l["write"], l["start"], l["end"])
                   for p in host.migctl("image", "show", image(name))["processes"]
                   for f in p["fds"] for l in f["locks"])
    assert locks == [("/run/locks/a", "flock", True, 0, None),
                     ("/run/locks/b", "posix", False, 100, None),
                     ("/run/locks/b", "posix", True, 5, 14),
                     ("/run/locks/c", "ofd", False, 0, None),
                     ("/run/locks/e", "posix", True, 0, None)], locks
    # Freed by the kill, the flock is taken by another process: the restore must not go on
    # without it.
    host.run(["rm", "-f", "/run/locks/release"])
    host.spawn("holder", ["flock", "/run/locks/a", "sh", "-c",
                          "echo holding; while [ ! -e /run/locks/release ]; do sleep 0.05; done"])
    host.wait_for(lambda: "holding" in open(host.path("holder.log")).read(), 10, "the holder")
    cp = host.migctl_raw("restore", name, "--from", image(name), timeout=60)
    assert cp.returncode != 0, cp.stdout
    assert re.search(r"locks: pid 1 fd \d+: cannot take back its flock write lock on "
                     r"/run/locks/a: another process holds a lock on it", cp.stderr), cp.stderr
    assert entry(host, name)["state"] == "checkpointed"
    host.run(["touch", "/run/locks/release"])
    host.wait_for(lambda: host.procs["holder"].poll() is not None, 10, "the holder to end")
    r = restore(host, name)
    assert r["processes"] == 2
    assert host.run(["python3", "-c", LOCK_PROBE]).stdout.strip() == LOCKS_HELD


PONG_SERVER = r"""
import socket
s = socket.socket(); s.bind(("127.0.0.1", 8088)); s.listen(4)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"pong"); c.close()
"""
PING = ("import socket; s = socket.create_connection(('127.0.0.1', 8088), timeout=5); "
        "print(s.recv(16).decode())")


def test_own_network_namespace(host):
    """migctl run --netns: the container's own namespace (lo alone) comes back with its
    listener in it; what the container added to it is refused, not lost."""
    name = "netct"
    host.migctl("run", name, "--netns", "--", "python3", "-c", PONG_SERVER)
    host.wait_for(lambda: "ready" in logs(host, name), 20, "the server")

    def ping():
        pid = entry(host, name)["pid"]
        assert os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        return host.run(["nsenter", "-t", str(pid), "-n", "python3", "-c", PING]).stdout

    assert ping() == "pong\n"
    # Its namespace's sysctls, set as a program in it would: the restore's new namespace
    # starts with the defaults, and must be given these (the port range only after the start of
    # the unprivileged ports has gone down, which comes later by name).
    settings = {"net.core.somaxconn": "777", "net.ipv4.tcp_keepalive_time": "123",
                "net.ipv4.ip_unprivileged_port_start": "0",
                "net.ipv4.ip_local_port_range": "1000\t2000",
                "net.ipv4.conf.lo.accept_local": "1", "net.unix.max_dgram_qlen": "99"}

    def sysctls():
        pid = str(entry(host, name)["pid"])
        out = host.run(["nsenter", "-t", pid, "-n", "sysctl", "-n"] + list(settings)).stdout
        return dict(zip(settings, out.splitlines()))

    defaults = sysctls()
    assert all(defaults[k] != v for k, v in settings.items()), defaults
    pid = str(entry(host, name)["pid"])
    host.run(["nsenter", "-t", pid, "-n", "sysctl", "-q", "-w"] +
             [f"{k}={v}" for k, v in sorted(settings.items(), key=lambda kv: "port_range" in kv[0])])
    assert sysctls() == settings
    r = kill_and_restore(host, name)
    assert r["processes"] == 1
    shown = host.migctl("image", "show", image(name))
    assert shown["own_network_namespace"] is True
    assert shown["network_sysctls"]["net/core/somaxconn"] == "777"
    assert ping() == "pong\n"
    assert sysctls() == settings
    for what, cmd, expect in [
            ("addr", "ip addr add 10.9.9.9/32 dev lo", r"the address 10\.9\.9\.9/32"),
            ("link", "ip link add v0 type veth peer name v1", r"the interface v[01]"),
            ("route", "ip route add 10.1.0.0/16 dev lo", r"a route to 10\.1\.0\.0/16"),
            ("nft", "iptables-nft -A INPUT -p tcp --dport 9 -j DROP",
             r"the nftables table ip filter"),
            ("xt", "iptables-legacy -A INPUT -p tcp --dport 9 -j DROP",
             r"the iptables \(legacy\) table filter")]:
        refuse(host, f"net-{what}", ["sh", "-c", f"{cmd} && echo ready && exec sleep 1000"],
               r"its network namespace has " + expect + r", which a restore would not make "
               r"again: not supported", ready="ready", who="its network namespace",
               opts=["--netns"])


CLOCK_PROGRAM = r"""
import os, time
B = time.CLOCK_BOOTTIME
with open("/proc/sys/kernel/domainname", "w") as f:
    f.write("jobs.example")
last = time.monotonic()
while True:
    m, b = time.monotonic(), time.clock_gettime(B)
    if m < last:
        print(f"BACKWARDS {last} {m}", flush=True)
    last = m
    d = open("/proc/sys/kernel/domainname").read().strip()
    print(f"tick {m:.6f} {b:.6f} {d}", flush=True)
    time.sleep(0.05)
"""


def ticks(h, name):
    return [(float(m), float(b), d) for _, m, b, d in
            (l.split() for l in logs(h, name).splitlines() if l.startswith("tick "))]


def test_clocks_go_on(host):
    """CLOCK_MONOTONIC goes on from where the checkpoint stopped it, as after a suspend, and
    CLOCK_BOOTTIME counts the time between, however long the container was down and whatever
    the restoring host's clocks read: the restore gives the container a time namespace. Twice,
    so that the second checkpoint reads a namespace's offsets. The NIS domain name comes back
    too."""
    name = "clocks"
    host.migctl("run", name, "--", "python3", "-c", CLOCK_PROGRAM)
    host.wait_for(lambda: len(ticks(host, name)) >= 5, 20, "the clock program")
    gap = 3.0
    for round_ in range(2):
        checkpoint(host, name)
        host.wait_for(lambda: entry(host, name)["state"] == "checkpointed", 10, "the kill")
        before = ticks(host, name)
        m1, b1, _ = before[-1]
        shown = host.migctl("image", "show", image(name))
        assert m1 <= shown["clocks"]["monotonic_ns"] / 1e9 < m1 + 1, (m1, shown["clocks"])
        assert shown["domainname"] == "jobs.example"
        time.sleep(gap)
        r = restore(host, name)
        assert r["own_clocks"] is True, r
        host.wait_for(lambda: len(ticks(host, name)) >= len(before) + 5, 20, "ticks after it")
        after = ticks(host, name)[len(before):]
        # The first line printed after the restore may hold clocks read before the
        # checkpoint (it came between the reading and the print): the jump is at the first
        # tick or the second, and only there.
        jumps = [i for i, (p, q) in enumerate(zip([before[-1]] + after, after))
                 if q[1] - p[1] >= 1.0]
        assert len(jumps) == 1 and jumps[0] <= 1, (round_, before[-1], after[:3])
        (m1, b1, _), (m2, b2, dom) = ([before[-1]] + after)[jumps[0]], after[jumps[0]]
        # Stopped while it was down: the last tick's sleep and the checkpoint and restore
        # themselves, not the gap (the host's clock went on by more than the gap).
        assert 0 < m2 - m1 < 1.5, (round_, m1, m2)
        assert gap <= b2 - b1 < gap + 10, (round_, b1, b2)
        assert dom == "jobs.example"
        pid = entry(host, name)["pid"]
        assert os.stat(f"/proc/{pid}/ns/time").st_ino != os.stat("/proc/self/ns/time").st_ino
        host.run(["rm", "-rf", image(name)])
    assert "BACKWARDS" not in logs(host, name)
    host.migctl("rm", name, "--force")
    # A process whose children would be born in a time namespace of their own, and one in
    # such a namespace (the restore makes one time namespace for them all).
    refuse(host, "timens-ch", ["python3", "-c", "import ctypes, time; "
                               "ctypes.CDLL(None).unshare(0x80); time.sleep(1000)"],
           r"pid 1: a time \(for its children\) namespace of its own is not supported")
    refuse(host, "timens", ["sh", "-c", "unshare --time sleep 1000 & exec sleep 1000"],
           r"pid \d+: a time namespace of its own is not supported")
    # The same for one thread alone, and a thread in a network namespace of its own.
    for what, flag, expect in [("timens-th", 0x80, r"time \(for its children\)"),
                               ("netns-th", 0x40000000, r"net")]:
        refuse(host, what, ["python3", "-c", "import ctypes, threading, time; "
                            "threading.Thread(target=lambda: (ctypes.CDLL(None).unshare("
                            f"{flag}), time.sleep(1000))).start(); time.sleep(1000)"],
               r"pid 1 thread \d+: a " + expect + r" namespace of its own is not supported")


TIMER_PROGRAM = r"""
import ctypes, os, select, signal, time
libc = ctypes.CDLL(None, use_errno=True)
class ts(ctypes.Structure): _fields_ = [("s", ctypes.c_long), ("ns", ctypes.c_long)]
class its(ctypes.Structure): _fields_ = [("interval", ts), ("value", ts)]
def tfd(clock, secs, flags=0):
    fd = libc.timerfd_create(clock, 0)
    v = its(ts(0, 0), ts(int(secs), 0))
    assert fd >= 0 and libc.timerfd_settime(fd, flags, ctypes.byref(v), None) == 0
    return fd
fired = []
def report(name):
    print(f"fired {name} {time.monotonic():.3f} {time.time():.3f}", flush=True)
signal.signal(signal.SIGALRM, lambda *a: fired.append("posix-real"))
tid = ctypes.c_void_p()
assert libc.timer_create(0, None, ctypes.byref(tid)) == 0  # CLOCK_REALTIME, SIGALRM
assert libc.timer_settime(tid, 0, ctypes.byref(its(ts(0, 0), ts(4, 0))), None) == 0
fds = {tfd(1, 4): "mono", tfd(7, 4): "boot", tfd(0, 4): "real",
       tfd(0, time.time() + 60, 3): "cancel"}  # TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET
print(f"armed {time.monotonic():.3f} {time.time():.3f}", flush=True)
while True:
    try:
        ready, _, _ = select.select(list(fds), [], [], 0.05)
    except InterruptedError:
        ready = []
    for fd in ready:
        os.read(fd, 8)
        report(fds.pop(fd))
    while fired:
        report(fired.pop())
"""


def test_timers_across_downtime(host):
    """Timers on the wall clock and on boot time count the time the container was down, as
    across a suspend: one due meanwhile fires as soon as it is back. A CLOCK_MONOTONIC timer
    waits its full time on the container's clock, which stopped. A timerfd cancelled when the
    wall clock is set keeps that flag."""
    name = "timers"
    host.migctl("run", name, "--", "python3", "-c", TIMER_PROGRAM)
    host.wait_for(lambda: "armed" in logs(host, name), 20, "the timers")
    _, m0, w0 = next(l for l in logs(host, name).splitlines() if l.startswith("armed")).split()
    m0, w0 = float(m0), float(w0)
    time.sleep(1.0)
    checkpoint(host, name)
    host.wait_for(lambda: entry(host, name)["state"] == "checkpointed", 10, "the kill")
    assert "fired" not in logs(host, name)
    time.sleep(4.0)  # longer than any of them had left
    w_restore = time.time()
    r = restore(host, name)
    assert r["own_clocks"] is True

    def fired():
        return {n: (float(m), float(w)) for _, n, m, w in
                (l.split() for l in logs(host, name).splitlines() if l.startswith("fired"))}

    host.wait_for(lambda: len(fired()) == 5 - 1, 20, "four timers to fire")
    f = fired()
    for n in ("boot", "real", "posix-real"):
        # Due while it was down: right after the restore, not 3 s later.
        assert f[n][1] - w_restore < 1.5, (n, f[n], w_restore)
    # The container's monotonic clock stopped: 4 s on it, 3 of them after the restore.
    assert 3.9 < f["mono"][0] - m0 < 5.5, (f["mono"], m0)
    assert f["mono"][1] - w_restore > 2.5, (f["mono"], w_restore)
    assert f["mono"][1] - w0 > 7.5
    pid = entry(host, name)["pid"]
    flags = {}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        info = open(f"/proc/{pid}/fdinfo/{fd}").read()
        if "clockid: 0" in info and "settime flags" in info:
            flags[int(fd)] = info.split("settime flags:")[1].split()[0]
    assert "03" in flags.values() or "3" in {v.lstrip("0") for v in flags.values()}, flags


def test_missing_file_refused_at_restore(host):
    host.run(["sh", "-c", "mkdir -p /var/lib/migrd/data && echo hi > /var/lib/migrd/data/f"])
    host.migctl("run", "keepsfile", "--", "sh", "-c",
                "exec 7</var/lib/migrd/data/f; exec sleep 1000")
    time.sleep(0.5)
    checkpoint(host, "keepsfile")
    host.run(["rm", "/var/lib/migrd/data/f"])
    cp = host.migctl_raw("restore", "keepsfile", "--from", image("keepsfile"), timeout=60)
    assert cp.returncode != 0
    assert "pid 1 fd 7: /var/lib/migrd/data/f no longer exists" in cp.stderr, cp.stderr
    assert entry(host, "keepsfile")["state"] == "checkpointed"
    host.run(["sh", "-c", "echo hi > /var/lib/migrd/data/f"])
    assert restore(host, "keepsfile")["pid"] > 0


def test_unreaped_children_keep_their_status(host):
    # Two children end (exit 7, SIGTERM) before the checkpoint; the parent reaps them only
    # after the restore, and must get the same statuses and pids.
    prog = ("import os, signal, sys, time\n"
            "a = os.fork()\n"
            "if a == 0: os._exit(7)\n"
            "b = os.fork()\n"
            "if b == 0:\n"
            "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(60)\n"
            "time.sleep(0.5)\n"
            "print('ready', a, b, flush=True)\n"
            "while not os.path.exists('/tmp/reap-now'): time.sleep(0.05)\n"
            "print('reaped', os.waitpid(a, 0), os.waitpid(b, 0), flush=True)\n"
            "time.sleep(1000)\n")
    host.run(["rm", "-f", "/tmp/reap-now"])
    host.migctl("run", "parent", "--", "python3", "-c", prog)
    host.wait_for(lambda: "ready" in logs(host, "parent"), 20, "the children to end")
    r = kill_and_restore(host, "parent")
    assert r["processes"] == 1
    host.run(["touch", "/tmp/reap-now"])
    host.wait_for(lambda: "reaped" in logs(host, "parent"), 10, "the parent to reap")
    assert "reaped (2, 1792) (3, 15)" in logs(host, "parent"), logs(host, "parent")


UNIX_SERVER = r"""
import os, socket, time
path = "/run/ct-unix.sock"
srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(4)
if os.fork() == 0:
    c = socket.socket(socket.AF_UNIX); c.connect(path)
    i = 0
    while True:
        c.sendall(b"ping %d\n" % i); i += 1; time.sleep(0.05)
a, _ = srv.accept()
srv.settimeout(0.05)
f = a.makefile("rb")
want = 0
while True:
    line = f.readline().decode().split()
    if int(line[1]) != want:
        print("FAIL ping", line, "expected", want, flush=True)
    want += 1
    print("OK", want, flush=True)
    try:
        x, _ = srv.accept(); x.sendall(b"hello\n"); x.close()
    except socket.timeout:
        pass
"""


def test_unix_listener_and_pair(host):
    host.migctl("run", "unix", "--", "python3", "-c", UNIX_SERVER)
    host.wait_for(lambda: last_ok(host, "unix") > 5, 20, "the pings")
    kill_and_restore(host, "unix")
    assert_healthy(host, "unix", last_ok(host, "unix"), more=10)
    # The listener has its name back: a new client from outside the container is served.
    out = host.run(["python3", "-c", "import socket; s = socket.socket(socket.AF_UNIX); "
                    "s.connect('/run/ct-unix.sock'); print(s.recv(16).decode())"]).stdout
    assert out.strip() == "hello"
