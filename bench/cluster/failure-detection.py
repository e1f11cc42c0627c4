#!/usr/bin/python3
"""How fast survivors see a crashed host: migrd's view against corosync's own, in one run.

Builds a 3-host test cluster (tests/integration/migrd_cluster.py), then N times: crash h3
(link cut + SIGKILL of every process), poll h1's `migctl hosts` and h2's
`corosync-quorumtool` every 20 ms until each shows h3 gone, bring h3 back, wait for the
cluster to re-form. Prints a table with the median and range of both, and their ratio.

    sudo bench/cluster/failure-detection.py [--runs 5] [--token-ms 1000]
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from migrd_cluster import Cluster  # noqa: E402


def h3_offline_migrd(h):
    hosts = json.loads(h.migctl_raw("hosts").stdout)["hosts"]
    return not next(x for x in hosts if x["name"] == "h3")["online"]


def h3_gone_corosync(h):
    q = h.quorum()
    return 3 not in q.members


def formed(c):
    for h in c:
        st = h.status()
        hosts = h.hosts()
        if not (st["synced"] and st["quorate"] and len(hosts) == 3
                and all(x["online"] for x in hosts)):
            return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--token-ms", type=int, default=1000)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()

    migrd_s, corosync_s = [], []
    with Cluster(3, build_dir=args.build_dir, token_ms=args.token_ms) as c:
        c.wait_for(lambda: formed(c), 30, "cluster formed")
        for i in range(args.runs):
            t0 = time.monotonic()
            c["h3"].kill()
            seen = {}
            while len(seen) < 2 and time.monotonic() - t0 < 30:
                now = time.monotonic() - t0
                if "migrd" not in seen and h3_offline_migrd(c["h1"]):
                    seen["migrd"] = now
                if "corosync" not in seen and h3_gone_corosync(c["h2"]):
                    seen["corosync"] = now
                time.sleep(0.02)
            if len(seen) < 2:
                sys.exit(f"run {i + 1}: h3 not seen gone within 30 s: {seen}")
            migrd_s.append(seen["migrd"])
            corosync_s.append(seen["corosync"])
            print(f"run {i + 1}: corosync {seen['corosync']:.2f} s, migrd {seen['migrd']:.2f} s",
                  flush=True)
            c["h3"].start()
            c.wait_for(lambda: formed(c), 60, "cluster re-formed")

    def row(name, v):
        return (f"| {name:<38} | {statistics.median(v):>8.2f} | {min(v):>6.2f} | {max(v):>6.2f} |"
                f" {statistics.median(v) / statistics.median(corosync_s):>5.2f}x |")
    print(f"\nFailure detection, 3 hosts, token {args.token_ms} ms, {args.runs} runs "
          f"(seconds from the crash)\n")
    print(f"| {'view':<38} | {'median':>8} | {'min':>6} | {'max':>6} |  ratio |")
    print(f"|{'-' * 40}|{'-' * 10}|{'-' * 8}|{'-' * 8}|--------|")
    print(row("corosync membership (quorumtool, h2)", corosync_s))
    print(row("migrd `hosts` shows it offline (h1)", migrd_s))


if __name__ == "__main__":
    main()
