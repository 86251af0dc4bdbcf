"""Conformance: LayerNormalization, InstanceNormalization, GELU (op and fused Erf form),
Elu, ArgMax/ArgMin, variadic Sum/Mean, Reciprocal."""

from __future__ import annotations

import math

import numpy as np
import pytest
from convert_helpers import check_model, check_op, make_model
from onnx import helper

RNG = np.random.default_rng(21)


@pytest.mark.parametrize(("shape", "axis"), [([2, 5, 8], -1), ([2, 5, 8], 1), ([3, 16], -1)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm(shape: list[int], axis: int, with_bias: bool) -> None:
    norm_shape = shape[axis:]
    constants = {"scale": RNG.uniform(0.5, 1.5, norm_shape).astype(np.float32)}
    if with_bias:
        constants["bias"] = RNG.normal(size=norm_shape).astype(np.float32)
    check_op(
        "LayerNormalization",
        {"x": shape},
        constants=constants,
        attrs={"axis": axis, "epsilon": 1e-5},
    )


def test_instance_norm_after_conv() -> None:
    w = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("InstanceNormalization", ["c", "s", "b"], ["y"], epsilon=1e-4),
    ]
    consts = {
        "w": w,
        "s": RNG.uniform(0.5, 1.5, 4).astype(np.float32),
        "b": RNG.normal(size=4).astype(np.float32),
    }
    model = make_model(nodes, {"x": [2, 3, 6, 7]}, ["y"], consts)
    comparison = check_model(model, {"x": [2, 3, 6, 7]})
    assert comparison.count("TRANSPOSE") == 1  # only the NCHW output


def test_gelu_op_opset20() -> None:
    comparison = check_op("Gelu", {"x": [2, 10]}, opset=20)
    assert comparison.count("GELU") == 1


@pytest.mark.parametrize("half_first", [False, True])
def test_exported_erf_gelu_fuses_into_gelu(half_first: bool) -> None:
    consts = {
        "sqrt2": np.asarray(math.sqrt(2), np.float32),
        "one": np.asarray(1.0, np.float32),
        "half": np.asarray(0.5, np.float32),
    }
    nodes = [
        helper.make_node("Div", ["x", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
    ]
    if half_first:
        nodes += [
            helper.make_node("Mul", ["x", "half"], ["h"]),
            helper.make_node("Mul", ["h", "a"], ["y"]),
        ]
    else:
        nodes += [
            helper.make_node("Mul", ["x", "a"], ["m"]),
            helper.make_node("Mul", ["m", "half"], ["y"]),
        ]
    model = make_model(nodes, {"x": [3, 7]}, ["y"], consts)
    comparison = check_model(model, {"x": [3, 7]})
    assert comparison.result.op_histogram() == {"GELU": 1}


def test_elu() -> None:
    check_op("Elu", {"x": [1, 3, 4, 4]})


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize(("axis", "keepdims"), [(1, 1), (1, 0), (-1, 0)])
def test_arg_max_min(op: str, axis: int, keepdims: int) -> None:
    node = helper.make_node(op, ["x"], ["y"], axis=axis, keepdims=keepdims)
    model = make_model([node], {"x": [2, 5, 3]}, ["y"], output_dtypes={"y": np.int64})
    comparison = check_model(model, {"x": [2, 5, 3]})
    np.testing.assert_array_equal(comparison.actual[0], comparison.expected[0])


@pytest.mark.parametrize("op", ["Sum", "Mean"])
def test_variadic_sum_mean(op: str) -> None:
    node = helper.make_node(op, ["a", "b", "c"], ["y"])
    inputs = {"a": [2, 3, 4], "b": [2, 3, 4], "c": [3, 4]}
    check_model(make_model([node], inputs, ["y"]), inputs)


def test_reciprocal() -> None:
    node = helper.make_node("Reciprocal", ["x"], ["y"])
    feeds = {"x": RNG.uniform(0.5, 2, [2, 6]).astype(np.float32)}
    check_model(make_model([node], {"x": [2, 6]}, ["y"]), {"x": [2, 6]}, feeds=feeds)


@pytest.mark.parametrize(
    ("size", "alpha", "beta", "bias"), [(5, 1e-4, 0.75, 1.0), (3, 0.1, 0.5, 2.0)]
)
def test_lrn(size: int, alpha: float, beta: float, bias: float) -> None:
    comparison = check_op(
        "LRN", {"x": [1, 8, 5, 5]}, attrs={"size": size, "alpha": alpha, "beta": beta, "bias": bias}
    )
    assert comparison.count("LOCAL_RESPONSE_NORMALIZATION") == 1


def test_channel_shuffle_moves_data_once() -> None:
    w = RNG.normal(size=(8, 8, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Reshape", ["c", "s1"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3, 4]),
        helper.make_node("Reshape", ["t", "s2"], ["shuffled"]),
        helper.make_node("Conv", ["shuffled", "w"], ["y"]),
    ]
    consts = {
        "w": w,
        "s1": np.asarray([1, 2, 4, 5, 6], np.int64),
        "s2": np.asarray([1, 8, 5, 6], np.int64),
    }
    model = make_model(nodes, {"x": [1, 8, 5, 6]}, ["y"], consts)
    comparison = check_model(model, {"x": [1, 8, 5, 6]})
    # One TRANSPOSE for the shuffle itself, one for the NCHW model output.
    assert comparison.count("TRANSPOSE") == 2
