"""``edgeops push`` against real agents: the fleet's generated Mosquitto config (TLS client
certificates, ACL), devices from :class:`~edgeops.fleet.simulate.Simulator` (real agents
verifying signed directives, fetching the retained chunks, health-checking real LiteRT
models on the bundle's test vectors, serving steady load and reporting telemetry).

``test_broker_acl_rollout.py`` proves the runner's decisions with scripted devices; these
are the same scenarios with real agents, through the push command. Each device's own
record of the last directive it accepted (``state.json``) is the evidence of what it
received.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeops.agent.runtimes.testing import tflite_add_model
from edgeops.bundle import create_bundle, verify_bundle
from edgeops.cli import app
from edgeops.cli import commands as _commands  # noqa: F401 - registers the commands
from edgeops.fleet.broker_config import BrokerFiles
from edgeops.fleet.fleetdir import FleetDir
from edgeops.fleet.push import Push
from edgeops.fleet.registry import open_registry
from edgeops.fleet.rollout import RolloutPolicy
from edgeops.fleet.simulate import Simulator
from edgeops.trust import SigningKey

from .test_broker_acl_rollout import Broker

pytestmark = pytest.mark.integration

FLEET = "demo"
GROUP = "sim"
DEVICES = 6
IDS = [f"sim-{i:03d}" for i in range(DEVICES)]
# Canary sim-000, wave 1 up to 50 % (sim-001, sim-002), wave 2 the rest.
GATES = [
    "--canary",
    "1",
    "--waves",
    "50%,100%",
    "--soak",
    "1s",
    "--wave-timeout",
    "20s",
    "--max-error-rate",
    "5%",
    "--max-p95-regression",
    "50%",
]


class Rig:
    """A fleet folder from ``edgeops fleet init``, its broker and two signed releases of a
    real model (``y = x + 1``, then ``y = x + 2``)."""

    def __init__(self, root: Path) -> None:
        from edgeops.broker import free_port

        self.root = root / "fleet"
        self.port = free_port()
        result = CliRunner().invoke(
            app,
            [
                "fleet",
                "init",
                str(self.root),
                "--name",
                FLEET,
                "--broker-url",
                f"mqtts://127.0.0.1:{self.port}",
            ],
        )
        assert result.exit_code == 0, result.output
        self.broker = Broker(BrokerFiles.of(self.root).config, self.port, root / "broker.log")
        self.broker.start()
        key = SigningKey.load(FleetDir.open(self.root).key_path("release"))
        inputs = root / "inputs.npz"
        x = np.ones((1, 4), dtype=np.float32)
        np.savez(inputs, x=np.stack([x, x * 2, x * 3]))
        self.bundles: list[Path] = []
        for release in (1, 2):
            model = root / f"add{release}.tflite"
            model.write_bytes(tflite_add_model(constant=float(release)))
            output = root / f"adder-{release}.bundle"
            create_bundle(
                model,
                name="adder",
                version=f"{release}.0",
                release=release,
                signing_keys=[key],
                output=output,
                test_inputs=inputs,
            )
            self.bundles.append(output)
        trusted = FleetDir.open(self.root).trusted()
        self.v1, self.v2 = (verify_bundle(b, trusted).sha256 for b in self.bundles)

    def simulator(self, **options: object) -> Simulator:
        sim = Simulator(
            self.root,
            devices=DEVICES,
            group=GROUP,
            board="generic-x86_64",
            faults_from_release=2,
            telemetry_interval_s=0.5,
            trial_window_s=1.0,
            # A board-like 20 ms per request: scheduling noise on a loaded 2-core machine
            # stays well inside the 50 % p95 gate, a slow model's 100 ms does not.
            base_delay_s=0.02,
            slow_delay_s=0.1,
            **options,  # type: ignore[arg-type]
        )
        sim.start()
        sim.wait_connected()
        return sim

    def baseline(self, sim: Simulator) -> None:
        """Every device on release 1, with p95 history on it in the registry."""
        policy = RolloutPolicy(waves=(100.0,), soak_s=1.0, wave_timeout_s=20.0)
        with Push(self.root, self.bundles[0], group=GROUP, policy=policy) as push:
            result = push.run()
        assert result.succeeded, result.reason
        assert all(sim.running_bundle(d) == self.v1 for d in IDS)

    def push(self, *extra: str, release: int = 2) -> tuple[int, dict[str, Any]]:
        bundle = self.bundles[release - 1]
        result = CliRunner().invoke(
            app,
            [
                *("push", str(bundle), "--fleet", str(self.root), "--group", GROUP),
                *GATES,
                *extra,
                "--json",
            ],
        )
        assert result.exception is None or isinstance(result.exception, SystemExit), result.output
        return result.exit_code, json.loads(result.stdout)

    def stop(self) -> None:
        self.broker.stop()


@pytest.fixture
def rig(tmp_path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    try:
        yield rig
    finally:
        rig.stop()


def last_directive_bundle(sim: Simulator, device_id: str) -> str:
    """The bundle of the last device directive this agent accepted (its state.json)."""
    return sim.agents[device_id].state.records["device"].bundle_digest


def wait_for(predicate: object, timeout: float = 15.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_canary_then_waves_commit_every_device(rig):
    sim = rig.simulator()
    try:
        rig.baseline(sim)
        code, result = rig.push()
        assert code == 0, (result["reason"], result["waves"])
        assert result["status"] == "succeeded"
        assert [w["stage"] for w in result["waves"]] == ["passed"] * 3
        assert all(sim.running_bundle(d) == rig.v2 for d in IDS)
        # The bundle went out once (its chunks and meta), whatever the fleet size; then one
        # directive per device.
        publishes = result["publishes"]
        assert publishes == {"chunks": publishes["chunks"], "directives": DEVICES}
        assert publishes["chunks"] >= 2
        store = open_registry(rig.root)
        try:
            assert {
                d.device_id: d.bundle for d in store.list_devices(group=GROUP)
            } == dict.fromkeys(IDS, rig.v2)
        finally:
            store.close()
    finally:
        sim.stop()


def push_aborted_at_the_canary(rig: Rig, sim: Simulator) -> dict[str, Any]:
    """Every device on release 1, then a push of release 2 that the canary's failure aborts
    before any other wave starts; returns the push's JSON result."""
    rig.baseline(sim)
    code, result = rig.push()
    assert code == 1, result
    assert result["status"] == "aborted"
    assert "canary" in result["reason"]
    assert [w["stage"] for w in result["waves"]] == ["failed", "not_started", "not_started"]
    return result


