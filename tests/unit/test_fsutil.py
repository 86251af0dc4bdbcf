"""edgeops.fsutil: atomic durable writes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from edgeops.errors import StorageError
from edgeops.fsutil import atomic_write_bytes, atomic_write_json, json_bytes, write_synced


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


def test_write_synced_writes_in_place_and_names_the_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "bundle.json"
    write_synced(target, b"one")
    write_synced(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.json"]  # no temporary file
    with pytest.raises(StorageError, match="missing"):
        write_synced(tmp_path / "missing" / "x", b"")


def test_json_bytes_is_what_atomic_write_json_writes(tmp_path: Path) -> None:
    value = {"b": [1, 2], "a": "é"}
    atomic_write_json(tmp_path / "v.json", value)
    assert (tmp_path / "v.json").read_bytes() == json_bytes(value)
    assert json.loads(json_bytes(value)) == value
    assert json_bytes(value).endswith(b"\n")
