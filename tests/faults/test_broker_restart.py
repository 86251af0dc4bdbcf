"""Scenario 1: the broker restarts in the middle of a rollout.

Pass criterion: the rollout started before the restart succeeds without being run again;
every device ends committed on the new release and answers with it (``y = x + 2``); every
telemetry sequence number each device produced reached the fleet (a subscriber with a
persistent session), and the registry holds each (device, seq) once.

Single faults covered elsewhere and not repeated here: one agent's download across a
restart (``test_agent_updates``), the link's reconnect (``test_mqtt_link``), a manager
restart (``test_push``).
"""

from __future__ import annotations

import threading

import pytest

from edgeops.fleet.push import Push, PushResult

from .rig import GROUP, FaultRig, assert_serving, policy, push, simulator, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

DEVICES = 4


@pytest.fixture
def rig(tmp_path):
    rig = FaultRig(tmp_path)
    rig.start()
    yield rig
    rig.stop()


def test_a_broker_restart_mid_rollout_loses_nothing_and_the_rollout_completes(rig):
    sim = simulator(rig, DEVICES)
    sim.start()
    try:
        sim.wait_connected()
        first = push(rig, 1, policy(canary_count=None))
        assert first.succeeded, first.reason
        bundle, v2 = rig.bundle(2)
        job = Push(rig.root, bundle, group=GROUP, policy=policy())
        outcome: list[PushResult] = []
        thread = threading.Thread(target=lambda: outcome.append(job.run()), daemon=True)
        job.prepare()
        thread.start()
        try:
            # Restart once the canary is on release 2 and the last wave was sent its
            # directives: devices are mid-download or mid-trial when the broker goes.
            wait_for(
                lambda: (
                    job.runner is not None
                    and (job.runner.controller.current >= 1 or job.runner.finished)
                ),
                what="the wave after the canary to start",
            )
            assert not job.runner.finished, job.result()
            rig.restart_broker(down_s=1.5)
            thread.join(90)
            assert not thread.is_alive(), "the rollout did not finish after the restart"
        finally:
            job.close()
        result = outcome[0]
        assert result.succeeded, (result.reason, result.waves)
        assert not result.resumed
        for device_id, agent in sim.agents.items():
            assert sim.running_bundle(device_id) == v2, device_id
            assert_serving(agent, 2)
        # Nothing lost: once every queue is empty, every number up to the last one sent
        # has reached the subscriber.
        wait_for(
            lambda: all(a.telemetry_pending == 0 for a in sim.agents.values()),
            what="every telemetry queue to empty",
        )
        for device_id in sim.agents:
            rig.assert_telemetry_complete(device_id)
    finally:
        sim.stop()