def test_canary_failing_its_health_check_aborts_before_anyone_else_gets_the_bundle(rig):
    # Every device computes wrong outputs with release 2: the canary's health check (the
    # bundle's own test vectors) fails on the device, which keeps serving release 1.
    sim = rig.simulator(fail_rate=1.0)
    try:
        result = push_aborted_at_the_canary(rig, sim)
        assert "failed" in result["reason"]
        assert sim.running_bundle("sim-000") == rig.v1
        assert sim.agents["sim-000"].state.records["device"].outcome.value == "failed"
        time.sleep(0.5)
        for device_id in IDS[1:]:
            assert last_directive_bundle(sim, device_id) == rig.v1, device_id
            assert sim.running_bundle(device_id) == rig.v1
    finally:
        sim.stop()


def test_a_canary_failing_live_requests_in_its_trial_rolls_itself_back_and_aborts(rig):
    # Release 2 passes the canary's health check (its test vectors) but fails every live
    # request once it serves them: the agent's trial rolls it back on its own.
    sim = rig.simulator(trial_faulty_devices=["sim-000"])
    try:
        push_aborted_at_the_canary(rig, sim)
        assert wait_for(lambda: sim.running_bundle("sim-000") == rig.v1)
        record = sim.agents["sim-000"].state.records["device"]
        assert record.outcome.value == "failed"
        # The trial counted the live requests that failed; the health check had passed.
        assert "error rate" in record.reason, record
        for device_id in IDS[1:]:
            assert last_directive_bundle(sim, device_id) == rig.v1, device_id
            assert sim.running_bundle(device_id) == rig.v1
    finally:
        sim.stop()


def test_a_wave_whose_p95_regresses_is_rolled_back_everywhere(rig):
    # Wave 1's devices serve release 2 100 ms slower; the canary is fine.
    sim = rig.simulator(slow_devices=["sim-001", "sim-002"])
    try:
        rig.baseline(sim)
        code, result = rig.push()
        assert code == 1, result
        assert "p95 latency regressed" in result["reason"]
        assert [w["stage"] for w in result["waves"]] == ["passed", "failed", "not_started"]
        assert result["rolled_back"] == ["sim-000", "sim-001", "sim-002"]
        assert wait_for(lambda: all(sim.running_bundle(d) == rig.v1 for d in IDS))
        for device_id in IDS[:3]:
            # The last directive each updated device accepted is the fleet's rollback.
            assert last_directive_bundle(sim, device_id) == rig.v1
            assert sim.agents[device_id].state.previous is not None
        for device_id in IDS[3:]:
            assert last_directive_bundle(sim, device_id) == rig.v1, device_id
    finally:
        sim.stop()


