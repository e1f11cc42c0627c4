#!/usr/bin/python3
"""VM live migration between two libvirt hosts on this machine: migrd-carried migration
(`migctl move`: plain, zstd, TLS) against libvirt's native migration measured in the same run,
and QEMU's own multifd zstd compression as one more row.

Builds a 2-host test cluster (tests/integration/migrd_cluster.py) with migrd, certificates and
a libvirtd per host, boots the test guest (tests/fixtures/guest, memory filled with a realistic
mix) under TCG, and moves it N times per row: idle and rewriting 20 MiB/s, on the unlimited
veth and with both hosts' links limited to 1 Gbit/s by `tc tbf`. The moves go in rounds: in
each, every method in turn (the order rotates) boots a fresh guest on h1 and moves it to h2
and back, so the methods share the machine's drift and the directions. Every move is checked:
the guest's counter goes on and every page verifies on the destination. Per row: total time
(the `virsh migrate` or `migctl move` call), libvirt's own time of the job ("Time elapsed":
the total less what the caller does around the job), the CPU time both migrds used during the
move (all threads, user and system: what carrying the stream costs), downtime (libvirt's
"Total downtime" on the destination), bytes on the wire (the source's eth0, both directions of
every connection it sends on), medians and ranges, the ratios of the medians to native's and
the median of the ratios of paired moves (move i against native's move i: same round, same
direction).

    sudo bench/vm/vm-bench.py [--runs 5] [--mem 512] [--methods native,plain,...] [--json]
    sudo bench/vm/vm-bench.py --smoke        # ctest bench-smoke-vm: 128 MiB, idle, 1 move each
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
from migrd_host import WaitTimeout, default_build_dir  # noqa: E402
import vm_guest  # noqa: E402

GUEST = None  # the test guest of the build (--build-dir)


def domain_xml(name, mem_mib, fill, rate, multifd_zstd=False):
    xml = vm_guest.domain_xml(name, GUEST, mem_mib=mem_mib, fill=fill, rate=rate, mix=True)
    if multifd_zstd:
        # libvirt 9.0 cannot ask for zstd itself (it came in 9.4); QEMU 7.2 can, through
        # its command line, on multifd (parallel) migrations.
        xml = re.sub(r"<domain type='(\w+)'>", r"<domain type='\1' xmlns:qemu="
                     "'http://libvirt.org/schemas/domain/qemu/1.0'>", xml, count=1)
        xml = xml.replace("</domain>", "  <qemu:commandline>\n    <qemu:arg value='-global'/>"
                          "\n    <qemu:arg value='migration.multifd-compression=zstd'/>\n"
                          "  </qemu:commandline>\n</domain>")
    return xml


# name: (how, flags). native and qemu-zstd are libvirt's own connections (virsh); the rest
# are `migctl move` with migrd carrying the stream.
METHODS = {
    "native": ("virsh", []),
    "plain": ("migctl", ["--compress", "off", "--encrypt", "no"]),
    "zstd": ("migctl", ["--compress", "auto", "--encrypt", "no"]),
    "zstd-3": ("migctl", ["--compress", "3", "--encrypt", "no"]),
    "tls": ("migctl", ["--compress", "off", "--encrypt", "yes"]),
    "tls+zstd": ("migctl", ["--compress", "auto", "--encrypt", "yes"]),
    "qemu-zstd": ("virsh", ["--parallel", "--parallel-connections", "2"]),
}


def ticks(h, name):
    return vm_guest.ticks(h, name)


def serial_tail(h, name, n=8):
    path = h.path("log", "libvirt", "qemu", f"{name}-serial.log")
    return "".join(open(path, errors="replace").readlines()[-n:]) if os.path.exists(path) else ""


def tx_bytes(h):
    out = h.run(["ip", "-s", "-j", "link", "show", "eth0"]).stdout
    return json.loads(out)[0]["stats64"]["tx"]["bytes"]


def migrd_cpu(hosts):
    """CPU seconds both migrds have used so far (every thread, user and system)."""
    total = 0
    for h in hosts:
        pid = h.procs["migrd"].pid
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def set_limit(hosts, rate):
    for h in hosts:
        h.run(["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
        if rate:
            h.run(["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate,
                   "burst", "256kb", "latency", "50ms"])


def completed_job(h, name):
    """libvirt's figures, from the completed job's statistics on the destination: the downtime
    and the job's own time (ms), which leaves out what the caller does around the job."""
    cp = h.virsh("domjobinfo", name, "--completed", check=False)
    m = re.search(r"Total downtime:\s+(\d+)\s*ms", cp.stdout)
    e = re.search(r"Time elapsed:\s+(\d+)\s*ms", cp.stdout)
    if not m or not e:
        raise SystemExit(f"vm-bench: no downtime in domjobinfo on {h.name}: {cp.stdout}")
    return int(m.group(1)), int(e.group(1))


