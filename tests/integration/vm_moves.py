"""Moving the test guests with `migctl move` and checking every move: shared by the VM move
tests (test_vm_move.py: the freestanding guest; test_vm_linux.py: a Linux guest)."""

import os
import warnings

import pytest

from migrd_host import WaitTimeout
from vm_guest import serial, ticks


def entry(h, name):
    return next((w for w in h.migctl("list")["workloads"] if w["name"] == name), None)


def domstate(h, name):
    cp = h.virsh("domstate", name, check=False)
    return cp.stdout.strip() if cp.returncode == 0 else "missing"


def start_domain(h, name, xml, boot_timeout=60):
    """Defines and starts the domain on h, waits for its guest to tick, and has migrd adopt
    it (the other host says it could run it)."""
    with open(h.path("lib", "libvirt", f"{name}.xml"), "w") as f:
        f.write(xml)
    h.virsh("define", f"/var/lib/libvirt/{name}.xml")
    h.virsh("start", name)
    h.wait_for(lambda: len(ticks(h, name)) >= 2, boot_timeout, f"{name} to tick on {h.name}")
    r = h.migctl("vm", "adopt", name)
    # The other host was asked whether it could run it: yes.
    assert r["peers"] == {("h2" if h.name == "h1" else "h1"): "ok"}, r
    h.wait_for(lambda: h.migctl("status")["owners"].get(name) == h.name, 10,
               f"the cluster state to name {h.name} as {name}'s owner")


def remove_vm(hs, name):
    """Out of migrd's care, destroyed and undefined on every host; its serial logs go too (they
    are appended to: a guest booted again under the name would find the old one's ticks)."""
    for h in hs:
        # One reading: another host's workloads are listed as it last published them, so a
        # VM that just moved can be missing from one reading to the next.
        e = entry(h, name)
        if e and e["host"] == h.name:
            h.migctl("vm", "release", name)
    for h in hs:
        h.virsh("destroy", name, check=False)
        h.virsh("undefine", name, check=False)
        try:
            os.unlink(h.path("log", "libvirt", "qemu", f"{name}-serial.log"))
        except FileNotFoundError:
            pass


def check_guest_moved(src, dst, name, before, qemu_damage_ok=False):
    """The guest runs on dst only, its counter and generations go on, every page checks. With
    qemu_damage_ok, a guest that found stale pages, a Linux guest whose kernel panicked on
    dst, or one that runs there but stopped ticking (hung on a stale page without a word),
    returns its report instead of failing."""
    state = domstate(dst, name)
    if qemu_damage_ok and state != "running" and "Kernel panic" in serial(dst, name):
        return f"{name} {state} on {dst.name}: {serial(dst, name)[-1500:]}"
    assert state == "running", (f"{name} on {dst.name}: {state}", serial(dst, name)[-1500:])
    assert domstate(src, name) != "running"
    n = len(ticks(dst, name))
    try:
        dst.wait_for(lambda: len(ticks(dst, name)) >= n + 2, 60, f"{name} to tick on {dst.name}")
    except WaitTimeout:
        if not qemu_damage_ok or domstate(dst, name) != "running":
            raise
        return (f"{name} runs on {dst.name} but stopped ticking after tick {n}: "
                f"{serial(dst, name)[-1500:]}")
    after = ticks(dst, name)
    assert after[-1][0] > before[0] and after[-1][1] >= before[1], (before, after[-3:])
    if qemu_damage_ok and guest_damage(dst, name):
        return guest_damage(dst, name)
    assert all(t[3] == 0 for t in after), serial(dst, name)[-2000:]
    assert "BAD" not in serial(dst, name)
    return None


def move(src, dst, name, *flags, timeout=180, qemu_damage_ok=False):
    """One move, checked. A carried move must have handed the destination's QEMU, byte for
    byte, what the source's QEMU sent (the digests of both ends, "stream_check"). Then, and
    with qemu_damage_ok, stale pages the guest found are QEMU's own (LIBVIRT-NOTES.md): the
    result carries the guest's report as "qemu_damage" instead of the test failing."""
    before = ticks(src, name)[-1]
    r = src.migctl("move", name, dst.name, *flags, timeout=timeout)
    if not r["native"]:
        assert r.get("stream_check") == "identical", r
        assert r["stream_check_bytes"] > 0, r
    else:
        assert "stream_check" not in r, r
    r["qemu_damage"] = check_guest_moved(src, dst, name, before,
                                         qemu_damage_ok and not r["native"])
    if r["qemu_damage"] and domstate(dst, name) != "running":
        # Its kernel panicked there: dst's migrd took it over and found it gone.
        return r
    # Ownership: the destination's migrd has it now, the source's forgot it.
    dst.wait_for(lambda: (entry(dst, name) or {}).get("host") == dst.name, 10, "the new owner")
    assert all(w["name"] != name or w["host"] != src.name
               for w in src.migctl("list")["workloads"])
    # And the replicated cluster state says so on both hosts (an ordered CPG message).
    for h in (src, dst):
        h.wait_for(lambda: h.migctl("status")["owners"].get(name) == dst.name, 10,
                   f"{h.name}'s cluster state to name {dst.name} as {name}'s owner")
        # From then on every host lists it, on dst: as dst published it, or from the record
        # until dst next publishes (within a second).
        e = entry(h, name)
        assert e and e["host"] == dst.name, h.migctl("list")
    assert src.migctl("status")["state_hash"] == dst.migctl("status")["state_hash"]
    return r


def guest_damage(h, name):
    """The guest's own report of a stale page after a move, or None."""
    text = serial(h, name)
    if "BAD" in text or any(t[3] for t in ticks(h, name)):
        return text[-600:]
    return None


def moves_with_retry(hosts, name, cases, check, restart):
    """Moves the guest h1 -> h2 -> h1 -> ... once per case (label, flags), each move checked
    (move(), then check(label, flags, result)).

    QEMU 7.2's TCG migration sometimes leaves a page of a guest that writes during the move
    stale, with libvirt's own migration too (bench/vm: native moves of a writing guest damaged
    in 2 to 4 of 10; a Linux guest's kernel then may panic). Busy threads of other processes
    on the same CPUs make it likelier: native moves of the Linux guest (test_vm_linux.py)
    crashed it in 0 of 16 beside three CPU-bound loops, but in 2 of 16 while a `migctl
    peer-test` between the same hosts ran beside them; carried moves, whose own migrds do that
    work, in 3 of 36. When the guest reports one after a carried move whose stream reached the
    destination's QEMU intact (move()), that move says nothing of migrd: restart(host) boots a
    fresh guest there and the same move is made again; only a second such damage leaves the
    case unchecked (skipped, with both reports). Returns the host the guest ends on."""
    src, dst = hosts
    for label, flags in cases:
        damage = []
        while True:
            r = move(src, dst, name, *flags, qemu_damage_ok=True)
            check(label, flags, r)
            src, dst = dst, src
            if not r["qemu_damage"]:
                break
            damage.append(r["qemu_damage"][-200:])
            # Shown in pytest's warnings summary, so a passing run still says it happened.
            warnings.warn(f"{label}: the guest was damaged after a move whose stream arrived "
                          f"intact ({r['stream_check_bytes']} bytes): QEMU's; a fresh guest "
                          f"again. {damage[-1][-120:]!r}")
            if len(damage) == 2:
                pytest.skip(f"inconclusive: in two {label} moves the guest found stale pages "
                            f"though its migration stream reached the destination's QEMU "
                            f"byte for byte (QEMU 7.2 TCG; LIBVIRT-NOTES.md): {damage!r}")
            remove_vm(hosts, name)
            restart(src)
    return src
