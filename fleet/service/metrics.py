"""Prometheus text exposition (format 0.0.4) of the fleet, its ingestion and its rollouts.

Rendered by hand: the format is a few lines of text per family and the official client
library would add a dependency and a global registry for what :func:`render` does in one
pass over values the service already holds. Rules followed (Prometheus "Exposition
formats"): one ``# HELP`` and one ``# TYPE`` line per family before its samples, label
values escaped (``\\`` → ``\\\\``, ``"`` → ``\\"``, newline → ``\\n``), HELP text escaped
(``\\`` and newline), base units (seconds, ratios), counters end in ``_total``, and a
missing measurement is no sample rather than a made-up zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from edgeops.fleet.ingest import IngestStats
from edgeops.fleet.registry import DeviceRecord, RolloutRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: rollout statuses exported as one 0/1 series each, so a dashboard can alert on "aborted"
ROLLOUT_STATUSES = ("running", "paused", "succeeded", "aborted")


def escape_label(value: str) -> str:
    """A label value as the exposition format quotes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text: backslash and newline escaped (quotes stay as they are)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without a fraction, ``NaN``, ``+Inf``, ``-Inf``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


@dataclass
class Family:
    """One metric family: name, type, help and its samples (labels, value)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[Mapping[str, str], float]] = field(default_factory=list)

    def add(self, value: float | None, **labels: str) -> None:
        """Add a sample; ``None`` (not measured) adds nothing."""
        if value is not None:
            self.samples.append((labels, float(value)))

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            if labels:
                text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
                out.append(f"{self.name}{{{text}}} {format_value(value)}")
            else:
                out.append(f"{self.name} {format_value(value)}")
        return out


def _ms_to_s(value: float | None) -> float | None:
    return None if value is None else value / 1000.0


def fleet_families(devices: Sequence[DeviceRecord]) -> list[Family]:
    """Devices online and total, and per-device gauges of the latest health."""
    total = Family("edgeops_devices", "gauge", "Enrolled devices that are not revoked.")
    online = Family("edgeops_devices_online", "gauge", "Devices whose retained state is online.")
    up = Family("edgeops_device_online", "gauge", "1 when the device is online, else 0.")
    p95 = Family(
        "edgeops_device_latency_p95_seconds",
        "gauge",
        "95th percentile inference latency in the device's latest telemetry window.",
    )
    errors = Family(
        "edgeops_device_error_ratio",
        "gauge",
        "Failed requests over requests in the device's latest telemetry window.",
    )
    drift = Family(
        "edgeops_device_drift",
        "gauge",
        "Largest input PSI against the bundle's reference statistics (latest window).",
    )
    temp = Family(
        "edgeops_device_temperature_celsius", "gauge", "SoC temperature in the latest window."
    )
    seen = Family(
        "edgeops_device_last_seen_timestamp_seconds",
        "gauge",
        "When the fleet last heard from the device (Unix time).",
    )
    total.add(len(devices))
    online.add(sum(1 for d in devices if d.online))
    for d in devices:
        labels = {"device": d.device_id, "group": d.group}
        up.add(1 if d.online else 0, **labels)
        p95.add(_ms_to_s(d.p95_ms), **labels)
        errors.add(d.error_rate, **labels)
        drift.add(d.drift, **labels)
        temp.add(d.temp_c, **labels)
        seen.add(d.last_seen, **labels)
    return [total, online, up, p95, errors, drift, temp, seen]


def ingest_families(stats: IngestStats, pending: int) -> list[Family]:
    """This instance's ingestion counters since it started."""
    counters = [
        ("edgeops_ingest_received_total", "Messages received from the broker.", stats.received),
        ("edgeops_ingest_malformed_total", "Messages dropped as malformed.", stats.malformed),
        ("edgeops_ingest_ignored_total", "Messages that were no device report.", stats.ignored),
        ("edgeops_ingest_batches_total", "Registry transactions written.", stats.batches),
        ("edgeops_ingest_rows_written_total", "Rows written to the registry.", stats.written),
        (
            "edgeops_ingest_duplicates_total",
            "Reports dropped as duplicates by device and sequence number.",
            stats.duplicates,
        ),
        (
            "edgeops_ingest_unknown_device_total",
            "Reports from devices the registry does not know.",
            stats.unknown,
        ),
        (
            "edgeops_ingest_lost_total",
            "Messages dropped because the registry stayed unavailable.",
            stats.lost,
        ),
    ]
    families = []
    for name, text, value in counters:
        family = Family(name, "counter", text)
        family.add(value)
        families.append(family)
    queued = Family("edgeops_ingest_pending", "gauge", "Messages decoded and not yet written.")
    queued.add(pending)
    families.append(queued)
    return families


def rollout_families(rollouts: Iterable[RolloutRecord], *, driven: int) -> list[Family]:
    """Per rollout its status (one 0/1 series per status) and devices per phase."""
    status = Family(
        "edgeops_rollout_status",
        "gauge",
        "1 for the rollout's current status (running, paused, succeeded, aborted), else 0.",
    )
    phases = Family(
        "edgeops_rollout_devices", "gauge", "Devices of the rollout in each phase, all waves."
    )
    waves = Family("edgeops_rollout_waves_passed", "gauge", "Waves of the rollout that passed.")
    active = Family("edgeops_rollouts_active", "gauge", "Rollouts running or paused.")
    runners = Family(
        "edgeops_rollouts_driven", "gauge", "Rollouts this service instance is driving."
    )
    count = 0
    for record in rollouts:
        labels = {"rollout": record.rollout_id, "group": record.group}
        if record.status in ("running", "paused"):
            count += 1
        for name in ROLLOUT_STATUSES:
            status.add(1 if record.status == name else 0, status=name, **labels)
        totals: dict[str, int] = {}
        for wave in record.waves:
            for phase, n in wave.counts.items():
                totals[phase] = totals.get(phase, 0) + n
        for phase, n in sorted(totals.items()):
            phases.add(n, phase=phase, **labels)
        waves.add(sum(1 for w in record.waves if w.stage == "passed"), **labels)
    active.add(count)
    runners.add(driven)
    return [status, phases, waves, active, runners]


def render(families: Iterable[Family]) -> str:
    """The exposition text of ``families`` (ends with a newline)."""
    lines: list[str] = []
    for family in families:
        lines += family.lines()
    return "\n".join(lines) + "\n"


__all__ = [
    "CONTENT_TYPE",
    "ROLLOUT_STATUSES",
    "Family",
    "escape_help",
    "escape_label",
    "fleet_families",
    "format_value",
    "ingest_families",
    "render",
    "rollout_families",
]
