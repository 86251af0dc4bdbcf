"""Quantization parameter arithmetic on hand-checkable values (TFLite 8-bit spec)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeops.converters.ir import Graph, Operator
from edgeops.converters.quantize import (
    QuantizeOptions,
    activation_params,
    quantize_int8,
    quantize_values,
    symmetric_weights,
)
from edgeops.errors import ConfigError


def test_activation_params_cover_the_range_and_hold_zero_exactly() -> None:
    params = activation_params(-1.0, 3.0)
    scale, zp = float(params.scales[0]), int(params.zero_points[0])
    assert scale == pytest.approx(4.0 / 255.0)
    assert zp == round(-128 + 1.0 / scale)  # -64
    # 0.0 maps to an integer exactly: the zero point.
    assert quantize_values(np.array([0.0]), params)[0] == zp
    # A range that excludes 0 is widened to include it (spec: zero is representable).
    positive = activation_params(2.0, 4.0)
    assert int(positive.zero_points[0]) == -128
    assert float(positive.scales[0]) == pytest.approx(4.0 / 255.0)


def test_symmetric_weights_per_channel() -> None:
    w = np.array([[[[1.0, -0.5]]], [[[0.25, 0.0]]], [[[0.0, 0.0]]]], dtype=np.float32)
    q, scales = symmetric_weights(w, 0)
    np.testing.assert_allclose(scales, [1 / 127, 0.25 / 127, 1.0], rtol=1e-6)
    assert q[0, 0, 0].tolist() == [127, -64]  # -63.5 rounds away from zero
    assert q[1, 0, 0].tolist() == [127, 0]
    assert q[2, 0, 0].tolist() == [0, 0]
    assert q.min() >= -127


def _conv_graph(bias: float) -> Graph:
    graph = Graph(inputs=["x"], outputs=["y"])
    graph.add_tensor("x", (1, 2, 2, 1), np.float32)
    graph.add_constant("w", np.full((1, 1, 1, 1), 1e-4, np.float32))
    graph.add_constant("b", np.array([bias], np.float32))
    graph.add_tensor("y", (1, 2, 2, 1), np.float32)
    graph.operators.append(
        Operator(
            "CONV_2D", ["x", "w", "b"], ["y"], {"padding": "VALID", "strideW": 1, "strideH": 1}
        )
    )
    return graph


def test_bias_scale_is_input_scale_times_weight_scale_and_never_overflows() -> None:
    ranges = {"x": (-1e-3, 1e-3), "y": (0.0, 2e6)}
    graph = quantize_int8(_conv_graph(1e6), ranges, options=QuantizeOptions(float_tail=False))
    (conv,) = [op for op in graph.operators if op.opcode == "CONV_2D"]
    x, w, b = (graph.tensors[n] for n in conv.inputs if n is not None)
    assert x.quantization is not None
    assert w.quantization is not None
    assert b.quantization is not None
    assert b.data is not None
    np.testing.assert_allclose(
        b.quantization.scales, x.quantization.scales * w.quantization.scales, rtol=1e-6
    )
    # 1e6 / (input_scale × 1e-4/127) would overflow int32: the weight scale grew instead.
    assert abs(int(b.data[0])) <= 2**31 - 1
    real_bias = float(b.data[0]) * float(b.quantization.scales[0])
    assert real_bias == pytest.approx(1e6, rel=1e-3)


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="percentile"):
        QuantizeOptions(percentile=30.0)
    with pytest.raises(ConfigError, match="io dtype"):
        QuantizeOptions(io_dtype="uint8")  # type: ignore[arg-type]


def _identity_conv(size: int) -> Graph:
    graph = Graph(inputs=["x"], outputs=["y"])
    graph.add_tensor("x", (1, size, size, 1), np.float32)
    graph.add_constant("w", np.ones((1, 1, 1, 1), np.float32))
    graph.add_constant("b", np.zeros((1,), np.float32))
    graph.add_tensor("c", (1, size, size, 1), np.float32)
    graph.add_tensor("y", (1, 1, 1, 1), np.float32)
    conv = {"padding": "VALID", "strideW": 1, "strideH": 1}
    pool = {"padding": "VALID", "strideW": size, "strideH": size}
    pool |= {"filterWidth": size, "filterHeight": size}
    graph.operators += [
        Operator("CONV_2D", ["x", "w", "b"], ["c"], conv),
        Operator("MAX_POOL_2D", ["c"], ["y"], pool),
    ]
    return graph


def test_auto_calibration_clips_a_heavy_tail_only_at_high_resolution() -> None:
    from edgeops.converters.quantize import calibrate_ranges, high_resolution_tensors

    graph = _identity_conv(64)
    assert high_resolution_tensors(graph) == {"c"}  # not the input, not the 1x1 pooled value
    rng = np.random.default_rng(0)
    samples = [{"x": rng.uniform(0, 1, (1, 64, 64, 1)).astype(np.float32)} for _ in range(4)]
    samples[0]["x"][0, 5, 5, 0] = 100.0  # one pixel's outlier
    auto = calibrate_ranges(graph, samples, method="auto", progress=False)
    minmax = calibrate_ranges(graph, samples, method="minmax", progress=False)
    assert minmax["c"][1] == pytest.approx(100.0)
    assert auto["c"][1] == pytest.approx(1.0, abs=0.01)  # clipped at the 99.9th percentile
    assert auto["y"][1] == pytest.approx(100.0)  # low resolution: min/max, never clipped
    # Without a heavy tail, auto keeps the full range.
    plain = [{"x": rng.uniform(0, 1, (1, 64, 64, 1)).astype(np.float32)} for _ in range(4)]
    kept = calibrate_ranges(graph, plain, method="auto", progress=False)
    full = calibrate_ranges(graph, plain, method="minmax", progress=False)
    assert kept["c"] == full["c"]
