"""DiskQueue: order, acks, persistent sequence numbers, bounds, torn entries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeops.agent.telemetry import DiskQueue
from edgeops.agent.telemetry.queue import encode_entry
from edgeops.errors import SizeLimitError


def test_append_pending_ack_in_order(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q")
    seqs = [queue.append(f"m{i}".encode()) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert queue.pending(3) == [(1, b"m0"), (2, b"m1"), (3, b"m2")]
    assert queue.ack(2) is True
    assert queue.ack(2) is False
    assert [seq for seq, _ in queue.pending(10)] == [1, 3, 4, 5]
    assert queue.ack_through(4) == 3
    assert queue.pending(10) == [(5, b"m4")]
    assert len(queue) == 1
    assert queue.stats().bytes == 2


def test_entries_and_sequence_survive_reopen(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q")
    for i in range(3):
        queue.append(bytes([i]))
    queue.ack(1)
    reopened = DiskQueue(tmp_path / "q")
    assert reopened.pending(10) == [(2, b"\x01"), (3, b"\x02")]
    assert reopened.append(b"next") == 4


def test_sequence_never_reused_after_queue_empties(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q")
    for _ in range(4):
        queue.append(b"x")
    assert queue.ack_through(4) == 4
    assert list((tmp_path / "q").glob("*.entry")) == []
    assert DiskQueue(tmp_path / "q").append(b"y") == 5


def test_oldest_dropped_first_when_entry_bound_reached(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q", max_entries=3)
    for i in range(5):
        queue.append(bytes([i]))
    assert [seq for seq, _ in queue.pending(10)] == [3, 4, 5]
    assert queue.dropped == 2
    assert DiskQueue(tmp_path / "q", max_entries=3).dropped == 2  # persisted for reporting


def test_byte_bound_and_oversized_payload(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q", max_bytes=10)
    queue.append(b"aaaa")
    queue.append(b"bbbb")
    queue.append(b"cccc")  # 12 bytes would exceed 10: the oldest goes
    assert [p for _, p in queue.pending(10)] == [b"bbbb", b"cccc"]
    assert queue.dropped == 1
    with pytest.raises(SizeLimitError, match="11 bytes exceeds the queue cap of 10"):
        queue.append(b"x" * 11)


def test_reopen_with_smaller_bounds_drops_oldest(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q")
    for i in range(6):
        queue.append(bytes([i]))
    smaller = DiskQueue(tmp_path / "q", max_entries=2)
    assert [seq for seq, _ in smaller.pending(10)] == [5, 6]
    assert smaller.dropped == 4


def test_torn_entry_and_leftover_temp_file_are_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    queue = DiskQueue(folder)
    queue.append(b"good-1")
    queue.append(b"good-2")
    # a truncated entry (power loss on a disk that lied about fsync) and a write that
    # never reached its rename
    (folder / f"{3:020d}.entry").write_bytes(encode_entry(3, b"never finished")[:-4])
    (folder / f".{4:020d}.entry.abc123.tmp").write_bytes(b"partial")
    reopened = DiskQueue(folder)
    assert reopened.pending(10) == [(1, b"good-1"), (2, b"good-2")]
    assert reopened.corrupted == 1
    assert reopened.append(b"after") == 4  # the torn entry's number is not reused
    assert not list(folder.glob("*.tmp"))


def test_entry_with_flipped_byte_or_wrong_name_is_skipped(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    queue = DiskQueue(folder)
    queue.append(b"payload")
    data = bytearray((folder / f"{1:020d}.entry").read_bytes())
    data[-1] ^= 0xFF
    (folder / f"{1:020d}.entry").write_bytes(bytes(data))
    (folder / f"{2:020d}.entry").write_bytes(encode_entry(7, b"renamed"))
    assert queue.pending(10) == []  # damaged after open: skipped at read time
    reopened = DiskQueue(folder)
    assert reopened.pending(10) == []
    assert reopened.corrupted == 1


def test_damaged_state_file_falls_back_to_entries(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    queue = DiskQueue(folder)
    for _ in range(3):
        queue.append(b"z")
    (folder / "queue.json").write_text("{not json")
    reopened = DiskQueue(folder)
    assert reopened.append(b"z") == 4
    assert json.loads((folder / "queue.json").read_text())["next_seq"] == 4  # rewritten on open
    assert [seq for seq, _ in reopened.pending(10)] == [1, 2, 3, 4]


def test_a_full_disk_drops_the_oldest_entries_and_counts_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from edgeops.agent.telemetry import queue as queue_module
    from edgeops.errors import StorageError

    queue = DiskQueue(tmp_path / "q")
    for i in range(4):
        queue.append(f"m{i}".encode())
    from edgeops.fsutil import atomic_write_bytes as real_write

    failures = [2]  # the disk has room again once two entries are gone

    def full_disk(path: Path, data: bytes, **kw: object) -> None:
        if failures[0] == 0:
            real_write(path, data)
            return
        failures[0] -= 1
        raise StorageError(f"cannot write {path}") from OSError(errno.ENOSPC, "No space")

    monkeypatch.setattr(queue_module, "atomic_write_bytes", full_disk)
    assert queue.append(b"new") == 5
    assert [seq for seq, _ in queue.pending(10)] == [3, 4, 5]
    assert queue.dropped == 2

    failures[0] = 10**6  # nothing left to drop once the queue is empty: the error stands
    queue.ack_through(5)
    with pytest.raises(StorageError):
        queue.append(b"more")
    assert queue.dropped == 2
