"""Every decision of the rollout controller, driven with values and a hand-moved clock."""

from __future__ import annotations

import json

import pytest

from edgeops.errors import ConfigError, StateError
from edgeops.fleet.rollout import (
    DeviceCandidate,
    DevicePhase,
    HealthSample,
    PublishDirectives,
    RolloutController,
    RolloutFinished,
    RolloutPolicy,
    RolloutStatus,
    WaveStage,
    plan_waves,
)

NEW = "sha256:new"
OLD = "sha256:old"


def group(n: int) -> list[DeviceCandidate]:
    return [DeviceCandidate(device_id=f"dev-{i:03d}") for i in range(n)]


def make(n: int = 10, **policy: object) -> RolloutController:
    settings: dict[str, object] = {
        "canary_count": 1,
        "waves": (50.0, 100.0),
        "soak_s": 60.0,
        "wave_timeout_s": 600.0,
        "max_error_rate_percent": 5.0,
        "max_p95_regression_percent": 25.0,
    }
    settings.update(policy)
    pol = RolloutPolicy(**settings)  # type: ignore[arg-type]
    return RolloutController(
        rollout_id="r1",
        bundle=NEW,
        previous_bundle=OLD,
        policy=pol,
        waves=plan_waves(group(n), pol),
        baseline_p95_ms={f"dev-{i:03d}": 10.0 for i in range(n)},
    )


def installs(actions) -> list[str]:
    return [
        d
        for a in actions
        if isinstance(a, PublishDirectives) and a.action == "install"
        for d in a.device_ids
    ]


def rollbacks(actions) -> list[str]:
    return [
        d
        for a in actions
        if isinstance(a, PublishDirectives) and a.action == "rollback"
        for d in a.device_ids
    ]


def commit_healthy(ctl: RolloutController, devices, now: float, p95: float = 10.5) -> None:
    for device_id in devices:
        ctl.on_event(device_id, "downloading", now=now, bundle=NEW)
        ctl.on_event(device_id, "trial", now=now, bundle=NEW)
        ctl.on_event(device_id, "committed", now=now, bundle=NEW)
        ctl.on_health(device_id, HealthSample(bundle=NEW, p95_ms=p95, error_rate=0.001))


def run_wave(ctl: RolloutController, now: float, sent_log: list[str], **health) -> float:
    """Commit the current wave's devices and soak it; returns the new time."""
    wave = ctl.waves[ctl.current]
    commit_healthy(ctl, wave.devices, now, **health)
    sent_log += installs(ctl.step(now=now + 1))
    now += 1 + ctl.policy.soak_s
    sent_log += installs(ctl.step(now=now))
    return now


def test_plan_canary_then_cumulative_waves():
    policy = RolloutPolicy(canary_count=2, waves=(10.0, 50.0, 100.0))
    plans = plan_waves(group(20), policy)
    assert [len(p.devices) for p in plans] == [2, 8, 10]
    assert plans[0].canary
    assert sorted(d for p in plans for d in p.devices) == [f"dev-{i:03d}" for i in range(20)]


def test_plan_puts_online_devices_in_the_canary_and_drops_empty_waves():
    devices = [DeviceCandidate(device_id="a", online=False), DeviceCandidate(device_id="b")]
    plans = plan_waves(devices, RolloutPolicy(canary_percent=10.0, waves=(10.0, 60.0, 100.0)))
    assert plans[0].devices == ("b",)
    assert [p.devices for p in plans[1:]] == [("a",)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"waves": (50.0, 40.0, 100.0)},
        {"waves": (10.0, 50.0)},
        {"canary_count": 1, "canary_percent": 5.0},
        {"canary_count": 0},
        {"soak_s": -1.0},
    ],
)
def test_policy_rejects_nonsense(kwargs):
    with pytest.raises(ConfigError):
        RolloutPolicy(**kwargs)


def test_canary_passes_then_every_wave_completes():
    ctl = make(10)
    sent: list[str] = []
    first = ctl.step(now=0.0)
    sent += installs(first)
    assert sent == ["dev-000"]
    assert ctl.wave_stage(0) is WaveStage.INSTALLING
    now = 0.0
    for _ in range(len(ctl.waves)):
        now = run_wave(ctl, now, sent)
    assert ctl.status is RolloutStatus.SUCCEEDED
    assert sorted(sent) == [f"dev-{i:03d}" for i in range(10)]
    assert len(sent) == len(set(sent)), "each device gets the install directive once"
    assert all(p is DevicePhase.COMMITTED for p in ctl.device_phases().values())


