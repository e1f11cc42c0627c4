#!/usr/bin/python3
"""VM live migration between two libvirt hosts on this machine: libvirt's native migration,
the baseline that migrd-carried migration is measured against.

Builds a 2-host test cluster with a libvirtd per host (tests/integration/migrd_cluster.py),
boots the test guest (tests/fixtures/guest, memory filled with a realistic mix) under TCG,
and moves it back and forth N times per case: idle and rewriting 20 MiB/s, on the unlimited
veth and with both hosts' links limited to 1 Gbit/s by `tc tbf`. Every move is checked: the
guest's counter goes on and every page verifies on the destination. Per case: total time
(the `virsh migrate` call), downtime (libvirt's "Total downtime"), bytes on the wire (the
source's eth0), medians and ranges.

migrd-carried rows (plain, zstd, TLS, QEMU's multifd zstd) join the table with the migration
through migrd's transport; this script measures only what exists.

    sudo bench/vm/vm-bench.py [--runs 5] [--mem 512] [--json]
    sudo bench/vm/vm-bench.py --smoke        # ctest bench-smoke-vm: 1 move, 128 MiB, idle
"""

import argparse
import json
import re
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from migrd_cluster import Cluster  # noqa: E402
from migrd_host import default_build_dir  # noqa: E402
import vm_guest  # noqa: E402

GUEST = None  # the test guest of the build (--build-dir)


def domain_xml(name, mem_mib, fill, rate):
    return vm_guest.domain_xml(name, GUEST, mem_mib=mem_mib, fill=fill, rate=rate, mix=True)


def ticks(h, name):
    return vm_guest.ticks(h, name)


def serial_tail(h, name, n=8):
    path = h.path("log", "libvirt", "qemu", f"{name}-serial.log")
    return "".join(open(path, errors="replace").readlines()[-n:]) if os.path.exists(path) else ""


def tx_bytes(h):
    out = h.run(["ip", "-s", "-j", "link", "show", "eth0"]).stdout
    return json.loads(out)[0]["stats64"]["tx"]["bytes"]


def set_limit(hosts, rate):
    for h in hosts:
        h.run(["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
        if rate:
            h.run(["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate,
                   "burst", "256kb", "latency", "50ms"])


def downtime_ms(h, name):
    """libvirt's figure, from the completed job's statistics on the destination."""
    cp = h.virsh("domjobinfo", name, "--completed", check=False)
    m = re.search(r"Total downtime:\s+(\d+)\s*ms", cp.stdout)
    if not m:
        raise SystemExit(f"vm-bench: no downtime in domjobinfo on {h.name}: {cp.stdout}")
    return int(m.group(1))


def move(src, dst, name):
    """One native live migration src -> dst; returns (seconds, downtime ms, wire bytes)."""
    before_ticks = ticks(src, name)[-1]
    tx0 = tx_bytes(src)
    t0 = time.monotonic()
    src.virsh("migrate", "--live", "--p2p", name, f"qemu+tcp://{dst.address}/system",
              timeout=600)
    took = time.monotonic() - t0
    wire = tx_bytes(src) - tx0
    down = downtime_ms(dst, name)
    # The guest goes on where it was; its page checks say whether the move damaged it.
    # The counters restart on each host's log: compare with what the source said last.
    dst.wait_for(lambda: any(t[0] >= before_ticks[0] + 5 for t in ticks(dst, name)), 60,
                 "the guest to tick on the destination")
    after = [t for t in ticks(dst, name) if t[0] > before_ticks[0]]
    damaged = any(t[3] > before_ticks[3] for t in after) or after[-1][1] < before_ticks[1]
    if damaged:
        print(f"vm-bench: {src.name} -> {dst.name}: the guest found damaged pages after the "
              f"move: before {before_ticks}, after {after[-2:]}\n{serial_tail(dst, name)}",
              file=sys.stderr, flush=True)
    return took, down, wire, damaged


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mem", type=int, default=512, help="guest memory, MiB")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--build-dir", default=None, help="the build with the test guest")
    args = ap.parse_args()
    global GUEST
    build = os.path.abspath(args.build_dir or default_build_dir())
    GUEST = vm_guest.guest_path(build)
    if args.smoke:
        args.runs, args.mem = 1, 128
    # The smoke run stays idle: QEMU 7.2's TCG can damage guests that write during the move
    # (see the table in bench/README.md), and CI must not fail on QEMU's account.
    cases = [("unlimited", None, "idle", 0)]
    if not args.smoke:
        cases += [("unlimited", None, "20 MiB/s", 20), ("1 Gbit/s", "1gbit", "idle", 0),
                  ("1 Gbit/s", "1gbit", "20 MiB/s", 20)]
    fill = args.mem - 64
    rows = []
    with Cluster(2, build_dir=build, libvirt=True, migrd=False) as c:
        h1, h2 = c["h1"], c["h2"]
        for link, rate, load, dirty in cases:
            set_limit(c.hosts, rate)
            name = f"bench{len(rows)}"
            with open(h1.path("lib", "libvirt", f"{name}.xml"), "w") as f:
                f.write(domain_xml(name, args.mem, fill, dirty))
            h1.virsh("create", f"/var/lib/libvirt/{name}.xml")
            h1.wait_for(lambda: len(ticks(h1, name)) >= 2, 120, "the guest to fill its memory")
            runs, where = [], (h1, h2)
            for _ in range(args.runs):
                runs.append(move(where[0], where[1], name))
                where = (where[1], where[0])
            where[0].virsh("destroy", name)
            rows.append({"link": link, "load": load, "runs": runs})
            print(f"vm-bench: {link}, {load}: {[round(r[0], 2) for r in runs]} s",
                  file=sys.stderr, flush=True)
        if args.smoke and any(x[3] for r in rows for x in r["runs"]):
            print("vm-bench: the guest was damaged by a move", file=sys.stderr)
            return 1
        set_limit(c.hosts, None)
    if args.json:
        print(json.dumps({"mem_mib": args.mem, "rows": rows}, indent=1))
        return 0
    print(f"native libvirt live migration, test guest of {args.mem} MiB (TCG), "
          f"{args.runs} moves per row (median, min-max)")
    print(f"{'link':10} {'guest':9} {'total s':>16} {'downtime ms':>16} {'wire MiB':>16} "
          f"{'damaged':>8}")
    for r in rows:
        cols = []
        for k, scale in ((0, 1), (1, 1), (2, 1 / 1048576)):
            v = [x[k] * scale for x in r["runs"]]
            cols.append(f"{statistics.median(v):7.2f} ({min(v):.1f}-{max(v):.1f})")
        damaged = sum(1 for x in r["runs"] if x[3])
        print(f"{r['link']:10} {r['load']:9} {cols[0]:>16} {cols[1]:>16} {cols[2]:>16} "
              f"{damaged:>4}/{len(r['runs'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
