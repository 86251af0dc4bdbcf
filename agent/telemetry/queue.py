"""Store-and-forward: a bounded on-disk queue of telemetry messages with sequence numbers.

The agent appends each telemetry batch here before publishing it, and removes it only when
the broker acknowledged it (PUBACK); after a disconnect or a restart it replays what is
pending, oldest first. Each entry gets the next number of a per-device sequence that only
grows, across restarts too, so the fleet side counts what arrived and drops duplicates.

On disk (one folder per queue)::

    00000000000000000042.entry   one file per entry: header (magic, seq, length, CRC-32) + payload
    highest.acked                the highest-numbered entry removed so far (renamed, not copied)
    queue.json                   {"next_seq": 43, "dropped": 3}; rewritten on open, on drops

Every entry is written with :func:`edgeops.fsutil.atomic_write_bytes` (temp file, fsync,
rename, folder fsync), so a crash leaves either the whole entry or none; a leftover temp file
is removed on open, and an entry whose header or CRC does not check (a disk that lied about
fsync) is skipped, counted in ``corrupted`` and removed, never fatal.

Sequence numbers are never reused, and skip only dropped (or damaged) entries, without a
write per acknowledgement: an acknowledged entry is renamed over ``highest.acked`` when its
number is the highest removed so far, and unlinked otherwise. So the highest number
:meth:`DiskQueue.append` returned is always on disk, as an entry or as ``highest.acked``:
the entry was durable before ``append`` returned, and the one operation that removes its
name gives it to ``highest.acked``. A crash, even a power loss that undoes recent unsynced
renames and unlinks, leaves one of the two (an undone removal only means an entry sent
again, which the fleet drops by device and seq). Other removals are rare and record the
number in ``queue.json`` first (drops, damaged entries), or, for a drop forced by a full
disk where ``queue.json`` may not be writable, rename the last entry the same way.

Bounded: past ``max_entries`` or ``max_bytes`` the oldest entries are dropped first, and the
total dropped is kept in ``queue.json`` so it can be reported. ``highest.acked`` adds one
entry's bytes on disk beyond the bounds.
"""

from __future__ import annotations

import contextlib
import errno
import json
import struct
import threading
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from edgeops.errors import SizeLimitError, StorageError
from edgeops.fsutil import atomic_write_bytes, atomic_write_json

_MAGIC = b"EOQ1"
_HEADER = struct.Struct(">4sQII")  # magic, seq, payload length, CRC-32 of the payload
_SUFFIX = ".entry"
_STATE = "queue.json"
_HIGHEST_ACKED = "highest.acked"


@dataclass(frozen=True, kw_only=True)
class QueueStats:
    """What the queue holds and has lost."""

    entries: int
    bytes: int
    next_seq: int
    dropped: int
    corrupted: int

    def to_json(self) -> dict[str, int]:
        """A JSON-ready dict with the same keys."""
        return asdict(self)


def _disk_full(exc: StorageError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT)


def _entry_name(seq: int) -> str:
    return f"{seq:020d}{_SUFFIX}"


def encode_entry(seq: int, payload: bytes) -> bytes:
    """The bytes of one entry file."""
    return _HEADER.pack(_MAGIC, seq, len(payload), zlib.crc32(payload)) + payload


def decode_entry(data: bytes, seq: int) -> bytes | None:
    """The payload of an entry file, or ``None`` when it is torn or not entry ``seq``."""
    if len(data) < _HEADER.size:
        return None
    magic, found_seq, length, crc = _HEADER.unpack_from(data)
    payload = data[_HEADER.size :]
    if magic != _MAGIC or found_seq != seq or length != len(payload):
        return None
    if zlib.crc32(payload) != crc:
        return None
    return payload