def test_a_step_is_due_on_a_failure_or_on_the_last_commit_of_the_wave():
    ctl = make(10, canary_count=None, waves=(30.0, 100.0))
    wave = installs(ctl.step(now=0.0))
    assert wave == ["dev-000", "dev-001", "dev-002"]
    first, second, third = wave
    ctl.on_event(first, "downloading", now=1.0, bundle=NEW)
    assert not ctl.step_due(first)  # progress alone changes nothing
    ctl.on_event(first, "committed", now=2.0, bundle=NEW)
    assert not ctl.step_due(first)  # two more to settle
    ctl.on_event(second, "failed", now=2.0, bundle=NEW, reason="bad")
    assert ctl.step_due(second)  # the failure gate may trip
    ctl.on_event(third, "committed", now=3.0, bundle=NEW)
    assert ctl.step_due(third)  # the wave's install phase can end
    assert not ctl.step_due("dev-009")  # not in this wave, nothing heard
    assert not ctl.step_due("no-such-device")


def test_soak_holds_the_next_wave_until_it_has_elapsed():
    ctl = make(10, soak_s=300.0)
    ctl.step(now=0.0)
    commit_healthy(ctl, ["dev-000"], 5.0)
    assert installs(ctl.step(now=10.0)) == []
    assert ctl.wave_stage(0) is WaveStage.SOAKING
    assert installs(ctl.step(now=309.0)) == []
    assert len(installs(ctl.step(now=310.0))) == 4


def test_canary_failing_its_health_check_aborts_and_nobody_else_gets_the_bundle():
    ctl = make(10)
    sent = installs(ctl.step(now=0.0))
    ctl.on_event("dev-000", "testing", now=1.0, bundle=NEW)
    ctl.on_event("dev-000", "rolled_back", now=2.0, reason="test vectors out of tolerance")
    actions = ctl.step(now=3.0)
    sent += installs(actions)
    assert sent == ["dev-000"]
    assert ctl.status is RolloutStatus.ABORTED
    assert "canary" in ctl.reason
    assert "1 failed" in ctl.reason
    # The canary already rolled itself back: no directive needed, none sent.
    assert rollbacks(actions) == []
    assert any(isinstance(a, RolloutFinished) for a in actions)
    assert ctl.step(now=1000.0) == []
    assert all(ctl.device_phase(f"dev-{i:03d}") is DevicePhase.PENDING for i in range(1, 10))


def test_committed_canary_with_bad_live_health_is_rolled_back_by_the_fleet():
    ctl = make(10)
    ctl.step(now=0.0)
    ctl.on_event("dev-000", "committed", now=1.0, bundle=NEW)
    ctl.on_health("dev-000", HealthSample(bundle=NEW, p95_ms=10.0, error_rate=0.2))
    actions = ctl.step(now=2.0)
    assert ctl.status is RolloutStatus.ABORTED
    assert "error rate 20.00%" in ctl.reason
    assert rollbacks(actions) == ["dev-000"]
    rollback = next(a for a in actions if isinstance(a, PublishDirectives))
    assert rollback.bundle == OLD


def test_p95_regression_in_a_later_wave_rolls_back_the_whole_updated_fleet():
    ctl = make(10)
    sent: list[str] = installs(ctl.step(now=0.0))
    now = run_wave(ctl, 0.0, sent)  # canary fine: p95 10.5 vs 10 → 5 %
    assert ctl.current == 1
    wave1 = list(ctl.waves[1].devices)
    commit_healthy(ctl, wave1, now + 1, p95=20.0)  # +100 % on 4 of 5 updated devices
    actions = ctl.step(now=now + 2)
    assert ctl.status is RolloutStatus.ABORTED
    assert "p95 latency regressed 100.0%" in ctl.reason
    assert sorted(rollbacks(actions)) == sorted(["dev-000", *wave1])
    assert not any(d in sent for d in ctl.waves[2].devices)


def test_p95_within_the_gate_passes():
    ctl = make(4, canary_count=None, waves=(100.0,), max_p95_regression_percent=25.0)
    ctl.step(now=0.0)
    commit_healthy(ctl, ctl.waves[0].devices, 1.0, p95=12.4)
    ctl.step(now=2.0)
    ctl.step(now=100.0)
    assert ctl.status is RolloutStatus.SUCCEEDED