def test_a_push_killed_mid_rollout_is_finished_by_running_it_again(rig):
    sim = rig.simulator()
    try:
        command = [
            sys.executable,
            "-m",
            "edgeops",
            "push",
            str(rig.bundles[0]),
            "--fleet",
            str(rig.root),
            "--group",
            GROUP,
            "--id",
            "r-kill",
            *GATES,
            "--json",
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ)
        )
        store = open_registry(rig.root)
        try:

            def wave_one_started() -> bool:
                record = store.get_rollout("r-kill")
                return record is not None and record.waves[1].stage != "not_started"

            assert wait_for(wave_one_started, timeout=30), "wave 1 never started"
            process.send_signal(signal.SIGKILL)
            process.wait(10)
            record = store.get_rollout("r-kill")
            assert record is not None
            assert record.status == "running"
        finally:
            store.close()
        code, result = rig.push("--id", "r-kill", release=1)
        assert code == 0, (result["reason"], result["waves"])
        assert result["resumed"] is True
        assert result["status"] == "succeeded"
        assert all(sim.running_bundle(d) == rig.v1 for d in IDS)
    finally:
        sim.stop()


def test_ctrl_c_leaves_the_rollout_paused_and_it_resumes_where_it_stopped(rig):
    sim = rig.simulator()
    try:
        command = [
            sys.executable,
            "-m",
            "edgeops",
            "push",
            str(rig.bundles[0]),
            "--fleet",
            str(rig.root),
            "--group",
            GROUP,
            "--id",
            "r-int",
            *GATES,
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        store = open_registry(rig.root)
        try:

            def canary_committed() -> bool:
                record = store.get_rollout("r-int")
                return record is not None and record.device_phases.get("sim-000") == "committed"

            assert wait_for(canary_committed, timeout=30), "the canary never committed"
            process.send_signal(signal.SIGINT)
            _, stderr = process.communicate(timeout=20)
            assert process.returncode == 130, stderr
            assert "edgeops rollout resume r-int" in stderr
            record = store.get_rollout("r-int")
            assert record is not None
            assert record.status == "paused", record.reason
        finally:
            store.close()
        # Paused between waves: nobody past the canary was sent anything.
        assert all(not sim.agents[d].state.records for d in IDS[1:])
        resumed = CliRunner().invoke(app, ["rollout", "resume", "r-int", "--fleet", str(rig.root)])
        assert resumed.exit_code == 0, resumed.output
        code, result = rig.push("--id", "r-int", release=1)
        assert code == 0, (result["reason"], result["waves"])
        assert result["resumed"] is True
        assert all(sim.running_bundle(d) == rig.v1 for d in IDS)
    finally:
        sim.stop()


def test_detach_records_the_rollout_and_the_next_driver_runs_it(rig):
    sim = rig.simulator()
    try:
        args = ["--fleet", str(rig.root), "--group", GROUP, "--waves", "100%", "--soak", "0s"]
        args += ["--wave-timeout", "20s", "--id", "r-detached", "--json"]
        detached = CliRunner().invoke(app, ["push", str(rig.bundles[0]), *args, "--detach"])
        assert detached.exit_code == 0, detached.output
        summary = json.loads(detached.stdout)
        assert summary["detached"] is True
        assert summary["status"] == "running"
        assert summary["publishes"]["directives"] == 0
        store = open_registry(rig.root)
        try:
            record = store.get_rollout("r-detached")
            assert record is not None
            assert [w.stage for w in record.waves] == ["not_started"]
        finally:
            store.close()
        time.sleep(0.5)
        # Published and recorded, but no device was sent anything yet.
        assert all(not sim.agents[d].state.records for d in IDS)
        resumed = CliRunner().invoke(app, ["push", str(rig.bundles[0]), *args])
        assert resumed.exit_code == 0, resumed.output
        result = json.loads(resumed.stdout)
        assert result["resumed"] is True
        assert result["status"] == "succeeded"
        assert all(sim.running_bundle(d) == rig.v1 for d in IDS)
    finally:
        sim.stop()
