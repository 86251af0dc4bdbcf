"""One telemetry sample from the serving side: metrics window, system probe, drift.

The daemon calls :func:`collect_sample` every telemetry period, appends the samples to its
:class:`~edgeops.agent.telemetry.DiskQueue` inside a
:class:`~edgeops.protocol.messages.TelemetryMessage`, and publishes them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeops.agent.serving.holder import ModelHolder
    from edgeops.agent.telemetry.system import SystemProbe
    from edgeops.protocol.messages import TelemetrySample


def flatten_outputs(summary: dict[str, Any], *, limit: int) -> dict[str, float]:
    """The drift monitor's output summary as flat ``"<output>.<figure>"`` numbers.

    ``<output>.mean|std|min|max`` per output and ``<output>.class.<label>`` for the share
    of the most frequent top-1 classes; at most ``limit`` entries (the wire cap).
    """
    flat: dict[str, float] = {}
    for name in sorted(summary):
        entry = summary[name]
        for figure in ("mean", "std", "min", "max"):
            if entry.get(figure) is not None:
                flat[f"{name}.{figure}"] = float(entry[figure])
        for label, share in entry.get("top_classes", []):
            flat[f"{name}.class.{label}"] = float(share)
    return dict(list(flat.items())[:limit])


def collect_sample(
    *,
    holder: ModelHolder,
    probe: SystemProbe,
    now: float | None = None,
    reset: bool = True,
) -> TelemetrySample:
    """Measure one window: requests, errors and latency percentiles of ``holder``, CPU,
    RSS, temperature and disk from ``probe``, the running bundle, the input drift (the
    largest PSI over the model's inputs) and the output summary.

    ``reset`` starts the next window (metrics and drift) at the same moment.
    """
    from edgeops.protocol.messages import OUTPUTS_MAX, TelemetrySample

    snapshot = holder.metrics.snapshot(reset=reset)
    system = probe.sample()
    active = holder.active
    drift: float | None = None
    outputs: dict[str, float] = {}
    if active is not None and active.drift is not None:
        report = active.drift.score()
        scores = [entry["psi"] for entry in report["inputs"].values() if entry["psi"] is not None]
        drift = max(scores) if scores else None
        outputs = flatten_outputs(report["outputs"], limit=OUTPUTS_MAX)
        if reset:
            active.drift.reset()
    mb = float(2**20)
    return TelemetrySample(
        ts=time.time() if now is None else now,
        window_s=snapshot.window_s,
        requests=snapshot.requests,
        errors=snapshot.errors,
        latency_p50_ms=snapshot.p50_ms,
        latency_p95_ms=snapshot.p95_ms,
        latency_p99_ms=snapshot.p99_ms,
        cpu_percent=system.cpu_percent or 0.0,
        rss_mb=(system.rss_bytes or 0) / mb,
        temperature_c=system.temperature_c,
        disk_free_mb=(system.disk_free_bytes or 0) / mb,
        bundle_digest=active.info.bundle_digest if active is not None else None,
        drift=drift,
        outputs=outputs,
    )
