"""The VM test guest (tests/fixtures/guest) as a libvirt domain, and its serial reports."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

TICK_RE = re.compile(r"TICK (\d+) gens=(\d+) verified=(\d+) bad=(\d+)")


def guest_path(build_dir):
    return os.path.join(build_dir, "tests", "fixtures", "guest", "migrd-guest.elf")


_ACCEL = {}


def accel(guest):
    """'kvm' when KVM really runs the guest here, else 'qemu' (TCG), decided once by booting
    the guest under KVM for a few seconds: /dev/kvm on some machines is a software backend on
    which guests start and then stall (LIBVIRT-NOTES.md). The choice and why are printed."""
    if guest in _ACCEL:
        return _ACCEL[guest]
    # Once per boot of this machine: later test modules read the answer.
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    cache = f"/tmp/migrd-vm-accel-{boot}"
    try:
        kind, why = open(cache).read().split("\n", 1)
        if kind in ("kvm", "qemu"):
            _ACCEL[guest] = kind
            print(f"vm_guest: {'KVM' if kind == 'kvm' else 'TCG: ' + why}", file=sys.stderr)
            return kind
    except (OSError, ValueError):
        pass
    why = None
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        why = "no usable /dev/kvm"
    else:
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "serial.log")
            p = subprocess.Popen(
                ["qemu-system-x86_64", "-accel", "kvm", "-m", "64", "-kernel", guest,
                 "-append", "fill=8 rate=0", "-display", "none", "-monitor", "none",
                 "-serial", f"file:{log}", "-no-reboot"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 8
            ok = False
            while time.monotonic() < deadline and p.poll() is None and not ok:
                time.sleep(0.2)
                out = open(log, errors="replace").read() if os.path.exists(log) else ""
                ok = any(int(t[2]) > 0 and t[3] == "0" for t in TICK_RE.findall(out))
            p.kill()
            p.wait()
            if not ok:
                why = "KVM did not run the test guest within 8 s (a software /dev/kvm?)"
    _ACCEL[guest] = "kvm" if why is None else "qemu"
    try:
        with open(cache, "w") as f:
            f.write(f"{_ACCEL[guest]}\n{why or ''}")
    except OSError:
        pass
    print(f"vm_guest: {'KVM' if why is None else 'TCG: ' + why}", file=sys.stderr)
    return _ACCEL[guest]


def domain_xml(name, guest, mem_mib=128, fill=32, rate=10, mix=False):
    """A domain (KVM where it really works, else TCG) booting the guest with `<kernel>`; its COM1 goes to
    /var/log/libvirt/qemu/NAME-serial.log (appended to, on whichever host runs it)."""
    return kernel_domain_xml(name, accel(guest), guest,
                             f"fill={fill} rate={rate}{' mix=1' if mix else ''}", mem_mib)


def kernel_domain_xml(name, kind, kernel, cmdline, mem_mib, initrd=None):
    """A domain of type kind booting kernel (and initrd) with cmdline; its first serial port
    goes to /var/log/libvirt/qemu/NAME-serial.log (appended to, on whichever host runs it)."""
    initrd_line = f"\n    <initrd>{initrd}</initrd>" if initrd else ""
    return f"""<domain type='{kind}'>
  <name>{name}</name>
  <memory unit='MiB'>{mem_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>{initrd_line}
    <cmdline>{cmdline}</cmdline>
  </os>
  <cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model></cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <serial type='file'>
      <source path='/var/log/libvirt/qemu/{name}-serial.log' append='on'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def serial(h, name):
    """What the guest printed on host h."""
    path = h.path("log", "libvirt", "qemu", f"{name}-serial.log")
    return open(path, errors="replace").read() if os.path.exists(path) else ""


def ticks(h, name):
    """(seconds, gens, verified, bad) of every TICK line on host h."""
    return [tuple(map(int, t)) for t in TICK_RE.findall(serial(h, name))]


def boot_qemu(log, kernel, append, initrd=None, mem=128, seconds=8, boot_timeout=20):
    """Boots kernel under plain QEMU (TCG, no libvirt) with its COM1 in the file log until it
    reported `seconds` TICK lines: (everything it printed, the ticks)."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        pytest.fail("qemu-system-x86_64 is not installed (scripts/install-deps.sh installs it)")
    p = subprocess.Popen([qemu, "-machine", "pc,accel=tcg", "-cpu", "qemu64", "-m", str(mem),
                          "-nographic", "-no-reboot", "-monitor", "none", "-display", "none",
                          "-kernel", kernel, "-append", append, "-serial", f"file:{log}"]
                         + (["-initrd", initrd] if initrd else []),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + seconds + boot_timeout
        text = ""
        while time.monotonic() < deadline:
            text = open(log, errors="replace").read() if os.path.exists(log) else ""
            found = [tuple(map(int, t)) for t in TICK_RE.findall(text)]
            if len(found) >= seconds:
                return text, found
            assert p.poll() is None, p.stderr.read().decode()
            time.sleep(0.2)
        raise AssertionError(f"the guest reported too little in time:\n{text}")
    finally:
        p.kill()
        p.wait()
