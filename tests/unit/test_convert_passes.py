"""Import passes, each on its own: input shapes, shape inference, folding, BN folding, cleanup."""

from __future__ import annotations

import numpy as np
import pytest
from convert_helpers import check_model, make_model
from onnx import helper

from edgeops.converters.onnx_import import load_onnx
from edgeops.converters.passes import (
    fix_input_shapes,
    fold_batchnorm,
    fold_constants,
    import_passes,
    infer_shapes,
    remove_dead_nodes,
    remove_identities,
)
from edgeops.errors import ConversionError

RNG = np.random.default_rng(7)


def _shape_subgraph_model() -> bytes:
    """x -> Reshape(x, [N, -1]) where the target comes from Shape/Gather/Unsqueeze/Concat."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
    ]
    consts = {
        "zero": np.asarray(0, np.int64),
        "axes0": np.asarray([0], np.int64),
        "minus1": np.asarray([-1], np.int64),
    }
    return make_model(nodes, {"x": ["batch", 3, 4, 4]}, ["y"], consts)


def test_fix_input_shapes_requires_dynamic_dims() -> None:
    graph = load_onnx(_shape_subgraph_model())
    with pytest.raises(ConversionError, match=r"--input-shape x=N,3,4,4"):
        fix_input_shapes(graph, {})
    fixed = fix_input_shapes(graph, {"x": (2, 3, 4, 4)})
    assert fixed.shapes["x"] == (2, 3, 4, 4)


def test_fix_input_shapes_rejects_contradictions_and_unknown_names() -> None:
    graph = load_onnx(_shape_subgraph_model())
    with pytest.raises(ConversionError, match="fixes shape"):
        fix_input_shapes(graph, {"x": (2, 5, 4, 4)})
    with pytest.raises(ConversionError, match="names nope"):
        fix_input_shapes(graph, {"nope": (1,)})


def test_shape_subgraph_folds_to_a_constant() -> None:
    graph = infer_shapes(fix_input_shapes(load_onnx(_shape_subgraph_model()), {"x": (2, 3, 4, 4)}))
    folded = fold_constants(graph)
    assert [n.op_type for n in folded.nodes] == ["Reshape"]
    np.testing.assert_array_equal(folded.constants["target"], [2, -1])
    assert folded.static_shape("y") == (2, 48)


def test_range_constant_of_shape_expand_cast_fold() -> None:
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "i2", "i3"], ["w"]),
        helper.make_node("Squeeze", ["w"], ["ws"]),
        helper.make_node("Range", ["zero", "ws", "one"], ["r"]),
        helper.make_node("Cast", ["r"], ["rf"], to=1),
        helper.make_node(
            "ConstantOfShape", ["w"], ["ones"], value=helper.make_tensor("v", 1, [1], [1.0])
        ),
        helper.make_node("Mul", ["rf", "ones"], ["grid"]),
        helper.make_node("Expand", ["grid", "s"], ["g4"]),
        helper.make_node("Add", ["x", "g4"], ["y"]),
    ]
    consts = {
        "i2": np.asarray([3], np.int64),
        "i3": np.asarray([4], np.int64),
        "zero": np.asarray(0, np.int64),
        "one": np.asarray(1, np.int64),
    }
    model = make_model(nodes, {"x": [1, 2, 3, 5]}, ["y"], consts)
    graph = import_passes(load_onnx(model))
    assert [n.op_type for n in graph.nodes] == ["Add"]
    comparison = check_model(model, {"x": [1, 2, 3, 5]})
    assert comparison.count("ADD") == 1


def test_batchnorm_folds_into_conv() -> None:
    w = RNG.normal(size=(4, 3, 3, 3)).astype(np.float32)
    stats = {
        "gamma": RNG.uniform(0.5, 1.5, 4).astype(np.float32),
        "beta": RNG.normal(size=4).astype(np.float32),
        "mean": RNG.normal(size=4).astype(np.float32),
        "var": RNG.uniform(0.5, 2, 4).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"]),
    ]
    model = make_model(nodes, {"x": [1, 3, 6, 6]}, ["y"], {"w": w, **stats})
    folded = fold_batchnorm(infer_shapes(load_onnx(model)))
    assert [n.op_type for n in folded.nodes] == ["Conv"]
    assert folded.nodes[0].outputs == ["y"]
    comparison = check_model(model, {"x": [1, 3, 6, 6]})
    assert comparison.result.op_histogram() == {"CONV_2D": 1, "TRANSPOSE": 1}


def test_identities_and_dead_nodes_are_removed() -> None:
    nodes = [
        helper.make_node("Identity", ["x"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Dropout", ["b"], ["c"]),
        helper.make_node("Sigmoid", ["x"], ["unused"]),
        helper.make_node("Identity", ["c"], ["y"]),
    ]
    graph = infer_shapes(load_onnx(make_model(nodes, {"x": [2, 3]}, ["y"])))
    cleaned = remove_dead_nodes(remove_identities(graph))
    assert [n.op_type for n in cleaned.nodes] == ["Relu"]
    assert cleaned.nodes[0].inputs == ["x"]
    assert cleaned.nodes[0].outputs == ["y"]


def test_identity_from_input_to_output_still_converts() -> None:
    model = make_model([helper.make_node("Identity", ["x"], ["y"])], {"x": [2, 3]}, ["y"])
    comparison = check_model(model, {"x": [2, 3]})
    assert [t["name"] for t in comparison.result.summary()["outputs"]] == ["y"]


def test_float64_model_computes_in_float32() -> None:
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"]),
        helper.make_node("Cast", ["m"], ["c"], to=11),
        helper.make_node("Add", ["c", "k"], ["y"]),
    ]
    model = make_model(
        nodes,
        {"x": [2, 3]},
        ["y"],
        {"k": np.asarray([1.5, 2.0, -1.0])},
        input_dtypes={"x": np.float64},
        output_dtypes={"y": np.float64},
    )
    feeds = {"x": RNG.normal(size=(2, 3))}
    comparison = check_model(model, {"x": [2, 3]}, feeds=feeds)
    assert comparison.result.summary()["inputs"][0]["dtype"] == "float32"
