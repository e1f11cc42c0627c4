"""The VM test guest (tests/fixtures/guest) on its own, under plain QEMU with TCG: it boots,
fills and rewrites its memory at the asked rate, and its page checks find a corruption that
it makes on purpose. VM migration tests rely on these checks."""

import re

from migrd_host import default_build_dir
from vm_guest import boot_qemu, guest_path

GUEST = guest_path(default_build_dir())


def boot(tmp_path, append, mem=128, seconds=8):
    return boot_qemu(tmp_path / "serial.log", GUEST, append, mem=mem, seconds=seconds)


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
