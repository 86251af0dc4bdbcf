"""The agent's state folder: what survives a restart, and where each thing lives.

::

    STATE_DIR/
      agent.toml                 written by enrollment (the daemon reads it, never writes it)
      tls/ca.crt device.crt device.key
      root.json                  the trusted root; replaced only after a verified rotation
      state.json                 the updater's state (phase, committed/previous bundle,
                                 per-target directive records): one atomic write per step
      events.seq                 event sequence numbers below this one may have been used
      downloads/<digest>.part    a bundle being fetched (streamed, never held in memory)
      bundles/<digest>/bundle    a verified bundle file, kept for the committed and previous
      bundles/<digest>/files/    its unpacked files (model, test vectors, reference stats)
      bundles/<digest>/.complete written last: a folder without it is debris of a crash
      telemetry/                 the store-and-forward queue

Bundles are content-addressed (``bundles/<digest>``) rather than ``a``/``b`` slots: a
rollback directive can name any kept bundle, and a half-written folder is recognisable
without a slot pointer. Only the bundles the updater names in ``keep`` survive a prune.

Every durable write goes through :mod:`edgeops.fsutil` (temp file, fsync, ``os.replace``).
Event sequence numbers are reserved :data:`EVENT_SEQ_BLOCK` at a time, one write per block
instead of one per event; after a restart the numbering continues past the reserved block,
so it can jump ahead by up to that many but never repeats.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

from edgeops.agent.updater import UpdaterState
from edgeops.errors import ConfigError, StateError, StorageError
from edgeops.fsutil import atomic_write_bytes, atomic_write_json, fsync_dir

_HEX = frozenset("0123456789abcdef")

EVENT_SEQ_BLOCK = 64
"""Event sequence numbers reserved per write of ``events.seq`` (the most a restart skips)."""


def _check_digest(digest: str) -> str:
    # A digest becomes a path component: refuse anything but 64 lowercase hex characters.
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise StateError(f"expected a SHA-256 hex digest, got {digest!r}")
    return digest


class Store:
    """Paths and durable reads/writes under one agent's state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir)
        self._event_lock = threading.Lock()
        self._event_next: int | None = None  # read from events.seq on first use
        self._event_reserved = 0  # events.seq holds this: numbers below it may be in use

    # ------------------------------------------------------------------ layout

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def root_path(self) -> Path:
        return self.root / "root.json"

    @property
    def bundles_dir(self) -> Path:
        return self.root / "bundles"

    @property
    def downloads_dir(self) -> Path:
        return self.root / "downloads"

    @property
    def telemetry_dir(self) -> Path:
        return self.root / "telemetry"

    @property
    def events_seq_path(self) -> Path:
        return self.root / "events.seq"

    def download_path(self, digest: str) -> Path:
        return self.downloads_dir / f"{_check_digest(digest)}.part"

    def bundle_dir(self, digest: str) -> Path:
        return self.bundles_dir / _check_digest(digest)

    def bundle_file(self, digest: str) -> Path:
        return self.bundle_dir(digest) / "bundle"

    def files_dir(self, digest: str) -> Path:
        return self.bundle_dir(digest) / "files"

    # ------------------------------------------------------------------ state

    def ensure(self) -> None:
        """Create the folders (idempotent)."""
        try:
            for folder in (self.root, self.bundles_dir, self.downloads_dir, self.telemetry_dir):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the state folder {self.root}: {exc}") from exc

    def load_state(self) -> UpdaterState:
        """The persisted updater state; a fresh one when there is none yet."""
        try:
            data = self.state_path.read_bytes()
        except FileNotFoundError:
            return UpdaterState()
        except OSError as exc:
            raise StorageError(f"cannot read {self.state_path}: {exc}") from exc
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            # Written atomically, so this is corruption from outside, not a torn write.
            raise StateError(f"{self.state_path} is not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise StateError(f"{self.state_path}: expected a JSON object")
        return UpdaterState.from_json(parsed)

    def save_state(self, state: UpdaterState) -> None:
        atomic_write_json(self.state_path, state.to_json())

    def read_root(self) -> bytes:
        try:
            return self.root_path.read_bytes()
        except FileNotFoundError as exc:
            raise ConfigError(
                f"no trusted root at {self.root_path}; enroll the device "
                "(edgeops agent run --bootstrap FILE)"
            ) from exc
        except OSError as exc:
            raise StorageError(f"cannot read {self.root_path}: {exc}") from exc

    def save_root(self, data: bytes) -> None:
        """Persist a root that the trust core has already accepted."""
        atomic_write_bytes(self.root_path, data)

    def next_event_seq(self) -> int:
        """Hand out the next event sequence number; numbers only grow, across restarts too.

        Reserves :data:`EVENT_SEQ_BLOCK` numbers per write of ``events.seq``, so after a
        restart (or a crash) numbering resumes at the end of the reserved block: gaps, never
        a number used twice.
        """
        with self._event_lock:
            if self._event_next is None:
                self._event_next = self._event_reserved = self._read_event_seq()
            seq = self._event_next
            if seq >= self._event_reserved:
                try:
                    atomic_write_bytes(
                        self.events_seq_path, f"{seq + EVENT_SEQ_BLOCK}\n".encode("ascii")
                    )
                    self._event_reserved = seq + EVENT_SEQ_BLOCK
                except StorageError:
                    # A full disk: the event still goes out, numbered from memory, and
                    # the reservation is tried again with the next number.
                    pass
            self._event_next = seq + 1
            return seq

    def _read_event_seq(self) -> int:
        try:
            return max(int(self.events_seq_path.read_text(encoding="ascii").strip() or "0"), 0)
        except (OSError, ValueError):
            return 0

    # ------------------------------------------------------------------ bundles

    def has_bundle(self, digest: str) -> bool:
        """Whether ``digest`` was verified and unpacked completely."""
        return (self.bundle_dir(digest) / ".complete").is_file()

    def mark_complete(self, digest: str) -> None:
        atomic_write_bytes(self.bundle_dir(digest) / ".complete", b"")

    def staging_dir(self, digest: str) -> Path:
        """Where a bundle is unpacked before :meth:`install_staging` renames it in place."""
        return self.bundles_dir / f".staging-{_check_digest(digest)}"

    def install_staging(self, digest: str) -> None:
        """Move a fully unpacked staging folder to ``bundles/<digest>`` and mark it complete."""
        target = self.bundle_dir(digest)
        try:
            if target.exists():
                shutil.rmtree(target)
            self.staging_dir(digest).rename(target)
            fsync_dir(self.bundles_dir)
        except OSError as exc:
            raise StorageError(f"cannot install bundle {digest[:12]}: {exc}") from exc
        self.mark_complete(digest)

    def remove_bundle(self, digest: str) -> None:
        shutil.rmtree(self.bundle_dir(digest), ignore_errors=True)
        self.download_path(digest).unlink(missing_ok=True)

    def prune(self, keep: set[str]) -> list[str]:
        """Remove every bundle and download not in ``keep``; returns what went."""
        removed: list[str] = []
        for folder in (self.bundles_dir, self.downloads_dir):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                digest = entry.name.removesuffix(".part").removeprefix(".staging-")
                if digest in keep:
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
                removed.append(entry.name)
        return removed


__all__ = ["Store"]
