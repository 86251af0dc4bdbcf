"""Conformance: ReduceMean/Sum/Max/Min/Prod over remapped axes, with and without keepdims."""

from __future__ import annotations

import numpy as np
import pytest
from convert_helpers import check_model, check_op, make_model
from onnx import helper


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum"])
@pytest.mark.parametrize(("axes", "keepdims"), [([2, 3], 1), ([1], 0), ([-1], 1), ([1, 2], 0)])
def test_reduce_nchw_input(op: str, axes: list[int], keepdims: int) -> None:
    # Opset 17: ReduceSum takes axes as an input, the others as an attribute.
    if op == "ReduceSum":
        check_op(
            op,
            {"x": [1, 3, 4, 5]},
            constants={"axes": np.asarray(axes, np.int64)},
            attrs={"keepdims": keepdims},
        )
    else:
        check_op(op, {"x": [1, 3, 4, 5]}, attrs={"axes": axes, "keepdims": keepdims})


@pytest.mark.parametrize("axes", [[1], [0, 2]])
def test_reduce_mean_opset18_axes_input(axes: list[int]) -> None:
    check_op(
        "ReduceMean", {"x": [2, 3, 4]}, constants={"axes": np.asarray(axes, np.int64)}, opset=18
    )


def test_reduce_prod() -> None:
    node = helper.make_node("ReduceProd", ["x"], ["y"], axes=[1], keepdims=0)
    feeds = {"x": np.random.default_rng(0).uniform(0.5, 1.5, [2, 3, 4]).astype(np.float32)}
    check_model(make_model([node], {"x": [2, 3, 4]}, ["y"]), {"x": [2, 3, 4]}, feeds=feeds)


def test_reduce_after_conv_in_nhwc() -> None:
    w = np.random.default_rng(0).normal(size=(4, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("ReduceMean", ["c"], ["y"], axes=[1], keepdims=0),
    ]
    model = make_model(nodes, {"x": [1, 3, 5, 6]}, ["y"], {"w": w})
    comparison = check_model(model, {"x": [1, 3, 5, 6]})
    assert comparison.count("TRANSPOSE") == 0
