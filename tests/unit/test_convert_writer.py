"""The TFLite writer, operator versions, float16 mode, .tflite pass-through, refusals."""

from __future__ import annotations

import math
from pathlib import Path

import ai_edge_litert.schema_py_generated as schema
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter
from convert_helpers import check_model, convert_and_compare, make_model, random_feeds
from onnx import helper

from edgeops.converters.ir import Graph, Operator, QuantParams
from edgeops.converters.op_versions import MAX_VERSIONS_TFLITE_2_14, operator_version
from edgeops.converters.pipeline import ConvertOptions, convert, convert_model
from edgeops.converters.tflite_read import inspect_tflite
from edgeops.converters.writer import DATA_ALIGNMENT, serialize
from edgeops.errors import ConfigError, ConversionError, ModelError, UnsupportedOpError

RNG = np.random.default_rng(13)


def _gelu_graph() -> Graph:
    graph = Graph()
    x = graph.add_tensor("x", (2, 5), np.float32)
    y = graph.add_tensor("y", (2, 5), np.float32)
    graph.operators.append(Operator("GELU", [x], [y], {"approximate": False}))
    graph.inputs, graph.outputs = [x], [y]
    return graph


def test_opcode_above_126_uses_the_placeholder_and_runs() -> None:
    data = serialize(_gelu_graph())
    model = schema.ModelT.InitFromPackedBuf(data, 0)
    (code,) = model.operatorCodes
    assert code.builtinCode == schema.BuiltinOperator.GELU
    assert code.builtinCode >= 127
    assert code.deprecatedBuiltinCode == schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES
    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    x = RNG.normal(size=(2, 5)).astype(np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    want = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_small_opcodes_store_the_same_code_twice_and_buffer_zero_is_empty() -> None:
    w = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
    model = make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"])], {"x": [1, 3, 5, 5]}, ["y"], {"w": w}
    )
    data = convert_model(model).tflite
    parsed = schema.ModelT.InitFromPackedBuf(data, 0)
    for code in parsed.operatorCodes:
        assert code.deprecatedBuiltinCode == code.builtinCode
    assert parsed.buffers[0].data is None
    # Constant data starts on an aligned offset inside the file.
    raw = w.transpose(0, 2, 3, 1).tobytes()
    offset = data.find(raw)
    assert offset > 0
    assert offset % DATA_ALIGNMENT == 0


def test_versions_follow_types_and_options() -> None:
    graph = Graph()
    x = graph.add_tensor("x", (1, 4, 4, 3), np.int8)
    w = graph.add_constant(
        "w",
        np.ones((2, 1, 1, 3), np.int8),
        quantization=QuantParams(np.asarray([0.1, 0.2], np.float32), np.zeros(2, np.int64), 0),
    )
    y = graph.add_tensor("y", (1, 4, 4, 2), np.int8)
    conv = Operator("CONV_2D", [x, w, None], [y], {"padding": "VALID"})
    assert operator_version(graph, conv) == 3
    f = graph.add_tensor("f", (1, 4, 4, 3), np.float32)
    hybrid = Operator("CONV_2D", [f, w, None], [y])
    assert operator_version(graph, hybrid) == 5
    fc_in = graph.add_tensor("fc_in", (2, 3, 4), np.float32)
    fc_w = graph.add_constant("fc_w", np.ones((5, 4), np.float32))
    fc_b = graph.add_constant("fc_b", np.ones(5, np.float32))
    fc_out = graph.add_tensor("fc_out", (2, 3, 5), np.float32)
    fc = Operator("FULLY_CONNECTED", [fc_in, fc_w, fc_b], [fc_out], {"keepNumDims": True})
    assert operator_version(graph, fc) == 5
    assert all(v >= 1 for v in MAX_VERSIONS_TFLITE_2_14.values())


def test_version_above_tflite_runtime_2_14_is_refused() -> None:
    graph = _gelu_graph()
    graph.operators[0].version = 3
    with pytest.raises(ConversionError, match=r"tflite-runtime 2\.14"):
        serialize(graph)


def test_float16_stores_half_weights_behind_dequantize() -> None:
    w = RNG.normal(size=(16, 8, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    model = make_model(nodes, {"x": [1, 8, 10, 10]}, ["y"], {"w": w})
    feeds = random_feeds({"x": [1, 8, 10, 10]})
    float32 = convert_model(model).tflite
    comparison = convert_and_compare(model, feeds, quantize="float16")
    assert comparison.count("DEQUANTIZE") == 1
    assert len(comparison.result.tflite) < len(float32) - w.nbytes // 2 + 1024
    assert max(comparison.errors()) < 2e-3  # float16 weights: ~3 decimal digits
    codes = schema.ModelT.InitFromPackedBuf(comparison.result.tflite, 0).operatorCodes
    dequantize = next(c for c in codes if c.builtinCode == schema.BuiltinOperator.DEQUANTIZE)
    assert dequantize.version == 3


def test_unsupported_op_names_op_and_node_and_leaves_no_file(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Einsum", ["r", "r"], ["y"], name="the_einsum", equation="ij,ij->ij"),
    ]
    source = tmp_path / "m.onnx"
    source.write_bytes(make_model(nodes, {"x": [2, 3]}, ["y"]))
    target = tmp_path / "out.tflite"
    with pytest.raises(UnsupportedOpError, match=r"Einsum at node 'the_einsum'"):
        convert(source, target)
    assert list(tmp_path.iterdir()) == [source]


def test_unsupported_attribute_is_refused() -> None:
    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], kernel_shape=[2, 2], name="mp")
    model = make_model([node], {"x": [1, 1, 4, 4]}, ["y", "idx"])
    with pytest.raises(UnsupportedOpError, match="Indices"):
        convert_model(model)


