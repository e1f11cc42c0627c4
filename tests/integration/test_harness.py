"""Tests of the cluster harness itself (corosync only, no migrd).

The corosync3 tests share one cluster and run in file order: form, kill one, kill two,
start them again. The rest check that nothing of a run survives teardown, an interrupted
run (SIGINT during start, SIGTERM while running) or a crashed one (SIGKILL + cleanup_stale).
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import nsutil
from migrd_cluster import STALE_GLOB_DIR, Cluster

HERE = os.path.dirname(os.path.abspath(__file__))


def _link_state(cluster, host):
    out = nsutil.sh(["ip", "-n", cluster.bridge_ns, "-br", "link", "show", host.veth]).stdout
    return out.split()[1]


def test_three_hosts_form_a_quorate_cluster(corosync3):
    c = corosync3
    print(f"\ncorosync formed in {c.timings['corosync_formed_s']:.2f} s "
          f"(namespaces {c.timings['namespaces_s']:.2f} s)")
    for h in c:
        q = h.quorum()
        assert q.quorate and q.members == [1, 2, 3] and q.nodeid == h.nodeid, q.text
        # each host sees its own config through its private mount namespace
        conf = h.run(["cat", "/etc/migrd/migrd.conf"]).stdout
        assert f"name = {h.name}\naddress = {h.address}\n" in conf
        assert h.run(["cat", "/proc/net/fib_trie"]).stdout.count(h.address) >= 1
        assert h.procs["corosync"].pid in h.pids()
    # /run is the host's own: corosync's lock file is in H/run, one per host
    assert all(os.path.exists(h.path("run", "corosync.pid")) for h in c)


def test_killing_one_host_leaves_two_quorate(corosync3):
    h1, h2, h3 = corosync3.hosts
    h3.run(["sh", "-c", "echo kept > /var/lib/migrd/marker"])
    corosync_pid = h3.procs["corosync"].pid
    t0 = time.monotonic()
    h3.kill()
    assert h3.pids() == set()
    assert not os.path.exists(f"/proc/{corosync_pid}"), "killed corosync was not reaped"
    assert _link_state(corosync3, h3) == "DOWN"
    h1.wait_quorum(members=[1, 2], quorate=True)
    h2.wait_quorum(members=[1, 2], quorate=True)
    print(f"\nsurvivors saw h3 gone after {time.monotonic() - t0:.2f} s "
          f"(token {corosync3.token_ms} ms)")


def test_killing_a_second_host_leaves_the_survivor_not_quorate(corosync3):
    h1, h2, _ = corosync3.hosts
    t0 = time.monotonic()
    h2.kill()
    q = h1.wait_quorum(members=[1], quorate=False)
    assert not q.quorate
    print(f"\nh1 alone and not quorate after {time.monotonic() - t0:.2f} s")


def test_starting_hosts_again_restores_quorum(corosync3):
    c = corosync3
    h1, h2, h3 = c.hosts
    t0 = time.monotonic()
    h3.start()
    c.wait_formed([h1, h3])
    print(f"\nh1+h3 quorate again {time.monotonic() - t0:.2f} s after h3.start()")
    assert _link_state(c, h3) == "UP"
    assert h3.run(["cat", "/var/lib/migrd/marker"]).stdout == "kept\n", "state dir not kept"
    h2.start()
    c.wait_formed()
    for h in c:
        assert h.quorum().members == [1, 2, 3]


# --- nothing survives -----------------------------------------------------------------------


def _snapshot(info):
    """What a run made, taken while it is up; fed to _assert_gone after it ends."""
    pids = [pid for h in info["hosts"] for pid in h["pids"].values()]
    assert pids, "no daemons recorded"
    netns = [h["netns"] for h in info["hosts"]] + [info["bridge_ns"]]
    for ns in netns:
        assert ns in nsutil.netns_list()
    assert nsutil.mounts_under(info["workdir"])
    return {"tag": info["tag"], "workdir": info["workdir"], "pids": pids, "netns": netns,
            "inodes": [nsutil.ns_inode(f"/run/netns/{ns}") for ns in netns]}


def _assert_gone(snap, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        left = {
            "netns": [ns for ns in nsutil.netns_list() if ns.startswith(snap["tag"] + "-")],
            "mounts": [m for m, _ in nsutil.mounts() if snap["tag"] in m
                       or (snap.get("workdir") and m.startswith(snap["workdir"]))],
            "workdirs": [w for w in [snap.get("workdir")] if w and os.path.exists(w)]
            + glob.glob(os.path.join(STALE_GLOB_DIR, snap["tag"] + "-*")),
            "processes": [p for p in snap["pids"] if os.path.exists(f"/proc/{p}")]
            + [p for i in snap["inodes"] for p in nsutil.pids_in_netns(i)],
        }
        if not any(left.values()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"leftovers of {snap['tag']}: {left}")
        time.sleep(0.1)


def test_teardown_removes_everything_two_node(make_cluster):
    c = make_cluster(2, migrd=False)           # two_node: 1
    for h in c:
        assert h.quorum().members == [1, 2]
    assert "two_node: 1" in c.corosync_conf()
    snap = _snapshot(c.info())
    c.stop()
    _assert_gone(snap)
    c.stop()                                    # idempotent


CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from migrd_cluster import Cluster
c = Cluster(2, migrd=False)
print(json.dumps({"tag": c.tag}), flush=True)
with c:
    print(json.dumps(c.info()), flush=True)
    time.sleep(600)
"""


def _child():
    nsutil.become_subreaper()       # the child's orphans come to us, not to PID 1 (no reaper here)
    # SIGINT may be ignored here (background job of a script); the child must see it.
    return subprocess.Popen([sys.executable, "-c", CHILD, HERE], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _end_child(p):
    """Kills a child that did not end by itself and removes what it left."""
    if p.poll() is None:
        p.kill()
        p.wait()
        Cluster.cleanup_stale()


def _read_json_line(p):
    line = p.stdout.readline()
    assert line, f"child exited early: {p.wait()} {p.stderr.read()}"
    return json.loads(line)


def test_sigint_during_start_cleans_up():
    p = _child()
    try:
        tag = _read_json_line(p)["tag"]
        # interrupt while corosync is still forming: after the last host's namespace exists
        deadline = time.monotonic() + 10
        while f"{tag}-h2" not in nsutil.netns_list():
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.01)
        inodes = [nsutil.ns_inode(f"/run/netns/{tag}-{n}") for n in ("br", "h1", "h2")]
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        assert p.wait(30) != 0
        assert "KeyboardInterrupt" in p.stderr.read()
    finally:
        _end_child(p)
    _assert_gone({"tag": tag, "pids": [], "inodes": [i for i in inodes if i]})


def test_sigterm_while_running_cleans_up():
    p = _child()
    try:
        _read_json_line(p)
        snap = _snapshot(_read_json_line(p))
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) != 0
    finally:
        _end_child(p)
    _assert_gone(snap)


def test_cleanup_stale_removes_a_crashed_run():
    p = _child()
    try:
        _read_json_line(p)
        snap = _snapshot(_read_json_line(p))
    finally:
        p.kill()                    # no chance to clean up
        p.wait()
    # its daemons die with it (PR_SET_PDEATHSIG) and are reparented to us, the subreaper
    nsutil.kill_and_reap(snap["pids"], {})
    assert snap["netns"][0] in nsutil.netns_list(), "nothing left to clean: test is moot"
    removed = Cluster.cleanup_stale()
    assert any(snap["workdir"] in r for r in removed), removed
    _assert_gone(snap)
