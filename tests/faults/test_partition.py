"""Scenario 2: a network partition of some devices during a rollout.

Five simulated devices; three of them reach the broker through their own loopback proxy
(:class:`~edgeops.mqtt.proxy.TcpProxy`). Once the rollout is planned (canary ``sim-000``,
then one wave of the other four), ``sim-002``'s link turns slow (every block held 50 ms),
``sim-003``'s is dropped (connections cut, new ones refused) and ``sim-004``'s goes
half-open (both TCP connections stay up, nothing is forwarded).

Pass criterion: the slow device still installs within the wave; the two partitioned
devices count as silent once the wave timeout (12 s) has passed, which the gate allows
(50 %: 2 of 4), so the rollout succeeds with exactly 2 silent; they are still on the old
release, serving it, and their telemetry piles up on their disks. After healing, both
converge on the new release by themselves (the retained directive) and serve it; every
telemetry sequence number of every device — those taken during the partition included —
reaches the fleet, and the registry counts each once.
"""

from __future__ import annotations

import re
import threading

import pytest

from edgeops.fleet.push import Push, PushResult
from edgeops.mqtt.proxy import TcpProxy

from .rig import GROUP, FaultRig, assert_serving, policy, push, simulator, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

DEVICES = 5
SLOW, DROPPED, HALF_OPEN = "sim-002", "sim-003", "sim-004"
WAVE_TIMEOUT_S = 12.0


@pytest.fixture
def rig(tmp_path):
    rig = FaultRig(tmp_path)
    rig.start()
    yield rig
    rig.stop()


def test_partitioned_devices_are_silent_until_the_timeout_then_converge_losing_nothing(rig):
    proxies = {d: TcpProxy("127.0.0.1", rig.port).start() for d in (SLOW, DROPPED, HALF_OPEN)}
    sim = simulator(rig, DEVICES)
    try:
        sim.enroll()
        for device_id, proxy in proxies.items():
            toml = sim.devices[device_id].state_dir / "agent.toml"
            text, count = re.subn(r":\d+\"", f':{proxy.port}"', toml.read_text())
            assert count == 1, text
            toml.write_text(text)
        sim.start()
        sim.wait_connected()
        assert all(p.connections >= 1 for p in proxies.values())
        first = push(rig, 1, policy(canary_count=None))
        assert first.succeeded, first.reason
        bundle, v2 = rig.bundle(2)
        _, v1 = rig.bundle(1)

        job = Push(
            rig.root,
            bundle,
            group=GROUP,
            policy=policy(wave_timeout_s=WAVE_TIMEOUT_S, max_failures_percent=50.0),
        )
        outcome: list[PushResult] = []
        thread = threading.Thread(target=lambda: outcome.append(job.run()), daemon=True)
        try:
            job.prepare()
            proxies[SLOW].delay(0.05)
            proxies[DROPPED].refuse()
            proxies[DROPPED].cut()
            proxies[HALF_OPEN].stall()
            thread.start()
            thread.join(60)
            assert not thread.is_alive(), "the rollout did not end"
        finally:
            job.close()
        result = outcome[0]
        assert result.succeeded, (result.reason, result.waves)
        canary, wave = result.waves
        assert canary["counts"]["committed"] == 1
        assert wave["counts"]["committed"] == 2, wave
        assert wave["counts"]["silent"] == 2, wave
        for device_id in ("sim-000", "sim-001", SLOW):
            assert sim.running_bundle(device_id) == v2, device_id
            assert_serving(sim.agents[device_id], 2)
        for device_id in (DROPPED, HALF_OPEN):
            assert sim.running_bundle(device_id) == v1, device_id
            assert_serving(sim.agents[device_id], 1)
            # Unacknowledged telemetry waits on the device's disk.
            assert sim.agents[device_id].telemetry_pending > 0, device_id

        proxies[DROPPED].refuse(False)
        proxies[HALF_OPEN].stall(False)
        proxies[SLOW].delay(0)
        wait_for(
            lambda: all(sim.running_bundle(d) == v2 for d in sim.agents),
            timeout=60,
            what="the healed devices to install the new release",
        )
        for agent in sim.agents.values():
            assert_serving(agent, 2)
        wait_for(
            lambda: all(a.telemetry_pending == 0 for a in sim.agents.values()),
            what="every telemetry queue to empty",
        )
        for device_id in sim.agents:
            rig.assert_telemetry_complete(device_id)
    finally:
        sim.stop()
        for proxy in proxies.values():
            proxy.stop()
