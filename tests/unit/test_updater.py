"""The update state machine on fakes: every transition, crash-resume, loop guard, rejections."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgeops.agent.health import TrialPolicy, TrialWindow
from edgeops.agent.updater import (
    Activate,
    Activated,
    ActivationFailed,
    BundleRef,
    BundleRejected,
    BundleVerified,
    CheckHealth,
    Commit,
    DirectiveReceived,
    Discard,
    DownloadFailed,
    DownloadFinished,
    DownloadProgress,
    Fetch,
    HealthChecked,
    LoadCommitted,
    Order,
    Outcome,
    Persist,
    Phase,
    PublishState,
    Report,
    RollBack,
    RolledBack,
    Started,
    TrialMeasured,
    Updater,
    UpdaterState,
    Verify,
)
from edgeops.errors import (
    ExpiredError,
    RollbackAttackError,
    SignatureError,
    StateError,
    WrongTargetError,
)

OLD = BundleRef(digest="0" * 64, release_counter=1, version="1.0", name="det")
NEW = BundleRef(digest="1" * 64, release_counter=2, version="2.0", name="det")
POLICY = TrialPolicy(window_s=10.0, max_error_rate=0.1, max_p95_ms=50.0, min_requests=5)


def directive(
    sequence: int = 1,
    *,
    bundle: str = NEW.digest,
    action: str = "install",
    target: str = "device",
    error: str | None = None,
) -> bytes:
    """Stand-in for signed directive bytes, read by :func:`fake_verify`."""
    return json.dumps(
        {"seq": sequence, "bundle": bundle, "action": action, "target": target, "error": error}
    ).encode()


ERRORS = {
    "signature": SignatureError("signature by unknown key abc"),
    "expired": ExpiredError("directive 1 expired at 2020-01-01T00:00:00Z"),
    "foreign": WrongTargetError("expected a directive for device 'dev-1', got 'dev-2'"),
}


def fake_verify(raw: bytes, target: str, last_sequence: int | None) -> Order:
    """Mimics TrustedState.verify_directive: errors by name, replay by sequence."""
    data = json.loads(raw)
    if data["error"]:
        raise ERRORS[data["error"]]
    if last_sequence is not None and data["seq"] <= last_sequence:
        raise RollbackAttackError(
            f"expected directive sequence > {last_sequence}, got {data['seq']}"
        )
    return Order(
        target=data["target"],
        sequence=data["seq"],
        action=data["action"],
        bundle_digest=data["bundle"],
        bundle_size=1234,
        policy=POLICY,
    )


def committed_state() -> UpdaterState:
    return UpdaterState(phase=Phase.COMMITTED, committed=OLD)


def make(state: UpdaterState | None = None, **kwargs: Any) -> Updater:
    return Updater(state or committed_state(), verify_directive=fake_verify, **kwargs)


def persisted(actions: list[Any]) -> list[Phase]:
    return [a.state.phase for a in actions if isinstance(a, Persist)]


def reports(actions: list[Any]) -> list[Report]:
    return [a for a in actions if isinstance(a, Report)]


def drive_to(updater: Updater, phase: Phase) -> list[Any]:
    """Feed the events of a successful update until ``phase``; returns every action."""
    steps: list[tuple[Phase, Any]] = [
        (Phase.DOWNLOADING, DirectiveReceived("device", directive())),
        (Phase.VERIFYING, DownloadFinished()),
        (Phase.TESTING, BundleVerified(NEW)),
        (Phase.ACTIVATING, HealthChecked(ok=True, figures={"p95_ms": 3.0})),
        (Phase.TRIAL, Activated()),
    ]
    actions: list[Any] = []
    for reached, event in steps:
        actions += updater.handle(event)
        if reached is phase or (phase is Phase.STAGED and reached is Phase.TESTING):
            break
    return actions


# --------------------------------------------------------------------------- happy path


def test_a_good_update_goes_through_every_phase_and_commits():
    updater = make()
    actions = drive_to(updater, Phase.TRIAL)
    actions += updater.handle(
        TrialMeasured(TrialWindow(elapsed_s=10.0, requests=100, errors=0, p95_ms=4.0))
    )
    assert persisted(actions) == [
        Phase.DOWNLOADING,
        Phase.VERIFYING,
        Phase.STAGED,
        Phase.TESTING,
        Phase.ACTIVATING,
        Phase.TRIAL,
        Phase.COMMITTED,
    ]
    kinds = [type(a) for a in actions if not isinstance(a, Persist | Report)]
    assert kinds == [Fetch, Verify, CheckHealth, Activate, PublishState, Commit, PublishState]
    state = updater.state
    assert state.committed == NEW
    assert state.previous == OLD
    assert state.records["device"].outcome is Outcome.COMMITTED
    commit = next(a for a in actions if isinstance(a, Commit))
    assert commit.keep == (NEW.digest, OLD.digest)
    result = reports(actions)[-1]
    assert (result.kind, result.state, result.directive_seq) == ("update_result", "committed", 1)
    assert result.figures["requests"] == 100


def test_every_action_list_persists_before_its_side_effect():
    updater = make()
    actions = drive_to(updater, Phase.TRIAL)
    for index, action in enumerate(actions):
        if isinstance(action, Fetch | Verify | CheckHealth | Activate):
            assert isinstance(actions[index - 1], Persist | Report)
            last_persist = max(i for i in range(index) if isinstance(actions[i], Persist))
            assert last_persist < index


def test_verify_is_asked_for_the_committed_release_counter():
    updater = make()
    updater.handle(DirectiveReceived("device", directive()))
    (verify,) = [a for a in updater.handle(DownloadFinished()) if isinstance(a, Verify)]
    assert verify.last_release_counter == OLD.release_counter
    assert (verify.digest, verify.size) == (NEW.digest, 1234)


def test_first_install_has_no_release_floor_and_no_previous():
    updater = make(UpdaterState())
    updater.handle(DirectiveReceived("device", directive()))
    (verify,) = [a for a in updater.handle(DownloadFinished()) if isinstance(a, Verify)]
    assert verify.last_release_counter is None


def test_download_progress_is_reported_in_quarter_steps():
    updater = make()
    updater.handle(DirectiveReceived("device", directive()))
    seen = []
    for received in range(0, 1001, 50):
        seen += reports(updater.handle(DownloadProgress(received, 1000)))
    assert [r.figures["received"] for r in seen] == [250, 500, 750]
    assert all(r.state == "downloading" for r in seen)


# --------------------------------------------------------------------------- failures


def test_a_rejected_bundle_fails_without_touching_the_running_model():
    updater = make()
    drive_to(updater, Phase.VERIFYING)
    actions = updater.handle(BundleRejected("DigestMismatchError: expected sha256 1.., got 2.."))
    assert persisted(actions) == [Phase.FAILED]
    assert Discard(NEW.digest) in actions
    assert not any(isinstance(a, Activate | RollBack) for a in actions)
    assert updater.state.committed == OLD
    (report,) = reports(actions)
    assert (report.kind, report.state) == ("update_result", "failed")
    assert "DigestMismatchError" in report.reason


def test_a_failing_health_check_is_never_activated():
    updater = make()
    drive_to(updater, Phase.TESTING)
    actions = updater.handle(
        HealthChecked(ok=False, reason="test vector 0: max abs error 3", figures={"v": 1.0})
    )
    assert persisted(actions) == [Phase.FAILED]
    assert not any(isinstance(a, Activate) for a in actions)
    assert updater.state.committed == OLD
    assert updater.state.records["device"].outcome is Outcome.FAILED
    (report,) = reports(actions)
    assert report.reason.startswith("health check failed: test vector 0")
    assert report.figures["v"] == 1.0
    # The retained copy arriving again is not retried: the failure is final.
    assert updater.handle(DirectiveReceived("device", directive())) == []


def test_a_failing_trial_rolls_back_with_the_reason_and_figures():
    updater = make()
    drive_to(updater, Phase.TRIAL)
    # Too few requests yet: keep watching even though the rate is high.
    assert updater.handle(TrialMeasured(TrialWindow(elapsed_s=1, requests=2, errors=2))) == []
    actions = updater.handle(
        TrialMeasured(TrialWindow(elapsed_s=2.0, requests=20, errors=8, p95_ms=9.0))
    )
    assert persisted(actions) == [Phase.ROLLING_BACK]
    rollback = next(a for a in actions if isinstance(a, RollBack))
    assert rollback.to == OLD
    assert "error rate 0.400 > 0.100 (8/20 requests)" in rollback.reason
    (report,) = reports(actions)
    assert report.state == "rolling_back"
    assert report.figures["errors"] == 8
    done = updater.handle(RolledBack())
    assert persisted(done) == [Phase.ROLLED_BACK]
    assert Discard(NEW.digest) in done
    assert updater.state.committed == OLD
    assert reports(done)[0].kind == "rolled_back"
    assert "error rate" in reports(done)[0].reason


def test_a_slow_candidate_fails_the_trial_on_p95():
    updater = make()
    drive_to(updater, Phase.TRIAL)
    actions = updater.handle(
        TrialMeasured(TrialWindow(elapsed_s=3.0, requests=50, errors=0, p95_ms=80.0))
    )
    rollback = next(a for a in actions if isinstance(a, RollBack))
    assert "p95 latency 80.0 ms > 50.0 ms" in rollback.reason


def test_activation_failure_rolls_back():
    updater = make()
    drive_to(updater, Phase.ACTIVATING)
    actions = updater.handle(ActivationFailed("ModelError: cannot allocate tensors"))
    assert persisted(actions) == [Phase.ROLLING_BACK]
    assert next(a for a in actions if isinstance(a, RollBack)).to == OLD


def test_a_failed_rollback_is_reported_as_failed():
    updater = make()
    drive_to(updater, Phase.TRIAL)
    updater.handle(TrialMeasured(TrialWindow(elapsed_s=10.0, requests=10, errors=10)))
    actions = updater.handle(RolledBack(ok=False, reason="old model file missing"))
    assert persisted(actions) == [Phase.FAILED]
    assert "rollback failed: old model file missing" in reports(actions)[0].reason


def test_a_transient_download_failure_rests_and_retries_on_the_next_delivery():
    updater = make()
    drive_to(updater, Phase.DOWNLOADING)
    actions = updater.handle(DownloadFailed("no chunk for 30 s"))
    assert persisted(actions) == [Phase.COMMITTED]
    assert not any(isinstance(a, Discard) for a in actions)  # keep what arrived
    assert reports(actions)[0].state is None  # not a final answer to the fleet
    retry = updater.handle(DirectiveReceived("device", directive()))
    assert persisted(retry) == [Phase.DOWNLOADING]
    assert updater.state.records["device"].attempts == 2


def test_a_permanent_download_failure_is_final():
    updater = make()
    drive_to(updater, Phase.DOWNLOADING)
    actions = updater.handle(DownloadFailed("bundle over the 512 MiB cap", transient=False))
    assert persisted(actions) == [Phase.FAILED]
    assert updater.handle(DirectiveReceived("device", directive())) == []


def test_a_transition_that_cannot_be_written_is_undone_and_the_update_given_up():
    # The daemon's path on a full state disk: Persist(verifying) failed, so the updater
    # goes back to the last persisted state and gives the candidate up from there.
    updater = make()
    drive_to(updater, Phase.DOWNLOADING)
    written = updater.state
    updater.handle(DownloadFinished())
    updater.restore(written)
    assert updater.phase is Phase.DOWNLOADING
    actions = updater.give_up("StorageError: cannot write state.json: No space left on device")
    assert persisted(actions) == [Phase.FAILED]
    assert Discard(NEW.digest) in actions
    [report] = reports(actions)
    assert (report.kind, report.state) == ("update_result", "failed")
    assert "No space left" in report.reason
    assert updater.state.candidate is None


def test_an_update_past_activation_cannot_be_given_up():
    updater = make()
    drive_to(updater, Phase.TRIAL)
    with pytest.raises(StateError):
        updater.give_up("no space")


# --------------------------------------------------------------------------- directives


@pytest.mark.parametrize("error", ["signature", "expired", "foreign"])
def test_rejected_directives_change_nothing_and_name_the_reason(error):
    updater = make()
    before = updater.state
    actions = updater.handle(DirectiveReceived("device", directive(error=error)))
    assert persisted(actions) == []
    (report,) = reports(actions)
    assert report.kind == "rejected"
    assert report.reason.startswith(type(ERRORS[error]).__name__)
    assert updater.state == before


def test_a_replayed_older_directive_is_rejected():
    updater = make()
    drive_to(updater, Phase.TRIAL)
    updater.handle(TrialMeasured(TrialWindow(elapsed_s=10.0, requests=0, errors=0)))
    actions = updater.handle(DirectiveReceived("device", directive(0, bundle=OLD.digest)))
    (report,) = reports(actions)
    assert report.kind == "rejected"
    assert "RollbackAttackError" in report.reason
    assert updater.state.committed == NEW


def test_the_retained_copy_of_a_handled_directive_is_ignored():
    updater = make()
    drive_to(updater, Phase.TRIAL)
    updater.handle(TrialMeasured(TrialWindow(elapsed_s=10.0, requests=0, errors=0)))
    assert updater.handle(DirectiveReceived("device", directive())) == []


def test_a_directive_arriving_on_another_target_topic_is_rejected():
    updater = make()
    actions = updater.handle(DirectiveReceived("group/cams", directive(target="device")))
    (report,) = reports(actions)
    assert report.kind == "rejected"
    assert "expected a directive for group/cams" in report.reason


def test_sequences_are_kept_per_target():
    updater = make()
    drive_to(updater, Phase.TRIAL)
    updater.handle(TrialMeasured(TrialWindow(elapsed_s=10.0, requests=0, errors=0)))
    # Sequence 1 again, but for the group: its own counter, so accepted.
    third = BundleRef(digest="2" * 64, release_counter=3)
    actions = updater.handle(
        DirectiveReceived("group/cams", directive(1, bundle=third.digest, target="group/cams"))
    )
    assert persisted(actions) == [Phase.DOWNLOADING]
    assert set(updater.state.records) == {"device", "group/cams"}


def test_a_directive_for_the_running_bundle_is_a_noop():
    updater = make()
    actions = updater.handle(DirectiveReceived("device", directive(bundle=OLD.digest)))
    assert persisted(actions) == [Phase.COMMITTED]
    assert not any(isinstance(a, Fetch) for a in actions)
    (report,) = reports(actions)
    assert (report.kind, report.state, report.bundle_digest) == (
        "update_result",
        "committed",
        OLD.digest,
    )
    assert updater.state.records["device"].outcome is Outcome.NOOP


def test_a_directive_during_an_update_waits_for_a_resting_phase():
    updater = make()
    drive_to(updater, Phase.TRIAL)
    later = directive(2, bundle="3" * 64)
    assert updater.handle(DirectiveReceived("device", later)) == []
    actions = updater.handle(TrialMeasured(TrialWindow(elapsed_s=10.0, requests=0, errors=0)))
    assert persisted(actions) == [Phase.COMMITTED, Phase.DOWNLOADING]
    assert next(a for a in actions if isinstance(a, Fetch)).digest == "3" * 64


# --------------------------------------------------------------------------- rollback directive


def committed_on_new() -> Updater:
    return make(UpdaterState(phase=Phase.COMMITTED, committed=NEW, previous=OLD))


def test_a_rollback_directive_returns_to_the_previous_bundle():
    updater = committed_on_new()
    actions = updater.handle(
        DirectiveReceived("device", directive(5, bundle=OLD.digest, action="rollback"))
    )
    assert persisted(actions) == [Phase.ROLLING_BACK]
    assert next(a for a in actions if isinstance(a, RollBack)).to == OLD
    done = updater.handle(RolledBack())
    assert persisted(done) == [Phase.ROLLED_BACK]
    assert updater.state.committed == OLD
    assert updater.state.previous == NEW  # kept: a verified bundle still on disk
    assert not any(isinstance(a, Discard) for a in done)
    assert reports(done)[0].kind == "rolled_back"


def test_a_rollback_to_a_bundle_not_kept_fails_without_a_swap():
    updater = committed_on_new()
    actions = updater.handle(
        DirectiveReceived("device", directive(5, bundle="9" * 64, action="rollback"))
    )
    assert persisted(actions) == [Phase.COMMITTED]
    assert not any(isinstance(a, RollBack) for a in actions)
    (report,) = reports(actions)
    assert (report.kind, report.state) == ("update_result", "failed")
    assert "previous committed bundle is 000000000000" in report.reason


# --------------------------------------------------------------------------- crash-resume


@pytest.mark.parametrize(
    ("crashed_in", "resumes_as"),
    [
        (Phase.DOWNLOADING, Phase.COMMITTED),
        (Phase.VERIFYING, Phase.COMMITTED),
        (Phase.STAGED, Phase.COMMITTED),
        (Phase.TESTING, Phase.COMMITTED),
        (Phase.ACTIVATING, Phase.ROLLED_BACK),
        (Phase.TRIAL, Phase.ROLLED_BACK),
        (Phase.ROLLING_BACK, Phase.ROLLED_BACK),
    ],
)
def test_a_restart_mid_update_never_trusts_the_candidate(crashed_in, resumes_as):
    updater = make()
    actions = drive_to(updater, crashed_in if crashed_in is not Phase.ROLLING_BACK else Phase.TRIAL)
    if crashed_in is Phase.ROLLING_BACK:
        actions = updater.handle(TrialMeasured(TrialWindow(elapsed_s=10, requests=9, errors=9)))
    # What the disk holds at the crash is the last Persist.
    on_disk = [a.state for a in actions if isinstance(a, Persist)][-1]
    if crashed_in is not Phase.STAGED:
        assert on_disk.phase is crashed_in
    restored = UpdaterState.from_json(json.loads(json.dumps(on_disk.to_json())))

    restarted = make(restored)
    resumed = restarted.handle(Started())
    assert persisted(resumed) == [resumes_as]
    assert LoadCommitted(OLD) in resumed
    assert Discard(NEW.digest) in resumed
    assert restarted.state.committed == OLD
    assert restarted.state.candidate is None
    assert restarted.state.records["device"].outcome is Outcome.INTERRUPTED
    (report,) = reports(resumed)
    assert report.state is None
    assert "agent restarted during" in report.reason

    # The retained directive comes again on connect: retried, and it can commit.
    retry = restarted.handle(DirectiveReceived("device", directive()))
    assert persisted(retry) == [Phase.DOWNLOADING]
    assert restarted.state.records["device"].attempts == 2


def test_a_crash_between_staged_and_testing_resumes_like_before_activation():
    updater = make()
    updater.handle(DirectiveReceived("device", directive()))
    updater.handle(DownloadFinished())
    actions = updater.handle(BundleVerified(NEW))
    staged = next(a.state for a in actions if isinstance(a, Persist))
    assert staged.phase is Phase.STAGED
    resumed = make(staged).handle(Started())
    assert persisted(resumed) == [Phase.COMMITTED]
    assert LoadCommitted(OLD) in resumed


@pytest.mark.parametrize("phase", [Phase.IDLE, Phase.COMMITTED, Phase.ROLLED_BACK, Phase.FAILED])
def test_a_restart_at_rest_loads_the_committed_bundle(phase):
    committed = None if phase is Phase.IDLE else OLD
    updater = make(UpdaterState(phase=phase, committed=committed))
    assert updater.handle(Started()) == [LoadCommitted(committed), PublishState()]


def test_a_restart_during_a_rollback_directive_stays_on_the_committed_bundle():
    updater = committed_on_new()
    actions = updater.handle(
        DirectiveReceived("device", directive(5, bundle=OLD.digest, action="rollback"))
    )
    on_disk = [a.state for a in actions if isinstance(a, Persist)][-1]
    resumed = make(on_disk).handle(Started())
    assert persisted(resumed) == [Phase.COMMITTED]
    assert LoadCommitted(NEW) in resumed
    assert not any(isinstance(a, Discard) for a in resumed)  # never delete a kept bundle


def test_the_loop_guard_gives_up_after_max_attempts_and_reports_once():
    state = committed_state()
    for _ in range(3):
        updater = make(state, max_attempts=3)
        updater.handle(Started())
        drive_to(updater, Phase.TRIAL)
        # A crash in the trial, every time (the candidate kills the process).
        state = updater.state
    restarted = make(state, max_attempts=3)
    restarted.handle(Started())
    assert restarted.state.records["device"].attempts == 3
    actions = restarted.handle(DirectiveReceived("device", directive()))
    assert persisted(actions) == [Phase.ROLLED_BACK]
    (report,) = reports(actions)
    assert (report.kind, report.state) == ("loop_guard", "failed")
    assert "interrupted 3 times" in report.reason
    assert restarted.state.records["device"].outcome is Outcome.GAVE_UP
    assert restarted.handle(DirectiveReceived("device", directive())) == []
    # A newer directive is a new decision, not a retry: the guard does not block it.
    newer = restarted.handle(DirectiveReceived("device", directive(2)))
    assert persisted(newer) == [Phase.DOWNLOADING]


# --------------------------------------------------------------------------- misuse, state file


@pytest.mark.parametrize(
    "event",
    [
        DownloadFinished(),
        BundleVerified(NEW),
        HealthChecked(ok=True),
        Activated(),
        RolledBack(),
        TrialMeasured(TrialWindow(elapsed_s=1, requests=1, errors=0)),
    ],
)
def test_out_of_order_events_raise(event):
    with pytest.raises(StateError, match="expected phase"):
        make().handle(event)


def test_verification_of_another_bundle_raises():
    updater = make()
    drive_to(updater, Phase.VERIFYING)
    with pytest.raises(StateError, match="expected verification of"):
        updater.handle(BundleVerified(BundleRef(digest="f" * 64, release_counter=2)))


def test_state_round_trips_through_json():
    updater = make()
    drive_to(updater, Phase.TRIAL)
    data = json.loads(json.dumps(updater.state.to_json()))
    assert UpdaterState.from_json(data) == updater.state


@pytest.mark.parametrize(
    "data",
    [
        {"version": 99, "phase": "idle"},
        {"version": 1, "phase": "dancing"},
        {"version": 1, "phase": "trial"},  # a transient phase without a candidate
        {"version": 1, "phase": "idle", "committed": {"digest": "x"}},
    ],
)
def test_malformed_state_raises_state_error(data):
    with pytest.raises(StateError):
        UpdaterState.from_json(data)
