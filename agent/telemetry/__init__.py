"""Telemetry: request metrics, system probes, model drift, store-and-forward queue.

* :class:`MetricsWindow` — latency p50/p95/p99, requests, errors, throughput; snapshot and reset.
* :class:`SystemProbe` — CPU % of this process, RSS, board temperature, state disk free.
* :func:`reference_stats` (bundle creation) and :class:`DriftMonitor` (device): input drift
  (PSI, mean/std shift) and output distribution.
* :class:`DiskQueue` — bounded, crash-safe, sequence-numbered store-and-forward queue.
* :func:`collect_sample` — one :class:`~edgeops.protocol.messages.TelemetrySample` from all
  of the above.

Only the standard library is imported here; numpy loads when drift is first computed.
"""

from __future__ import annotations

from edgeops.agent.telemetry.collect import collect_sample, flatten_outputs
from edgeops.agent.telemetry.drift import REFERENCE_VERSION, DriftMonitor, psi, reference_stats
from edgeops.agent.telemetry.metrics import MetricsSnapshot, MetricsWindow, percentile
from edgeops.agent.telemetry.queue import DiskQueue, QueueStats
from edgeops.agent.telemetry.system import SystemProbe, SystemSample

__all__ = [
    "REFERENCE_VERSION",
    "DiskQueue",
    "DriftMonitor",
    "MetricsSnapshot",
    "MetricsWindow",
    "QueueStats",
    "SystemProbe",
    "SystemSample",
    "collect_sample",
    "flatten_outputs",
    "percentile",
    "psi",
    "reference_stats",
]
