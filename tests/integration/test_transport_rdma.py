"""The RDMA transport between two endpoints, through tests/integration/rdma-pair (built with
migrd): device detection as `transport = auto` reports it, bit-exact transfers, and a peer that
dies mid-transfer.

Without an RDMA device the transfer tests are SKIPPED with the exact reason the backend gives
(transport_rdma_available()); that is the expected outcome on machines without RDMA hardware or
soft-RoCE. With a device they run both ends on this host over the device's IPv4 address (the
HCA loops it back), or over $MIGRD_RDMA_ADDR. No cluster is needed: RDMA devices cannot be
moved into the harness's veth namespaces without soft-RoCE on each veth."""

import glob
import os
import re
import signal
import subprocess
import time

import pytest

from migrd_host import default_build_dir


def rdma_pair():
    path = os.path.join(os.path.abspath(default_build_dir()), "tests", "integration",
                        "rdma-pair")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not built (cmake --build the migrd build directory)",
                    pytrace=False)
    return path


def availability():
    cp = subprocess.run([rdma_pair(), "available"], capture_output=True, text=True, timeout=60)
    assert cp.returncode in (0, 2), f"rdma-pair available: exit {cp.returncode}: {cp.stderr}"
    m = re.fullmatch(r"(available|unavailable): (.+)\n", cp.stdout)
    assert m, f"unexpected output: {cp.stdout!r}"
    assert (m.group(1) == "available") == (cp.returncode == 0)
    return cp.returncode == 0, m.group(2)


def require_device():
    ok, reason = availability()
    if not ok:
        pytest.skip(reason)
    return reason


def rdma_netdevs():
    """Network interfaces bound to RDMA devices: RoCE GID netdevs and IPoIB interfaces."""
    names = set()
    for f in glob.glob("/sys/class/infiniband/*/ports/*/gid_attrs/ndevs/*"):
        try:
            with open(f) as fh:
                names.add(fh.read().strip())
        except OSError:
            pass            # unused GID entries cannot be read
    for d in glob.glob("/sys/class/infiniband/*/device/net/*"):
        names.add(os.path.basename(d))
    return sorted(n for n in names if n)


def device_address():
    if os.environ.get("MIGRD_RDMA_ADDR"):
        return os.environ["MIGRD_RDMA_ADDR"]
    for dev in rdma_netdevs():
        out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", dev],
                             capture_output=True, text=True).stdout
        m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", out)
        if m:
            return m.group(1)
    pytest.fail("an RDMA device is usable but none of its interfaces "
                f"({', '.join(rdma_netdevs()) or 'none found'}) has an IPv4 address: "
                "configure one or set MIGRD_RDMA_ADDR", pytrace=False)


class Server:
    def __init__(self, addr, *args):
        self.p = subprocess.Popen([rdma_pair(), "server", addr, *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if not line.startswith("listening "):
            self.p.kill()
            _, err = self.p.communicate()
            pytest.fail(f"rdma-pair server did not start: {line!r} {err}", pytrace=False)
        self.address = line.split()[1]

    def finish(self, timeout=120):
        out, err = self.p.communicate(timeout=timeout)
        return self.p.returncode, out, err

    def kill(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.communicate()


def client(address, *args, timeout=120):
    return subprocess.run([rdma_pair(), "client", address, *args], capture_output=True,
                          text=True, timeout=timeout)


def test_availability_is_reported():
    """What `transport = auto` will log: a usable device, or why there is none. Runs on every
    machine (no device needed) against the real libibverbs."""
    ok, reason = availability()
    if ok:
        assert reason.startswith("RDMA device ")
    else:
        assert reason.startswith(("no RDMA devices (", "RDMA devices present (",
                                  "RDMA device ")), reason
    print(f"\nrdma: {'available' if ok else 'unavailable'}: {reason}")


@pytest.mark.parametrize("size_mib,opts", [(256, []), (16, ["--buffers", "2",
                                                            "--buffer-size", "4096"])],
                         ids=["default-buffers", "tiny-buffers"])
def test_transfer_arrives_bit_exact(size_mib, opts):
    require_device()
    addr = device_address()
    srv = Server(addr, "--size", str(size_mib), *opts)
    try:
        cp = client(srv.address, "--size", str(size_mib), *opts)
        rc, out, err = srv.finish()
    finally:
        srv.kill()
    assert cp.returncode == 0, f"client: {cp.stderr}"
    assert rc == 0, f"server: {err}"
    assert f"verified {size_mib << 20} bytes" in out
    print(f"\n{cp.stdout.strip()}")


def test_peer_killed_mid_transfer():
    """The sender gets an error within its timeout, not a hang."""
    require_device()
    addr = device_address()
    srv = Server(addr, "--size", "1048576", "--timeout", "5")
    try:
        t0 = time.monotonic()
        c = subprocess.Popen([rdma_pair(), "client", srv.address, "--size", "1048576",
                              "--timeout", "5"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(1)
        srv.kill()
        _, err = c.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        srv.kill()
    assert c.returncode == 1, err
    assert re.search(r"after \d+ bytes: .*sending: (Connection reset by peer|Connection timed "
                     r"out)", err), err
    assert took < 20
