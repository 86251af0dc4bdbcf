"""Handing a model file's resident pages back to the kernel (edgeops.agent.runtimes.pages)."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from edgeops.agent.runtimes.pages import Mapping, mappings_of, page_out_file, parse_maps

MAPS = """\
55d0eff000-55d1b6e000 rw-p 00000000 00:00 0                          [heap]
7f46e1767000-7f46e1dff000 rw-p 00000000 00:00 0
7f46f0600000-7f46f091c000 r--s 00000000 08:01 1234567                    /srv/m/model.tflite
7f46f2000000-7f46f2001000 rw-s 00000000 08:01 1234567                    /srv/m/model.tflite
7f46f3000000-7f46f3010000 r-xp 00002000 fd:1a 42    /usr/lib/lib with spaces.so
7ffd1c2b5000-7ffd1c2d6000 rw-p 00000000 00:00 0                          [stack]
"""


def test_parse_maps_keeps_file_mappings_with_device_and_inode() -> None:
    assert parse_maps(MAPS) == [
        Mapping(
            start=0x7F46F0600000, end=0x7F46F091C000, writable=False, device=(8, 1), inode=1234567
        ),
        Mapping(
            start=0x7F46F2000000, end=0x7F46F2001000, writable=True, device=(8, 1), inode=1234567
        ),
        Mapping(
            start=0x7F46F3000000, end=0x7F46F3010000, writable=False, device=(253, 26), inode=42
        ),
    ]
    assert parse_maps("") == []
    assert parse_maps("garbage\n7f-80 r--p 0 08:01\n") == []


def test_mappings_of_matches_the_whole_inode_among_many_lines(tmp_path: Path) -> None:
    path = tmp_path / "model.tflite"
    path.write_bytes(b"x")
    info = os.stat(path)
    dev = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}"
    ino = info.st_ino
    noise = [
        # The inode's digits inside a longer inode, in an address and in a path: no match.
        f"7f0000000000-7f0000001000 r--p 00000000 {dev} {ino}9   /lib/other.so",
        f"7f0000001000-7f0000002000 r--p 00000000 {dev} 9{ino}   /lib/{ino} .so",
        f"7f{ino % 10**6:06d}00-7f{ino % 10**6:06d}ff r--p 00000000 {dev} 77 /lib/x.so",
    ] * 1000
    wanted = f"7f46f0600000-7f46f091c000 r--s 00000000 {dev} {ino}    {path}"
    writable = f"7f46f2000000-7f46f2001000 rw-s 00000000 {dev} {ino}    {path}"
    # The last line has no newline after it, and no path: still found.
    text = "\n".join([*noise, wanted, *noise, writable, f"7f5-7f6 r--s 00000000 {dev} {ino}"])
    assert mappings_of(path, text) == [
        Mapping(
            start=0x7F46F0600000,
            end=0x7F46F091C000,
            writable=False,
            device=(os.major(info.st_dev), os.minor(info.st_dev)),
            inode=ino,
        ),
        Mapping(
            start=0x7F5,
            end=0x7F6,
            writable=False,
            device=(os.major(info.st_dev), os.minor(info.st_dev)),
            inode=ino,
        ),
    ]
    assert mappings_of(path, "\n".join(noise)) == []


def mapped_rss_kb(path: Path) -> int:
    """Rss of ``path``'s mappings in this process, from /proc/self/smaps."""
    info = os.stat(path)
    total, current = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if not fields[0].endswith(":"):
            current = len(fields) > 4 and fields[4] == str(info.st_ino)
        elif current and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_page_out_finds_only_read_only_mappings_and_keeps_the_data(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    data = bytes(range(256)) * 4096  # 1 MiB, 256 pages
    with path.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())  # the kernel skips pages still waiting to be written back
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, prot=mmap.PROT_READ) as view:
        assert view[:] == data  # every page resident
        spans = mappings_of(path, Path("/proc/self/maps").read_text())
        assert [span.end - span.start for span in spans] == [len(data)]
        before = mapped_rss_kb(path)
        advised = page_out_file(path)
        # 0 only on a kernel older than 5.4 (no MADV_PAGEOUT): nothing is reclaimed there.
        if advised:
            assert advised == len(data)
            assert mapped_rss_kb(path) < before
        # Reclaim never loses data: the pages come back from the file.
        assert view[:] == data
    with path.open("r+b") as update, mmap.mmap(update.fileno(), 0) as writable:
        assert mappings_of(path, Path("/proc/self/maps").read_text()) == []
        writable[0] = 7  # a writable mapping is someone else's; page_out_file leaves it
        assert page_out_file(path) == 0
        assert writable[0] == 7


def test_page_out_of_a_file_nobody_maps_does_nothing(tmp_path: Path) -> None:
    path = tmp_path / "unmapped.bin"
    path.write_bytes(b"x" * 10)
    assert page_out_file(path) == 0
    assert page_out_file(tmp_path / "missing.bin") == 0
