"""Conformance: MaxPool (incl. ceil_mode), AveragePool (count_include_pad), global pools."""

from __future__ import annotations

from typing import Any

import pytest
from convert_helpers import check_op
from hypothesis import assume, given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("size", "attrs"),
    [
        (8, {"kernel_shape": [2, 2], "strides": [2, 2]}),
        (9, {"kernel_shape": [3, 3], "strides": [2, 2]}),
        (9, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
        (8, {"kernel_shape": [5, 5], "pads": [2, 2, 2, 2]}),  # YOLOv8 SPPF
        (8, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        (10, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
        (7, {"kernel_shape": [2, 3], "strides": [1, 2], "auto_pad": "SAME_UPPER"}),
    ],
)
def test_max_pool(size: int, attrs: dict[str, Any]) -> None:
    comparison = check_op("MaxPool", {"x": [1, 3, size, size]}, attrs=attrs)
    assert comparison.count("MAX_POOL_2D") == 1


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize(
    ("size", "attrs"),
    [
        (8, {"kernel_shape": [2, 2], "strides": [2, 2]}),
        (8, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
        (9, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        (8, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
        (9, {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
        (10, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 1, 0], "ceil_mode": 1}),
    ],
)
def test_average_pool(size: int, attrs: dict[str, Any], include_pad: int) -> None:
    comparison = check_op(
        "AveragePool", {"x": [1, 2, size, size]}, attrs={**attrs, "count_include_pad": include_pad}
    )
    assert comparison.count("AVERAGE_POOL_2D") == 1


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", [[1, 8, 7, 5], [2, 3, 1, 1], [1, 4, 6]])
def test_global_pool(op: str, shape: list[int]) -> None:
    check_op(op, {"x": shape})


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize(
    "attrs",
    [
        {"kernel_shape": [3], "strides": [2]},
        {"kernel_shape": [3], "strides": [2], "pads": [1, 1]},
        {"kernel_shape": [2], "ceil_mode": 1, "strides": [2]},
    ],
)
def test_pool_1d(op: str, attrs: dict[str, Any]) -> None:
    check_op(op, {"x": [2, 4, 11]}, attrs=attrs)


@st.composite
def _pool_geometry(draw: st.DrawFn) -> tuple[list[int], dict[str, Any]]:
    kernel = [draw(st.integers(1, 4)), draw(st.integers(1, 4))]
    strides = [draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    # ONNX requires each pad to be smaller than the kernel along its axis.
    pads = [draw(st.integers(0, k - 1)) for k in kernel] * 1
    pads += [draw(st.integers(0, k - 1)) for k in kernel]
    size = [draw(st.integers(k, k + 6)) for k in kernel]
    ceil = draw(st.integers(0, 1))
    for axis in range(2):
        span = size[axis] + pads[axis] + pads[axis + 2] - kernel[axis]
        out = (-(-span // strides[axis]) if ceil else span // strides[axis]) + 1
        # ONNX shape inference keeps a ceil_mode window that starts past the input and
        # its start padding; onnxruntime drops it. The converter refuses that case
        # (test_ceil_mode_window_past_the_input_is_refused); generate the others.
        assume((out - 1) * strides[axis] < size[axis] + pads[axis])
    attrs: dict[str, Any] = {
        "kernel_shape": kernel,
        "strides": strides,
        "pads": pads,
        "ceil_mode": ceil,
    }
    return [1, 2, *size], attrs


@settings(max_examples=80, deadline=None)
@given(_pool_geometry(), st.sampled_from(["MaxPool", "AveragePool0", "AveragePool1"]))
def test_pool_geometry_property(geometry: tuple[list[int], dict[str, Any]], op: str) -> None:
    shape, attrs = geometry
    if op.startswith("AveragePool"):
        attrs = {**attrs, "count_include_pad": int(op[-1])}
        op = "AveragePool"
    check_op(op, {"x": shape}, attrs=attrs)


def test_ceil_mode_window_past_the_input_is_refused() -> None:
    from convert_helpers import make_model
    from onnx import helper

    from edgeops.converters.pipeline import convert_model
    from edgeops.errors import UnsupportedOpError

    # Size 2, kernel 1, stride 2, ceil_mode: ONNX infers 2 outputs, onnxruntime gives 1.
    node = helper.make_node(
        "MaxPool", ["x"], ["y"], kernel_shape=[1, 1], strides=[2, 1], ceil_mode=1
    )
    model = make_model([node], {"x": [1, 1, 2, 3]}, ["y"])
    with pytest.raises(UnsupportedOpError, match="onnxruntime"):
        convert_model(model)
