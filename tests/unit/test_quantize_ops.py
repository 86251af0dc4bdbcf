"""Int8 conformance: tiny ONNX graphs converted to full integer, compared with onnxruntime.

Each case calibrates on random samples written to a .npz (the pipeline holds a quarter of
them out) and is then scored on fresh random inputs against onnxruntime float32. The floor
is an SQNR in dB per op family: one int8 rounding of a [-2, 2] input and of the output gives
about 40 dB; ops with a fixed-point output (Softmax, Logistic at 1/256) or a chain of
requantizations lose a few dB each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ai_edge_litert.schema_py_generated as schema
import numpy as np
import pytest
from convert_helpers import make_model, run_onnx
from onnx import helper

from edgeops.converters.ir import Tensor
from edgeops.converters.pipeline import ConversionResult, ConvertOptions, convert_model
from edgeops.converters.report import sqnr_db
from edgeops.converters.validate import TfliteRunner

RNG = np.random.default_rng(7)


def _w(*shape: int, scale: float = 0.5) -> np.ndarray:
    return RNG.normal(0, scale, size=shape).astype(np.float32)


def _int8(
    model: bytes,
    inputs: Mapping[str, Sequence[int]],
    tmp_path: Path,
    *,
    io_dtype: str = "float32",
    samples: int = 64,
    low: float = -2.0,
    high: float = 2.0,
) -> tuple[ConversionResult, list[float]]:
    """Convert ``model`` to int8 and return the result and the SQNR of each output."""
    rng = np.random.default_rng(0)
    arrays = {
        name: rng.uniform(low, high, size=(samples, *shape)).astype(np.float32)
        for name, shape in inputs.items()
    }
    np.savez(tmp_path / "calibration.npz", **arrays)  # type: ignore[arg-type]
    options = ConvertOptions(
        quantize="int8",
        calibration=tmp_path / "calibration.npz",
        io_dtype=io_dtype,  # type: ignore[arg-type]
    )
    result = convert_model(model, options)
    runner = TfliteRunner(result.tflite)
    refs: list[list[np.ndarray]] = []
    outs: list[list[np.ndarray]] = []
    for seed in range(3):
        feed_rng = np.random.default_rng(100 + seed)
        feeds = {
            name: feed_rng.uniform(low, high, size=tuple(shape)).astype(np.float32)
            for name, shape in inputs.items()
        }
        expected = run_onnx(model, feeds)
        refs.append(expected)
        outs.append(runner.run(feeds, [e.shape for e in expected]))
    sqnrs = [
        sqnr_db(np.stack([r[i] for r in refs]), np.stack([o[i] for o in outs]))
        for i in range(len(refs[0]))
    ]
    return result, sqnrs


def _one(
    op_type: str,
    inputs: Mapping[str, Sequence[int]],
    constants: Mapping[str, np.ndarray] | None = None,
    attrs: Mapping[str, Any] | None = None,
    outputs: int = 1,
) -> bytes:
    names = [*inputs, *(constants or {})]
    out = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(op_type, names, out, name=f"{op_type.lower()}_0", **dict(attrs or {}))
    return make_model([node], inputs, out, constants)


def _ops(result: ConversionResult) -> dict[str, int]:
    return result.op_histogram()


def _runs_int8(result: ConversionResult, opcode: str) -> bool:
    """True when every ``opcode`` operator of the result writes int8."""
    assert result.graph is not None
    ops = [op for op in result.graph.operators if op.opcode == opcode]
    return bool(ops) and all(result.graph.tensors[op.outputs[0]].dtype == np.int8 for op in ops)


def _tensor(result: ConversionResult, opcode: str, position: int) -> Tensor:
    assert result.graph is not None
    for op in result.graph.operators:
        if op.opcode == opcode:
            name = op.inputs[position]
            assert name is not None
            return result.graph.tensors[name]
    raise AssertionError(f"no {opcode} in the graph")


# -- weighted ops ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "w_shape"),
    [
        ({"pads": [1, 1, 1, 1]}, (8, 3, 3, 3)),
        ({"strides": [2, 2], "pads": [1, 1, 1, 1]}, (8, 3, 3, 3)),
        ({}, (6, 3, 1, 1)),
        ({"group": 3, "pads": [1, 1, 1, 1]}, (3, 1, 3, 3)),  # depthwise
    ],
)
def test_conv_int8(tmp_path: Path, attrs: dict[str, Any], w_shape: tuple[int, ...]) -> None:
    model = _one("Conv", {"x": [1, 3, 10, 10]}, {"w": _w(*w_shape), "b": _w(w_shape[0])}, attrs)
    result, (sqnr,) = _int8(model, {"x": (1, 3, 10, 10)}, tmp_path)
    assert sqnr >= 30.0
    ops = _ops(result)
    assert ops.get("CONV_2D", 0) + ops.get("DEPTHWISE_CONV_2D", 0) == 1
    # float32 I/O: one QUANTIZE in, one DEQUANTIZE out, nothing float in between.
    assert ops["QUANTIZE"] == 1
    assert ops["DEQUANTIZE"] == 1


def test_conv_weights_and_bias_follow_the_spec(tmp_path: Path) -> None:
    model = _one("Conv", {"x": [1, 3, 8, 8]}, {"w": _w(5, 3, 3, 3), "b": _w(5)}, {})
    result, _ = _int8(model, {"x": (1, 3, 8, 8)}, tmp_path)
    x = _tensor(result, "CONV_2D", 0)
    w = _tensor(result, "CONV_2D", 1)
    b = _tensor(result, "CONV_2D", 2)
    assert w.dtype == np.int8
    assert w.quantization.scales.size == 5
    assert w.quantization.quantized_dimension == 0
    assert not w.quantization.zero_points.any()
    assert np.abs(w.data.astype(int)).max() == 127
    assert w.data.min() >= -127
    assert b.dtype == np.int32
    np.testing.assert_allclose(
        b.quantization.scales,
        x.quantization.scales[0] * w.quantization.scales,
        rtol=1e-6,
    )


def test_depthwise_weights_are_per_channel_on_dimension_3(tmp_path: Path) -> None:
    model = _one("Conv", {"x": [1, 4, 8, 8]}, {"w": _w(4, 1, 3, 3), "b": _w(4)}, {"group": 4})
    result, (sqnr,) = _int8(model, {"x": (1, 4, 8, 8)}, tmp_path)
    assert sqnr >= 30.0
    w = _tensor(result, "DEPTHWISE_CONV_2D", 1)
    assert w.quantization.quantized_dimension == 3
    assert w.quantization.scales.size == 4


def test_gemm_and_matmul_int8(tmp_path: Path) -> None:
    gemm = _one("Gemm", {"x": [2, 16]}, {"w": _w(8, 16), "b": _w(8)}, {"transB": 1})
    result, (sqnr,) = _int8(gemm, {"x": (2, 16)}, tmp_path)
    assert sqnr >= 30.0
    assert _ops(result)["FULLY_CONNECTED"] == 1
    matmul = _one("MatMul", {"x": [1, 16]}, {"w": _w(16, 6)})
    _, (sqnr,) = _int8(matmul, {"x": (1, 16)}, tmp_path)
    assert sqnr >= 30.0


def test_conv_transpose_int8(tmp_path: Path) -> None:
    model = _one(
        "ConvTranspose",
        {"x": [1, 4, 5, 5]},
        {"w": _w(4, 3, 3, 3), "b": _w(3)},
        {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]},
    )
    result, (sqnr,) = _int8(model, {"x": (1, 4, 5, 5)}, tmp_path)
    assert sqnr >= 30.0
    assert _ops(result)["TRANSPOSE_CONV"] == 1


def test_conv_chain_keeps_25_db(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Sigmoid", ["c2"], ["s2"]),
        helper.make_node("Mul", ["c2", "s2"], ["silu"]),
        helper.make_node("Conv", ["silu", "w3", "b3"], ["y"]),
    ]
    consts = {
        "w1": _w(8, 3, 3, 3),
        "b1": _w(8),
        "w2": _w(8, 8, 3, 3, scale=0.3),
        "b2": _w(8),
        "w3": _w(4, 8, 1, 1),
        "b3": _w(4),
    }
    model = make_model(nodes, {"x": [1, 3, 12, 12]}, ["y"], consts)
    result, (sqnr,) = _int8(model, {"x": (1, 3, 12, 12)}, tmp_path)
    assert sqnr >= 25.0
    assert _ops(result)["DEQUANTIZE"] == 1  # everything between runs in int8


# -- fixed-output and free-output ops ----------------------------------------------------


@pytest.mark.parametrize(
    ("op_type", "fixed", "floor"),
    [
        ("Sigmoid", (1 / 256, -128), 30.0),
        ("Tanh", (1 / 128, 0), 30.0),
        ("Softmax", (1 / 256, -128), 25.0),
    ],
)
def test_fixed_output_params(
    tmp_path: Path, op_type: str, fixed: tuple[float, int], floor: float
) -> None:
    # A conv in front keeps the op inside the int8 part of the graph (not the float tail).
    axis: dict[str, Any] = {"axis": 1} if op_type == "Softmax" else {}
    nodes = [
        helper.make_node(op_type, ["x"], ["a"], **axis),
        helper.make_node("Conv", ["a", "w", "b"], ["y"]),
    ]
    model = make_model(nodes, {"x": [1, 4, 6, 6]}, ["y"], {"w": _w(4, 4, 1, 1), "b": _w(4)})
    result, (sqnr,) = _int8(model, {"x": (1, 4, 6, 6)}, tmp_path)
    assert sqnr >= floor
    assert result.graph is not None
    opcode = {"Sigmoid": "LOGISTIC", "Tanh": "TANH", "Softmax": "SOFTMAX"}[op_type]
    (op,) = [o for o in result.graph.operators if o.opcode == opcode]
    params = result.graph.tensors[op.outputs[0]].quantization
    assert params is not None
    assert float(params.scales[0]) == pytest.approx(fixed[0])
    assert int(params.zero_points[0]) == fixed[1]


@pytest.mark.parametrize(
    ("op_type", "attrs"),
    [
        ("Add", {}),
        ("Sub", {}),
        ("Mul", {}),
        ("Max", {}),
        ("Min", {}),
    ],
)
def test_binary_int8(tmp_path: Path, op_type: str, attrs: dict[str, Any]) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"]),
        helper.make_node(op_type, ["c", "z"], ["e"], **attrs),
        helper.make_node("Conv", ["e", "w2", "b2"], ["y"]),
    ]
    consts = {"w": _w(4, 4, 1, 1), "b": _w(4), "w2": _w(4, 4, 1, 1), "b2": _w(4)}
    model = make_model(nodes, {"x": [1, 4, 6, 6], "z": [1, 4, 6, 6]}, ["y"], consts)
    result, (sqnr,) = _int8(model, {"x": (1, 4, 6, 6), "z": (1, 4, 6, 6)}, tmp_path)
    assert sqnr >= 28.0
    opcode = {"Add": "ADD", "Sub": "SUB", "Mul": "MUL", "Max": "MAXIMUM", "Min": "MINIMUM"}
    assert _runs_int8(result, opcode[op_type])


@pytest.mark.parametrize(
    ("op_type", "attrs", "extra"),
    [
        ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2]}, {}),
        ("AveragePool", {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, {}),
        ("Relu", {}, {}),
        ("LeakyRelu", {"alpha": 0.1}, {}),
        ("HardSwish", {}, {}),
        ("Clip", {}, {"lo": np.array(-1.0, np.float32), "hi": np.array(1.0, np.float32)}),
        (
            "Resize",
            {"mode": "nearest"},
            {"roi": np.zeros(0, np.float32), "scales": np.array([1, 1, 2, 2], np.float32)},
        ),
        ("Pad", {}, {"pads": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}),
    ],
)
def test_single_input_ops_int8(
    tmp_path: Path, op_type: str, attrs: dict[str, Any], extra: dict[str, Any]
) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"]),
        helper.make_node(op_type, ["c", *extra], ["e"], **attrs),
        helper.make_node("Conv", ["e", "w2", "b2"], ["y"]),
    ]
    consts = {"w": _w(4, 4, 1, 1), "b": _w(4), "w2": _w(4, 4, 1, 1), "b2": _w(4), **extra}
    model = make_model(nodes, {"x": [1, 4, 6, 6]}, ["y"], consts)
    result, (sqnr,) = _int8(model, {"x": (1, 4, 6, 6)}, tmp_path)
    assert sqnr >= 28.0
    # Only the layout TRANSPOSE back to NCHW after the last conv runs in float (the tail).
    assert set(result.quantize_result.float_ops) <= {"TRANSPOSE"}


def test_same_scale_ops_share_their_input_params(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"]),
        helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p", "w2", "b2"], ["y"]),
    ]
    consts = {"w": _w(4, 4, 1, 1), "b": _w(4), "w2": _w(4, 4, 1, 1), "b2": _w(4)}
    model = make_model(nodes, {"x": [1, 4, 6, 6]}, ["y"], consts)
    result, _ = _int8(model, {"x": (1, 4, 6, 6)}, tmp_path)
    assert result.graph is not None
    (pool,) = [o for o in result.graph.operators if o.opcode == "MAX_POOL_2D"]
    source = result.graph.tensors[pool.inputs[0]].quantization
    target = result.graph.tensors[pool.outputs[0]].quantization
    assert source is not None
    assert target is not None
    assert float(source.scales[0]) == float(target.scales[0])
    assert int(source.zero_points[0]) == int(target.zero_points[0])


# -- concatenation and the mixed-range trap ---------------------------------------------


def test_concat_of_similar_ranges_stays_int8(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["a"]),
        helper.make_node("Conv", ["x", "w2", "b2"], ["c"]),
        helper.make_node("Concat", ["a", "c"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3", "b3"], ["y"]),
    ]
    consts = {
        "w1": _w(4, 3, 1, 1),
        "b1": _w(4),
        "w2": _w(2, 3, 1, 1),
        "b2": _w(2),
        "w3": _w(3, 6, 1, 1),
        "b3": _w(3),
    }
    model = make_model(nodes, {"x": [1, 3, 6, 6]}, ["y"], consts)
    result, (sqnr,) = _int8(model, {"x": (1, 3, 6, 6)}, tmp_path)
    assert sqnr >= 28.0
    assert _runs_int8(result, "CONCATENATION")
    # Both producers are convolutions: they take the concat's scale, no requantize op.
    assert result.quantize_result.requantized_inputs == 0


def test_mixed_range_output_concat_is_done_in_float(tmp_path: Path) -> None:
    # YOLOv8's trap in miniature: boxes in 0..320 beside sigmoid scores in 0..1.
    nodes = [
        helper.make_node("Conv", ["x", "wb", "bb"], ["box_raw"]),
        helper.make_node("Mul", ["box_raw", "k"], ["box"]),
        helper.make_node("Conv", ["x", "ws", "bs"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
        helper.make_node("Concat", ["box", "scores"], ["y"], axis=1),
    ]
    consts = {
        "wb": _w(4, 3, 1, 1),
        "bb": _w(4),
        "k": np.array(80.0, np.float32),
        "ws": _w(6, 3, 1, 1),
        "bs": _w(6),
    }
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], consts)
    result, _ = _int8(model, {"x": (1, 3, 8, 8)}, tmp_path)
    assert result.quantize_result.float_ops.get("CONCATENATION") == 1
    # Compare the score channels alone: they must keep their own resolution.
    rng = np.random.default_rng(5)
    feeds = {"x": rng.uniform(-2, 2, (1, 3, 8, 8)).astype(np.float32)}
    (expected,) = run_onnx(model, feeds)
    (actual,) = TfliteRunner(result.tflite).run(feeds, [expected.shape])
    assert sqnr_db(expected[:, 4:], actual[:, 4:]) >= 30.0
    assert sqnr_db(expected[:, :4], actual[:, :4]) >= 28.0


def test_int8_io_makes_model_inputs_and_outputs_int8(tmp_path: Path) -> None:
    model = _one("Conv", {"x": [1, 3, 8, 8]}, {"w": _w(4, 3, 3, 3), "b": _w(4)}, {})
    result, (sqnr,) = _int8(model, {"x": (1, 3, 8, 8)}, tmp_path, io_dtype="int8")
    assert sqnr >= 30.0
    runner = TfliteRunner(result.tflite)
    assert runner.inputs[0]["dtype"] == np.int8
    assert runner.outputs[0]["dtype"] == np.int8
    assert "QUANTIZE" not in _ops(result)
    assert "DEQUANTIZE" not in _ops(result)


def test_dynamic_mode_stores_int8_weights_and_float_activations(tmp_path: Path) -> None:
    model = _one("Conv", {"x": [1, 16, 8, 8]}, {"w": _w(32, 16, 3, 3), "b": _w(32)}, {})
    options = ConvertOptions(quantize="dynamic")
    result = convert_model(model, options)
    float_result = convert_model(model, ConvertOptions())
    assert len(result.tflite) < 0.4 * len(float_result.tflite)
    w = _tensor(result, "CONV_2D", 1)
    assert w.dtype == np.int8
    x = _tensor(result, "CONV_2D", 0)
    assert x.dtype == np.float32
    rng = np.random.default_rng(3)
    feeds = {"x": rng.uniform(-2, 2, (1, 16, 8, 8)).astype(np.float32)}
    (expected,) = run_onnx(model, feeds)
    (actual,) = TfliteRunner(result.tflite).run(feeds, [expected.shape])
    assert sqnr_db(expected, actual) >= 30.0


def _dynamic_sqnr(model: bytes, inputs: Mapping[str, Sequence[int]]) -> ConversionResult:
    """Convert ``model`` in dynamic mode and assert ≥ 30 dB against onnxruntime on 3 inputs."""
    result = convert_model(model, ConvertOptions(quantize="dynamic"))
    runner = TfliteRunner(result.tflite)
    refs: list[np.ndarray] = []
    outs: list[np.ndarray] = []
    for seed in range(3):
        rng = np.random.default_rng(200 + seed)
        feeds = {
            name: rng.uniform(-2, 2, tuple(shape)).astype(np.float32)
            for name, shape in inputs.items()
        }
        (expected,) = run_onnx(model, feeds)
        refs.append(expected)
        outs.append(runner.run(feeds, [expected.shape])[0])
    sqnr = sqnr_db(np.stack(refs), np.stack(outs))
    assert sqnr >= 30.0, f"dynamic SQNR {sqnr:.1f} dB < 30 dB"
    return result


@pytest.mark.parametrize(
    ("nodes", "inputs", "constants"),
    [
        (  # Gemm with transB, alpha and beta folded into the weights
            [helper.make_node("Gemm", ["x", "w", "b"], ["y0"], transB=1, alpha=0.5, beta=2.0)],
            {"x": [2, 64]},
            {"w": _w(32, 64), "b": _w(32)},
        ),
        (  # MatMul on a 3-D input: FULLY_CONNECTED with keepNumDims
            [helper.make_node("MatMul", ["x", "w"], ["y0"])],
            {"x": [1, 5, 64]},
            {"w": _w(64, 48)},
        ),
        (  # a small MLP: Gemm, Relu, Gemm
            [
                helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
                helper.make_node("Relu", ["h"], ["r"]),
                helper.make_node("Gemm", ["r", "w2", "b2"], ["y0"], transB=1),
            ],
            {"x": [1, 64]},
            {"w": _w(48, 64), "b": _w(48), "w2": _w(40, 48), "b2": _w(40)},
        ),
    ],
)
def test_dynamic_fully_connected_has_per_tensor_weights(
    nodes: list[Any], inputs: dict[str, list[int]], constants: dict[str, np.ndarray]
) -> None:
    # Per-channel hybrid FULLY_CONNECTED needs version 12, which tflite-runtime 2.14 lacks
    # (its kernel reads one scale): dynamic mode gives FC weights one symmetric scale.
    # Weights of very different magnitude per output channel make a per-tensor scale work.
    constants = {
        name: (value * np.logspace(-1, 1, value.shape[-1], dtype=np.float32)).astype(np.float32)
        if value.ndim == 2
        else value
        for name, value in constants.items()
    }
    model = make_model(nodes, inputs, ["y0"], constants)
    result = _dynamic_sqnr(model, inputs)
    assert result.graph is not None
    fcs = [op for op in result.graph.operators if op.opcode == "FULLY_CONNECTED"]
    assert fcs
    for op in fcs:
        x, w = (result.graph.tensors[n] for n in op.inputs[:2] if n is not None)
        assert x.dtype == np.float32
        assert w.dtype == np.int8
        assert w.quantization is not None
        assert w.quantization.scales.size == 1
        assert w.quantization.zero_points.tolist() == [0]
        assert int(np.abs(w.data.astype(np.int32)).max()) == 127
    # LiteRT reads the versions the writer chose; 2.14's limit for FULLY_CONNECTED is 10.
    versions = [
        code.version
        for code in schema.ModelT.InitFromPackedBuf(result.tflite, 0).operatorCodes
        if code.builtinCode == schema.BuiltinOperator.FULLY_CONNECTED
    ]
    assert versions
    assert max(versions) <= 10


def test_dynamic_convolutions_keep_per_channel_weights() -> None:
    model = make_model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["c", "dw", "db"], ["y0"], pads=[1, 1, 1, 1], group=32),
        ],
        {"x": [1, 16, 8, 8]},
        ["y0"],
        {"w": _w(32, 16, 3, 3), "b": _w(32), "dw": _w(32, 1, 6, 6), "db": _w(32)},
    )
    result = _dynamic_sqnr(model, {"x": [1, 16, 8, 8]})
    conv = _tensor(result, "CONV_2D", 1)
    depthwise = _tensor(result, "DEPTHWISE_CONV_2D", 1)
    assert conv.quantization is not None
    assert depthwise.quantization is not None
    assert (conv.quantization.scales.size, conv.quantization.quantized_dimension) == (32, 0)
    assert (depthwise.quantization.scales.size, depthwise.quantization.quantized_dimension) == (
        32,
        3,
    )


def test_dynamic_conv_transpose_keeps_float_weights() -> None:
    # tflite-runtime 2.14 has no hybrid TRANSPOSE_CONV: it refuses int8 weights with a float
    # input ("weights->type != input->type").
    model = _one("ConvTranspose", {"x": [1, 16, 6, 6]}, {"w": _w(16, 32, 3, 3), "b": _w(32)}, {})
    result = convert_model(model, ConvertOptions(quantize="dynamic"))
    assert _tensor(result, "TRANSPOSE_CONV", 1).dtype == np.float32


def _strided_convs(widths: Sequence[int]) -> bytes:
    """Stride-2 3x3 convs with ReLU on a 1x3x64x64 image, one per output width."""
    nodes = []
    constants: dict[str, np.ndarray] = {}
    source, channels = "x", 3
    for i, out in enumerate(widths):
        constants[f"w{i}"] = _w(out, channels, 3, 3, scale=0.3)
        constants[f"b{i}"] = _w(out, scale=0.1)
        nodes += [
            helper.make_node(
                "Conv", [source, f"w{i}", f"b{i}"], [f"c{i}"], strides=[2, 2], pads=[1, 1, 1, 1]
            ),
            helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        source, channels = f"r{i}", out
    nodes.append(helper.make_node("GlobalAveragePool", [source], ["y0"]))
    return make_model(nodes, {"x": [1, 3, 64, 64]}, ["y0"], constants)


def _conv_domains(result: ConversionResult) -> list[str]:
    """``float16`` or ``int8`` for each CONV_2D's filter, in graph order."""
    assert result.graph is not None
    kinds = []
    for op in result.graph.operators:
        if op.opcode == "CONV_2D":
            name = op.inputs[1]
            assert name is not None
            producer = result.graph.producer(name)
            if result.graph.tensors[name].dtype == np.int8:
                kinds.append("int8")
            else:
                assert producer is not None
                assert producer.opcode == "DEQUANTIZE"
                assert result.graph.tensors[producer.inputs[0]].dtype == np.float16
                kinds.append("float16")
    return kinds


