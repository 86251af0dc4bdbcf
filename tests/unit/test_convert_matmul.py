"""Conformance: Gemm and MatMul (FULLY_CONNECTED with constant weights, else BATCH_MATMUL)."""

from __future__ import annotations

import numpy as np
import pytest
from convert_helpers import check_model, check_op, make_model
from onnx import helper

RNG = np.random.default_rng(5)


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("c_shape", [None, [6], [1, 6], []])
def test_gemm(trans_b: int, c_shape: list[int] | None) -> None:
    w = RNG.normal(size=(6, 10) if trans_b else (10, 6)).astype(np.float32)
    constants = {"w": w}
    if c_shape is not None:
        constants["c"] = RNG.normal(size=c_shape).astype(np.float32)
    comparison = check_op(
        "Gemm",
        {"x": [3, 10]},
        constants=constants,
        attrs={"transB": trans_b, "alpha": 0.5, "beta": 2.0},
    )
    assert comparison.count("FULLY_CONNECTED") == 1


@pytest.mark.parametrize("shape", [[4, 8], [2, 5, 8], [1, 2, 3, 8]])
def test_matmul_constant_weight(shape: list[int]) -> None:
    w = RNG.normal(size=(8, 7)).astype(np.float32)
    comparison = check_op("MatMul", {"x": shape}, constants={"w": w})
    assert comparison.count("FULLY_CONNECTED") == 1


@pytest.mark.parametrize(
    ("a", "b"), [([2, 3, 4], [2, 4, 5]), ([1, 2, 3, 4], [1, 2, 4, 3]), ([3, 4], [4, 2])]
)
def test_matmul_two_activations(a: list[int], b: list[int]) -> None:
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    comparison = check_model(make_model([node], {"a": a, "b": b}, ["y"]), {"a": a, "b": b})
    assert comparison.count("BATCH_MATMUL") == 1


def test_flatten_gemm_after_conv_needs_no_transpose_for_1x1_maps() -> None:
    w = RNG.normal(size=(8, 3, 3, 3)).astype(np.float32)
    fc = RNG.normal(size=(5, 8)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
    ]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], {"w": w, "fc": fc})
    comparison = check_model(model, {"x": [1, 3, 8, 8]})
    assert comparison.count("TRANSPOSE") == 0


@pytest.mark.parametrize(
    ("trans_b", "alpha", "c"), [(0, 1.0, None), (1, 0.5, "const"), (0, 2.0, "input")]
)
def test_gemm_with_activation_operands(trans_b: int, alpha: float, c: str | None) -> None:
    b_shape = [6, 4] if trans_b else [4, 6]
    inputs = {"a": [3, 4], "b": b_shape}
    names = ["a", "b"]
    constants = {}
    if c == "const":
        constants["c"] = RNG.normal(size=[6]).astype(np.float32)
        names.append("c")
    elif c == "input":
        inputs["c"] = [3, 6]
        names.append("c")
    node = helper.make_node("Gemm", names, ["y"], transB=trans_b, alpha=alpha)
    comparison = check_model(make_model([node], inputs, ["y"], constants), inputs)
    assert comparison.count("BATCH_MATMUL") == 1


@pytest.mark.parametrize("flatten", ["Flatten", "Reshape"])
@pytest.mark.parametrize("dense", ["Gemm", "MatMul"])
def test_flatten_of_feature_map_into_dense_moves_no_data(flatten: str, dense: str) -> None:
    # VGG/LeNet classifier: conv features (C x H x W > 1) flattened into fully-connected
    # layers. The FC weights are permuted to the NHWC order instead of transposing.
    w = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
    consts = {"w": w, "shape": np.asarray([2, -1], np.int64)}
    if dense == "Gemm":
        consts["fc"] = RNG.normal(size=(5, 4 * 4 * 3)).astype(np.float32)
        head = helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1)
    else:
        consts["fc"] = RNG.normal(size=(4 * 4 * 3, 5)).astype(np.float32)
        head = helper.make_node("MatMul", ["f", "fc"], ["y"])
    flat = (
        helper.make_node("Flatten", ["c"], ["f"])
        if flatten == "Flatten"
        else helper.make_node("Reshape", ["c", "shape"], ["f"])
    )
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
        flat,
        head,
    ]
    model = make_model(nodes, {"x": [2, 3, 7, 6]}, ["y"], consts)
    comparison = check_model(model, {"x": [2, 3, 7, 6]})
    assert comparison.count("TRANSPOSE") == 0
