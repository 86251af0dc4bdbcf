"""Conformance: Relu, Clip, LeakyRelu, PRelu, Sigmoid, HardSigmoid, HardSwish, Tanh, Softmax."""

from __future__ import annotations

import numpy as np
import pytest
from convert_helpers import check_model, check_op, make_model
from onnx import helper

SHAPES = [[1, 3, 6, 5], [2, 7], [1, 4, 9]]


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "HardSwish"])
@pytest.mark.parametrize("shape", SHAPES)
def test_simple_activations(op: str, shape: list[int]) -> None:
    check_op(op, {"x": shape})


@pytest.mark.parametrize(
    ("low", "high", "opcode"),
    [
        (0.0, 6.0, "RELU6"),
        (-1.0, 1.0, "RELU_N1_TO_1"),
        (-0.5, 0.7, "MINIMUM"),
        (0.2, None, "MAXIMUM"),
    ],
)
def test_clip(low: float, high: float | None, opcode: str) -> None:
    constants = {"lo": np.asarray(low, np.float32)}
    order = ["x", "lo"]
    if high is not None:
        constants["hi"] = np.asarray(high, np.float32)
        order.append("hi")
    comparison = check_op("Clip", {"x": [1, 3, 4, 4]}, constants=constants, input_order=order)
    assert comparison.count(opcode) == 1


def test_clip_opset6_attributes() -> None:
    comparison = check_op("Clip", {"x": [2, 5]}, attrs={"min": 0.0, "max": 6.0}, opset=6)
    assert comparison.count("RELU6") == 1


@pytest.mark.parametrize("alpha", [0.01, 0.2])
def test_leaky_relu(alpha: float) -> None:
    check_op("LeakyRelu", {"x": [1, 3, 5, 5]}, attrs={"alpha": alpha})


@pytest.mark.parametrize("slope_shape", [[3, 1, 1], [1], [1, 3, 1, 1]])
def test_prelu(slope_shape: list[int]) -> None:
    slope = np.random.default_rng(1).uniform(0, 0.5, slope_shape).astype(np.float32)
    check_op("PRelu", {"x": [1, 3, 4, 5]}, constants={"slope": slope})


@pytest.mark.parametrize(("alpha", "beta"), [(0.2, 0.5), (1 / 6, 0.5)])
def test_hard_sigmoid(alpha: float, beta: float) -> None:
    check_op("HardSigmoid", {"x": [1, 2, 4, 4]}, attrs={"alpha": alpha, "beta": beta})


@pytest.mark.parametrize(
    ("shape", "axis"), [([2, 10], -1), ([1, 3, 4, 5], 1), ([1, 3, 4, 5], 3), ([2, 4, 6], 1)]
)
def test_softmax(shape: list[int], axis: int) -> None:
    check_op("Softmax", {"x": shape}, attrs={"axis": axis})


def test_softmax_opset11_coerces_to_2d() -> None:
    check_op("Softmax", {"x": [2, 3, 4]}, attrs={"axis": 1}, opset=11)


def test_conv_relu_fuses_into_one_op() -> None:
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], {"w": w})
    comparison = check_model(model, {"x": [1, 3, 8, 8]})
    assert comparison.count("RELU") == 0
    conv = next(op for op in comparison.result.graph.operators if op.opcode == "CONV_2D")
    assert conv.options["fusedActivationFunction"] == "RELU"


@pytest.mark.parametrize(
    ("producer", "fused"),
    [
        (lambda: helper.make_node("Concat", ["x", "x"], ["p"], axis=1), False),
        (lambda: helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2]), True),
        (lambda: helper.make_node("AveragePool", ["x"], ["p"], kernel_shape=[2, 2]), True),
        (lambda: helper.make_node("Add", ["x", "x"], ["p"]), True),
    ],
)
def test_relu_after_producer(producer, fused: bool) -> None:
    nodes = [producer(), helper.make_node("Relu", ["p"], ["y"])]
    comparison = check_model(make_model(nodes, {"x": [1, 3, 6, 6]}, ["y"]), {"x": [1, 3, 6, 6]})
    assert comparison.count("RELU") == (0 if fused else 1)


@pytest.mark.parametrize(
    ("slope_shape", "x_shape"), [([4, 5], [1, 3, 4, 5]), ([3, 4, 1], [2, 3, 4, 6])]
)
def test_prelu_slope_not_per_channel_decomposes(slope_shape: list[int], x_shape: list[int]) -> None:
    slope = np.random.default_rng(2).uniform(0, 0.5, slope_shape).astype(np.float32)
    comparison = check_op("PRelu", {"x": x_shape}, constants={"slope": slope})
    assert comparison.count("PRELU") == 0


@pytest.mark.parametrize("case", ["1d", "2d", "3d"])
def test_prelu_opset6_slope_is_per_channel(case: str) -> None:
    # onnxruntime has no PRelu-6 kernel; the onnx package's PyTorch-exported case carries
    # the reference output computed by PyTorch.
    import os

    import onnx
    from onnx import numpy_helper

    from edgeops.converters.pipeline import convert_model, run_tflite

    folder = os.path.join(
        os.path.dirname(onnx.__file__),
        "backend",
        "test",
        "data",
        "pytorch-converted",
        f"test_PReLU_{case}_multiparam",
    )

    def tensor(name: str) -> np.ndarray:
        proto = onnx.TensorProto()
        with open(os.path.join(folder, "test_data_set_0", name), "rb") as handle:
            proto.ParseFromString(handle.read())
        return numpy_helper.to_array(proto)

    x, want = tensor("input_0.pb"), tensor("output_0.pb")
    model = onnx.load(os.path.join(folder, "model.onnx"))
    assert model.opset_import[0].version < 7
    (got,) = run_tflite(
        convert_model(os.path.join(folder, "model.onnx")).tflite, {model.graph.input[0].name: x}
    )
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
def test_elu(alpha: float) -> None:
    check_op("Elu", {"x": [1, 3, 4, 4]}, attrs={"alpha": alpha})


def test_selu_and_softplus() -> None:
    check_op("Selu", {"x": [2, 3, 5]})
    node = helper.make_node("Softplus", ["x"], ["y"])
    feeds = {"x": np.linspace(-30, 30, 60, dtype=np.float32).reshape(2, 30)}
    check_model(make_model([node], {"x": [2, 30]}, ["y"]), {"x": [2, 30]}, feeds=feeds)


@pytest.mark.parametrize(("shape", "axis"), [([2, 10], -1), ([1, 3, 4, 5], 1)])
def test_log_softmax(shape: list[int], axis: int) -> None:
    comparison = check_op("LogSoftmax", {"x": shape}, attrs={"axis": axis})
    assert comparison.count("LOG_SOFTMAX") == 1


def test_mish() -> None:
    node = helper.make_node("Mish", ["x"], ["y"])
    feeds = {"x": np.linspace(-20, 20, 40, dtype=np.float32).reshape(2, 20)}
    check_model(make_model([node], {"x": [2, 20]}, ["y"], opset=18), {"x": [2, 20]}, feeds=feeds)