#: Strides 2..32, the two stride <= 4 convs doing 7 % of the multiply-accumulates.
LIGHT_STEM = (4, 4, 64, 128, 128)


def test_float_stem_of_a_deep_image_model(tmp_path: Path) -> None:
    # The model reaches stride 16 and its stem is light, so the two convs at stride <= 4
    # stay float, with float16 filters; the deeper ones are int8.
    model = _strided_convs(LIGHT_STEM)
    result, (sqnr,) = _int8(model, {"x": (1, 3, 64, 64)}, tmp_path, low=0.0, high=1.0)
    assert sqnr >= 30.0
    assert _conv_domains(result) == ["float16", "float16", "int8", "int8", "int8"]
    assert result.quantize_result.float_ops["CONV_2D"] == 2


def test_no_float_stem_in_a_shallow_model_or_when_asked(tmp_path: Path) -> None:
    # Strides 2, 4, 8 only: "high resolution" is most of the model, so nothing stays float.
    shallow = _strided_convs(LIGHT_STEM[:3])
    result, _ = _int8(shallow, {"x": (1, 3, 64, 64)}, tmp_path, low=0.0, high=1.0)
    assert _conv_domains(result) == ["int8"] * 3
    # Deep, but the stride <= 4 convs do most of the work: a float stem would cost the speed.
    heavy = _strided_convs((32, 32, 8, 8))
    result, _ = _int8(heavy, {"x": (1, 3, 64, 64)}, tmp_path, low=0.0, high=1.0)
    assert _conv_domains(result) == ["int8"] * 4
    # int8 model I/O asks for an integer model: no float stem either.
    light = _strided_convs(LIGHT_STEM)
    result, (sqnr,) = _int8(
        light, {"x": (1, 3, 64, 64)}, tmp_path, low=0.0, high=1.0, io_dtype="int8"
    )
    assert sqnr >= 25.0
    assert _conv_domains(result) == ["int8"] * 5


def test_float_stem_off_by_option() -> None:
    from edgeops.converters.quantize import QuantizeOptions, quantize_graph
    from edgeops.converters.writer import serialize

    float_result = convert_model(_strided_convs(LIGHT_STEM), ConvertOptions())
    assert float_result.graph is not None
    rng = np.random.default_rng(1)
    samples = [{"x": rng.uniform(0, 1, (1, 3, 64, 64)).astype(np.float32)} for _ in range(8)]
    graph = quantize_graph(
        float_result.graph,
        "int8",
        samples,
        options=QuantizeOptions(float_stem=False),
        progress=False,
    )
    convs = [op for op in graph.operators if op.opcode == "CONV_2D"]
    assert [graph.tensors[op.inputs[1]].dtype for op in convs] == [np.dtype(np.int8)] * 5
    TfliteRunner(serialize(graph))  # loads
