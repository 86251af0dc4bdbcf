"""Device reports for the rollout runners, read back from the registry.

The service's runners are fed from what the registry holds, not from the MQTT messages this
instance happens to receive: with ``--share-group`` each instance receives only part of the
fleet's reports, while the registry has all of them (every instance writes there). The
registry also drops duplicates by (device, seq), so a runner sees each report once, and a
restarted service sees what arrived while it was away.

The cost is a few short queries per rollout and poll, only for the devices the rollout has
sent a directive to, and the ingest batch delay (``max_delay_s``) on top of the poll
interval before a runner hears a report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgeops.fleet.registry import EventRecord, RegistryStore, TelemetryRow
from edgeops.fleet.rollout.controller import DevicePhase
from edgeops.fleet.rollout.runner import RolloutRunner
from edgeops.protocol import (
    BundleRef,
    EventMessage,
    StateMessage,
    TelemetryMessage,
    TelemetrySample,
)

#: newest events and telemetry rows read per device and poll; more than a device reports
#: between two polls
EVENTS_PER_POLL = 50
TELEMETRY_PER_POLL = 20


def _event_message(record: EventRecord) -> EventMessage:
    return EventMessage(
        seq=record.seq,
        kind=record.kind,
        ts=record.ts,
        directive_seq=record.directive_seq,
        bundle_digest=record.bundle,
        state=record.state,
        reason=record.reason,
    )


def _telemetry_message(row: TelemetryRow) -> TelemetryMessage:
    sample = TelemetrySample(
        ts=row.ts,
        window_s=row.window_s or 0.0,
        requests=row.requests or 0,
        errors=row.errors or 0,
        latency_p50_ms=row.p50_ms,
        latency_p95_ms=row.p95_ms,
        latency_p99_ms=row.p99_ms,
        bundle_digest=row.bundle,
        drift=row.drift,
    )
    return TelemetryMessage(seq=row.seq, samples=(sample,))


@dataclass
class RegistryFeed:
    """Feeds one runner the reports of its devices that it has not seen yet."""

    runner: RolloutRunner
    #: per device, the newest event seq and (telemetry seq, idx) already fed
    events_seen: dict[str, int] = field(default_factory=dict)
    telemetry_seen: dict[str, tuple[int, int]] = field(default_factory=dict)

    def poll(self, store: RegistryStore) -> int:
        """Feed what is new; returns how many reports were fed."""
        runner = self.runner
        controller = runner.controller
        # Reports from before the rollout was created are about something else (and the
        # baseline p95 was taken from them at start).
        since = controller.created
        phases = controller.device_phases()
        fed = 0
        running: dict[str, tuple[bool, str | None]] = {
            d.device_id: (d.online, d.bundle) for d in store.list_devices(group=runner.group)
        }
        for device_id, phase in phases.items():
            if phase is DevicePhase.PENDING:
                continue
            events = [
                e
                for e in store.events_for(device_id, limit=EVENTS_PER_POLL)
                if e.seq > self.events_seen.get(device_id, -1) and e.ts >= since
            ]
            for record in sorted(events, key=lambda e: e.seq):
                runner.on_event(device_id, _event_message(record))
                self.events_seen[device_id] = record.seq
                fed += 1
            rows = [
                r
                for r in store.telemetry_for(device_id, limit=TELEMETRY_PER_POLL)
                if (r.seq, r.idx) > self.telemetry_seen.get(device_id, (-1, -1)) and r.ts >= since
            ]
            for row in sorted(rows, key=lambda r: (r.seq, r.idx)):
                runner.on_telemetry(device_id, _telemetry_message(row))
                self.telemetry_seen[device_id] = (row.seq, row.idx)
                fed += 1
            online, bundle = running.get(device_id, (False, None))
            if bundle is not None and bundle == controller.bundle:
                # The retained state says it runs the rollout's bundle: committed, also when
                # the update events were missed (see RolloutRunner.on_state).
                ref = BundleRef(name="bundle", version="-", digest=bundle, release=0)
                runner.on_state(device_id, StateMessage(online=online, ts=since, bundle=ref))
        return fed


__all__ = ["EVENTS_PER_POLL", "TELEMETRY_PER_POLL", "RegistryFeed"]
