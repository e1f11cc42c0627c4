"""The VM test guest (tests/fixtures/guest) on its own, under plain QEMU with TCG: it boots,
fills and rewrites its memory at the asked rate, and its page checks find a corruption that
it makes on purpose. VM migration tests rely on these checks."""

import os
import re
import shutil
import subprocess
import time

import pytest

from migrd_host import default_build_dir

GUEST = os.path.join(default_build_dir(), "tests", "fixtures", "guest", "migrd-guest.elf")
QEMU = shutil.which("qemu-system-x86_64")


def boot(tmp_path, append, mem=128, seconds=8):
    if not QEMU:
        pytest.fail("qemu-system-x86_64 is not installed (scripts/install-deps.sh installs it)")
    log = tmp_path / "serial.log"
    p = subprocess.Popen([QEMU, "-machine", "pc,accel=tcg", "-cpu", "qemu64", "-m", str(mem),
                          "-nographic", "-no-reboot", "-monitor", "none", "-display", "none",
                          "-kernel", GUEST, "-append", append, "-serial", f"file:{log}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + seconds + 20
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            ticks = re.findall(r"TICK (\d+) gens=(\d+) verified=(\d+) bad=(\d+)", text)
            if len(ticks) >= seconds:
                return text, [tuple(map(int, t)) for t in ticks]
            assert p.poll() is None, p.stderr.read().decode()
            time.sleep(0.2)
        raise AssertionError(f"the guest reported too little in time:\n{text}")
    finally:
        p.kill()
        p.wait()


def test_guest_fills_rewrites_and_checks(tmp_path):
    text, ticks = boot(tmp_path, "fill=32 rate=20")
    assert "READY pages=8192" in text
    # 20 MiB/s = 5120 pages a second; every page checked within 4 s; nothing wrong.
    gens = [t[1] for t in ticks]
    per_s = (gens[-1] - gens[0]) / (ticks[-1][0] - ticks[0][0])
    assert 4000 < per_s < 6000, per_s
    assert ticks[-1][2] >= 8192 and all(t[3] == 0 for t in ticks), text


def test_guest_finds_a_corrupt_page(tmp_path):
    text, ticks = boot(tmp_path, "fill=32 rate=0 corrupt=2", seconds=6)
    assert re.search(r"BAD page \d+ word 7", text), text
    assert ticks[-1][3] >= 1
