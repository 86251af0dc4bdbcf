"""``edgeops simulate`` and :class:`~edgeops.fleet.simulate.Simulator` on the fleet's own
broker config: devices enrolled once, offline devices never connect, online ones install a
pushed bundle and report real inference latency."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from edgeops.cli.simulate import DEFAULT_SWITCH_INTERVAL_MS
from edgeops.fleet.push import Push
from edgeops.fleet.registry import open_registry
from edgeops.fleet.rollout import RolloutPolicy

from .test_push import GROUP, Rig

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(tmp_path):
    rig = Rig(tmp_path)
    try:
        yield rig
    finally:
        rig.stop()


def test_offline_devices_stay_away_and_the_others_report_real_latency(rig):
    sim = rig.simulator(offline_devices=["sim-005"])
    try:
        assert sorted(sim.agents) == [f"sim-{i:03d}" for i in range(5)]
        policy = RolloutPolicy(
            waves=(100.0,),
            soak_s=1.5,
            wave_timeout_s=8.0,
            max_failures_percent=20.0,
            max_p95_regression_percent=None,
        )
        with Push(rig.root, rig.bundles[0], group=GROUP, policy=policy) as push:
            result = push.run()
        assert result.succeeded, result.reason
        counts = result.waves[0]["counts"]
        assert (counts["committed"], counts["silent"]) == (5, 1)
        store = open_registry(rig.root)
        try:
            devices = {d.device_id: d for d in store.list_devices(group=GROUP)}
            assert not devices["sim-005"].online
            assert devices["sim-005"].bundle is None
            for device_id in sim.agents:
                record = devices[device_id]
                assert record.online
                assert record.bundle == rig.v1
                # The load thread's requests, timed by the agent: at least the simulated
                # board's 20 ms per request, far from a made-up figure.
                assert record.p95_ms is not None
                assert 20.0 <= record.p95_ms < 500.0, record.p95_ms
        finally:
            store.close()
        # The process's resident size is read (the per-agent figure is a difference that a
        # glibc trim after the install can take to zero, so only the reading is checked).
        sim.measure_rss()
        assert sim.rss_after > 0
    finally:
        sim.stop()


def test_the_command_enrolls_once_and_runs_until_its_duration(rig):
    command = [
        sys.executable,
        "-m",
        "edgeops",
        "simulate",
        "--fleet",
        str(rig.root),
        "--devices",
        "3",
        "--offline",
        "0.34",
        "--duration",
        "1",
        "--json",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (summary["devices"], summary["running"], len(summary["offline"])) == (3, 2, 1)
    # Hundreds of agents' threads share this interpreter: the process takes the longer
    # switch interval (the parent of this test keeps Python's default).
    assert summary["switch_interval_ms"] == DEFAULT_SWITCH_INTERVAL_MS
    cert = (rig.root / "simulator" / "sim-000" / "tls" / "device.crt").read_bytes()
    second = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert second.returncode == 0, second.stderr
    # Reused, not enrolled again: the same certificate.
    assert (rig.root / "simulator" / "sim-000" / "tls" / "device.crt").read_bytes() == cert
    store = open_registry(rig.root)
    try:
        assert len(store.list_devices(group="sim")) == 3
    finally:
        store.close()


def test_processes_split_the_devices_into_slices(rig):
    command = [sys.executable, "-m", "edgeops", "simulate", "--fleet", str(rig.root)]
    command += ["--devices", "4", "--processes", "2", "--duration", "1.5", "--json"]
    command += ["--switch-interval-ms", "20"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    assert run.returncode == 0, run.stderr
    decoder = json.JSONDecoder()
    text, summaries = run.stdout.strip(), []
    while text:
        summary, end = decoder.raw_decode(text)
        summaries.append(summary)
        text = text[end:].strip()
    assert sorted(s["running"] for s in summaries) == [2, 2]
    assert [s["switch_interval_ms"] for s in summaries] == [20.0, 20.0]
    store = open_registry(rig.root)
    try:
        devices = store.list_devices(group="sim")
        assert sorted(d.device_id for d in devices) == [f"sim-{i:03d}" for i in range(4)]
    finally:
        store.close()
    # Every slice's agents connected with their certificates: each left its retained state
    # (offline, from its clean stop) on the broker.
    from edgeops.fleet.fleetdir import FleetDir
    from edgeops.fleet.push import manager_link
    from edgeops.protocol import StateMessage

    states: dict[str, StateMessage] = {}
    link = manager_link(FleetDir.open(rig.root))
    link.connect(timeout=10)
    try:
        link.subscribe(
            "edgeops/v1/demo/dev/+/state",
            lambda m: states.__setitem__(m.topic.split("/")[4], StateMessage.from_bytes(m.payload)),
        ).wait(10)
        deadline = time.monotonic() + 5
        while len(states) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        link.close()
    assert sorted(states) == [f"sim-{i:03d}" for i in range(4)]
    assert not any(state.online for state in states.values())


@pytest.mark.parametrize("value", ["0", "-5", "5000"])
def test_a_switch_interval_out_of_range_is_refused_in_one_line(rig, value):
    command = [sys.executable, "-m", "edgeops", "simulate", "--fleet", str(rig.root)]
    command += ["--devices", "1", "--duration", "1", "--switch-interval-ms", value]
    run = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 1
    assert run.stderr.strip().count("\n") == 0
    assert "--switch-interval-ms: expected 0 to 1000" in run.stderr


def test_a_push_acts_on_the_last_report_at_once_not_at_its_next_tick(rig):
    sim = rig.simulator()
    try:
        # No health gates: they read telemetry, which is left to the ticks.
        policy = RolloutPolicy(
            waves=(100.0,),
            soak_s=0.0,
            wave_timeout_s=60.0,
            max_error_rate_percent=None,
            max_p95_regression_percent=None,
        )
        ticks: list[float] = []
        with Push(
            rig.root,
            rig.bundles[0],
            group=GROUP,
            policy=policy,
            tick_s=30.0,
            on_tick=lambda runner: ticks.append(time.monotonic()),
        ) as push:
            began = time.monotonic()
            result = push.run()
            took = time.monotonic() - began
        assert result.succeeded, result.reason
        assert result.waves[0]["counts"]["committed"] == len(sim.agents)
        # The first tick sends the directives; without a wake-up on the devices' reports the
        # next would come 30 s later. Updating and a 1 s trial take a few seconds here.
        assert len(ticks) >= 2
        assert took < 20.0, (took, [t - began for t in ticks])
        # Nor does it wait out a tick once the rollout is over.
        assert took - (ticks[-1] - began) < 1.0
    finally:
        sim.stop()
