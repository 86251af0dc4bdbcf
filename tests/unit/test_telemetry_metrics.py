"""MetricsWindow: percentiles, counts, throughput, reset, bounded memory, threads."""

from __future__ import annotations

import random
import threading

import pytest

from edgeops.agent.telemetry import MetricsWindow, percentile


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.50) == 50.0
    assert percentile(values, 0.95) == 95.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError, match="empty"):
        percentile([], 0.5)


def test_snapshot_reports_latency_counts_and_throughput() -> None:
    clock = FakeClock()
    window = MetricsWindow(clock=clock)
    for ms in range(1, 101):
        window.record(ms / 1000.0)
    window.record(0.5, ok=False)
    window.record_rejected()
    clock.now += 10.0
    snap = window.snapshot()
    assert snap.requests == 101
    assert snap.errors == 1
    assert snap.rejected == 1
    assert snap.window_s == pytest.approx(10.0)
    assert snap.throughput_rps == pytest.approx(10.1)
    assert snap.p50_ms == pytest.approx(51.0)
    assert snap.p95_ms == pytest.approx(96.0)
    assert snap.p99_ms == pytest.approx(100.0)
    assert snap.max_ms == pytest.approx(500.0)
    assert snap.error_rate == pytest.approx(1 / 101)
    assert snap.to_json()["error_rate"] == pytest.approx(1 / 101)


def test_empty_window_has_no_percentiles() -> None:
    snap = MetricsWindow(clock=FakeClock()).snapshot()
    assert snap.requests == 0
    assert snap.p50_ms is None
    assert snap.mean_ms is None
    assert snap.error_rate == 0.0
    assert snap.throughput_rps == 0.0


def test_reset_starts_a_new_window() -> None:
    clock = FakeClock()
    window = MetricsWindow(clock=clock)
    window.record(0.010)
    clock.now += 5
    first = window.snapshot(reset=True)
    assert first.requests == 1
    clock.now += 2
    window.record(0.020, ok=False)
    second = window.snapshot()
    assert second.requests == 1
    assert second.errors == 1
    assert second.window_s == pytest.approx(2.0)
    assert second.p50_ms == pytest.approx(20.0)


def test_reservoir_bounds_memory_and_keeps_percentiles_close() -> None:
    window = MetricsWindow(max_samples=500, clock=FakeClock(), rng=random.Random(1))
    rng = random.Random(2)
    values = [rng.uniform(0.0, 0.1) for _ in range(50_000)]
    for value in values:
        window.record(value)
    assert len(window._samples) == 500
    snap = window.snapshot()
    assert snap.requests == 50_000
    # uniform on [0, 100] ms: p50 near 50, p95 near 95
    assert snap.p50_ms == pytest.approx(50.0, abs=8.0)
    assert snap.p95_ms == pytest.approx(95.0, abs=4.0)
    assert snap.mean_ms == pytest.approx(sum(values) / len(values) * 1000)


def test_concurrent_recording_loses_nothing() -> None:
    window = MetricsWindow(clock=FakeClock())

    def worker() -> None:
        for _ in range(2000):
            window.record(0.001)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert window.snapshot().requests == 16_000
