"""The VM test guest (tests/fixtures/guest) as a libvirt domain, and its serial reports."""

import os
import re

TICK_RE = re.compile(r"TICK (\d+) gens=(\d+) verified=(\d+) bad=(\d+)")


def guest_path(build_dir):
    return os.path.join(build_dir, "tests", "fixtures", "guest", "migrd-guest.elf")


def domain_xml(name, guest, mem_mib=128, fill=32, rate=10, mix=False):
    """A TCG domain booting the guest with `<kernel>`; its COM1 goes to
    /var/log/libvirt/qemu/NAME-serial.log (appended to, on whichever host runs it)."""
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{mem_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{guest}</kernel>
    <cmdline>fill={fill} rate={rate}{' mix=1' if mix else ''}</cmdline>
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
