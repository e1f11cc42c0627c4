#!/usr/bin/python3
"""The README demo (scripts/demo.sh runs it after building): a 3-host cluster on this machine,
`migctl hosts` from every host, a link measured, a container checkpointed and restored, a VM
moved live from h1 to h2, h3 crashes, the survivors notice, everything is removed."""

import argparse
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import vm_guest  # noqa: E402
from migrd_cluster import Cluster, ClusterError, prerequisite_problems  # noqa: E402


def heading(text):
    print(f"\n=== {text}", flush=True)


def show_hosts(host):
    heading(f"migctl hosts on {host.name}")
    print(host.migctl("hosts", json=False).rstrip("\n"), flush=True)


def sees_offline(host, name):
    return any(x["name"] == name and not x["online"] for x in host.hosts())


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--build-dir", default=None, help="where migrd/ and migctl/ were built")
    ap.add_argument("--token-ms", type=int, default=1000, help="corosync token timeout")
    args = ap.parse_args()

    problems = prerequisite_problems(True, args.build_dir)
    if problems:
        print("demo: cannot run:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    Cluster.cleanup_stale()

    heading("Starting 3 hosts h1-h3: network + mount namespaces on a bridge, corosync and "
            "migrd in each")
    # pki: a cluster CA and a certificate per host (`migctl ca init` + `migctl ca issue`).
    # libvirt: each host also runs its own libvirtd and virtlogd, for the VM part.
    with Cluster(3, build_dir=args.build_dir, token_ms=args.token_ms, pki=True,
                 libvirt=True) as c:
        t = c.timings
        print(f"corosync formed a quorate cluster in {t['corosync_formed_s']:.1f} s; every migrd "
              f"answered {t['migrd_ready_s']:.1f} s later and all agreed after "
              f"{t.get('migrd_settled_s', 0):.1f} s more")
        for h in c:
            print(f"  {h.name}  {h.address}  log: {h.path('migrd.log')}")
        for h in c:
            show_hosts(h)

        h1, h2, h3 = c.hosts
        heading("The link h1 -> h2 through a real transport session (mutual TLS 1.3, 2 streams, "
                "checksummed frames, adaptive zstd), every byte verified by h2")
        for args_ in (["--source", "random"], ["--source", "zeros"]):
            print(f"$ migctl peer-test h2 --size 1G --streams 2 {' '.join(args_)}")
            print(h1.migctl("peer-test", "h2", "--size", "1G", "--streams", "2", *args_,
                            json=False, timeout=600).rstrip("\n"), flush=True)

        heading("A container on h1: checkpoint (freeze, dump, kill), restore with the same "
                "pids, memory and open files")
        run_cmd = ["python3", "-m", "http.server", "8080", "--bind", "127.0.0.1"]
        print("$ migctl run web1 -- " + " ".join(run_cmd))
        print(h1.migctl("run", "web1", "--cwd", "/tmp", "--", *run_cmd, json=False).rstrip())
        get = ["python3", "-c", "import urllib.request as u; "
               "print(u.urlopen('http://127.0.0.1:8080/', timeout=5).status)"]
        c.wait_for(lambda: h1.run(get, check=False).stdout.strip() == "200", 20, "web1 to serve")
        for argv in (["checkpoint", "web1", "--dir", "/var/lib/migrd/images/web1"],
                     ["image", "show", "/var/lib/migrd/images/web1"],
                     ["restore", "web1", "--from", "/var/lib/migrd/images/web1"],
                     ["list"]):
            print("$ migctl " + " ".join(argv))
            print(h1.migctl(*argv, json=False, timeout=120).rstrip("\n"), flush=True)
        print("web1 answers after the restore: HTTP " + h1.run(get).stdout.strip())

        heading("A VM on h1 (the test guest: 256 MiB, 128 MiB of it checked and rewritten at "
                "10 MiB/s), adopted, then live-migrated to h2 with its stream carried by migrd")
        guest = vm_guest.guest_path(c.build_dir)
        with open(h1.path("lib", "libvirt", "vm1.xml"), "w") as f:
            f.write(vm_guest.domain_xml("vm1", guest, mem_mib=256, fill=128, rate=10, mix=True))
        h1.virsh("define", "/var/lib/libvirt/vm1.xml")
        h1.virsh("start", "vm1")
        c.wait_for(lambda: len(vm_guest.ticks(h1, "vm1")) >= 2, 120, "vm1 to fill its memory")
        before = vm_guest.ticks(h1, "vm1")[-1]
        print(f"vm1 on h1: {before[0]} s up, {before[2]} pages verified, {before[3]} bad")
        for argv in (["vm", "adopt", "vm1"], ["move", "vm1", "h2", "--compress", "auto"]):
            print("$ migctl " + " ".join(argv))
            print(h1.migctl(*argv, json=False, timeout=300).rstrip("\n"), flush=True)
        c.wait_for(lambda: len(vm_guest.ticks(h2, "vm1")) >= 2, 60, "vm1 to tick on h2")
        # Other hosts' workloads reach h1 with their metrics, once a second.
        c.wait_for(lambda: any(w["name"] == "vm1" and w["host"] == "h2"
                               for w in h1.migctl("list")["workloads"]), 10,
                   "h1 to list vm1 on h2")
        print("$ migctl list")
        print(h1.migctl("list", json=False).rstrip("\n"), flush=True)
        after = vm_guest.ticks(h2, "vm1")[-1]
        print(f"vm1 on h2: {after[0]} s up, {after[2]} pages verified, {after[3]} bad; "
              f"owner in the cluster state: {h3.migctl('status')['owners'].get('vm1')}")
        print("On this veth the destination's QEMU, not the link, usually sets the pace, and "
              "auto then sends the stream as is. Back to h1 with both links limited to "
              "1 Gbit/s (tc tbf), where the link is the limit:")
        for h in (h1, h2):
            h.run(["tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "1gbit",
                   "burst", "256kb", "latency", "50ms"])
        try:
            print("$ migctl move vm1 h1 --compress auto    # on h2")
            print(h2.migctl("move", "vm1", "h1", "--compress", "auto", json=False,
                            timeout=300).rstrip("\n"), flush=True)
        finally:
            for h in (h1, h2):
                h.run(["tc", "qdisc", "del", "dev", "eth0", "root"], check=False)
        n = len(vm_guest.ticks(h1, "vm1"))
        c.wait_for(lambda: len(vm_guest.ticks(h1, "vm1")) >= n + 2, 60, "vm1 to tick on h1")
        back = vm_guest.ticks(h1, "vm1")[-1]
        print(f"vm1 on h1: {back[0]} s up, {back[2]} pages verified, {back[3]} bad")

        heading("Killing h3: SIGKILL to every process in its namespaces, link cut")
        t0 = time.monotonic()
        h3.kill()
        seen = {}
        c.wait_for(lambda: [seen.setdefault(h.name, time.monotonic() - t0)
                            for h in (h1, h2) if h.name not in seen and sees_offline(h, "h3")]
                   and len(seen) == 2, 60, "h1 and h2 to show h3 offline", interval=0.05)
        print(f"h1 showed h3 offline after {seen['h1']:.1f} s, h2 after {seen['h2']:.1f} s "
              f"(corosync token {args.token_ms} ms)")
        c.wait_settled()
        for h in (h1, h2):
            show_hosts(h)
        heading("Tearing down: every process, mount, namespace and file of the demo")
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ndemo: interrupted; cluster removed", file=sys.stderr)
        sys.exit(130)
    except ClusterError as e:
        print(f"\ndemo: {e}", file=sys.stderr)
        sys.exit(1)