class DiskQueue:
    """A bounded, crash-safe FIFO of byte payloads with persistent sequence numbers.

    Thread-safe within one process; one process per folder (the agent's state dir).
    """

    def __init__(
        self,
        folder: Path,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be >= 1")
        self.folder = Path(folder)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}  # seq -> payload size, oldest first
        self._bytes = 0
        self._corrupted = 0
        self._highest_acked = 0  # the number in highest.acked; 0 when there is none
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create queue folder {self.folder}: {exc}") from exc
        self._next_seq, self._dropped = self._read_state()
        self._recover()

    # -- opening ---------------------------------------------------------------------

    def _read_state(self) -> tuple[int, int]:
        path = self.folder / _STATE
        try:
            state = json.loads(path.read_text())
            return max(int(state["next_seq"]), 1), max(int(state["dropped"]), 0)
        except FileNotFoundError:
            return 1, 0
        except (OSError, ValueError, KeyError, TypeError):
            # queue.json is only ever replaced atomically, so this is outside damage;
            # the entry files still carry the highest sequence number used.
            return 1, 0

    def _read_highest_acked(self) -> int:
        try:
            data = (self.folder / _HIGHEST_ACKED).read_bytes()
        except OSError:  # none yet, or unreadable: the entries and queue.json are the record
            return 0
        if len(data) < _HEADER.size:
            return 0
        seq: int = _HEADER.unpack_from(data)[1]
        # Checked whole, as an entry: only a number from an intact entry is trusted; a
        # damaged file (outside damage) leaves queue.json and the entries as the record.
        return seq if decode_entry(data, seq) is not None else 0

    def _recover(self) -> None:
        found: list[int] = []
        for path in self.folder.iterdir():
            name = path.name
            if name.startswith(".") and name.endswith(".tmp"):
                path.unlink(missing_ok=True)  # a write that never reached its rename
                continue
            if name.endswith(_SUFFIX) and name[: -len(_SUFFIX)].isdigit():
                found.append(int(name[: -len(_SUFFIX)]))
        self._highest_acked = self._read_highest_acked()
        self._next_seq = max(self._next_seq, self._highest_acked + 1)
        torn: list[int] = []
        for seq in sorted(found):
            path = self.folder / _entry_name(seq)
            try:
                payload = decode_entry(path.read_bytes(), seq)
            except OSError:
                payload = None
            # A torn entry still used its number; never hand that number out again.
            self._next_seq = max(self._next_seq, seq + 1)
            if payload is None:
                torn.append(seq)
                continue
            self._sizes[seq] = len(payload)
            self._bytes += len(payload)
        self._write_state()  # before the torn entries go: they may hold the highest number
        for seq in torn:
            self._corrupted += 1
            (self.folder / _entry_name(seq)).unlink(missing_ok=True)
        self._enforce_bounds(incoming=0)

    def _write_state(self) -> None:
        atomic_write_json(
            self.folder / _STATE, {"next_seq": self._next_seq, "dropped": self._dropped}
        )

    def _retire(self, seq: int) -> None:
        """Take entry ``seq`` off the disk, keeping the highest number removed on record.

        No fsync: an unsynced rename or unlink undone by a power loss leaves the entry,
        which is sent again (a duplicate the fleet drops), never a reused number.
        """
        path = self.folder / _entry_name(seq)
        if seq > self._highest_acked:
            try:
                path.replace(self.folder / _HIGHEST_ACKED)
            except FileNotFoundError:
                return  # removed from outside; pending() already treats it as gone
            self._highest_acked = seq
        else:
            path.unlink(missing_ok=True)

    # -- bounds ----------------------------------------------------------------------

    def _enforce_bounds(self, *, incoming: int) -> None:
        extra = 1 if incoming else 0
        victims: list[int] = []
        entries, used = len(self._sizes), self._bytes
        for seq, size in self._sizes.items():
            if entries + extra <= self.max_entries and used + incoming <= self.max_bytes:
                break
            victims.append(seq)
            entries -= 1
            used -= size
        if not victims:
            return
        self._dropped += len(victims)
        self._write_state()  # the dropped total is reported; a drop is never forgotten
        for seq in victims:
            self._bytes -= self._sizes.pop(seq)
            # Unlinked, not retired: that frees the space, and queue.json has the number.
            (self.folder / _entry_name(seq)).unlink(missing_ok=True)

    # -- the queue -------------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Store ``payload`` durably and return its sequence number.

        Drops the oldest entries first when the queue would exceed its bounds; raises
        :class:`SizeLimitError` for a payload larger than ``max_bytes`` on its own.
        """
        if len(payload) > self.max_bytes:
            raise SizeLimitError(
                f"telemetry entry of {len(payload)} bytes exceeds the queue cap of "
                f"{self.max_bytes} bytes"
            )
        with self._lock:
            self._enforce_bounds(incoming=len(payload))
            seq = self._next_seq
            dropped_for_space = 0
            while True:
                try:
                    # Both fsyncs (entry, then folder) stay: once append returns, the entry
                    # is published and may be acknowledged, and until then its name on disk
                    # is the only record of its number. Without the folder fsync a power
                    # loss could take the name, and the number would be handed out again
                    # for a sample the fleet then drops as a duplicate of the first.
                    atomic_write_bytes(self.folder / _entry_name(seq), encode_entry(seq, payload))
                    break
                except StorageError as exc:
                    # A full disk is one more bound: keep the newest, as for max_bytes.
                    if not _disk_full(exc) or not self._sizes:
                        raise
                    oldest = next(iter(self._sizes))
                    try:
                        if len(self._sizes) == 1:
                            # It may hold the highest number and queue.json cannot be
                            # written on this disk: keep the number, as an ack would.
                            self._retire(oldest)
                        else:
                            (self.folder / _entry_name(oldest)).unlink(missing_ok=True)
                    except OSError as remove_exc:
                        raise StorageError(
                            f"cannot drop queue entry {oldest}: {remove_exc}"
                        ) from remove_exc
                    self._bytes -= self._sizes.pop(oldest)
                    self._dropped += 1
                    dropped_for_space += 1
            self._next_seq = seq + 1
            if dropped_for_space:
                with contextlib.suppress(StorageError):
                    self._write_state()
            self._sizes[seq] = len(payload)
            self._bytes += len(payload)
            return seq

    def pending(self, limit: int = 100) -> list[tuple[int, bytes]]:
        """Up to ``limit`` entries not yet acknowledged, oldest first."""
        with self._lock:
            seqs = list(self._sizes)[: max(limit, 0)]
        out: list[tuple[int, bytes]] = []
        for seq in seqs:
            try:
                payload = decode_entry((self.folder / _entry_name(seq)).read_bytes(), seq)
            except FileNotFoundError:
                continue  # acknowledged by another thread meanwhile
            except OSError as exc:
                raise StorageError(f"cannot read queue entry {seq}: {exc}") from exc
            if payload is None:
                with self._lock:
                    if self._sizes.pop(seq, None) is not None:
                        self._corrupted += 1
                        # Not renamed over highest.acked, which must stay intact; the
                        # number is recorded first, as it may be the highest one.
                        self._write_state()
                        (self.folder / _entry_name(seq)).unlink(missing_ok=True)
                continue
            out.append((seq, payload))
        return out

    def ack(self, seq: int) -> bool:
        """Remove entry ``seq`` after the broker confirmed it; ``False`` if not queued."""
        with self._lock:
            size = self._sizes.pop(seq, None)
            if size is None:
                return False
            self._bytes -= size
            try:
                self._retire(seq)
            except OSError as exc:
                raise StorageError(f"cannot remove queue entry {seq}: {exc}") from exc
            return True

    def ack_through(self, seq: int) -> int:
        """Remove every entry numbered ``seq`` or lower; returns how many went."""
        with self._lock:
            done = [s for s in self._sizes if s <= seq]
        return sum(self.ack(s) for s in done)

    @property
    def next_seq(self) -> int:
        """The number the next :meth:`append` will return."""
        return self._next_seq

    @property
    def dropped(self) -> int:
        """Entries dropped to stay within bounds, in total since the queue was created."""
        return self._dropped

    @property
    def corrupted(self) -> int:
        """Torn or damaged entries skipped since this process opened the queue."""
        return self._corrupted

    def __len__(self) -> int:
        return len(self._sizes)

    def stats(self) -> QueueStats:
        """Entries, bytes, next sequence number, dropped and corrupted counts."""
        with self._lock:
            return QueueStats(
                entries=len(self._sizes),
                bytes=self._bytes,
                next_seq=self._next_seq,
                dropped=self._dropped,
                corrupted=self._corrupted,
            )
