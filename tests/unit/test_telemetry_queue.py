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


def test_acks_write_no_state_yet_numbers_survive_reopen_without_gaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeops.agent.telemetry import queue as queue_module
    from edgeops.fsutil import atomic_write_json as real_write

    folder = tmp_path / "q"
    queue = DiskQueue(folder)
    writes: list[Path] = []

    def counting_write(path: Path, value: object, **kw: object) -> None:
        writes.append(path)
        real_write(path, value)

    monkeypatch.setattr(queue_module, "atomic_write_json", counting_write)
    for i in range(5):
        seq = queue.append(f"m{i}".encode())
        assert queue.ack(seq)
    assert writes == []  # no state file per acknowledgement
    assert json.loads((folder / "queue.json").read_text())["next_seq"] == 1  # as opened
    assert list(folder.glob("*.entry")) == []
    # The highest acknowledged entry carries the number across a restart: no reuse, no gap.
    assert DiskQueue(folder).append(b"next") == 6


def test_acks_out_of_order_keep_the_highest_number(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    queue = DiskQueue(folder)
    for i in range(3):
        queue.append(bytes([i]))
    assert queue.ack(3)
    assert queue.ack(1)  # lower than the highest removed: plain unlink
    reopened = DiskQueue(folder)
    assert reopened.pending(10) == [(2, b"\x01")]
    assert reopened.append(b"x") == 4


def test_an_undone_removal_is_sent_again_never_renumbered(tmp_path: Path) -> None:
    # A power loss may undo an unsynced rename: the acknowledged entry is back and the
    # record of the highest removed number is older. The entry is replayed (the fleet drops
    # the duplicate) and numbering continues after it.
    folder = tmp_path / "q"
    queue = DiskQueue(folder)
    queue.append(b"one")
    queue.append(b"two")
    queue.ack(1)
    kept_one = (folder / "highest.acked").read_bytes()
    queue.ack(2)
    (folder / "highest.acked").replace(folder / f"{2:020d}.entry")  # undo the last rename
    (folder / "highest.acked").write_bytes(kept_one)
    reopened = DiskQueue(folder)
    assert reopened.pending(10) == [(2, b"two")]
    assert reopened.append(b"three") == 3


def test_dropped_entries_also_keep_the_highest_number(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    queue = DiskQueue(folder, max_entries=1)
    queue.append(b"a")
    queue.append(b"b")  # drops 1
    assert queue.dropped == 1
    assert queue.ack(2)
    reopened = DiskQueue(folder, max_entries=1)
    assert reopened.dropped == 1
    assert reopened.append(b"c") == 3


def test_a_damaged_highest_acked_file_falls_back_to_the_state_file(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    queue = DiskQueue(folder)
    for i in range(3):
        queue.append(bytes([i]))
    DiskQueue(folder)  # reopening records next_seq 4 in queue.json
    reopened = DiskQueue(folder)
    assert reopened.ack_through(3) == 3
    (folder / "highest.acked").write_bytes(b"EOQ1 torn")
    assert DiskQueue(folder).append(b"x") == 4


def test_an_entry_damaged_after_open_does_not_free_its_number(tmp_path: Path) -> None:
    folder = tmp_path / "q"
    queue = DiskQueue(folder)
    assert queue.append(b"payload") == 1
    path = folder / f"{1:020d}.entry"
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    assert queue.pending(10) == []
    assert queue.corrupted == 1
    assert not path.exists()
    assert DiskQueue(folder).append(b"next") == 2


def test_a_full_disk_that_empties_the_queue_keeps_the_last_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from edgeops.agent.telemetry import queue as queue_module
    from edgeops.errors import StorageError

    folder = tmp_path / "q"
    queue = DiskQueue(folder)
    assert queue.append(b"only") == 1

    def full_disk(path: Path, data: object, **kw: object) -> None:
        raise StorageError(f"cannot write {path}") from OSError(errno.ENOSPC, "No space")

    # queue.json cannot be written either: the dropped entry itself must keep number 1.
    monkeypatch.setattr(queue_module, "atomic_write_bytes", full_disk)
    monkeypatch.setattr(queue_module, "atomic_write_json", full_disk)
    with pytest.raises(StorageError):
        queue.append(b"no room")
    assert queue.dropped == 1
    assert len(queue) == 0
    monkeypatch.undo()
    assert DiskQueue(folder).append(b"room again") == 2
