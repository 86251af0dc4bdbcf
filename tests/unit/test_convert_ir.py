"""The TFLite-level IR: building, ordering, pruning and validating graphs; model loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from convert_helpers import check_model, make_model, random_feeds, run_onnx
from onnx import helper

from edgeops.converters.ir import Graph, Operator, QuantParams, Tensor
from edgeops.converters.pipeline import convert_model, run_tflite
from edgeops.errors import ConversionError, ModelError


def _chain() -> Graph:
    graph = Graph()
    x = graph.add_tensor("x", (2, 3), np.float32)
    a = graph.add_tensor("a", (2, 3), np.float32)
    b = graph.add_tensor("b", (2, 3), np.float32)
    unused = graph.add_tensor("unused", (2, 3), np.float32)
    graph.operators = [
        Operator("TANH", [a], [b]),
        Operator("RELU", [x], [a]),
        Operator("LOGISTIC", [x], [unused]),
    ]
    graph.inputs, graph.outputs = [x], [b]
    return graph


def test_toposort_validate_and_remove_unused() -> None:
    graph = _chain()
    with pytest.raises(ConversionError, match="before any operator writes it"):
        graph.validate()
    graph.toposort()
    graph.validate()
    order = [op.opcode for op in graph.operators]
    assert order.index("RELU") < order.index("TANH")
    graph.remove_unused()
    assert [op.opcode for op in graph.operators] == ["RELU", "TANH"]
    assert "unused" not in graph.tensors
    assert graph.producer("b") is graph.operators[1]
    assert graph.consumers("x") == [graph.operators[0]]


def test_names_constants_and_checks() -> None:
    graph = Graph()
    first = graph.add_constant("w", np.ones((2, 2), np.float32))
    second = graph.add_constant(
        "w",
        np.zeros(3, np.int8),
        quantization=QuantParams(np.asarray([0.5], np.float32), np.zeros(1, np.int64)),
    )
    assert (first, second) == ("w", "w_1")
    assert graph.constant("w_1") is not None
    with pytest.raises(ConversionError, match="expected data of shape"):
        Tensor("bad", (2,), np.dtype(np.float32), np.zeros(3, np.float32))
    with pytest.raises(ConversionError, match="1-D scales"):
        QuantParams(np.ones(2, np.float32), np.zeros(3, np.int64))


def test_cycle_is_refused() -> None:
    graph = Graph()
    a = graph.add_tensor("a", (1,), np.float32)
    b = graph.add_tensor("b", (1,), np.float32)
    graph.operators = [Operator("RELU", [a], [b]), Operator("RELU", [b], [a])]
    with pytest.raises(ConversionError, match="cycle"):
        graph.toposort()


def test_external_data_weights_are_loaded(tmp_path: Path) -> None:
    w = np.random.default_rng(0).normal(size=(64, 32)).astype(np.float32)
    model = onnx.load_model_from_string(
        make_model([helper.make_node("MatMul", ["x", "w"], ["y"])], {"x": [2, 64]}, ["y"], {"w": w})
    )
    path = tmp_path / "model.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    assert (tmp_path / "weights.bin").is_file()
    feeds = random_feeds({"x": [2, 64]})
    (got,) = run_tflite(convert_model(path).tflite, feeds)
    np.testing.assert_allclose(got, feeds["x"] @ w, rtol=1e-4, atol=1e-4)


def test_unreadable_models_are_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="cannot read"):
        convert_model(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01not a protobuf")
    with pytest.raises(ModelError, match=r"not a valid ONNX model|no nodes"):
        convert_model(junk)


def test_multiple_inputs_and_outputs_keep_their_order() -> None:
    nodes = [
        helper.make_node("Add", ["b", "a"], ["sum"]),
        helper.make_node("Relu", ["a"], ["relu"]),
    ]
    inputs = {"a": [2, 3], "b": [2, 3]}
    model = make_model(nodes, inputs, ["relu", "sum"])
    comparison = check_model(model, inputs)
    summary = comparison.result.summary()
    assert [t["name"] for t in summary["inputs"]] == ["a", "b"]
    assert [t["name"] for t in summary["outputs"]] == ["relu", "sum"]
    assert len(run_onnx(model, random_feeds(inputs))) == 2
