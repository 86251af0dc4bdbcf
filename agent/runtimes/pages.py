"""Give back the resident pages of a model file once the runtime no longer reads them.

LiteRT maps a ``.tflite`` file read-only (``MAP_SHARED``) and keeps the mapping for the
interpreter's life. With XNNPACK, ``allocate_tensors`` packs every delegated operator's weights
into the delegate's own memory, so most of the mapped file is never read again; its pages
stay resident all the same (3.1 MB of a 3.2 MB YOLOv8n int8 model in an idle agent).

:func:`page_out_file` asks the kernel to reclaim them (``MADV_PAGEOUT``, Linux 5.4). That is
safe whatever the pages hold: it is the same reclaim the kernel does under memory pressure,
so a clean file page is dropped and read again from the file on the next access, and a dirty
page would be written back or swapped, never discarded (unlike ``MADV_DONTNEED``, which on a
private mapping throws written pages away). The pages an inference still reads (weights of
operators left outside the delegate, the flatbuffer's tables) come back on first use:
0.2-0.3 MB for YOLOv8n. Pages of a file not yet written back to disk are skipped by the
kernel; the agent's unpacked bundles are synced before they are loaded.

Only the standard library; a no-op on a kernel or system without ``/proc/self/maps`` or
``MADV_PAGEOUT``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

#: ``MADV_PAGEOUT`` in linux/mman.h (Linux 5.4+).
MADV_PAGEOUT = 21


class Mapping(NamedTuple):
    """One line of ``/proc/<pid>/maps`` that maps a file."""

    start: int
    end: int
    writable: bool
    device: tuple[int, int]
    inode: int


def parse_maps(text: str) -> list[Mapping]:
    """The file mappings in the text of ``/proc/<pid>/maps`` (anonymous ones are left out).

    A line reads ``start-end perms offset major:minor inode [path]``, numbers in hex except
    the inode; inode 0 is an anonymous mapping.
    """
    found: list[Mapping] = []
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 5:
            continue
        span, perms, _offset, device, inode = fields[:5]
        if not inode.isdigit() or int(inode) == 0:
            continue
        start, _, end = span.partition("-")
        major, _, minor = device.partition(":")
        found.append(
            Mapping(
                start=int(start, 16),
                end=int(end, 16),
                writable="w" in perms,
                device=(int(major, 16), int(minor, 16)),
                inode=int(inode),
            )
        )
    return found


def mappings_of(path: Path, maps_text: str) -> list[Mapping]:
    """The read-only mappings of ``path`` (matched by device and inode, not by name)."""
    info = os.stat(path)
    device = (os.major(info.st_dev), os.minor(info.st_dev))
    return [
        m
        for m in parse_maps(_lines_with(maps_text, f" {info.st_ino}"))
        if m.inode == info.st_ino and m.device == device and not m.writable
    ]


def _lines_with(text: str, token: str) -> str:
    """The lines of ``text`` in which ``token`` is followed by whitespace or the end.

    A process that runs many agents (the simulator) maps thousands of files; finding the
    few candidate lines first keeps a model load from parsing all of them (10 ms for the
    2,300 lines of 200 simulated agents, against well under 1 ms).
    """
    found: list[str] = []
    at = text.find(token)
    while at != -1:
        after = at + len(token)
        line_start = text.rfind("\n", 0, at) + 1
        line_end = text.find("\n", after)
        line_end = len(text) if line_end == -1 else line_end
        if after == len(text) or text[after].isspace():
            found.append(text[line_start:line_end])
        at = text.find(token, line_end)
    return "\n".join(found)


def page_out_file(path: Path) -> int:
    """Ask the kernel to reclaim this process's resident pages of ``path``'s read-only
    mappings; returns the bytes advised (0 when nothing maps it or the system cannot).

    Writable mappings are left alone: they belong to someone else's use of the file.
    """
    try:
        maps_text = Path("/proc/self/maps").read_text()
        spans = mappings_of(path, maps_text)
    except OSError:
        return 0
    if not spans:
        return 0
    import ctypes

    try:
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    madvise.restype = ctypes.c_int
    advised = 0
    for span in spans:
        if madvise(span.start, span.end - span.start, MADV_PAGEOUT) != 0:
            # EINVAL before Linux 5.4; the pages just stay resident.
            log.debug("madvise(MADV_PAGEOUT) on %s: errno %d", path.name, ctypes.get_errno())
            return advised
        advised += span.end - span.start
    return advised
