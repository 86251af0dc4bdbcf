"""``kill -9`` in every update phase (Mender's test pattern): the agent runs as a real
process with ``EDGEOPS_TEST_CRASH_AT=<phase>``, which SIGKILLs it right after that phase is
persisted. After a restart without the hook the device must rest either committed on the
new bundle or back on the old one, and serve what it says it runs.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from edgeops.agent.enroll import install_bootstrap
from edgeops.agent.serving import UnixHTTPConnection
from edgeops.hardware import unit_environment

from .test_agent_fleet import FleetRig, wait_for
from .test_agent_updates import Bundles

pytestmark = [pytest.mark.integration, pytest.mark.faults]

SETTLED = {"committed", "failed", "noop", "gave_up"}


def infer(api: Path) -> float:
    """One request through the agent's inference API; returns y[0] for x = 1."""
    body = json.dumps(
        {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 1, 1, 1]}]}
    )
    connection = UnixHTTPConnection(api, timeout=5)
    try:
        connection.request(
            "POST", "/v2/models/adder/infer", body, {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        data = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 200, data
    return float(data["outputs"][0]["data"][0])


class Device:
    """An enrolled device whose agent runs as a subprocess."""

    def __init__(self, rig: FleetRig, tmp_path: Path) -> None:
        self.state_dir = tmp_path / "dev-1"
        config = install_bootstrap(rig.enroll("dev-1", tmp_path), self.state_dir)
        self.api = self.state_dir / "api.sock"
        text = config.read_text().replace("port = 8321", f'unix_socket = "{self.api}"')
        text += "\n[update]\nmin_requests = 5\ntrial_check_interval_s = 0.05\n"
        config.write_text(text)
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tmp_path / "agent.log"

    def start(self, crash_at: str | None = None) -> None:
        # With the unit's environment (PYTHONOPTIMIZE=2: no docstrings, no asserts), as on
        # a board.
        env = {**os.environ, **unit_environment()}
        env.pop("EDGEOPS_TEST_CRASH_AT", None)
        if crash_at:
            env["EDGEOPS_TEST_CRASH_AT"] = crash_at
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edgeops.agent.daemon", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def state(self) -> dict[str, Any]:
        try:
            return json.loads((self.state_dir / "state.json").read_bytes())
        except FileNotFoundError:
            return {"phase": "idle", "records": {}}

    def settled_on(self, digest: str | None = None) -> bool:
        state = self.state()
        record = state["records"].get("device")
        committed = (state.get("committed") or {}).get("digest")
        return (
            record is not None
            and record["outcome"] in SETTLED
            and state["candidate"] is None
            and (digest is None or committed == digest)
        )


@pytest.fixture
def rig(tmp_path):
    rig = FleetRig(tmp_path)
    rig.start()
    yield rig
    rig.stop()


PHASES = [
    "downloading",
    "verifying",
    "staged",
    "testing",
    "activating",
    "trial",
    "committed",
    "rolling_back",
    "rolled_back",
]


@pytest.mark.parametrize("phase", PHASES)
def test_kill_9_in_each_phase_ends_committed_or_back_on_the_old_bundle(rig, tmp_path, phase):
    bundles = Bundles(rig, tmp_path / "bundles")
    device = Device(rig, tmp_path)
    try:
        # Run 1: a first bundle, committed, then a clean stop.
        device.start()
        first = bundles.push("dev-1", bundles.build(1, 1.0), window_s=0.2)
        wait_for(lambda: device.settled_on(first), timeout=60, what="first bundle")
        device.stop()

        # Run 2: the hook kills the agent when it persists ``phase`` for the second bundle.
        device.start(crash_at=phase)
        rolls_back = phase in ("rolling_back", "rolled_back")
        policy: dict[str, Any] = {"max_p95_latency_ms": 1e-6} if rolls_back else {}
        second = bundles.push(
            "dev-1", bundles.build(2, 10.0), window_s=30.0 if rolls_back else 0.5, **policy
        )
        stop_traffic = threading.Event()
        traffic = threading.Thread(target=_load, args=(device.api, stop_traffic), daemon=True)
        if rolls_back:
            traffic.start()
        assert device.process is not None
        try:
            assert device.process.wait(60) == -signal.SIGKILL, device.log.read_text()
        finally:
            stop_traffic.set()
        assert device.state()["phase"] == phase
        # The broker saw the connection die without DISCONNECT: the will marks it offline.
        wait_for(lambda: (s := rig.state("dev-1")) is not None and not s.online, what="will")

        # Run 3: no hook. Whatever it decides, it must settle and serve what it says.
        device.start()
        wait_for(device.settled_on, timeout=60, what="settled after restart")
        wait_for(device.api.exists, timeout=30, what="inference API")
        state = device.state()
        committed = state["committed"]["digest"]
        assert committed in (first, second)
        assert state["phase"] in ("committed", "rolled_back", "failed")
        expected = 2.0 if committed == first else 11.0
        wait_for(lambda: _serves(device.api, expected), timeout=30, what=f"serving y={expected}")
        if phase == "committed":
            assert committed == second  # committed before the kill: it stays
    finally:
        device.kill()


def _serves(api: Path, expected: float) -> bool:
    try:
        return infer(api) == expected
    except (OSError, AssertionError, http.client.HTTPException):
        return False


def _load(api: Path, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            infer(api)
        except (OSError, AssertionError, http.client.HTTPException, ValueError):
            time.sleep(0.01)


def test_a_directive_that_kills_the_agent_every_time_is_stopped_by_the_loop_guard(rig, tmp_path):
    bundles = Bundles(rig, tmp_path / "bundles")
    device = Device(rig, tmp_path)
    try:
        device.start()
        first = bundles.push("dev-1", bundles.build(1, 1.0), window_s=0.2)
        wait_for(lambda: device.settled_on(first), timeout=60, what="first bundle")
        device.stop()
        # The new bundle "crashes" the agent in its trial on every attempt (max_attempts=3).
        device.start(crash_at="trial")
        second = bundles.push("dev-1", bundles.build(2, 10.0), window_s=0.5)
        for attempt in range(1, 4):
            assert device.process is not None
            assert device.process.wait(60) == -signal.SIGKILL
            assert device.state()["records"]["device"]["attempts"] == attempt
            device.start(crash_at="trial" if attempt < 3 else None)
        wait_for(lambda: device.settled_on(first), timeout=30, what="gave up")
        record = device.state()["records"]["device"]
        assert record["outcome"] == "gave_up"
        assert "interrupted 3 times" in record["reason"]
        wait_for(lambda: any(e.kind == "loop_guard" for e in rig.events("dev-1")), what="event")
        guard = [e for e in rig.events("dev-1") if e.kind == "loop_guard"]
        assert len(guard) == 1
        assert guard[0].bundle_digest == second
        assert guard[0].state == "failed"
        wait_for(device.api.exists, timeout=30, what="inference API")
        wait_for(lambda: _serves(device.api, 2.0), what="old model serving")
    finally:
        device.kill()
