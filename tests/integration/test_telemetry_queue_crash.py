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
