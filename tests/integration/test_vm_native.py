"""Two libvirt hosts on one machine (each with its own libvirtd and virtlogd in its own
namespaces) and the test guest moved between them by libvirt's own live migration: the
baseline that migrd-carried migration is measured against. TCG here (see LIBVIRT-NOTES.md:
/dev/kvm on these machines is a software backend that fails on real guests)."""

import os
import re
import time

import pytest

from migrd_host import default_build_dir

GUEST = os.path.join(default_build_dir(), "tests", "fixtures", "guest", "migrd-guest.elf")


def domain_xml(name, mem_mib=128, fill=32, rate=10):
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{mem_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{GUEST}</kernel>
    <cmdline>fill={fill} rate={rate}</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'>
      <source path='/var/log/libvirt/qemu/{name}-serial.log'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def serial(h, name):
    path = h.path("log", "libvirt", "qemu", f"{name}-serial.log")
    return open(path, errors="replace").read() if os.path.exists(path) else ""


def ticks(text):
    return [tuple(map(int, t)) for t in
            re.findall(r"TICK (\d+) gens=(\d+) verified=(\d+) bad=(\d+)", text)]


@pytest.fixture(scope="module")
def hosts(request):
    from migrd_cluster import Cluster
    c = Cluster(2, libvirt=True, migrd=True)
    c.start()
    request.addfinalizer(c.stop)
    return c["h1"], c["h2"]


def test_native_live_migration_keeps_the_guest(hosts, tmp_path):
    h1, h2 = hosts
    xml = h1.path("lib", "libvirt", "vm1.xml")
    with open(xml, "w") as f:
        f.write(domain_xml("vm1"))
    # 10 MiB/s of rewrites: QEMU 7.2's TCG migration can deliver stale pages of guests that
    # write faster over slower links (bench/README.md); this test is about the hosts.
    h1.virsh("define", "/var/lib/libvirt/vm1.xml")
    h1.virsh("start", "vm1")
    h1.wait_for(lambda: len(ticks(serial(h1, "vm1"))) >= 3, 60, "the guest to tick on h1")
    before = ticks(serial(h1, "vm1"))[-1]
    t0 = time.monotonic()
    h1.virsh("migrate", "--live", "--p2p", "--verbose", "vm1",
             f"qemu+tcp://{h2.address}/system", timeout=120)
    took = time.monotonic() - t0
    assert "running" in h2.virsh("domstate", "vm1")
    assert "vm1" not in h1.virsh("list", "--name")
    # On h2 the counter and the generations go on from where they were, every page checks.
    h2.wait_for(lambda: len(ticks(serial(h2, "vm1"))) >= 6, 60, "the guest to tick on h2")
    after = ticks(serial(h2, "vm1"))
    assert after[0][0] >= before[0] and after[-1][1] > before[1], (before, after)
    assert all(t[3] == 0 for t in after), serial(h2, "vm1")
    assert took < 60
    h2.virsh("destroy", "vm1")
