"""Two libvirt hosts on one machine (each with its own libvirtd and virtlogd in its own
namespaces) and the test guest moved between them by libvirt's own live migration: the
baseline that migrd-carried migration is measured against. TCG here (see LIBVIRT-NOTES.md:
/dev/kvm on these machines is a software backend that fails on real guests)."""

import time

import pytest

from migrd_host import default_build_dir
from vm_guest import domain_xml as vm_domain_xml, guest_path, serial, ticks

GUEST = guest_path(default_build_dir())


def domain_xml(name, mem_mib=128, fill=32, rate=10):
    # 10 MiB/s of rewrites: QEMU 7.2's TCG migration can deliver stale pages of guests that
    # write faster over slower links (bench/README.md); these tests are about the hosts.
    return vm_domain_xml(name, GUEST, mem_mib=mem_mib, fill=fill, rate=rate)


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
    h1.virsh("define", "/var/lib/libvirt/vm1.xml")
    h1.virsh("start", "vm1")
    h1.wait_for(lambda: len(ticks(h1, "vm1")) >= 3, 60, "the guest to tick on h1")
    before = ticks(h1, "vm1")[-1]
    t0 = time.monotonic()
    h1.virsh("migrate", "--live", "--p2p", "--verbose", "vm1",
             f"qemu+tcp://{h2.address}/system", timeout=120)
    took = time.monotonic() - t0
    assert "running" in h2.virsh("domstate", "vm1")
    assert "vm1" not in h1.virsh("list", "--name")
    # On h2 the counter and the generations go on from where they were, every page checks.
    h2.wait_for(lambda: len(ticks(h2, "vm1")) >= 6, 60, "the guest to tick on h2")
    after = ticks(h2, "vm1")
    assert after[0][0] >= before[0] and after[-1][1] > before[1], (before, after)
    assert all(t[3] == 0 for t in after), serial(h2, "vm1")
    assert took < 60
    h2.virsh("destroy", "vm1")
