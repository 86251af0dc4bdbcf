"""collect_sample: one wire-ready telemetry sample from the holder, the probe and drift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeops.agent.runtimes.testing import fake_add_runtime
from edgeops.agent.serving import ModelHolder, ModelInfo
from edgeops.agent.telemetry import (
    DriftMonitor,
    SystemProbe,
    collect_sample,
    flatten_outputs,
    reference_stats,
)
from edgeops.protocol.messages import TelemetryMessage, TelemetrySample

DIGEST = "ab" * 32


def probe(tmp_path: Path) -> SystemProbe:
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "status").write_text("VmRSS:\t  40960 kB\n")
    sensor = tmp_path / "temp"
    sensor.write_text("47500\n")
    return SystemProbe(state_dir=tmp_path, thermal_path=sensor, proc_root=tmp_path / "proc")


def test_sample_from_a_serving_window(tmp_path: Path) -> None:
    holder = ModelHolder()
    monitor = DriftMonitor(reference_stats({"x": np.linspace(0, 1, 200)}), sample_every=1)
    holder.swap(fake_add_runtime(), ModelInfo(name="m", bundle_digest=DIGEST), drift=monitor)
    for _ in range(10):
        holder.infer({"x": np.full((1, 4), 5.0, np.float32)})  # far outside the reference
    sample = collect_sample(holder=holder, probe=probe(tmp_path), now=1_700_000_000.0)
    assert isinstance(sample, TelemetrySample)
    assert sample.requests == 10
    assert sample.errors == 0
    assert sample.latency_p50_ms is not None
    assert sample.rss_mb == pytest.approx(40.0)
    assert sample.temperature_c == pytest.approx(47.5)
    assert sample.disk_free_mb > 0
    assert sample.bundle_digest == DIGEST
    assert sample.drift is not None
    assert sample.drift > 0.25
    assert sample.outputs["y.mean"] == pytest.approx(6.0)
    # the sample goes on the wire as is
    message = TelemetryMessage(seq=1, samples=(sample,))
    assert TelemetryMessage.from_bytes(message.to_bytes()) == message
    # and the next window starts empty
    again = collect_sample(holder=holder, probe=probe(tmp_path / "2"), now=1_700_000_010.0)
    assert again.requests == 0
    assert again.latency_p50_ms is None
    assert again.drift is None


def test_sample_without_a_model(tmp_path: Path) -> None:
    sample = collect_sample(holder=ModelHolder(), probe=probe(tmp_path), now=1.0)
    assert sample.requests == 0
    assert sample.bundle_digest is None
    assert sample.drift is None
    assert sample.outputs == {}


def test_flatten_outputs_caps_entries() -> None:
    summary = {
        "scores": {"mean": 0.1, "std": 0.2, "min": 0.0, "max": 1.0, "top_classes": [[3, 0.75]]},
        "boxes": {"mean": 5.0, "std": 1.0, "min": 0.0, "max": 9.0},
    }
    flat = flatten_outputs(summary, limit=64)
    assert flat["scores.class.3"] == 0.75
    assert flat["boxes.max"] == 9.0
    assert len(flatten_outputs(summary, limit=3)) == 3
