"""Scenario 4: the device's state folder runs out of space.

The state folder is a size-capped tmpfs mounted for the test (root, or CAP_SYS_ADMIN, is
needed: without it the test fails and says so, it is not skipped). A filler file takes
the free space.

Pass criterion: with the disk full, an update fails cleanly — an ``update_result`` event
``failed`` whose reason names the lack of space — and the old release stays committed and
serving. Offline with a nearly full disk, the telemetry queue keeps the newest samples:
when an entry no longer fits it drops the oldest ones and counts them, so after space is
freed and the link heals the fleet receives every sequence number except the dropped
ones, which are the oldest of the outage, and the count the device reports equals the
gap. Then the next update succeeds and the new release serves.
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeops.mqtt.proxy import TcpProxy

from .rig import Devices, FaultRig, assert_serving, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SIZE = "4m"
PAGE = 4096


@pytest.fixture
def rig(tmp_path):
    rig = FaultRig(tmp_path)
    rig.start()
    yield rig
    rig.stop()


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"this scenario mounts a {SIZE} tmpfs as the device's state folder and needs "
            f"root or CAP_SYS_ADMIN (euid {os.geteuid()}); mount said: "
            f"{mounted.stderr.strip() or mounted.returncode}"
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(path: Path, leave: int = 0) -> None:
    """Write ``path`` until the file system has at most ``leave`` bytes free."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for block in (1 << 20, 64 << 10, PAGE, 512, 1):
            while True:
                stats = os.statvfs(path.parent)
                if stats.f_bavail * stats.f_frsize - block < leave:
                    break
                try:
                    os.write(fd, b"\0" * block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


def test_a_full_state_disk_fails_the_update_cleanly_and_the_queue_drops_oldest_first(
    rig, tmp_path, small_disk
):
    devices = Devices(rig, tmp_path / "devices")
    state_dir = small_disk / "state"
    config = devices.install("full", state_dir)
    proxy = TcpProxy("127.0.0.1", rig.port).start()
    text = config.read_text().replace(f":{rig.port}", f":{proxy.port}")
    config.write_text(text)
    agent = devices.agent(config, telemetry_interval_s=0.2)
    filler = small_disk / "filler"
    agent.start()
    try:
        v1 = devices.send("full", 1)
        assert devices.wait_outcome("full", v1).state == "committed"

        # Disk full: the download has nowhere to go.
        fill(filler)
        event = devices.wait_outcome("full", devices.send("full", 2))
        assert (event.kind, event.state) == ("update_result", "failed"), event
        assert "No space left on device" in event.reason, event.reason
        assert agent.state.committed is not None
        assert agent.state.committed.digest == v1
        assert_serving(agent, 1)

        # Room for the first state write, not for the whole update: it fails at once (not
        # at the fetch's 10-minute timeout), whichever write meets the full disk first, its
        # partial files are removed, and the device rests, ready for the next directive.
        filler.unlink()
        fill(filler, leave=3 * PAGE)
        v2 = devices.send("full", 2)
        event = devices.wait_outcome("full", v2)
        assert (event.kind, event.state) == ("update_result", "failed"), event
        assert "No space left on device" in event.reason, event.reason
        assert not agent.store.download_path(v2).exists()
        assert agent.state.candidate is None
        assert_serving(agent, 1)

        # Offline with room for a few entries: the queue fills the disk, then keeps the
        # newest by dropping the oldest.
        filler.unlink()
        wait_for(lambda: agent.telemetry_pending == 0, what="the queue to empty")
        outage_from = max(rig.received_seqs("full"), default=0) + 1
        proxy.refuse()
        proxy.cut()
        fill(filler, leave=8 * PAGE)
        wait_for(lambda: agent.telemetry_pending >= 3, what="entries to queue up offline")
        time.sleep(3.0)  # about 15 more samples than the disk can hold
        assert_serving(agent, 1)

        filler.unlink()
        proxy.refuse(False)
        wait_for(lambda: agent.link.connected, what="the link to heal")
        wait_for(lambda: agent.telemetry_pending == 0, what="the queue to drain")
        seqs = set(rig.received_seqs("full"))
        last = max(seqs)
        missing = [s for s in range(1, last + 1) if s not in seqs]
        assert missing, "nothing was dropped: the disk never filled"
        assert rig.dropped.get("full") == len(missing), (rig.dropped, missing)
        # Oldest first: every dropped entry is older than every kept entry of the outage.
        kept = [s for s in seqs if s >= outage_from and s > min(missing)]
        assert min(missing) >= outage_from, (missing, outage_from)
        assert max(missing) < min(kept), (missing, kept)

        event = devices.wait_outcome("full", devices.send("full", 2))
        assert (event.kind, event.state) == ("update_result", "committed"), event
        assert_serving(agent, 2)
    finally:
        agent.stop()
        proxy.stop()
