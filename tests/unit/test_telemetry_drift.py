"""reference_stats and DriftMonitor: PSI and mean/std shift on known distributions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgeops.agent.telemetry import DriftMonitor, psi, reference_stats
from edgeops.errors import InputError


def images(rng: np.random.Generator, n: int, low: int, high: int) -> list[np.ndarray]:
    return [rng.integers(low, high, (1, 16, 16, 3), dtype=np.uint8) for _ in range(n)]


def test_reference_stats_is_json_and_describes_the_data() -> None:
    rng = np.random.default_rng(0)
    ref = reference_stats({"image": images(rng, 20, 0, 256)}, bins=8)
    assert json.loads(json.dumps(ref)) == ref
    stats = ref["inputs"]["image"]
    assert stats["count"] == 20 * 16 * 16 * 3
    assert stats["mean"] == pytest.approx(127.5, abs=2.0)
    assert stats["std"] == pytest.approx(256 / math.sqrt(12), rel=0.05)
    assert len(stats["bin_edges"]) == 9
    assert sum(stats["histogram"]) == pytest.approx(1.0)
    assert stats["bin_edges"][0] == 0.0
    assert stats["bin_edges"][-1] == 255.0


def test_reference_stats_constant_input_and_bad_samples() -> None:
    ref = reference_stats({"x": np.ones((4, 4), np.float32)})
    assert ref["inputs"]["x"]["std"] == 0.0
    assert ref["inputs"]["x"]["bin_edges"][0] < 1.0 < ref["inputs"]["x"]["bin_edges"][-1]
    with pytest.raises(InputError, match="no samples"):
        reference_stats({"x": []})
    with pytest.raises(InputError, match="NaN"):
        reference_stats({"x": np.array([1.0, np.nan])})


def test_psi_is_zero_for_equal_and_grows_with_shift() -> None:
    assert psi([0.25] * 4, [0.25] * 4) == pytest.approx(0.0)
    small = psi([0.25] * 4, [0.3, 0.25, 0.25, 0.2])
    large = psi([0.25] * 4, [0.7, 0.1, 0.1, 0.1])
    assert 0 < small < 0.1 < 0.25 < large
    with pytest.raises(ValueError, match="expected 4 bins"):
        psi([0.25] * 4, [0.5, 0.5])


def test_same_distribution_scores_stable() -> None:
    rng = np.random.default_rng(1)
    monitor = DriftMonitor(reference_stats({"image": images(rng, 30, 0, 256)}), sample_every=1)
    for image in images(rng, 30, 0, 256):
        monitor.observe({"image": image})
    report = monitor.score()["inputs"]["image"]
    assert report["psi"] < 0.05
    assert report["mean_shift_sigma"] < 0.1
    assert report["std_ratio"] == pytest.approx(1.0, abs=0.1)


def test_darker_images_score_as_drift() -> None:
    rng = np.random.default_rng(2)
    monitor = DriftMonitor(reference_stats({"image": images(rng, 30, 0, 256)}), sample_every=1)
    for image in images(rng, 30, 0, 64):  # an underexposed camera
        monitor.observe({"image": image})
    report = monitor.score()["inputs"]["image"]
    assert report["psi"] > 0.25
    assert report["mean_shift_sigma"] > 1.0
    assert report["std_ratio"] < 0.5


def test_values_out_of_reference_range_land_in_outer_bins() -> None:
    ref = reference_stats({"x": np.linspace(0.0, 1.0, 1000)}, bins=4)
    monitor = DriftMonitor(ref, sample_every=1)
    monitor.observe({"x": np.full(100, 50.0)})
    assert monitor._counts["x"] == [0, 0, 0, 100]
    assert monitor.score()["inputs"]["x"]["psi"] > 1.0


def test_sampling_looks_at_every_nth_request_and_caps_values() -> None:
    ref = reference_stats({"x": np.arange(100_000, dtype=np.float32)})
    monitor = DriftMonitor(ref, sample_every=10, max_values=256)
    sampled = [monitor.observe({"x": np.arange(100_000, dtype=np.float32)}) for _ in range(100)]
    assert sum(sampled) == 10
    assert sampled[0] is True
    report = monitor.score()
    assert report["requests"] == 100
    assert report["sampled"] == 10
    assert report["inputs"]["x"]["values"] <= 10 * 256


def test_outputs_summarized_with_top_classes() -> None:
    ref = reference_stats({"x": np.zeros(4)})
    monitor = DriftMonitor(ref, sample_every=1)
    scores = np.zeros((1, 10), np.float32)
    scores[0, 3] = 1.0
    for _ in range(3):
        monitor.observe({"x": np.zeros(4)}, {"scores": scores})
    scores2 = np.zeros((1, 10), np.float32)
    scores2[0, 7] = 1.0
    monitor.observe({"x": np.zeros(4)}, {"scores": scores2})
    out = monitor.score()["outputs"]["scores"]
    assert out["top_classes"] == [[3, 0.75], [7, 0.25]]
    assert out["mean"] == pytest.approx(0.1)
    assert out["max"] == 1.0
    assert out["min"] == 0.0


def test_no_observation_gives_none_scores_and_reset_forgets() -> None:
    monitor = DriftMonitor(reference_stats({"x": np.arange(10.0)}), sample_every=1)
    assert monitor.score()["inputs"]["x"]["psi"] is None
    monitor.observe({"x": np.arange(10.0)})
    assert monitor.score()["inputs"]["x"]["psi"] is not None
    monitor.reset()
    assert monitor.score()["requests"] == 0
    assert monitor.score()["inputs"]["x"]["values"] == 0


def test_bad_reference_is_refused() -> None:
    with pytest.raises(InputError, match="version"):
        DriftMonitor({"version": 99, "inputs": {}})
    ref = reference_stats({"x": np.arange(10.0)})
    ref["inputs"]["x"]["histogram"] = [1.0]
    with pytest.raises(InputError, match="malformed histogram"):
        DriftMonitor(ref)


def test_extreme_values_score_without_warnings() -> None:
    monitor = DriftMonitor(reference_stats({"x": np.linspace(0, 1, 100)}), sample_every=1)
    monitor.observe({"x": np.array([1e200, -1e200, np.inf, np.nan])})
    report = monitor.score()["inputs"]["x"]
    assert report["psi"] > 1.0
    assert report["values"] == 2  # non-finite values are left out
