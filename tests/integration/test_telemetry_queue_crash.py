"""DiskQueue after SIGKILL mid-append: it reopens, keeps what was acknowledged, reuses no number."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeops.agent.telemetry import DiskQueue

pytestmark = [pytest.mark.integration, pytest.mark.faults]

WRITER = """
import sys
from pathlib import Path
from edgeops.agent.telemetry import DiskQueue

queue = DiskQueue(Path(sys.argv[1]), max_entries=50)
i = 0
while True:
    # payloads big enough that a kill often lands inside a write
    seq = queue.append(f"{i}:".encode() + bytes([i % 251]) * 200_000)
    print(seq, flush=True)
    i += 1
"""


def payload_is_whole(payload: bytes) -> bool:
    head, _, body = payload.partition(b":")
    return len(body) == 200_000 and body == bytes([int(head) % 251]) * 200_000


def test_queue_reopens_after_kill_minus_nine(tmp_path: Path) -> None:
    folder = tmp_path / "queue"
    rng = random.Random(7)
    confirmed: list[int] = []  # numbers whose append() returned before the kill
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(folder)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the writer is up and appending
        assert first.strip().isdigit()
        confirmed.append(int(first))
        time.sleep(rng.uniform(0.01, 0.2))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        confirmed.extend(int(line) for line in rest.split())
        assert proc.returncode == -signal.SIGKILL

        queue = DiskQueue(folder, max_entries=50)
        entries = queue.pending(100)
        seqs = [seq for seq, _ in entries]
        assert seqs == sorted(seqs)
        assert all(payload_is_whole(payload) for _, payload in entries)
        # Bounded to 50 by dropping the oldest: below the oldest kept entry everything was
        # dropped, above it every confirmed append is still there.
        kept = set(seqs)
        assert 0 < len(kept) <= 50
        assert [seq for seq in confirmed if seq >= min(kept) and seq not in kept] == []
        assert max(confirmed) in kept
        assert queue.next_seq > max(confirmed)
        assert not list(folder.glob(".*.tmp"))
    assert len(confirmed) > 6
    assert len(set(confirmed)) == len(confirmed)  # no number handed out twice across kills


ACKING_WRITER = """
import sys
from pathlib import Path
from edgeops.agent.telemetry import DiskQueue

def say(line):
    # One write per line: the kill may come between two writes, never inside one (a pipe
    # write this small is atomic), so every line the test reads is whole.
    sys.stdout.write(line + "\\n")
    sys.stdout.flush()

queue = DiskQueue(Path(sys.argv[1]))
i = 0
while True:
    seq = queue.append(f"{i}:".encode() + bytes([i % 251]) * 20_000)
    say(f"appended {seq}")
    if i % 3:  # a connected device: most entries are acknowledged at once
        say(f"acking {seq}")
        queue.ack(seq)
        say(f"acked {seq}")
    i += 1
"""


def test_acknowledged_entries_stay_gone_and_numbers_continue_after_kill_minus_nine(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "queue"
    rng = random.Random(11)
    appended: list[int] = []
    acked: set[int] = set()
    acking: set[int] = set()  # an ack may have completed without its "acked" line
    for _ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", ACKING_WRITER, str(folder)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("appended")
        time.sleep(rng.uniform(0.01, 0.2))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        lines = [first, *rest.splitlines()]
        appended_now = [int(line.split()[1]) for line in lines if line.startswith("appended")]
        acked.update(int(line.split()[1]) for line in lines if line.startswith("acked"))
        acking.update(int(line.split()[1]) for line in lines if line.startswith("acking"))
        assert min(appended_now) > max(appended, default=0)  # no number handed out twice
        appended.extend(appended_now)

        queue = DiskQueue(folder)
        pending = {seq for seq, _ in queue.pending(100_000)}
        assert not pending & acked, "an acknowledged entry came back"
        assert set(appended) - acking <= pending, "an unacknowledged entry was lost"
        # No gap: the kill may only have landed after an entry was stored but before the
        # writer printed its number, which then shows as pending.
        assert queue.next_seq - 1 in {max(appended), max(appended) + 1}
        assert pending <= set(range(1, queue.next_seq))
        appended = sorted(set(appended) | pending)
    assert len(appended) > 6
