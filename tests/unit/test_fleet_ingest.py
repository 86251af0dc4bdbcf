"""Ingestion: protocol messages into the registry, batched, duplicates dropped."""

from __future__ import annotations

import pytest

from edgeops.errors import StorageError
from edgeops.fleet.ingest import Ingestor
from edgeops.fleet.registry import IngestCounts, SqliteStore
from edgeops.protocol import (
    BundleRef,
    EventMessage,
    StateMessage,
    TelemetryMessage,
    TelemetrySample,
    events_topic,
    state_topic,
    telemetry_topic,
)

FLEET = "demo"
NEW = "a" * 64
OLD = "b" * 64


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store():
    s = SqliteStore(":memory:")
    for d in ("d1", "d2"):
        s.add_device(d, group="lab", board=None, now=1.0)
    yield s
    s.close()


def telemetry(seq: int, *, p95: float = 12.0, errors: int = 1, samples: int = 1) -> bytes:
    return TelemetryMessage(
        seq=seq,
        samples=tuple(
            TelemetrySample(
                ts=900.0 + seq + i,
                window_s=10.0,
                requests=100,
                errors=errors,
                latency_p95_ms=p95 + i,
                temperature_c=55.0,
                drift=0.1,
                bundle_digest=NEW,
            )
            for i in range(samples)
        ),
    ).to_bytes()


def test_telemetry_reaches_the_registry_with_derived_error_rate(store):
    ingest = Ingestor(store, fleet=FLEET, batch_size=10)
    assert ingest.submit(telemetry_topic(FLEET, "d1"), telemetry(1, samples=2), received=5.0)
    ingest.flush()
    rows = store.telemetry_for("d1")
    assert [(r.seq, r.idx) for r in rows] == [(1, 1), (1, 0)]
    assert rows[0].error_rate == 0.01
    device = store.get_device("d1")
    assert device.p95_ms == 13.0
    assert device.temp_c == 55.0
    assert device.last_seen == 5.0


def test_replayed_telemetry_is_dropped_by_device_and_seq(store):
    ingest = Ingestor(store, fleet=FLEET, batch_size=100)
    for seq in (1, 2, 3):
        ingest.submit(telemetry_topic(FLEET, "d1"), telemetry(seq))
    ingest.submit(telemetry_topic(FLEET, "d2"), telemetry(1))  # same seq, other device
    ingest.flush()
    for seq in (2, 3, 4):  # a reconnect replays 2 and 3
        ingest.submit(telemetry_topic(FLEET, "d1"), telemetry(seq))
    counts = ingest.flush()
    assert (counts.written, counts.duplicates) == (1, 2)
    assert ingest.stats.written == 5
    assert ingest.stats.duplicates == 2
    assert [r.seq for r in store.telemetry_for("d1")] == [4, 3, 2, 1]


def test_batches_are_written_when_full_or_when_due(store):
    clock = Clock()
    ingest = Ingestor(store, fleet=FLEET, batch_size=3, max_delay_s=1.0, clock=clock)
    for seq in (1, 2):
        ingest.submit(telemetry_topic(FLEET, "d1"), telemetry(seq))
    assert ingest.pending == 2
    assert store.telemetry_for("d1") == []
    ingest.submit(telemetry_topic(FLEET, "d1"), telemetry(3))
    assert ingest.pending == 0
    assert len(store.telemetry_for("d1")) == 3
    ingest.submit(telemetry_topic(FLEET, "d1"), telemetry(4))
    assert ingest.flush_due() is None
    clock.now += 1.0
    assert ingest.flush_due() == IngestCounts(written=1)
    assert ingest.stats.batches == 2


def test_events_keep_their_reason_and_figures(store):
    ingest = Ingestor(store, fleet=FLEET)
    seen = []
    ingest.on_event = lambda device, event: seen.append((device, event.state))
    message = EventMessage(
        seq=9,
        kind="update_result",
        ts=50.0,
        directive_seq=3,
        bundle_digest=NEW,
        state="rolled_back",
        reason="p95 41.2 ms over the 30 ms budget",
        figures={"p95_ms": 41.2, "budget_p95_ms": 30},
    )
    ingest.submit(events_topic(FLEET, "d1"), message.to_bytes())
    ingest.flush()
    (event,) = store.events_for("d1")
    assert (event.state, event.directive_seq, event.bundle) == ("rolled_back", 3, NEW)
    assert event.figures == {"p95_ms": 41.2, "budget_p95_ms": 30}
    assert seen == [("d1", "rolled_back")]