def test_baseline_comes_from_old_bundle_readings_during_the_rollout():
    pol = RolloutPolicy(waves=(100.0,), soak_s=0.0, max_p95_regression_percent=10.0)
    ctl = RolloutController(
        rollout_id="r",
        bundle=NEW,
        previous_bundle=OLD,
        policy=pol,
        waves=plan_waves(group(1), pol),
    )
    ctl.step(now=0.0)
    ctl.on_health("dev-000", HealthSample(bundle=OLD, p95_ms=8.0))
    ctl.on_event("dev-000", "committed", now=1.0, bundle=NEW)
    ctl.on_health("dev-000", HealthSample(bundle=NEW, p95_ms=9.0, error_rate=0.0))
    ctl.step(now=2.0)
    assert ctl.status is RolloutStatus.ABORTED
    assert "12.5%" in ctl.reason


def test_silent_devices_count_only_after_the_wave_timeout():
    ctl = make(
        10, canary_count=None, waves=(50.0, 100.0), max_failures_percent=20.0, wave_timeout_s=600.0
    )
    sent = installs(ctl.step(now=0.0))
    assert len(sent) == 5
    commit_healthy(ctl, sent[:3], 1.0)  # two devices say nothing
    assert ctl.step(now=599.0) == []
    assert ctl.status.value == "running"
    assert ctl.progress(now=599.0)[0].counts["waiting"] == 2
    actions = ctl.step(now=600.0)
    assert ctl.status is RolloutStatus.ABORTED
    assert "2 silent" in ctl.reason
    # Silent devices may have installed while out of reach: they get the rollback too.
    assert sorted(rollbacks(actions)) == sorted(sent)


def test_silent_devices_within_the_failure_budget_let_the_wave_pass():
    ctl = make(
        10, canary_count=None, waves=(50.0, 100.0), max_failures_percent=20.0, wave_timeout_s=600.0
    )
    sent = installs(ctl.step(now=0.0))
    commit_healthy(ctl, sent[:4], 1.0)
    ctl.step(now=600.0)
    assert ctl.wave_stage(0) is WaveStage.SOAKING
    assert ctl.progress(now=600.0)[0].counts["silent"] == 1
    assert len(installs(ctl.step(now=660.0))) == 5


def test_failures_abort_as_soon_as_they_exceed_the_budget():
    ctl = make(10, canary_count=None, waves=(100.0,), max_failures_percent=10.0)
    sent = installs(ctl.step(now=0.0))
    ctl.on_event(sent[0], "failed", now=1.0, reason="digest mismatch")
    assert ctl.step(now=1.0) == []  # 1 of 10 is within 10 %
    ctl.on_event(sent[1], "failed", now=2.0, reason="disk full")
    actions = ctl.step(now=2.0)
    assert ctl.status is RolloutStatus.ABORTED
    assert sorted(rollbacks(actions)) == sorted(sent[2:])


def test_missing_health_telemetry_waits_then_fails_at_the_timeout():
    ctl = make(4, canary_count=None, waves=(100.0,), soak_s=10.0, wave_timeout_s=100.0)
    ctl.step(now=0.0)
    for device_id in ctl.waves[0].devices:
        ctl.on_event(device_id, "committed", now=1.0, bundle=NEW)
    ctl.step(now=2.0)
    assert ctl.step(now=50.0) == []
    assert ctl.status.value == "running"
    ctl.step(now=100.0)
    assert ctl.status is RolloutStatus.ABORTED
    assert "no health telemetry" in ctl.reason


def test_pause_holds_the_next_wave_and_resume_releases_it():
    ctl = make(10)
    ctl.step(now=0.0)
    ctl.pause(now=1.0)
    commit_healthy(ctl, ["dev-000"], 2.0)
    assert ctl.step(now=3.0) == []
    assert installs(ctl.step(now=1000.0)) == []
    assert ctl.status is RolloutStatus.PAUSED
    assert ctl.wave_stage(0) is WaveStage.PASSED
    ctl.resume(now=1001.0)
    assert len(installs(ctl.step(now=1001.0))) == 4


def test_paused_rollout_still_aborts_on_a_broken_gate():
    ctl = make(10)
    ctl.step(now=0.0)
    ctl.pause(now=0.5)
    ctl.on_event("dev-000", "failed", now=1.0)
    ctl.step(now=2.0)
    assert ctl.status is RolloutStatus.ABORTED


