#!/usr/bin/python3
"""Transport throughput between two test hosts: raw TCP (iperf3) against migrd sessions.

Builds a 2-host test cluster with a cluster CA (tests/integration/migrd_cluster.py). For each
link (the veth at full speed, then limited to 1 Gbit/s with tc tbf on both ends) and each
source (zeros, random, a realistic memory image: the private memory of a python3 process
holding parsed JSON), it runs, --runs times each:
  raw TCP      iperf3 -c from h1 to h2, same byte count (the baseline)
  migrd plain  peer-test --plain --level off   (authenticated, not encrypted)
  migrd TLS    peer-test --level off
  migrd plain + zstd auto   peer-test --plain --level auto   (adaptive compression)
  migrd TLS + zstd auto     peer-test --level auto           (both)
and prints one table with medians: throughput (raw bytes/s), ratio to raw TCP, bytes on the
wire, CPU seconds (both ends), chosen level.

    sudo bench/transport/transport-bench.py [--runs 5] [--size 2G] [--slow-size 512M]
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

IMAGE_MAKER = r'''
import json, os, random, sys
random.seed(7)
words = ["alpha", "beta", "gamma", "delta", "request", "user", "session", "id", "value",
         "timestamp", "status", "ok", "error", "count", "name", "address", "host"]
data = []
for i in range(int(sys.argv[2])):
    doc = {random.choice(words): random.randint(0, 10**6) for _ in range(6)}
    doc["text"] = " ".join(random.choice(words) for _ in range(12))
    doc["n"] = [random.random() for _ in range(4)]
    data.append(json.loads(json.dumps(doc)))
out = open(sys.argv[1], "wb")
mem = open("/proc/self/mem", "rb")
for line in open("/proc/self/maps"):
    f = line.split()
    lo, hi = (int(x, 16) for x in f[0].split("-"))
    if f[1].startswith("rw") and (len(f) < 6 or f[5] in ("[heap]",)) and hi - lo < 1 << 31:
        try:
            mem.seek(lo); out.write(mem.read(hi - lo))
        except OSError:
            pass
out.close()
print(os.path.getsize(sys.argv[1]))
'''


def parse_size(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(s[:-1]) * units[s[-1]]) if s[-1] in units else int(s)


def cpu_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def iperf(h1, h2, size):
    h2.spawn("iperf3", ["iperf3", "-s", "-1", "-p", "5201"])
    time.sleep(0.5)
    cp = h1.run(["iperf3", "-c", h2.address, "-p", "5201", "-n", str(size), "-J"], timeout=600)
    h2.procs.pop("iperf3").wait(10)
    j = json.loads(cp.stdout)
    end = j["end"]
    secs = end["sum_received"]["seconds"]
    cpu = (end["cpu_utilization_percent"]["host_total"] +
           end["cpu_utilization_percent"]["remote_total"]) / 100 * secs
    return {"bps": size / secs, "wire": end["sum_sent"]["bytes"], "cpu": cpu, "level": "-"}


def peer_test(h1, h2, size, source, args):
    p1, p2 = h1.procs["migrd"].pid, h2.procs["migrd"].pid
    c0 = cpu_of(p1) + cpu_of(p2)
    r = h1.migctl("peer-test", "h2", "--size", str(size), "--source", source, *args,
                  timeout=900)
    c1 = cpu_of(p1) + cpu_of(p2)
    assert r["verified"], r
    return {"bps": r["throughput_bytes_per_sec"], "wire": r["wire_bytes"], "cpu": c1 - c0,
            "level": r["level"]}


def limit(c, rate):
    for h in (c["h1"], c["h2"]):
        h.run(["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
        if rate:
            h.run(["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst",
                   "256kb", "latency", "50ms"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--size", default="2G", help="bytes per run on the full-speed link")
    ap.add_argument("--slow-size", default="512M", help="bytes per run on the 1 Gbit/s link")
    ap.add_argument("--streams", type=int, default=2)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    ap.add_argument("--links", default="full,1gbit")
    args = ap.parse_args()

    rows = []
    with Cluster(2, build_dir=args.build_dir, pki=True) as c:
        h1, h2 = c["h1"], c["h2"]
        image = h1.path("run", "image.bin")
        n = h1.run(["/usr/bin/python3", "-c", IMAGE_MAKER, "/run/image.bin", "400000"],
                   timeout=600).stdout.strip()
        print(f"memory image: {int(n) >> 20} MiB of a python3 heap", flush=True)
        # random first: its row also measures the raw TCP baseline of the link.
        sources = [("random", "random"), ("zeros", "zeros"), ("image", "/run/image.bin")]
        modes = [("raw TCP (iperf3)", None),
                 ("migrd plain", ["--plain", "--level", "off"]),
                 ("migrd plain + zstd auto", ["--plain", "--level", "auto"]),
                 ("migrd TLS", ["--level", "off"]),
                 ("migrd TLS + zstd auto", ["--level", "auto"])]
        for link in args.links.split(","):
            limit(c, None if link == "full" else link)
            size = parse_size(args.size if link == "full" else args.slow_size)
            tcp_base = None
            for sname, src in sources:
                # Modes interleaved run by run, so drift on a shared machine hits all alike.
                todo = [(m, a) for m, a in modes if a is not None or sname == "random"]
                runs = {m: [] for m, _ in todo}
                for _ in range(args.runs):
                    for mname, margs in todo:
                        if margs is None:
                            runs[mname].append(iperf(h1, h2, size))
                        else:
                            runs[mname].append(peer_test(
                                h1, h2, size, src, margs + ["--streams", str(args.streams)]))
                for mname, margs in todo:
                    rr = runs[mname]
                    med = {k: statistics.median(r[k] for r in rr) for k in ("bps", "wire", "cpu")}
                    med["level"] = rr[len(rr) // 2]["level"]
                    if margs is None:
                        tcp_base = med["bps"]
                    rows.append((link, sname if margs else "any", mname, med,
                                 med["bps"] / tcp_base, size, min(r["bps"] for r in rr),
                                 max(r["bps"] for r in rr)))
                    print(f"{link:6} {sname:6} {mname:24} {med['bps'] / 1e6:8.0f} MB/s",
                          flush=True)
        limit(c, None)
        os.unlink(image)

    print(f"\nTransport throughput, 2 test hosts on one machine (veth), {args.streams} streams, "
          f"medians of {args.runs} runs\n")
    print("| link | source | what | throughput | range | vs raw TCP | bytes on wire | CPU s | level |")
    print("|---|---|---|---:|---|---:|---:|---:|---|")
    for link, src, what, m, ratio, size, lo, hi in rows:
        print(f"| {link} | {src} | {what} | {m['bps'] / 1e6:.0f} MB/s | {lo / 1e6:.0f}-{hi / 1e6:.0f} "
              f"| {ratio:.2f}x | {m['wire'] / size * 100:.1f}% of {size >> 20} MiB "
              f"| {m['cpu']:.2f} | {m['level']} |")


if __name__ == "__main__":
    main()