def test_state_updates_the_device_and_records_its_bundles(store):
    ingest = Ingestor(store, fleet=FLEET)
    online = StateMessage(
        online=True,
        ts=100.0,
        bundle=BundleRef(name="mobilenet", version="2.0", digest=NEW, release=2),
        previous=BundleRef(name="mobilenet", version="1.0", digest=OLD, release=1),
        agent_version="0.1.0",
        board="rpi5",
    )
    ingest.submit(state_topic(FLEET, "d1"), online.to_bytes(), received=101.0)
    ingest.flush()
    device = store.get_device("d1")
    assert (device.online, device.bundle, device.previous_bundle) == (True, NEW, OLD)
    assert (device.board, device.agent_version) == ("rpi5", "0.1.0")
    assert store.get_bundle(NEW).version == "2.0"
    # The last will was composed at connect time (ts=10); the receive time is what counts.
    will = StateMessage(online=False, ts=10.0)
    ingest.submit(state_topic(FLEET, "d1"), will.to_bytes(), received=500.0)
    ingest.flush()
    device = store.get_device("d1")
    assert not device.online
    assert device.bundle == NEW
    assert device.last_seen == 500.0


def test_malformed_foreign_and_unknown_messages_are_counted_not_raised(store):
    ingest = Ingestor(store, fleet=FLEET)
    assert not ingest.submit(telemetry_topic(FLEET, "d1"), b"{not json")
    assert not ingest.submit(telemetry_topic(FLEET, "d1"), b'{"v": 2, "seq": 1}')
    assert not ingest.submit("edgeops/v1/demo/dev/d1/unknown", b"{}")
    assert not ingest.submit(telemetry_topic("other", "d1"), telemetry(1))
    assert not ingest.submit(state_topic(FLEET, "d1"), b"")
    assert ingest.submit(telemetry_topic(FLEET, "ghost"), telemetry(1))
    counts = ingest.flush()
    assert counts.unknown == 1
    assert ingest.stats.malformed == 3
    assert ingest.stats.ignored == 2
    assert "unknown edgeops topic" in ingest.stats.last_error


def test_repeated_topics_are_judged_the_same_every_time(store):
    # Parsed topics are kept for reuse; a bad topic must stay bad and a foreign one foreign.
    ingest = Ingestor(store, fleet=FLEET)
    for seq in (1, 2):
        assert not ingest.submit("edgeops/v1/demo/dev/d1/unknown", telemetry(seq))
        assert not ingest.submit(telemetry_topic("other", "d1"), telemetry(seq))
        assert not ingest.submit(telemetry_topic(FLEET, "d1"), b"{not json")
        assert ingest.submit(telemetry_topic(FLEET, "d1"), telemetry(seq))
    ingest.flush()
    assert (ingest.stats.malformed, ingest.stats.ignored, ingest.stats.written) == (4, 2, 2)


def test_the_parsed_topic_cache_is_bounded(store, monkeypatch):
    monkeypatch.setattr("edgeops.fleet.ingest._TOPIC_CACHE_SIZE", 2)
    ingest = Ingestor(store, fleet=FLEET)
    topics = [telemetry_topic(FLEET, d) for d in ("d1", "d2", "d3", "d4")]
    for seq, topic in enumerate(topics * 2, start=1):
        assert ingest.submit(topic, telemetry(seq))
        assert len(ingest._topics) <= 2
    ingest.flush()
    assert [r.seq for r in store.telemetry_for("d2")] == [6, 2]


class FailingStore:
    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.fail = True

    def ingest(self, **kwargs):
        if self.fail:
            raise StorageError("database is locked")
        return self.inner.ingest(**kwargs)


def test_a_failed_write_keeps_the_batch_for_the_next_flush(store):
    failing = FailingStore(store)
    ingest = Ingestor(failing, fleet=FLEET, batch_size=100)  # type: ignore[arg-type]
    ingest.submit(telemetry_topic(FLEET, "d1"), telemetry(1))
    with pytest.raises(StorageError):
        ingest.flush()
    ingest.submit(telemetry_topic(FLEET, "d1"), telemetry(2))
    failing.fail = False
    assert ingest.flush().written == 2
    assert ingest.stats.lost == 0


def test_attach_feeds_a_links_device_messages_into_the_registry(store):
    from edgeops.mqtt.fake import FakeBroker

    broker = FakeBroker()
    manager = broker.link("manager")
    manager.connect(timeout=5)
    device = broker.link("d1")
    device.connect(timeout=5)
    ingest = Ingestor(store, fleet=FLEET, batch_size=2)
    for ack in ingest.attach(manager):
        ack.wait(5)
    device.publish(telemetry_topic(FLEET, "d1"), telemetry(1)).wait(5)
    device.publish(telemetry_topic(FLEET, "d1"), telemetry(1)).wait(5)  # QoS 1 redelivery
    device.publish(f"edgeops/v1/{FLEET}/dev/d1/directive", b"not ingested").wait(5)
    ingest.flush()
    assert [r.seq for r in store.telemetry_for("d1")] == [1]
    assert (ingest.stats.received, ingest.stats.duplicates) == (2, 1)
    broker.stop()
