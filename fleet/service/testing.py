"""A registry with a small fleet's history, for tests and demos of the service.

:func:`populate` enrolls devices and feeds real protocol messages (state, telemetry, update
events) through an :class:`~edgeops.fleet.ingest.Ingestor`, exactly as the service's MQTT
subscription would; nothing is written to the registry behind the ingestor's back.
:class:`RecordingSink` is the fake :class:`~edgeops.fleet.rollout.runner.DirectiveSink`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from edgeops.fleet.ingest import Ingestor
from edgeops.fleet.registry import BundleRecord, RegistryStore
from edgeops.fleet.rollout.controller import PublishDirectives
from edgeops.fleet.rollout.policy import RolloutPolicy
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

OLD_DIGEST = "a" * 64
NEW_DIGEST = "b" * 64


@dataclass(frozen=True, kw_only=True)
class DemoFleet:
    """What :func:`populate` wrote: devices and, per device, the samples sent."""

    devices: tuple[str, ...]
    offline: tuple[str, ...]
    samples: dict[str, list[TelemetrySample]]
    start: float
    end: float


@dataclass
class RecordingSink:
    """A directive sink that records what it was asked to publish."""

    published: list[PublishDirectives] = field(default_factory=list)

    def publish(self, action: PublishDirectives, *, rollout_id: str, policy: RolloutPolicy) -> None:
        self.published.append(action)


def record_bundles(store: RegistryStore, *, now: float) -> None:
    """The two bundles of the demo, recorded in full (as ``edgeops push`` does)."""
    for digest, version, release in ((OLD_DIGEST, "1.0", 1), (NEW_DIGEST, "1.1", 2)):
        store.add_bundle(
            BundleRecord(
                digest=digest,
                name="detector",
                version=version,
                release=release,
                size=1000 * release,
                added=now,
            )
        )


def populate(
    store: RegistryStore,
    *,
    fleet: str,
    now: float,
    devices: int = 4,
    group: str = "lab",
    samples: int = 30,
    interval_s: float = 60.0,
    offline: int = 1,
) -> DemoFleet:
    """Enroll ``devices`` devices and ingest ``samples`` telemetry windows each, ending at
    ``now``, plus their retained state and an update history; the last ``offline`` devices
    end offline. Latency, errors and drift differ per device and vary over time, so the
    charts have shape."""
    record_bundles(store, now=now - samples * interval_s)
    ingestor = Ingestor(store, fleet=fleet, batch_size=500)
    ids = tuple(f"cam-{i:02d}" for i in range(devices))
    start = now - (samples - 1) * interval_s
    sent: dict[str, list[TelemetrySample]] = {}
    ref = BundleRef(name="detector", version="1.0", digest=OLD_DIGEST, release=1)
    for n, device_id in enumerate(ids):
        store.add_device(device_id, group=group, board="raspberrypi4", now=start - 600)
        state = StateMessage(
            online=True,
            ts=start - 300,
            bundle=ref,
            agent_version="0.1.0",
            board="raspberrypi4",
        )
        ingestor.submit(state_topic(fleet, device_id), state.to_bytes(), received=start - 300)
        event = EventMessage(
            seq=1,
            kind="update_result",
            ts=start - 200,
            directive_seq=1,
            bundle_digest=OLD_DIGEST,
            state="committed",
            reason="trial passed",
        )
        ingestor.submit(events_topic(fleet, device_id), event.to_bytes(), received=start - 200)
        sent[device_id] = []
        for i in range(samples):
            ts = start + i * interval_s
            wave = math.sin(i / 4.0 + n)
            requests = 600
            errors = max(0, round(3 + 3 * wave + n))
            sample = TelemetrySample(
                ts=ts,
                window_s=interval_s,
                requests=requests,
                errors=errors,
                latency_p50_ms=8.0 + 2 * n + wave,
                latency_p95_ms=14.0 + 4 * n + 3 * wave + (6.0 if i > samples * 2 // 3 else 0.0),
                latency_p99_ms=20.0 + 4 * n + 3 * wave,
                cpu_percent=30.0 + 5 * n,
                rss_mb=60.0 + n,
                temperature_c=48.0 + 3 * n + wave,
                bundle_digest=OLD_DIGEST,
                drift=round(0.02 + 0.03 * n + 0.02 * (1 + wave), 4),
            )
            message = TelemetryMessage(seq=2 + i, samples=(sample,))
            ingestor.submit(telemetry_topic(fleet, device_id), message.to_bytes(), received=ts)
            sent[device_id].append(sample)
    gone = ids[len(ids) - offline :] if offline else ()
    for device_id in gone:
        state = StateMessage(online=False, ts=now, bundle=ref, board="raspberrypi4")
        ingestor.submit(state_topic(fleet, device_id), state.to_bytes(), received=now)
    ingestor.flush()
    return DemoFleet(devices=ids, offline=tuple(gone), samples=sent, start=start, end=now)


__all__ = [
    "NEW_DIGEST",
    "OLD_DIGEST",
    "DemoFleet",
    "RecordingSink",
    "populate",
    "record_bundles",
]
