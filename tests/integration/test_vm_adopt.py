"""VMs under migrd's care: `migctl vm adopt` of a libvirt domain on a host with its own
libvirtd, listed beside the containers, its state followed, kept across a migrd restart;
clear errors for what libvirt does not have."""

import pytest

from test_vm_native import domain_xml


@pytest.fixture(scope="module")
def host(request):
    from migrd_cluster import Cluster
    c = Cluster(1, libvirt=True)
    c.start()
    request.addfinalizer(c.stop)
    return c["h1"]


def entry(h, name):
    return next((w for w in h.migctl("list")["workloads"] if w["name"] == name), None)


def test_adopt_list_follow(host):
    with open(host.path("lib", "libvirt", "vm1.xml"), "w") as f:
        f.write(domain_xml("vm1", mem_mib=128, rate=0))
    host.virsh("define", "/var/lib/libvirt/vm1.xml")
    host.virsh("start", "vm1")
    r = host.migctl("vm", "adopt", "vm1")
    assert r["state"] == "running" and r["memory"] == 128 << 20 and r["vcpus"] == 1
    assert r["persistent"] is True and len(r["uuid"]) == 36
    w = entry(host, "vm1")
    assert w["kind"] == "vm" and w["host"] == "h1" and w["state"] == "running"
    assert "vm1" in host.migctl("list", json=False)
    # Its state follows libvirt's: through libvirt's events, well before the 10 s poll.
    host.virsh("destroy", "vm1")
    host.wait_for(lambda: entry(host, "vm1")["state"] == "shut off", 3, "the state to follow")
    # And it stays under migrd's care across a restart.
    assert host.stop_migrd() == 0    # a clean exit (under ASan: no leaks, no errors)
    host.start_migrd()
    assert entry(host, "vm1")["kind"] == "vm"
    host.virsh("start", "vm1")
    host.wait_for(lambda: entry(host, "vm1")["state"] == "running", 3, "the state to follow")


def test_adopt_errors(host):
    cp = host.migctl_raw("vm", "adopt", "nosuch")
    assert cp.returncode == 1 and "not-found" in cp.stdout + cp.stderr
    assert "nosuch" in cp.stderr and "omain" in cp.stderr, cp.stderr
    cp = host.migctl_raw("vm", "adopt", "../x")
    assert cp.returncode == 1 and "invalid-params" in cp.stderr
    assert entry(host, "nosuch") is None