def test_abort_by_hand_rolls_back_devices_already_sent_the_bundle():
    ctl = make(10)
    sent = installs(ctl.step(now=0.0))
    now = run_wave(ctl, 0.0, sent)
    ctl.on_event(ctl.waves[1].devices[0], "downloading", now=now, bundle=NEW)
    actions = ctl.abort("operator saw bad results", now=now + 1)
    assert ctl.status is RolloutStatus.ABORTED
    assert sorted(rollbacks(actions)) == sorted(sent)
    assert ctl.reason == "operator saw bad results"
    assert ctl.abort("again", now=now + 2) == []


def test_events_about_other_bundles_and_pending_devices_are_ignored():
    ctl = make(10)
    ctl.step(now=0.0)
    assert not ctl.on_event("dev-000", "committed", now=1.0, bundle="sha256:other")
    assert not ctl.on_event("dev-005", "committed", now=1.0, bundle=NEW)  # wave not started
    assert not ctl.on_event("nobody", "committed", now=1.0, bundle=NEW)
    assert not ctl.on_event("dev-000", "idle", now=1.0)
    assert ctl.on_event("dev-000", "committed", now=1.0, bundle=NEW)
    assert not ctl.on_event("dev-000", "downloading", now=2.0, bundle=NEW)  # no going back
    assert ctl.device_phase("dev-005") is DevicePhase.PENDING


def test_restore_mid_wave_continues_exactly():
    ctl = make(10)
    sent = installs(ctl.step(now=0.0))
    now = run_wave(ctl, 0.0, sent)
    wave1 = list(ctl.waves[1].devices)
    commit_healthy(ctl, wave1[:2], now + 1)
    saved = json.loads(json.dumps(ctl.to_dict()))

    restored = RolloutController.from_dict(saved)
    assert restored.to_dict() == saved
    assert restored.current == 1
    assert restored.wave_stage(1) is WaveStage.INSTALLING
    commit_healthy(restored, wave1[2:], now + 2)
    assert installs(restored.step(now=now + 3)) == []
    later = installs(restored.step(now=now + 3 + 60))
    assert sorted(later) == sorted(restored.waves[2].devices)
    assert not set(later) & set(sent)


def test_restore_after_a_crash_before_saving_repeats_the_directives():
    ctl = make(10)
    saved = ctl.to_dict()
    assert installs(ctl.step(now=0.0)) == ["dev-000"]
    # The process died after publishing but before saving: the same wave comes out again.
    again = RolloutController.from_dict(saved)
    assert installs(again.step(now=5.0)) == ["dev-000"]


def test_restore_rejects_damaged_state():
    saved = make(4).to_dict()
    saved["version"] = 99
    with pytest.raises(StateError):
        RolloutController.from_dict(saved)
    saved = make(4).to_dict()
    del saved["devices"]["dev-001"]
    with pytest.raises(StateError):
        RolloutController.from_dict(saved)


def test_controller_survives_a_round_trip_through_the_registry():
    from edgeops.fleet.registry import SqliteStore
    from edgeops.fleet.rollout.persist import from_record, to_record

    ctl = make(10)
    sent = installs(ctl.step(now=0.0))
    now = run_wave(ctl, 0.0, sent)
    store = SqliteStore(":memory:")
    try:
        store.save_rollout(to_record(ctl, group="lab", now=now))
        record = store.get_rollout("r1")
        assert record is not None
        assert record.waves[0].counts["committed"] == 1
        assert record.device_phases["dev-001"] == "sent"
        restored = from_record(record)
        assert restored.to_dict() == ctl.to_dict()
    finally:
        store.close()


def test_health_still_gates_while_paused_between_waves():
    ctl = make(10)
    ctl.step(now=0.0)
    commit_healthy(ctl, ["dev-000"], 1.0)
    ctl.pause(now=2.0)
    ctl.step(now=3.0)
    ctl.step(now=100.0)  # canary passed; wave 1 held by the pause
    assert ctl.wave_stage(1) is WaveStage.NOT_STARTED
    ctl.on_health("dev-000", HealthSample(bundle=NEW, p95_ms=10.0, error_rate=0.5))
    actions = ctl.step(now=101.0)
    assert ctl.status.value == "aborted"
    assert ctl.reason.startswith("while paused: error rate")
    assert rollbacks(actions) == ["dev-000"]
