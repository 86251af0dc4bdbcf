"""Conformance: Resize (nearest and bilinear, each coordinate mode) and Upsample."""

from __future__ import annotations

import numpy as np
import pytest
from convert_helpers import check_model, make_model
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from edgeops.converters.pipeline import convert_model
from edgeops.errors import UnsupportedOpError


def _resize(
    coord: str,
    mode: str,
    nearest: str,
    size: list[int] | None,
    scales: list[float] | None,
    in_shape=(1, 3, 5, 6),
) -> bytes:
    constants: dict[str, np.ndarray] = {}
    inputs = ["x", "", "", ""]
    if scales is not None:
        constants["scales"] = np.asarray(scales, np.float32)
        inputs[2] = "scales"
        inputs = inputs[:3]
    else:
        constants["sizes"] = np.asarray(size, np.int64)
        inputs[3] = "sizes"
    node = helper.make_node(
        "Resize",
        inputs,
        ["y"],
        mode=mode,
        coordinate_transformation_mode=coord,
        nearest_mode=nearest,
    )
    return make_model([node], {"x": list(in_shape)}, ["y"], constants)


@pytest.mark.parametrize(
    ("coord", "nearest", "scales", "size"),
    [
        ("asymmetric", "floor", [1, 1, 2, 2], None),  # YOLOv8 upsampling
        ("asymmetric", "floor", None, [1, 3, 15, 12]),
        ("half_pixel", "round_prefer_ceil", [1, 1, 2, 2], None),
        ("half_pixel", "round_prefer_ceil", None, [1, 3, 7, 9]),
        ("align_corners", "round_prefer_ceil", None, [1, 3, 9, 11]),
        ("tf_half_pixel_for_nn", "floor", [1, 1, 3, 3], None),
        ("asymmetric", "round_prefer_floor", [1, 1, 2, 2], None),
        ("pytorch_half_pixel", "round_prefer_ceil", [1, 1, 2, 2], None),
    ],
)
def test_resize_nearest(coord: str, nearest: str, scales, size) -> None:
    model = _resize(coord, "nearest", nearest, size, scales)
    comparison = check_model(model, {"x": [1, 3, 5, 6]})
    assert comparison.count("RESIZE_NEAREST_NEIGHBOR") == 1


@pytest.mark.parametrize(
    ("coord", "scales", "size"),
    [
        ("half_pixel", [1, 1, 2, 2], None),
        ("pytorch_half_pixel", None, [1, 3, 8, 9]),
        ("align_corners", None, [1, 3, 9, 11]),
        ("asymmetric", [1, 1, 2, 2], None),
        ("half_pixel", None, [1, 3, 3, 4]),  # downscale
    ],
)
def test_resize_bilinear(coord: str, scales, size) -> None:
    model = _resize(coord, "linear", "floor", size, scales)
    comparison = check_model(model, {"x": [1, 3, 5, 6]})
    assert comparison.count("RESIZE_BILINEAR") == 1


def test_upsample_opset9() -> None:
    node = helper.make_node("Upsample", ["x", "s"], ["y"], mode="nearest")
    model = make_model(
        [node], {"x": [1, 2, 3, 4]}, ["y"], {"s": np.asarray([1, 1, 2, 2], np.float32)}, opset=9
    )
    check_model(model, {"x": [1, 2, 3, 4]})


def test_resize_without_tflite_equivalent_is_refused() -> None:
    # Asymmetric coordinates rounded up (x3) pick source rows 0,1,1,1,2… which no TFLite
    # flag setting does (they all start 0,0,…).
    model = _resize("asymmetric", "nearest", "ceil", None, [1, 1, 3, 3])
    with pytest.raises(UnsupportedOpError, match="Resize"):
        convert_model(model)


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(["nearest", "linear"]),
    st.sampled_from(
        ["asymmetric", "align_corners", "half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn"]
    ),
    st.sampled_from(["floor", "ceil", "round_prefer_floor", "round_prefer_ceil"]),
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(1, 13),
    st.integers(1, 13),
)
def test_resize_property_converts_exactly_or_refuses(
    mode: str, coord: str, nearest: str, in_h: int, in_w: int, out_h: int, out_w: int
) -> None:
    # Either the converted model samples exactly what onnxruntime samples, or the
    # conversion stops naming Resize: never a silently different resize.
    if mode == "linear" and coord == "tf_half_pixel_for_nn":
        return  # defined for nearest only
    model = _resize(coord, mode, nearest, [1, 2, out_h, out_w], None, in_shape=(1, 2, in_h, in_w))
    refusal = ""
    try:
        convert_model(model)
    except UnsupportedOpError as exc:
        refusal = str(exc)
    if refusal:
        assert "unsupported op Resize" in refusal
        return
    check_model(model, {"x": [1, 2, in_h, in_w]})


@pytest.mark.parametrize("scale", [2.0, 1.5, 0.5])
def test_resize_opset10_scales_input(scale: float) -> None:
    node = helper.make_node("Resize", ["x", "s"], ["y"], mode="nearest")
    model = make_model(
        [node],
        {"x": [1, 2, 4, 6]},
        ["y"],
        {"s": np.asarray([1, 1, scale, scale], np.float32)},
        opset=10,
    )
    check_model(model, {"x": [1, 2, 4, 6]})
