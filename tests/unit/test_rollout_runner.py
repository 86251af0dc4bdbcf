"""The rollout runner: controller + registry + directive sink, on fakes and in-memory SQLite.

Covers what the controller tests cannot: requests queued by the CLI reach the controller,
state is saved after publishing, a new runner resumes a rollout from the registry, and the
real sink's directives verify on the device side.
"""

from __future__ import annotations

from edgeops.fleet.registry import SqliteStore, StateUpdate, TelemetryRow
from edgeops.fleet.rollout import PublishDirectives, RolloutPolicy, RolloutStatus
from edgeops.fleet.rollout.runner import RolloutRunner, SignedDirectiveSink
from edgeops.protocol import EventMessage, StateMessage, TelemetryMessage, TelemetrySample

NEW = "1" * 64
OLD = "0" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


class RecordingSink:
    def __init__(self) -> None:
        self.sent: list[PublishDirectives] = []

    def publish(self, action, *, rollout_id, policy) -> None:
        self.sent.append(action)

    def devices(self, action: str) -> list[str]:
        return [d for a in self.sent if a.action == action for d in a.device_ids]


def fleet_store(n: int = 6) -> SqliteStore:
    store = SqliteStore(":memory:")
    for i in range(n):
        store.add_device(f"d{i}", group="lab", board="rpi4", now=1.0)
    store.ingest(
        states=[
            StateUpdate(device_id=f"d{i}", seq=None, ts=2.0, online=True, bundle=OLD)
            for i in range(n)
        ],
        telemetry=[
            TelemetryRow(device_id=f"d{i}", seq=1, ts=2.0, bundle=OLD, p95_ms=20.0)
            for i in range(n)
        ],
    )
    return store


POLICY = RolloutPolicy(
    canary_count=1,
    waves=(50.0, 100.0),
    soak_s=30.0,
    wave_timeout_s=300.0,
    max_error_rate_percent=5.0,
    max_p95_regression_percent=20.0,
)


def event(seq: int, state: str, *, bundle: str = NEW, reason: str = "") -> EventMessage:
    return EventMessage(
        seq=seq, kind="update_progress", ts=1.0, bundle_digest=bundle, state=state, reason=reason
    )


def health(seq: int, *, p95: float, errors: int = 0) -> TelemetryMessage:
    return TelemetryMessage(
        seq=seq,
        samples=(
            TelemetrySample(
                ts=1.0,
                window_s=10.0,
                requests=100,
                errors=errors,
                latency_p95_ms=p95,
                bundle_digest=NEW,
            ),
        ),
    )


def commit(runner: RolloutRunner, devices, *, p95: float = 21.0, errors: int = 0) -> None:
    for d in devices:
        runner.on_event(d, event(1, "downloading"))
        runner.on_event(d, event(2, "committed"))
        runner.on_telemetry(d, health(3, p95=p95, errors=errors))


def test_a_rollout_runs_to_the_end_and_the_baseline_comes_from_the_registry():
    store, sink, clock = fleet_store(), RecordingSink(), Clock()
    runner = RolloutRunner.start(
        store, sink, rollout_id="r1", group="lab", bundle=NEW, policy=POLICY, clock=clock
    )
    assert runner.controller.previous_bundle == OLD
    runner.tick()
    assert sink.devices("install") == ["d0"]
    while not runner.finished:
        wave = runner.controller.waves[runner.controller.current]
        commit(runner, wave.devices)
        clock.now += 1
        runner.tick()
        clock.now += POLICY.soak_s
        runner.tick()
    assert runner.status is RolloutStatus.SUCCEEDED
    assert sorted(sink.devices("install")) == [f"d{i}" for i in range(6)]
    assert store.get_rollout("r1").status == "succeeded"


def test_p95_regression_against_the_registry_baseline_rolls_the_canary_back():
    store, sink, clock = fleet_store(), RecordingSink(), Clock()
    runner = RolloutRunner.start(
        store, sink, rollout_id="r1", group="lab", bundle=NEW, policy=POLICY, clock=clock
    )
    runner.tick()
    commit(runner, ["d0"], p95=30.0)  # +50 % over its 20 ms on the old bundle
    runner.tick()
    assert runner.status is RolloutStatus.ABORTED
    assert sink.devices("rollback") == ["d0"]
    assert sink.devices("install") == ["d0"]
    saved = store.get_rollout("r1")
    assert "p95 latency regressed 50.0%" in saved.reason


def test_requests_from_the_cli_reach_the_controller_and_are_marked_handled():
    store, sink, clock = fleet_store(), RecordingSink(), Clock()
    runner = RolloutRunner.start(
        store, sink, rollout_id="r1", group="lab", bundle=NEW, policy=POLICY, clock=clock
    )
    runner.tick()
    store.add_rollout_request("r1", "pause", reason="", now=clock.now)
    runner.tick()
    assert runner.status.value == "paused"
    assert store.pending_requests("r1") == []
    commit(runner, ["d0"])
    clock.now += 1000
    runner.tick()
    assert sink.devices("install") == ["d0"]
    store.add_rollout_request("r1", "abort", reason="bad labels", now=clock.now)
    runner.tick()
    assert runner.status is RolloutStatus.ABORTED
    assert sink.devices("rollback") == ["d0"]
    assert store.get_rollout("r1").reason == "bad labels"


