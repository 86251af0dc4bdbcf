"""edgeops.fsutil: atomic durable writes."""

from __future__ import annotations

import stat
from pathlib import Path

from edgeops.fsutil import atomic_write_bytes, atomic_write_json


def test_atomic_write_creates_missing_folders_and_replaces_content(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(path, b"first")
    assert path.read_bytes() == b"first"
    atomic_write_bytes(path, b"second", mode=0o600)
    assert path.read_bytes() == b"second"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    atomic_write_json(path.parent / "x.json", {"k": 1})
    assert (path.parent / "x.json").read_text() == '{\n  "k": 1\n}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.bin", "x.json"]  # no temp