def move(src, dst, name, method):
    """One live migration src -> dst; returns (seconds, downtime ms, wire bytes, damaged:
    False, True, or "lost" when the guest stopped, zstd level, seconds of libvirt's job, CPU
    seconds of both migrds)."""
    how, flags = METHODS[method]
    level = None
    before_ticks = ticks(src, name)[-1]
    tx0 = tx_bytes(src)
    cpu0 = migrd_cpu((src, dst))
    t0 = time.monotonic()
    if how == "virsh":
        src.virsh("migrate", "--live", "--p2p", *flags, name,
                  f"qemu+tcp://{dst.address}/system", timeout=600)
    else:
        r = src.migctl("move", name, dst.name, *flags, timeout=600)
        level = r["compress_level"]
        # What the destination's QEMU was handed must be what the source's sent.
        if r.get("stream_check") == "differ":
            raise SystemExit(f"vm-bench: {method} {src.name} -> {dst.name}: the stream "
                             f"reached the destination altered: {r}")
        if r.get("stream_check") != "identical":
            print(f"vm-bench: {method} {src.name} -> {dst.name}: stream not verified end to "
                  f"end ({r.get('stream_check')})", file=sys.stderr, flush=True)
    took = time.monotonic() - t0
    cpu = migrd_cpu((src, dst)) - cpu0
    wire = tx_bytes(src) - tx0
    down, job_ms = completed_job(dst, name)
    # The guest goes on where it was; its page checks say whether the move damaged it.
    # The counters restart on each host's log: compare with what the source said last.
    try:
        dst.wait_for(lambda: any(t[0] >= before_ticks[0] + 5 for t in ticks(dst, name)), 60,
                     "the guest to tick on the destination")
    except WaitTimeout:
        # Damaged beyond its own checks (QEMU 7.2 TCG, as native moves are too): the move
        # itself completed and counts; the caller starts a fresh guest.
        print(f"vm-bench: {method} {src.name} -> {dst.name}: the guest stopped after the "
              f"move (state {dst.virsh('domstate', name, check=False).stdout.strip()!r})\n"
              f"{serial_tail(dst, name)}", file=sys.stderr, flush=True)
        return took, down, wire, "lost", level, job_ms / 1000, cpu
    after = [t for t in ticks(dst, name) if t[0] > before_ticks[0]]
    damaged = any(t[3] > before_ticks[3] for t in after) or after[-1][1] < before_ticks[1]
    if damaged:
        print(f"vm-bench: {method} {src.name} -> {dst.name}: the guest found damaged pages "
              f"after the move: before {before_ticks}, after {after[-2:]}\n"
              f"{serial_tail(dst, name)}", file=sys.stderr, flush=True)
    return took, down, wire, damaged, level, job_ms / 1000, cpu


def start_guest(h, name, method, mem, fill, dirty):
    with open(h.path("lib", "libvirt", f"{name}.xml"), "w") as f:
        f.write(domain_xml(name, mem, fill, dirty, method == "qemu-zstd"))
    h.virsh("create", f"/var/lib/libvirt/{name}.xml")
    h.wait_for(lambda: len(ticks(h, name)) >= 2, 120, "the guest to fill its memory")
    if METHODS[method][0] == "migctl":
        h.migctl("vm", "adopt", name)


def med(runs, k, scale=1.0):
    return statistics.median(x[k] * scale for x in runs)


