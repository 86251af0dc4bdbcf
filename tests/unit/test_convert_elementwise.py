"""Conformance: Add, Sub, Mul, Div, Max, Min, Pow, Sqrt, unary math, standalone BatchNorm."""

from __future__ import annotations

import numpy as np
import pytest
from convert_helpers import check_model, check_op, make_model
from onnx import helper

RNG = np.random.default_rng(3)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
@pytest.mark.parametrize(
    ("a", "b"),
    [([1, 3, 4, 5], [1, 3, 4, 5]), ([2, 6], [2, 6]), ([1, 3, 4, 5], [1, 1, 4, 5])],
)
def test_binary_two_activations(op: str, a: list[int], b: list[int]) -> None:
    rng = np.random.default_rng(0)
    feeds = {
        "a": rng.uniform(-2, 2, a).astype(np.float32),
        "b": rng.uniform(0.5, 2, b).astype(np.float32),  # away from 0 for Div
    }
    node = helper.make_node(op, ["a", "b"], ["y"])
    check_model(make_model([node], {"a": a, "b": b}, ["y"]), {"a": a, "b": b}, feeds=feeds)


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("const_shape", [[], [1], [3, 1, 1], [5], [1, 3, 4, 5]])
def test_binary_with_constant(op: str, const_shape: list[int]) -> None:
    c = RNG.uniform(0.5, 2, const_shape).astype(np.float32)
    check_op(op, {"x": [1, 3, 4, 5]}, constants={"c": c})


def test_constant_on_the_left() -> None:
    c = RNG.uniform(0.5, 2, [3, 1, 1]).astype(np.float32)
    check_op("Sub", {"x": [1, 3, 4, 5]}, constants={"c": c}, input_order=["c", "x"])


@pytest.mark.parametrize(("exponent", "opcode"), [(2.0, "MUL"), (0.5, "SQRT"), (3.0, "POW")])
def test_pow(exponent: float, opcode: str) -> None:
    node = helper.make_node("Pow", ["x", "e"], ["y"])
    model = make_model([node], {"x": [1, 3, 4, 4]}, ["y"], {"e": np.asarray(exponent, np.float32)})
    feeds = {"x": RNG.uniform(0.1, 2, [1, 3, 4, 4]).astype(np.float32)}
    comparison = check_model(model, {"x": [1, 3, 4, 4]}, feeds=feeds)
    assert comparison.count(opcode) == 1


@pytest.mark.parametrize("op", ["Sqrt", "Exp", "Log", "Abs", "Neg", "Floor", "Ceil"])
def test_unary(op: str) -> None:
    node = helper.make_node(op, ["x"], ["y"])
    low = 0.1 if op in ("Sqrt", "Log") else -2.0
    feeds = {"x": RNG.uniform(low, 2, [1, 2, 3, 4]).astype(np.float32)}
    check_model(make_model([node], {"x": [1, 2, 3, 4]}, ["y"]), {"x": [1, 2, 3, 4]}, feeds=feeds)


@pytest.mark.parametrize("shape", [[1, 3, 5, 5], [2, 3], [1, 3, 7]])
def test_standalone_batchnorm(shape: list[int]) -> None:
    stats = {
        "gamma": RNG.uniform(0.5, 1.5, 3).astype(np.float32),
        "beta": RNG.normal(size=3).astype(np.float32),
        "mean": RNG.normal(size=3).astype(np.float32),
        "var": RNG.uniform(0.5, 2, 3).astype(np.float32),
    }
    comparison = check_op(
        "BatchNormalization", {"x": shape}, constants=stats, attrs={"epsilon": 1e-3}
    )
    assert comparison.count("MUL") == 1


@pytest.mark.parametrize("op", ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"])
def test_comparisons_feed_where(op: str) -> None:
    # Compare against a constant, then select between the input and a constant.
    nodes = [
        helper.make_node(op, ["x", "t"], ["m"]),
        helper.make_node("Not", ["m"], ["n"]),
        helper.make_node("And", ["m", "m"], ["m2"]),
        helper.make_node("Or", ["m2", "n"], ["anything"]),
        helper.make_node("Where", ["m2", "x", "zero"], ["y"]),
    ]
    consts = {"t": np.asarray(0.0, np.float32), "zero": np.zeros((3, 1, 1), np.float32)}
    rng = np.random.default_rng(4)
    feeds = {"x": rng.integers(-2, 3, size=(1, 3, 4, 5)).astype(np.float32)}
    model = make_model(
        nodes, {"x": [1, 3, 4, 5]}, ["y", "anything"], consts, output_dtypes={"anything": np.bool_}
    )
    comparison = check_model(model, {"x": [1, 3, 4, 5]}, feeds=feeds)
    assert comparison.count("SELECT_V2") == 1
    assert comparison.count("LOGICAL_OR") == 1
    np.testing.assert_array_equal(comparison.actual[1], comparison.expected[1])


@pytest.mark.parametrize("other_shape", [[4, 1, 1], [5, 6], [6], [1, 1, 5, 6]])
def test_broadcast_of_a_lower_rank_activation_onto_nhwc(other_shape: list[int]) -> None:
    # The second operand is a model input of lower rank: it is reshaped to rank 4 by ONNX
    # broadcasting and brought to the NHWC layout of the conv output.
    w = RNG.normal(size=(4, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Mul", ["c", "v"], ["y"]),
    ]
    inputs = {"x": [1, 3, 5, 6], "v": other_shape}
    check_model(make_model(nodes, inputs, ["y"], {"w": w}), inputs)
