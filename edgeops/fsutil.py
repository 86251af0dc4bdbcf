"""Durable file writes.

Every piece of state that must survive a crash or ``kill -9`` goes through
:func:`atomic_write_bytes`: a temporary file in the same folder, ``fsync``, then
``os.replace`` and an ``fsync`` of the folder, so that a reader sees either the old
content or the new, never half of it (the pattern of python-tuf's ``_persist_metadata``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgeops.errors import StorageError


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entry table so a rename inside it survives power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    folder = path.parent
    prefix = f".{path.name}."
    try:
        try:
            fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
        except FileNotFoundError:
            # Creating the folder only when it is missing spares a mkdir and a stat on
            # every write of the telemetry queue.
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.chmod(tmp_name, mode)
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        fsync_dir(folder)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def json_bytes(value: Any) -> bytes:
    """``value`` as the indented, key-sorted JSON every state file here is written in."""
    return (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8")


def atomic_write_json(path: Path, value: Any, *, mode: int = 0o644) -> None:
    """Write ``value`` as indented JSON, atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, json_bytes(value), mode=mode)


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync the file: no temporary file, no folder sync.

    Only for a file in a folder that nothing reads until the caller syncs the folder once
    and renames it into place, and that a crash before then leaves to be thrown away (a
    bundle's staging folder): there the rename and folder sync of
    :func:`atomic_write_bytes` would only repeat that one folder sync.
    """
    try:
        with path.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