def paired(runs, base):
    """The median of the ratios of move i to native's move i (same round, same direction)."""
    return statistics.median(x[0] / b[0] for x, b in zip(runs, base))


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mem", type=int, default=512, help="guest memory, MiB")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma-separated: " + ", ".join(METHODS))
    ap.add_argument("--links", default="unlimited,1gbit", help="unlimited, 1gbit or both")
    ap.add_argument("--loads", default="idle,20", help="idle, 20 (MiB/s of rewrites) or both")
    ap.add_argument("--build-dir", default=None, help="the build with the test guest")
    args = ap.parse_args()
    global GUEST
    build = os.path.abspath(args.build_dir or default_build_dir())
    GUEST = vm_guest.guest_path(build)
    methods = args.methods.split(",")
    if any(m not in METHODS for m in methods) or "native" not in methods:
        ap.error(f"--methods: a list of {', '.join(METHODS)}, with native (the baseline)")
    if args.smoke:
        args.runs, args.mem, methods = 1, 128, ["native", "plain", "tls+zstd"]
    # The smoke run stays idle: QEMU 7.2's TCG can damage guests that write during the move
    # (see the table in bench/README.md), and CI must not fail on QEMU's account.
    cases = [("unlimited", None, "idle", 0)]
    if not args.smoke:
        links = {"unlimited": ("unlimited", None), "1gbit": ("1 Gbit/s", "1gbit")}
        loads = {"idle": ("idle", 0), "20": ("20 MiB/s", 20)}
        try:
            cases = [links[k] + loads[w] for k in args.links.split(",")
                     for w in args.loads.split(",")]
        except KeyError as e:
            ap.error(f"unknown link or load {e}")
    fill = args.mem - 64
    rows = []
    serial = 0
    with Cluster(2, build_dir=build, libvirt=True, migrd=True, pki=True) as c:
        h1, h2 = c["h1"], c["h2"]
        for link, rate, load, dirty in cases:
            set_limit(c.hosts, rate)
            # Rounds: every method in turn moves a fresh guest h1 -> h2 and back, the order
            # rotating each round. So every method meets the machine in the same states
            # (the direction of a move alone can change its time by 1.7x here), and move i of
            # every row is paired with native's move i of the same round and direction.
            runs = {m: [] for m in methods}
            for rnd in range((args.runs + 1) // 2):
                k = rnd % len(methods)
                for method in methods[k:] + methods[:k]:
                    n = min(2, args.runs - len(runs[method]))
                    name, where = f"bench{serial}", (h1, h2)
                    serial += 1
                    start_guest(h1, name, method, args.mem, fill, dirty)
                    for i in range(n):
                        runs[method].append(move(where[0], where[1], name, method))
                        where = (where[1], where[0])
                        if runs[method][-1][3] == "lost" and i + 1 < n:
                            for h in c.hosts:
                                h.virsh("destroy", name, check=False)
                            name = f"bench{serial}"
                            serial += 1
                            start_guest(where[0], name, method, args.mem, fill, dirty)
                    where[0].virsh("destroy", name, check=False)
            for method in methods:
                rows.append({"link": link, "load": load, "method": method,
                             "runs": runs[method]})
                print(f"vm-bench: {link}, {load}, {method}: "
                      f"{[round(r[0], 2) for r in runs[method]]} s, "
                      f"libvirt's job {[round(r[5], 2) for r in runs[method]]} s, "
                      f"migrd CPU {[round(r[6], 2) for r in runs[method]]} s, "
                      f"{[round(r[2] / 1048576) for r in runs[method]]} MiB, zstd levels "
                      f"{[r[4] for r in runs[method]]}",
                      file=sys.stderr, flush=True)
        set_limit(c.hosts, None)
    damaged = sum(1 for r in rows for x in r["runs"] if x[3])
    if args.json:
        print(json.dumps({"mem_mib": args.mem, "rows": rows}, indent=1))
    else:
        print_table(args, rows)
    if args.smoke and damaged:
        print("vm-bench: the guest was damaged by a move", file=sys.stderr)
        return 1
    return 0


def print_table(args, rows):
    mode = "KVM" if vm_guest.accel(GUEST) == "kvm" else "TCG"
    print(f"VM live migration, test guest of {args.mem} MiB ({mode}, {args.mem - 64} MiB filled "
          f"with a realistic mix), {args.runs} moves per row: median (min-max); "
          f"ratios to native in the same case")
    print(f"{'link':10} {'guest':9} {'method':10} {'total s':>16} {'job s':>6} {'migrd cpu s':>11} "
          f"{'downtime ms':>16} "
          f"{'wire MiB':>16} {'time/nat':>8} {'paired':>8} {'wire/nat':>8} {'damaged':>8}")
    for r in rows:
        base = next(b for b in rows if b["link"] == r["link"] and b["load"] == r["load"]
                    and b["method"] == "native")
        cols = []
        for k, scale in ((0, 1), (1, 1), (2, 1 / 1048576)):
            v = [x[k] * scale for x in r["runs"]]
            cols.append(f"{statistics.median(v):7.2f} ({min(v):.1f}-{max(v):.1f})")
        damaged = sum(1 for x in r["runs"] if x[3])
        lost = sum(1 for x in r["runs"] if x[3] == "lost")
        print(f"{r['link']:10} {r['load']:9} {r['method']:10} {cols[0]:>16} "
              f"{med(r['runs'], 5):6.2f} {med(r['runs'], 6):11.2f} {cols[1]:>16} "
              f"{cols[2]:>16} {med(r['runs'], 0) / med(base['runs'], 0):7.2f}x "
              f"{paired(r['runs'], base['runs']):7.2f}x "
              f"{med(r['runs'], 2) / med(base['runs'], 2):7.2f}x "
              f"{damaged:>4}/{len(r['runs'])}" + (f" ({lost} stopped)" if lost else ""))


if __name__ == "__main__":
    sys.exit(main())