def test_tflite_input_is_inspected_and_passed_through(tmp_path: Path) -> None:
    w = RNG.normal(size=(3, 5)).astype(np.float32)
    model = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": [2, 3]}, ["y"], {"w": w}
    )
    first = tmp_path / "first.tflite"
    first.write_bytes(convert_model(model).tflite)
    out = tmp_path / "copy.tflite"
    result = convert(first, out)
    assert result.source_format == "tflite"
    assert out.read_bytes() == first.read_bytes()
    summary = inspect_tflite(out.read_bytes())
    assert summary.ops == {"FULLY_CONNECTED": 1}
    assert summary.inputs[0].shape == (2, 3)
    with pytest.raises(ConfigError, match="passed through"):
        convert_model(first, ConvertOptions(quantize="float16"))


def test_broken_tflite_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"malformed|no subgraph|cannot run"):
        convert_model(b"\x1c\x00\x00\x00TFL3" + b"\x00" * 40)


def test_converted_model_keeps_input_and_output_names() -> None:
    nodes = [helper.make_node("Sigmoid", ["in.0"], ["out:0"])]
    comparison = check_model(make_model(nodes, {"in.0": [3, 4]}, ["out:0"]), {"in.0": [3, 4]})
    summary = comparison.result.summary()
    assert [t["name"] for t in summary["inputs"]] == ["in.0"]
    assert [t["name"] for t in summary["outputs"]] == ["out:0"]


def test_hybrid_per_channel_fully_connected_is_refused_for_tflite_runtime_2_14() -> None:
    graph = Graph()
    x = graph.add_tensor("x", (2, 4), np.float32)
    w = graph.add_constant(
        "w",
        np.ones((3, 4), np.int8),
        quantization=QuantParams(np.asarray([0.1, 0.2, 0.3], np.float32), np.zeros(3, np.int64), 0),
    )
    b = graph.add_constant("b", np.zeros(3, np.float32))
    y = graph.add_tensor("y", (2, 3), np.float32)
    fc = Operator("FULLY_CONNECTED", [x, w, b], [y])
    with pytest.raises(ConversionError, match=r"version 12 .* 2\.14 reads at most 10"):
        operator_version(graph, fc)
    graph.tensors["w"].quantization = QuantParams(
        np.asarray([0.1], np.float32), np.zeros(1, np.int64), 0
    )
    assert operator_version(graph, fc) == 3


def test_op_of_another_domain_is_named() -> None:
    node = helper.make_node("FusedGemm", ["x", "x"], ["y"], domain="com.microsoft", name="fg")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", 1, [2, 2])],
        [helper.make_tensor_value_info("y", 1, None)],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    with pytest.raises(UnsupportedOpError, match=r"FusedGemm at node 'fg'.*com\.microsoft"):
        convert_model(model.SerializeToString())


def test_calibration_samples_in_memory_are_held_out_in_float_modes() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [2, 3]}, ["y"])
    samples = [random_feeds({"x": [2, 3]}, seed=i) for i in range(3)]
    result = convert_model(model, ConvertOptions(calibration_samples=samples))
    assert len(result.holdout) == 3
    assert result.calibration_count == 0


def test_litert_registers_every_version_up_to_the_tflite_runtime_2_14_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The limits were measured in tflite-runtime 2.14; LiteRT must read each of them too.
    # An unregistered version fails when the interpreter is built, before any tensor
    # is looked at, so a one-operator model with placeholder tensors is enough.
    from edgeops.converters import writer

    monkeypatch.setattr(writer, "operator_version", lambda graph, op: op.version)
    refused = []
    for opcode, version in MAX_VERSIONS_TFLITE_2_14.items():
        graph = Graph()
        x = graph.add_tensor("x", (1,), np.float32)
        y = graph.add_tensor("y", (1,), np.float32)
        graph.operators.append(Operator(opcode, [x], [y], version=version))
        graph.inputs, graph.outputs = [x], [y]
        try:
            Interpreter(model_content=writer.serialize(graph))
        except (RuntimeError, ValueError) as exc:
            if "Didn't find op" in str(exc):
                refused.append((opcode, version))
    assert refused == []
