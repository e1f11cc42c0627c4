"""The Linux test guest: Debian's kernel (its package fetched with apt-get at test time, kept in
the build directory) booted by libvirt with an initramfs holding one static program,
tests/fixtures/linux-guest/init.c, as PID 1. Its console says what the freestanding guest's
COM1 says (vm_guest.ticks() reads both)."""

import glob
import os
import subprocess

from vm_guest import accel, guest_path, kernel_domain_xml

KERNEL_META = "linux-image-amd64"


class Unavailable(Exception):
    """What is missing for the Linux guest, said so a test can skip with it."""


def _run(args, cwd=None):
    cp = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)
    if cp.returncode != 0:
        raise Unavailable(f"{' '.join(args)}: {(cp.stderr or cp.stdout).strip()[-300:]}")
    return cp.stdout


def kernel(build_dir):
    """The path of Debian's kernel (bzImage), fetched once: the package linux-image-amd64
    depends on, downloaded (not installed) and unpacked."""
    d = os.path.join(build_dir, "tests", "fixtures", "linux-guest", "kernel")
    found = sorted(glob.glob(os.path.join(d, "boot", "vmlinuz-*")))
    if found:
        return found[-1]
    os.makedirs(d, exist_ok=True)
    deps = _run(["apt-cache", "depends", KERNEL_META])
    pkg = next((ln.split(":", 1)[1].strip() for ln in deps.splitlines()
                if ln.strip().startswith("Depends:") and "linux-image-" in ln), None)
    if not pkg:
        raise Unavailable(f"apt-cache names no kernel package behind {KERNEL_META} "
                          f"(apt-get update not run?)")
    for old in glob.glob(os.path.join(d, "*.deb")):
        os.unlink(old)
    _run(["apt-get", "download", "-q", pkg], cwd=d)
    debs = glob.glob(os.path.join(d, "*.deb"))
    if not debs:
        raise Unavailable(f"apt-get download {pkg} left no package in {d}")
    _run(["sh", "-c", 'dpkg-deb --fsys-tarfile "$1" | tar -x -C "$2" --wildcards "./boot/vmlinuz-*"',
          "sh", debs[0], d])
    os.unlink(debs[0])
    found = sorted(glob.glob(os.path.join(d, "boot", "vmlinuz-*")))
    if not found:
        raise Unavailable(f"{pkg} holds no /boot/vmlinuz-*")
    return found[-1]


def _cpio_newc(entries):
    """A cpio archive in the kernel's initramfs format ("newc") of (name, mode, data)."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries + [("TRAILER!!!", 0, b"")], 1):
        nb = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0]
        out += ("070701" + "".join(f"{v:08X}" for v in fields)).encode() + nb
        out += b"\0" * (-len(out) % 4)
        out += data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def initramfs(build_dir):
    """The initramfs: /init (linux-guest/init.c, static) and an empty /dev; rebuilt when the
    program is newer."""
    init = os.path.join(build_dir, "tests", "fixtures", "linux-guest", "migrd-linux-guest-init")
    out = os.path.join(build_dir, "tests", "fixtures", "linux-guest", "initramfs.cpio")
    if not os.path.exists(init):
        raise Unavailable(f"{init} is not built")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(init):
        with open(init, "rb") as f:
            data = f.read()
        with open(out + ".tmp", "wb") as f:
            f.write(_cpio_newc([("init", 0o100755, data), ("dev", 0o040755, b"")]))
        os.replace(out + ".tmp", out)
    return out


def domain_xml(name, build_dir, mem_mib=192, fill=64, rate=10):
    """A domain booting Debian's kernel with the initramfs (KVM where it really works, else
    TCG, as vm_guest decides); its console, ttyS0, goes to
    /var/log/libvirt/qemu/NAME-serial.log as the freestanding guest's COM1 does."""
    return kernel_domain_xml(name, accel(guest_path(build_dir)), kernel(build_dir),
                             f"console=ttyS0 quiet panic=-1 unknown_nmi_panic fill={fill} rate={rate} mix=1",
                             mem_mib, initrd=initramfs(build_dir))
