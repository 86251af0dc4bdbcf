"""The service's rollout feed (reports read back from the registry) and rollout leases."""

from __future__ import annotations

import pytest

from edgeops.fleet.ingest import Ingestor
from edgeops.fleet.registry import SqliteStore
from edgeops.fleet.rollout import RolloutPolicy
from edgeops.fleet.rollout.controller import DevicePhase
from edgeops.fleet.rollout.runner import RolloutRunner
from edgeops.fleet.service.feed import RegistryFeed
from edgeops.fleet.service.testing import NEW_DIGEST, RecordingSink, populate
from edgeops.protocol import (
    EventMessage,
    TelemetryMessage,
    TelemetrySample,
    events_topic,
    telemetry_topic,
)

FLEET = "unit"
NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world():
    store = SqliteStore(":memory:")
    populate(store, fleet=FLEET, now=NOW, devices=2, samples=5, offline=0)
    clock = Clock(NOW + 10)
    sink = RecordingSink()
    runner = RolloutRunner.start(
        store,
        sink,
        rollout_id="r1",
        group="lab",
        bundle=NEW_DIGEST,
        policy=RolloutPolicy(canary_count=1, soak_s=5.0, wave_timeout_s=60.0),
        clock=clock,
    )
    runner.tick()
    ingestor = Ingestor(store, fleet=FLEET, batch_size=1)
    yield store, runner, ingestor, sink
    store.close()


def event(seq: int, state: str, ts: float) -> bytes:
    return EventMessage(
        seq=seq, kind="update_result", ts=ts, bundle_digest=NEW_DIGEST, state=state
    ).to_bytes()


def test_feeds_new_reports_of_sent_devices_once(world) -> None:
    store, runner, ingestor, sink = world
    (canary,) = sink.published[0].device_ids
    feed = RegistryFeed(runner)
    # populate's own history (an old commit, old telemetry) predates the rollout: not fed.
    assert feed.poll(store) == 0
    ingestor.submit(events_topic(FLEET, canary), event(50, "downloading", NOW + 11))
    ingestor.submit(events_topic(FLEET, canary), event(51, "committed", NOW + 12))
    sample = TelemetrySample(
        ts=NOW + 13,
        window_s=1.0,
        requests=10,
        errors=0,
        latency_p95_ms=9.0,
        bundle_digest=NEW_DIGEST,
    )
    message = TelemetryMessage(seq=52, samples=(sample,))
    ingestor.submit(telemetry_topic(FLEET, canary), message.to_bytes())
    assert feed.poll(store) == 3
    assert runner.controller.device_phases()[canary] is DevicePhase.COMMITTED
    # Nothing new: nothing fed again, whatever the registry still holds.
    assert feed.poll(store) == 0
    # A replay is dropped by the registry and never reaches the runner.
    ingestor.submit(events_topic(FLEET, canary), event(51, "committed", NOW + 12))
    assert ingestor.stats.duplicates == 1
    assert feed.poll(store) == 0


def test_reports_of_devices_not_yet_sent_are_not_read(world) -> None:
    store, runner, ingestor, sink = world
    (canary,) = sink.published[0].device_ids
    other = next(d for d in runner.controller.device_phases() if d != canary)
    ingestor.submit(events_topic(FLEET, other), event(60, "committed", NOW + 11))
    feed = RegistryFeed(runner)
    assert feed.poll(store) == 0
    assert runner.controller.device_phases()[other] is DevicePhase.PENDING


def test_a_rollout_lease_has_one_holder_until_it_expires_or_is_released() -> None:
    store = SqliteStore(":memory:")
    try:
        assert store.claim_rollout("r1", "a", now=100.0, ttl_s=10.0) == "a"
        assert store.claim_rollout("r1", "b", now=105.0, ttl_s=10.0) == "a"
        assert store.claim_rollout("r1", "a", now=109.0, ttl_s=10.0) == "a"  # renewed
        assert store.claim_rollout("r1", "b", now=115.0, ttl_s=10.0) == "a"
        assert store.claim_rollout("r1", "b", now=119.5, ttl_s=10.0) == "b"  # expired
        store.release_rollout("r1", "a")  # not a's any more: no effect
        assert store.claim_rollout("r1", "a", now=120.0, ttl_s=10.0) == "b"
        store.release_rollout("r1", "b")
        assert store.claim_rollout("r1", "a", now=120.0, ttl_s=10.0) == "a"
        assert store.claim_rollout("r2", "b", now=120.0, ttl_s=10.0) == "b"
    finally:
        store.close()
