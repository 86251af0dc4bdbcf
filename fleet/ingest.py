"""Device messages into the registry: decode, batch, write, drop duplicates.

:class:`Ingestor` takes what the fleet's MQTT subscription receives — topic, payload and
receive time — decodes it with :mod:`edgeops.protocol`, and writes it to a
:class:`~edgeops.fleet.registry.RegistryStore` in batches of ``batch_size`` messages, or
sooner when the oldest pending message has waited ``max_delay_s`` (checked on every submit
and by :meth:`Ingestor.flush_due`, which a service calls on a timer). One batch is one
transaction, which is what makes 10,000 messages/s affordable on SQLite.

Duplicates — a device replaying its store-and-forward buffer after a reconnect, or a
message delivered twice at QoS 1 — are dropped by the registry's (device, seq) keys, not by
memory here, so they are dropped across restarts and across fleet-manager instances too.
Malformed messages are counted and logged, never raised: one bad device must not stop
ingestion for the fleet.

Callbacks (``on_event``, ``on_telemetry``) hand each decoded message to whoever runs
rollouts in the same process, before it is written.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edgeops.errors import ProtocolError
from edgeops.fleet.registry import (
    BundleRecord,
    EventRecord,
    IngestCounts,
    RegistryStore,
    StateUpdate,
    TelemetryRow,
)
from edgeops.mqtt.link import Ack, Link, Message
from edgeops.protocol import (
    BundleRef,
    EventMessage,
    StateMessage,
    TelemetryMessage,
    Topic,
    TopicKind,
    fleet_ingest_filters,
    parse_topic,
    shared_filter,
)

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 1000
DEFAULT_MAX_DELAY_S = 0.25
_RETRY_BATCHES = 20
# Parsed topics kept for reuse: a fleet has three per device, and parsing each message's
# topic again was a tenth of the cost of ingesting it. Cleared when full, so a flood of
# distinct topics costs bounded memory (about 250 bytes an entry).
_TOPIC_CACHE_SIZE = 65536

EventCallback = Callable[[str, EventMessage], None]
TelemetryCallback = Callable[[str, TelemetryMessage], None]
StateCallback = Callable[[str, StateMessage], None]


@dataclass
class IngestStats:
    """Running totals since the ingestor started."""

    received: int = 0
    malformed: int = 0
    ignored: int = 0
    batches: int = 0
    written: int = 0
    duplicates: int = 0
    unknown: int = 0
    stale: int = 0
    lost: int = 0
    last_error: str = ""

    def add(self, counts: IngestCounts) -> None:
        self.batches += 1
        self.written += counts.written
        self.duplicates += counts.duplicates
        self.unknown += counts.unknown
        self.stale += counts.stale


@dataclass
class _Pending:
    states: list[StateUpdate] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    telemetry: list[TelemetryRow] = field(default_factory=list)
    bundles: list[BundleRecord] = field(default_factory=list)
    seen: dict[str, float] = field(default_factory=dict)
    messages: int = 0
    since: float | None = None


def _merge(older: _Pending, newer: _Pending) -> _Pending:
    seen = dict(older.seen)
    for device_id, ts in newer.seen.items():
        seen[device_id] = max(ts, seen.get(device_id, ts))
    return _Pending(
        states=older.states + newer.states,
        events=older.events + newer.events,
        telemetry=older.telemetry + newer.telemetry,
        bundles=older.bundles + newer.bundles,
        seen=seen,
        messages=older.messages + newer.messages,
        since=older.since if older.since is not None else newer.since,
    )


def telemetry_rows(device_id: str, message: TelemetryMessage) -> list[TelemetryRow]:
    """A telemetry message as registry rows, one per sample."""
    rows = []
    for idx, sample in enumerate(message.samples):
        rows.append(
            TelemetryRow(
                device_id=device_id,
                seq=message.seq,
                idx=idx,
                ts=sample.ts,
                window_s=sample.window_s,
                requests=sample.requests,
                errors=sample.errors,
                bundle=sample.bundle_digest,
                p50_ms=sample.latency_p50_ms,
                p95_ms=sample.latency_p95_ms,
                p99_ms=sample.latency_p99_ms,
                # A window without requests has no error rate, not a perfect one.
                error_rate=sample.errors / sample.requests if sample.requests else None,
                drift=sample.drift,
                temp_c=sample.temperature_c,
                cpu_percent=sample.cpu_percent,
                rss_mb=sample.rss_mb,
            )
        )
    return rows


def event_record(device_id: str, message: EventMessage) -> EventRecord:
    """An event message as a registry row."""
    return EventRecord(
        device_id=device_id,
        seq=message.seq,
        ts=message.ts,
        kind=message.kind,
        state=message.state,
        bundle=message.bundle_digest,
        directive_seq=message.directive_seq,
        reason=message.reason,
        figures=dict(message.figures),
    )


def state_update(device_id: str, message: StateMessage, *, received: float) -> StateUpdate:
    """A state message as a registry update. A last will is composed at connect time, so
    its own timestamp is old: the receive time says when the device went away."""
    return StateUpdate(
        device_id=device_id,
        seq=None,
        ts=message.ts if message.online else received,
        online=message.online,
        bundle=message.bundle.digest if message.bundle else None,
        previous_bundle=message.previous.digest if message.previous else None,
        agent_version=message.agent_version or None,
        board=message.board or None,
    )


def _bundle_record(ref: BundleRef, now: float) -> BundleRecord:
    # Size and manifest are unknown from a state message; a push records them in full.
    return BundleRecord(
        digest=ref.digest,
        name=ref.name,
        version=ref.version,
        release=ref.release,
        size=0,
        manifest={},
        added=now,
    )


class Ingestor:
    """Decode device messages of ``fleet`` and write them to ``store`` in batches.

    Thread-safe: MQTT callbacks may call :meth:`submit` from the network thread while a
    timer calls :meth:`flush_due`.
    """

    def __init__(
        self,
        store: RegistryStore,
        *,
        fleet: str,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_delay_s: float = DEFAULT_MAX_DELAY_S,
        clock: Callable[[], float] = time.time,
        on_state: StateCallback | None = None,
        on_event: EventCallback | None = None,
        on_telemetry: TelemetryCallback | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"expected batch_size >= 1, got {batch_size}")
        self.store = store
        self.fleet = fleet
        self.batch_size = batch_size
        self.max_delay_s = max_delay_s
        self.clock = clock
        self.on_state = on_state
        self.on_event = on_event
        self.on_telemetry = on_telemetry
        self.stats = IngestStats()
        self._pending = _Pending()
        self._known_bundles: set[str] = set()
        self._topics: dict[str, Topic] = {}
        self._lock = threading.Lock()

    def submit(self, topic: str, payload: bytes, *, received: float | None = None) -> bool:
        """Queue one received message; ``False`` when it was malformed or not a device
        report. Writes a batch when it is full or its oldest message is due."""
        now = self.clock() if received is None else received
        with self._lock:
            self.stats.received += 1
            try:
                accepted = self._decode(topic, payload, now)
            except ProtocolError as exc:
                self.stats.malformed += 1
                self.stats.last_error = f"{topic}: {exc}"
                log.warning("dropping malformed message on %s: %s", topic, exc)
                return False
            if not accepted:
                self.stats.ignored += 1
                return False
            pending = self._pending
            pending.messages += 1
            if pending.since is None:
                pending.since = now
            if pending.messages >= self.batch_size or now - pending.since >= self.max_delay_s:
                self._flush_locked()
            return True

    def _parse_topic(self, topic: str) -> Topic:
        parsed = self._topics.get(topic)
        if parsed is None:
            parsed = parse_topic(topic)  # a malformed topic raises and is not kept
            if len(self._topics) >= _TOPIC_CACHE_SIZE:
                self._topics.clear()
            self._topics[topic] = parsed
        return parsed

    def _decode(self, topic: str, payload: bytes, now: float) -> bool:
        parsed = self._parse_topic(topic)
        if parsed.fleet != self.fleet or parsed.device_id is None:
            return False
        device_id = parsed.device_id
        pending = self._pending
        if parsed.kind is TopicKind.TELEMETRY:
            telemetry = TelemetryMessage.from_bytes(payload)
            if self.on_telemetry is not None:
                self.on_telemetry(device_id, telemetry)
            pending.telemetry.extend(telemetry_rows(device_id, telemetry))
        elif parsed.kind is TopicKind.EVENTS:
            event = EventMessage.from_bytes(payload)
            if self.on_event is not None:
                self.on_event(device_id, event)
            pending.events.append(event_record(device_id, event))
        elif parsed.kind is TopicKind.STATE:
            if not payload:
                return False  # a cleared retained state, e.g. after the device was removed
            state = StateMessage.from_bytes(payload)
            if self.on_state is not None:
                self.on_state(device_id, state)
            pending.states.append(state_update(device_id, state, received=now))
            for ref in (state.bundle, state.previous):
                if ref is not None and ref.digest not in self._known_bundles:
                    self._known_bundles.add(ref.digest)
                    pending.bundles.append(_bundle_record(ref, now))
        else:
            return False
        previous = pending.seen.get(device_id)
        if previous is None or now > previous:
            pending.seen[device_id] = now
        return True

    def flush(self) -> IngestCounts:
        """Write whatever is pending now."""
        with self._lock:
            return self._flush_locked()

    def flush_due(self, now: float | None = None) -> IngestCounts | None:
        """Write the pending batch if its oldest message has waited ``max_delay_s``."""
        with self._lock:
            since = self._pending.since
            current = self.clock() if now is None else now
            if since is None or current - since < self.max_delay_s:
                return None
            return self._flush_locked()

    def _flush_locked(self) -> IngestCounts:
        pending, self._pending = self._pending, _Pending()
        if not pending.messages:
            return IngestCounts()
        try:
            counts = self.store.ingest(
                states=pending.states,
                events=pending.events,
                telemetry=pending.telemetry,
                seen=pending.seen,
                bundles=pending.bundles,
            )
        except Exception:
            # Keep the batch for the next flush (a locked or briefly unavailable database),
            # up to a cap: past it the oldest batch is dropped and counted, because the
            # broker has already acknowledged these messages and nobody will resend them.
            current = self._pending
            if pending.messages + current.messages <= self.batch_size * _RETRY_BATCHES:
                self._pending = _merge(pending, current)
            else:
                self.stats.lost += pending.messages
                for ref in pending.bundles:
                    self._known_bundles.discard(ref.digest)
            raise
        self.stats.add(counts)
        return counts

    def attach(self, link: Link, *, share_group: str | None = None) -> list[Ack]:
        """Subscribe ``link`` to every device's state, events and telemetry and feed them
        here. With ``share_group``, an MQTT 5 shared subscription, so that several
        fleet-manager instances split the stream (each message reaches one of them)."""
        acks = []
        for topic_filter in fleet_ingest_filters(self.fleet):
            subscription = (
                topic_filter if share_group is None else shared_filter(share_group, topic_filter)
            )
            acks.append(link.subscribe(subscription, self._on_message, qos=1))
        return acks

    def _on_message(self, message: Message) -> None:
        self.submit(message.topic, message.payload)

    @property
    def pending(self) -> int:
        """Messages decoded and not yet written."""
        return self._pending.messages


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_DELAY_S",
    "IngestStats",
    "Ingestor",
    "event_record",
    "state_update",
    "telemetry_rows",
]
