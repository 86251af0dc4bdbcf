"""Conformance: Conv (plain, padded, strided, dilated, depthwise, grouped, 1-D), ConvTranspose."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from convert_helpers import check_op
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeops.converters.op_versions import operator_version

RNG = np.random.default_rng(42)


def _w(*shape: int) -> np.ndarray:
    return RNG.normal(0, 0.5, size=shape).astype(np.float32)


@pytest.mark.parametrize(
    ("size", "kernel", "attrs"),
    [
        (8, 3, {"pads": [1, 1, 1, 1]}),
        (8, 3, {}),
        (9, 3, {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
        (8, 3, {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # asymmetric in TFLite terms
        (8, 5, {"pads": [2, 1, 0, 2]}),
        (10, 3, {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
        (7, 1, {}),
        (8, 3, {"auto_pad": "SAME_UPPER"}),
        (8, 4, {"auto_pad": "SAME_LOWER", "strides": [2, 2]}),
        (8, 2, {"auto_pad": "VALID", "strides": [2, 1]}),
    ],
)
def test_conv2d(size: int, kernel: int, attrs: dict[str, Any]) -> None:
    comparison = check_op(
        "Conv",
        {"x": [1, 3, size, size + 1]},
        attrs=attrs,
        constants={"w": _w(4, 3, kernel, kernel), "b": _w(4)},
    )
    assert comparison.count("CONV_2D") == 1


def test_conv_without_bias() -> None:
    check_op("Conv", {"x": [2, 2, 6, 6]}, constants={"w": _w(3, 2, 3, 3)}, attrs={"pads": [1] * 4})


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise(multiplier: int) -> None:
    comparison = check_op(
        "Conv",
        {"x": [1, 4, 9, 9]},
        attrs={"group": 4, "pads": [1, 1, 1, 1], "strides": [2, 2]},
        constants={"w": _w(4 * multiplier, 1, 3, 3), "b": _w(4 * multiplier)},
    )
    assert comparison.count("DEPTHWISE_CONV_2D") == 1


@pytest.mark.parametrize(("group", "strides"), [(3, [1, 1]), (2, [2, 2])])
def test_grouped_conv_is_one_grouped_conv2d(group: int, strides: list[int]) -> None:
    comparison = check_op(
        "Conv",
        {"x": [1, 6, 7, 7]},
        attrs={"group": group, "pads": [1, 1, 1, 1], "strides": strides},
        constants={"w": _w(12, 6 // group, 3, 3), "b": _w(12)},
    )
    assert comparison.result.op_histogram() == {"CONV_2D": 1, "TRANSPOSE": 1}
    conv = next(op for op in comparison.result.graph.operators if op.opcode == "CONV_2D")
    assert operator_version(comparison.result.graph, conv) == 6


@pytest.mark.parametrize("attrs", [{}, {"pads": [1, 1], "strides": [2]}, {"dilations": [2]}])
def test_conv1d(attrs: dict[str, Any]) -> None:
    check_op("Conv", {"x": [1, 3, 16]}, attrs=attrs, constants={"w": _w(5, 3, 3), "b": _w(5)})


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [2, 2]},
        {"strides": [2, 2], "pads": [1, 1, 1, 1]},
        {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
        {"strides": [1, 1], "pads": [0, 1, 1, 0]},
    ],
)
def test_conv_transpose(attrs: dict[str, Any]) -> None:
    comparison = check_op(
        "ConvTranspose",
        {"x": [1, 3, 5, 6]},
        attrs={"kernel_shape": [3, 3], **attrs},
        constants={"w": _w(3, 4, 3, 3), "b": _w(4)},
    )
    assert comparison.count("TRANSPOSE_CONV") == 1


@pytest.mark.parametrize("group", [2, 4])
def test_grouped_conv_transpose(group: int) -> None:
    # 4 input channels in `group` groups, 3 output channels per group.
    comparison = check_op(
        "ConvTranspose",
        {"x": [1, 4, 5, 5]},
        attrs={"kernel_shape": [4, 4], "strides": [2, 2], "pads": [1, 1, 1, 1], "group": group},
        constants={"w": _w(4, 3, 4, 4), "b": _w(3 * group)},
    )
    assert comparison.count("TRANSPOSE_CONV") == group


def test_batchnorm_folds_into_conv_transpose() -> None:
    from convert_helpers import check_model, make_model
    from onnx import helper

    stats = {
        "gamma": RNG.uniform(0.5, 1.5, 5).astype(np.float32),
        "beta": _w(5),
        "mean": _w(5),
        "var": RNG.uniform(0.5, 2, 5).astype(np.float32),
    }
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["c"], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"]),
    ]
    model = make_model(nodes, {"x": [1, 3, 4, 4]}, ["y"], {"w": _w(3, 5, 3, 3), **stats})
    comparison = check_model(model, {"x": [1, 3, 4, 4]})
    assert comparison.count("MUL") == 0


@st.composite
def _conv_geometry(draw: st.DrawFn) -> tuple[list[int], dict[str, Any], np.ndarray]:
    group = draw(st.sampled_from([1, 2, 4]))
    in_channels = 4
    out_channels = group * draw(st.integers(1, 3))
    kernel = [draw(st.integers(1, 4)), draw(st.integers(1, 4))]
    dilations = [draw(st.integers(1, 2)), draw(st.integers(1, 2))]
    strides = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    size = [
        draw(st.integers((k - 1) * d + 1, (k - 1) * d + 7))
        for k, d in zip(kernel, dilations, strict=True)
    ]
    weight = (
        np.random.default_rng(draw(st.integers(0, 999)))
        .normal(size=(out_channels, in_channels // group, *kernel))
        .astype(np.float32)
    )
    attrs: dict[str, Any] = {
        "group": group,
        "dilations": dilations,
        "strides": strides,
        "pads": pads,
    }
    if draw(st.booleans()):
        # onnxruntime refuses dilation with SAME_*; auto_pad cases run undilated.
        attrs = {
            "group": group,
            "strides": strides,
            "auto_pad": draw(st.sampled_from(["SAME_UPPER", "SAME_LOWER", "VALID"])),
        }
    return [1, in_channels, *size], attrs, weight


@settings(max_examples=60, deadline=None)
@given(_conv_geometry())
def test_conv_geometry_property(geometry: tuple[list[int], dict[str, Any], np.ndarray]) -> None:
    shape, attrs, weight = geometry
    check_op("Conv", {"x": shape}, attrs=attrs, constants={"w": weight})


def test_same_with_a_stride_longer_than_the_kernel_is_written_pad_valid() -> None:
    # kernel 1x2, stride 2x1 on 6x5: ONNX pads equal TFLite SAME, but the H axis's SAME
    # total is negative, which tflite-runtime 2.14's XNNPACK gets wrong: PAD + VALID.
    comparison = check_op(
        "Conv",
        {"x": [1, 4, 6, 5]},
        attrs={"strides": [2, 1], "pads": [0, 0, 0, 1]},
        constants={"w": _w(4, 4, 1, 2)},
    )
    conv = next(op for op in comparison.result.graph.operators if op.opcode == "CONV_2D")
    assert conv.options["padding"] == "VALID"
    assert comparison.count("PAD") == 1


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"pads": [1, 1, 1, 1, 1, 1]},
        {"strides": [1, 2, 2], "pads": [0, 1, 1, 0, 1, 1]},
        {"dilations": [1, 2, 1]},
    ],
)
def test_conv3d(attrs: dict[str, Any]) -> None:
    comparison = check_op(
        "Conv", {"x": [1, 3, 4, 6, 5]}, attrs=attrs, constants={"w": _w(4, 3, 3, 3, 3), "b": _w(4)}
    )
    assert comparison.count("CONV_3D") == 1


def test_conv3d_relu_fuses() -> None:
    from convert_helpers import check_model, make_model
    from onnx import helper

    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 6),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    model = make_model(nodes, {"x": [1, 2, 3, 4, 5]}, ["y"], {"w": _w(3, 2, 3, 3, 3)})
    comparison = check_model(model, {"x": [1, 2, 3, 4, 5]})
    assert comparison.count("RELU") == 0
