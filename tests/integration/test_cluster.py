"""Cluster membership as migrd reports it: three hosts form, hosts die and come back.

Real corosync (knet, token 1000 ms) and real migrd daemons, one per test host."""

import os
import time


def by_name(hosts):
    return {h["name"]: h for h in hosts}


def formed(host, n=3):
    """The host sees n hosts online and quorate, each with metrics, and is synced."""
    hosts = host.hosts()
    st = host.status()
    ok = (len(hosts) == n and st["synced"] and st["quorate"]
          and all(h["online"] and h["quorate"] and h["metrics"] for h in hosts))
    return (hosts, st) if ok else None


def wait_formed(cluster, n=3, timeout=20):
    for h in cluster:
        if h.up:
            h.wait_for(lambda h=h: formed(h, n), timeout, f"{n} hosts online and quorate")


def test_three_hosts_form(cluster3):
    wait_formed(cluster3)
    statuses = {h.name: h.status() for h in cluster3}
    # One state, one coordinator, agreed by all.
    assert len({s["state_hash"] for s in statuses.values()}) == 1, statuses
    assert len({s["epoch"] for s in statuses.values()}) == 1, statuses
    for name, s in statuses.items():
        assert s["host"] == name
        assert s["nodeid"] == int(name[1:])
        assert s["corosync"] == "connected"
        assert s["members"] == [1, 2, 3]
        assert s["coordinator"] == {"nodeid": 1, "name": "h1"}
        assert s["epoch"] >= 3          # each host registered itself once
        assert s["workloads"] == 0

    psi_here = os.path.exists("/proc/pressure/cpu")
    for h in cluster3:
        hosts = h.hosts()
        assert [x["name"] for x in hosts] == ["h1", "h2", "h3"]
        assert [x["nodeid"] for x in hosts] == [1, 2, 3]
        assert [x["local"] for x in hosts] == [x["name"] == h.name for x in hosts]
        assert [x["coordinator"] for x in hosts] == [True, False, False]
        for x in hosts:
            assert x["address"] == cluster3[x["name"]].address
            m = x["metrics"]
            assert m["mem_total"] > 0 and 0 < m["mem_used"] <= m["mem_total"]
            assert m["n_cpus"] >= 1
            assert -1 <= m["cpu_busy_pct"] <= 100
            assert len(m["load"]) == 3 and all(v >= 0 for v in m["load"])
            assert 0 <= m["age_ms"] < 5000
            for res in ("cpu", "memory", "io"):
                if psi_here:
                    assert m["psi"][res] is not None and 0 <= m["psi"][res]["some"] <= 100
                else:
                    assert m["psi"][res] is None

    # What an operator sees on a terminal-less pipe: a table with every host.
    text = cluster3["h2"].migctl("hosts", json=False)
    lines = text.strip().splitlines()
    assert lines[0].split()[:5] == ["NAME", "NODEID", "ONLINE", "QUORATE", "COORD"]
    assert len(lines) == 4
    assert "h2 (local)" in text
    assert "*" in lines[1]


def test_hosts_die_and_come_back(cluster3):
    c = cluster3
    wait_formed(c)
    h1, h2, h3 = c["h1"], c["h2"], c["h3"]
    before = h1.status()

    # One host crashes: the others see it offline within 5 s and stay quorate.
    t0 = time.monotonic()
    h3.kill()
    for h in (h1, h2):
        h.wait_for(lambda h=h: not by_name(h.hosts())["h3"]["online"], 5,
                   "h3 shown offline within 5 s of the kill")
    detected = time.monotonic() - t0
    print(f"\nh3 killed -> shown offline on h1 and h2 after {detected:.2f} s")
    for h in (h1, h2):
        st = h.status()
        assert st["quorate"] and st["members"] == [1, 2]
        assert st["coordinator"]["name"] == "h1"
        view = by_name(h.hosts())
        assert view["h3"]["online"] is False and view["h3"]["quorate"] is False
        assert view["h3"]["metrics"] is None
        assert view["h1"]["online"] and view["h2"]["online"]

    # A second one: the survivor has lost quorum and says so.
    h2.kill()
    h1.wait_for(lambda: h1.status()["quorate"] is False, 10, "h1 to report no quorum")
    st = h1.status()
    assert st["coordinator"] is None
    assert st["members"] == [1]
    view = by_name(h1.hosts())
    assert view["h1"]["quorate"] is False and view["h1"]["coordinator"] is False
    assert not view["h2"]["online"] and not view["h3"]["online"]

    # Both come back (state directories kept): one cluster again, one state.
    h2.start()
    h3.start()
    wait_formed(c, timeout=30)
    after = {h.name: h.status() for h in c}
    assert len({s["state_hash"] for s in after.values()}) == 1, after
    assert len({s["epoch"] for s in after.values()}) == 1, after
    # Nothing about the hosts changed, so the state did not either.
    assert after["h3"]["state_hash"] == before["state_hash"]
    assert after["h3"]["epoch"] == before["epoch"]


def test_migrd_restart_keeps_state(cluster3):
    c = cluster3
    wait_formed(c)
    before = c["h1"].status()
    rc = c["h2"].stop_migrd()
    assert rc == 0, f"migrd exited with {rc} on SIGTERM\n{c['h2'].log_tail()}"
    c["h1"].wait_for(lambda: not by_name(c["h1"].hosts())["h2"]["online"], 5,
                     "h2 offline once its migrd stopped")
    c["h2"].start_migrd()
    wait_formed(c)
    st = c["h2"].status()
    assert st["epoch"] == before["epoch"] and st["state_hash"] == before["state_hash"]
    # The local copy of the cluster state is private to root.
    assert os.stat(c["h2"].path("lib", "migrd", "state.db")).st_mode & 0o077 == 0


def test_corosync_restart_reconnects(cluster3):
    c = cluster3
    wait_formed(c)
    h2 = c["h2"]
    p = h2.procs.pop("corosync")
    p.kill()
    p.wait()
    h2.wait_for(lambda: h2.status()["corosync"] == "disconnected", 10,
                "migrd to notice corosync is gone")
    assert h2.procs["migrd"].poll() is None, "migrd must survive corosync's death"
    h2.start_corosync()
    wait_formed(c, timeout=30)
    assert h2.status()["corosync"] == "connected"
