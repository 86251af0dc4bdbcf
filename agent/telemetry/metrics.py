"""A window of request metrics: latency percentiles, requests, errors, throughput.

The serving path calls :meth:`MetricsWindow.record` once per request; the telemetry loop
calls :meth:`MetricsWindow.snapshot` every N seconds with ``reset=True`` and publishes the
result. Memory is bounded: past ``max_samples`` latencies the window keeps a uniform
reservoir sample (Vitter's algorithm R), so percentiles stay unbiased at any request rate.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True, kw_only=True)
class MetricsSnapshot:
    """Request figures over one window; latencies in milliseconds (``None``: no request)."""

    window_s: float
    requests: int
    errors: int
    rejected: int
    throughput_rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None

    @property
    def error_rate(self) -> float:
        """Errors over requests (0.0 for an empty window)."""
        return self.errors / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, float | int | None]:
        """A JSON-ready dict with the same keys, plus ``error_rate``."""
        return {**asdict(self), "error_rate": self.error_rate}


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (``fraction`` in [0, 1])."""
    if not sorted_values:
        raise ValueError("percentile of an empty list")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class MetricsWindow:
    """Thread-safe request metrics since the last reset.

    ``requests`` counts every answered model call, ``errors`` those where the model failed
    (what a rollout gate judges), ``rejected`` those refused because the caller's input was
    wrong (HTTP 400 — not the model's fault, so not in the error rate).
    """

    def __init__(
        self,
        *,
        max_samples: int = 4096,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if max_samples < 1:
            raise ValueError(f"expected max_samples >= 1, got {max_samples}")
        self._max_samples = max_samples
        self._clock = clock
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._reset_locked()

    def _reset_locked(self) -> None:
        self._started = self._clock()
        self._samples: list[float] = []
        self._seen = 0
        self._requests = 0
        self._errors = 0
        self._rejected = 0
        self._sum = 0.0
        self._max = 0.0

    def record(self, latency_s: float, *, ok: bool = True) -> None:
        """Count one model call that took ``latency_s`` seconds; ``ok=False`` for a failure."""
        with self._lock:
            self._requests += 1
            if not ok:
                self._errors += 1
            self._sum += latency_s
            self._max = max(self._max, latency_s)
            self._seen += 1
            if len(self._samples) < self._max_samples:
                self._samples.append(latency_s)
            else:
                slot = self._rng.randrange(self._seen)
                if slot < self._max_samples:
                    self._samples[slot] = latency_s

    def record_rejected(self) -> None:
        """Count one request refused for bad input (no model run)."""
        with self._lock:
            self._rejected += 1

    def snapshot(self, *, reset: bool = False) -> MetricsSnapshot:
        """The figures since the last reset; ``reset=True`` starts a new window atomically."""
        with self._lock:
            now = self._clock()
            window = max(now - self._started, 0.0)
            ordered = sorted(self._samples)
            requests, errors, rejected = self._requests, self._errors, self._rejected
            total, largest = self._sum, self._max
            if reset:
                self._reset_locked()
        ms = 1000.0
        return MetricsSnapshot(
            window_s=window,
            requests=requests,
            errors=errors,
            rejected=rejected,
            throughput_rps=requests / window if window > 0 else 0.0,
            p50_ms=percentile(ordered, 0.50) * ms if ordered else None,
            p95_ms=percentile(ordered, 0.95) * ms if ordered else None,
            p99_ms=percentile(ordered, 0.99) * ms if ordered else None,
            mean_ms=total / requests * ms if requests else None,
            max_ms=largest * ms if requests else None,
        )