def test_a_new_runner_resumes_from_the_registry_mid_wave():
    store, sink, clock = fleet_store(), RecordingSink(), Clock()
    first = RolloutRunner.start(
        store, sink, rollout_id="r1", group="lab", bundle=NEW, policy=POLICY, clock=clock
    )
    first.tick()
    commit(first, ["d0"])
    clock.now += 1
    first.tick()
    clock.now += POLICY.soak_s
    first.tick()  # wave 1 starts: d1, d2
    assert sink.devices("install") == ["d0", "d1", "d2"]
    del first  # the fleet manager dies here

    second = RolloutRunner.resume(store, sink, "r1", clock=clock)
    assert second.controller.current == 1
    commit(second, ["d1", "d2"])
    clock.now += 1
    second.tick()
    clock.now += POLICY.soak_s
    second.tick()
    commit(second, ["d3", "d4", "d5"])
    clock.now += 1
    second.tick()
    clock.now += POLICY.soak_s
    second.tick()
    assert second.status is RolloutStatus.SUCCEEDED
    assert sink.devices("install") == [f"d{i}" for i in range(6)]


def test_signed_directives_verify_on_the_device_with_increasing_sequences():
    from edgeops.mqtt.fake import FakeBroker
    from edgeops.protocol import device_directive_topic
    from edgeops.trust.metadata import BundleRef
    from edgeops.trust.testing import MemoryFleet

    fleet = MemoryFleet("demo")
    store = fleet_store(2)
    broker = FakeBroker()
    link = broker.link("edgeops-fleet-manager")
    link.connect(timeout=5)
    ref = BundleRef(sha256=NEW, size=1234, name="detector", version="2.0", release=2)
    sink = SignedDirectiveSink(
        link,
        store,
        fleet="demo",
        deploy_keys=fleet.keys["deploy"],
        bundles={NEW: ref},
        now=lambda: fleet.now,
    )
    for _ in range(2):
        sink.publish(
            PublishDirectives("install", ("d0", "d1"), NEW, 0), rollout_id="r1", policy=POLICY
        )
    published = broker.publishes_to(device_directive_topic("demo", "d1"))
    assert len(published) == 2
    message = published[-1]
    assert message.retain
    directive = fleet.trusted().verify_directive(message.payload, device_id="d1", last_sequence=1)
    assert (directive.sequence, directive.action, directive.bundle.sha256) == (2, "install", NEW)
    assert directive.rollout.rollout_id == "r1"
    assert directive.rollout.max_error_rate == 0.05
    broker.stop()


def test_a_device_rejecting_the_directive_counts_as_failed():
    store, sink, clock = fleet_store(), RecordingSink(), Clock()
    runner = RolloutRunner.start(
        store, sink, rollout_id="r1", group="lab", bundle=NEW, policy=POLICY, clock=clock
    )
    runner.tick()
    runner.on_event(
        "d3",  # not sent anything yet: its rejection is about something else
        EventMessage(seq=1, kind="rejected", ts=1.0, reason="ExpiredError: old"),
    )
    runner.on_event(
        "d0",
        EventMessage(seq=1, kind="rejected", ts=1.0, reason="SignatureError: unknown key"),
    )
    runner.tick()
    assert runner.status is RolloutStatus.ABORTED
    assert runner.controller.device_phases()["d3"].value == "pending"
    saved = store.get_rollout("r1")
    assert saved.device_phases["d0"] == "failed"


def test_retained_state_running_the_new_bundle_counts_as_committed():
    from edgeops.protocol import BundleRef as WireRef

    store, sink, clock = fleet_store(), RecordingSink(), Clock()
    runner = RolloutRunner.start(
        store, sink, rollout_id="r1", group="lab", bundle=NEW, policy=POLICY, clock=clock
    )
    runner.tick()
    new_state = StateMessage(
        online=True, ts=1.0, bundle=WireRef(name="m", version="2", digest=NEW, release=2)
    )
    old_state = StateMessage(
        online=True, ts=1.0, bundle=WireRef(name="m", version="1", digest=OLD, release=1)
    )
    runner.on_state("d3", new_state)  # not sent the directive: no evidence about this rollout
    runner.on_state("d0", old_state)  # still on the old bundle: no verdict yet
    assert runner.controller.device_phases()["d0"].value == "sent"
    runner.on_state("d0", new_state)
    assert runner.controller.device_phases()["d0"].value == "committed"
    assert runner.controller.device_phases()["d3"].value == "pending"
