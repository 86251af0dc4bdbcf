"""The values the registry stores and returns: plain frozen dataclasses, no database types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class DeviceRecord:
    """A device as the registry knows it: enrollment, latest state, latest health."""

    device_id: str
    group: str
    board: str | None = None
    enrolled: float = 0.0
    revoked: float | None = None
    last_seen: float | None = None
    online: bool = False
    bundle: str | None = None
    previous_bundle: str | None = None
    agent_version: str | None = None
    p95_ms: float | None = None
    error_rate: float | None = None
    drift: float | None = None
    temp_c: float | None = None
    health_ts: float | None = None


@dataclass(frozen=True, kw_only=True)
class BundleRecord:
    """A bundle the fleet has published or is about to: identified by its file's SHA-256."""

    digest: str
    name: str
    version: str
    release: int
    size: int
    manifest: dict[str, Any] = field(default_factory=dict)
    added: float = 0.0


@dataclass(frozen=True, kw_only=True)
class CertificateRecord:
    """An X.509 certificate the fleet CA issued (serial as lowercase hex, no leading 0x)."""

    serial: str
    subject: str
    kind: str
    issued: float
    not_after: float | None = None
    revoked: float | None = None


@dataclass(frozen=True, kw_only=True)
class StateUpdate:
    """A device's retained state message, reduced to what the registry keeps.

    Protocol v1 state messages carry no sequence number: they are applied in arrival order
    (MQTT keeps one publisher's order on a topic). When ``seq`` is given, an update older
    than the one stored is ignored. ``None`` fields leave the stored value as it was.
    """

    device_id: str
    seq: int | None
    ts: float
    online: bool
    bundle: str | None = None
    previous_bundle: str | None = None
    agent_version: str | None = None
    board: str | None = None


@dataclass(frozen=True, kw_only=True)
class EventRecord:
    """One update event from a device (progress or result), unique by (device, seq)."""

    device_id: str
    seq: int
    ts: float
    kind: str
    state: str | None = None
    bundle: str | None = None
    directive_seq: int | None = None
    reason: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class TelemetryRow:
    """One telemetry sample: sample ``idx`` of telemetry message ``seq`` from a device.

    A message is unique by (device, seq) and all its samples are written in one
    transaction, so a replayed message is dropped whole. ``error_rate`` is a fraction.
    """

    device_id: str
    seq: int
    ts: float
    idx: int = 0
    window_s: float | None = None
    requests: int | None = None
    errors: int | None = None
    bundle: str | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    error_rate: float | None = None
    drift: float | None = None
    temp_c: float | None = None
    cpu_percent: float | None = None
    rss_mb: float | None = None


@dataclass(frozen=True, kw_only=True)
class IngestCounts:
    """What one batch did: rows written, duplicates dropped, messages from unknown devices
    dropped, stale state updates ignored."""

    written: int = 0
    duplicates: int = 0
    unknown: int = 0
    stale: int = 0

    def __add__(self, other: IngestCounts) -> IngestCounts:
        return IngestCounts(
            written=self.written + other.written,
            duplicates=self.duplicates + other.duplicates,
            unknown=self.unknown + other.unknown,
            stale=self.stale + other.stale,
        )


@dataclass(frozen=True, kw_only=True)
class WaveRecord:
    """One wave of a rollout, flattened for queries (the controller state is the truth)."""

    index: int
    canary: bool
    stage: str
    devices: tuple[str, ...]
    counts: dict[str, int]
    started: float | None = None
    ended: float | None = None
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class RolloutRecord:
    """A rollout: who, what, where it stands, and the controller state to resume from."""

    rollout_id: str
    group: str
    bundle: str
    previous_bundle: str | None
    status: str
    created: float
    updated: float
    reason: str = ""
    policy: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    waves: tuple[WaveRecord, ...] = ()
    device_phases: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class RolloutRequest:
    """A hand-made request (pause, resume, abort) waiting for the rollout's runner."""

    request_id: str
    rollout_id: str
    action: str
    created: float
    reason: str = ""
    handled: float | None = None


__all__ = [
    "BundleRecord",
    "CertificateRecord",
    "DeviceRecord",
    "EventRecord",
    "IngestCounts",
    "RolloutRecord",
    "RolloutRequest",
    "StateUpdate",
    "TelemetryRow",
    "WaveRecord",
]
