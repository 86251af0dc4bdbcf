"""Layout: NCHW image models become NHWC without a TRANSPOSE per op; other inputs keep theirs."""

from __future__ import annotations

import numpy as np
from convert_helpers import check_model, make_model
from onnx import helper

from edgeops.converters import layout

RNG = np.random.default_rng(9)


def _w(*shape: int) -> np.ndarray:
    return RNG.normal(0, 0.3, size=shape).astype(np.float32)


def _plain_cnn() -> bytes:
    """Conv-BN-Relu, depthwise, maxpool, residual add, concat, resize, GAP, flatten, gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"]),
        helper.make_node("Add", ["r1", "r2"], ["res"]),
        helper.make_node("MaxPool", ["res"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node(
            "Resize",
            ["p", "", "scales"],
            ["up"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        helper.make_node("Concat", ["up", "res"], ["cat"], axis=1),
        helper.make_node("Mul", ["cat", "chan_scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["sm"], axis=1),
        helper.make_node("GlobalAveragePool", ["sm"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], transB=1),
    ]
    consts = {
        "w1": _w(8, 3, 3, 3),
        "b1": _w(8),
        "w2": _w(8, 1, 3, 3),
        "lo": np.asarray(0, np.float32),
        "hi": np.asarray(6, np.float32),
        "scales": np.asarray([1, 1, 2, 2], np.float32),
        "chan_scale": _w(16, 1, 1),
        "fc": _w(10, 16),
        "fcb": _w(10),
    }
    return make_model(nodes, {"x": [1, 3, 16, 16]}, ["y"], consts)


def test_plain_cnn_has_no_transpose_except_for_channel_softmax() -> None:
    comparison = check_model(_plain_cnn(), {"x": [1, 3, 16, 16]})
    # Softmax over channels is the last NHWC axis: nothing to move. No other op asks for
    # a different order, so the converted model holds no TRANSPOSE at all.
    assert comparison.count("TRANSPOSE") == 0
    inputs = comparison.result.summary()["inputs"]
    assert inputs[0]["shape"] == [1, 16, 16, 3]


def test_graph_transpose_costs_one_transpose_at_most() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Transpose", ["c"], ["y"], perm=[0, 3, 2, 1]),
    ]
    model = make_model(nodes, {"x": [1, 3, 4, 5]}, ["y"], {"w": _w(6, 3, 1, 1)})
    assert check_model(model, {"x": [1, 3, 4, 5]}).count("TRANSPOSE") == 1


def test_image_output_keeps_onnx_layout() -> None:
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])]
    model = make_model(nodes, {"x": [1, 3, 6, 7]}, ["y"], {"w": _w(4, 3, 3, 3)})
    comparison = check_model(model, {"x": [1, 3, 6, 7]})
    assert comparison.result.summary()["outputs"][0]["shape"] == [1, 4, 6, 7]
    assert comparison.count("TRANSPOSE") == 1


def test_sequence_and_tabular_inputs_keep_their_layout() -> None:
    nodes = [
        helper.make_node("MatMul", ["seq", "w"], ["h"]),
        helper.make_node("ReduceMean", ["h"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("Concat", ["pooled", "tab"], ["y"], axis=1),
    ]
    inputs = {"seq": [2, 7, 5], "tab": [2, 3]}
    model = make_model(nodes, inputs, ["y"], {"w": _w(5, 4)})
    comparison = check_model(model, inputs)
    shapes = {t["name"]: t["shape"] for t in comparison.result.summary()["inputs"]}
    assert shapes == {"seq": [2, 7, 5], "tab": [2, 3]}
    assert comparison.count("TRANSPOSE") == 0


def test_layout_algebra() -> None:
    x = RNG.normal(size=(2, 3, 4, 5))
    p = layout.NHWC
    q = (0, 3, 1, 2)
    held = np.transpose(x, p)
    y = np.transpose(x, q)
    composed = layout.compose_transpose(p, q)
    np.testing.assert_array_equal(np.transpose(y, composed), held)
    assert layout.relative(p, (0, 1, 2, 3)) == (0, 3, 1, 2)
    assert layout.same_memory_order((1, 8, 1, 1), (0, 1, 2, 3), p)
    assert not layout.same_memory_order((1, 8, 2, 1), (0, 1, 2, 3), p)
    assert layout.drop_axes(p, [1]) == (0, 1, 2)
    assert layout.insert_axes((0, 2, 1), [1]) == (0, 3, 2, 1)


def test_reshape_perm_keeps_layout_when_groups_stay_together() -> None:
    # NHWC tensor of a 1x82x40x40 map: merging H and W is a RESHAPE to 1x1600x82.
    assert layout.reshape_perm((1, 82, 40, 40), (1, 82, 1600), layout.NHWC) == (0, 2, 1)
    # Splitting the channel axis held last: 1x2100x64 -> 1x2100x4x16.
    assert layout.reshape_perm((1, 64, 2100), (1, 4, 16, 2100), (0, 2, 1)) == (0, 3, 1, 2)
    # Merging C with H while the layout separates them needs the ONNX order.
    assert layout.reshape_perm((1, 8, 4, 4), (1, 32, 4), layout.NHWC) is None
    # Identity stays identity.
    assert layout.reshape_perm((2, 3, 4), (6, 4), (0, 1, 2)) == (0, 1)


def test_conv_reshape_concat_head_needs_only_the_output_transpose() -> None:
    # YOLO-style head: per-level maps flattened to 1xCxHW and concatenated along HW.
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["c", "s1"], ["r1"]),
        helper.make_node("Reshape", ["p", "s2"], ["r2"]),
        helper.make_node("Concat", ["r1", "r2"], ["cat"], axis=2),
        helper.make_node("Sigmoid", ["cat"], ["y"]),
    ]
    consts = {
        "w": _w(6, 3, 3, 3),
        "s1": np.asarray([1, 6, 64], np.int64),
        "s2": np.asarray([1, 6, 16], np.int64),
    }
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], consts)
    comparison = check_model(model, {"x": [1, 3, 8, 8]})
    assert comparison.count("TRANSPOSE") == 1


def test_attention_block_on_a_sequence_input() -> None:
    # Multi-head self-attention + residual + LayerNorm + GELU MLP on [N, T, D]: the 4-D head
    # tensors come from reshapes, never from an input, so nothing is turned NHWC.
    t, d, heads = 6, 8, 2
    dh = d // heads
    consts = {
        "wq": _w(d, d),
        "wk": _w(d, d),
        "wv": _w(d, d),
        "wo": _w(d, d),
        "heads": np.asarray([1, t, heads, dh], np.int64),
        "merged": np.asarray([1, t, d], np.int64),
        "scale": np.asarray(1 / np.sqrt(dh), np.float32),
        "gamma": RNG.uniform(0.5, 1.5, d).astype(np.float32),
        "beta": _w(d),
        "w1": _w(d, 16),
        "w2": _w(16, d),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"]),
        helper.make_node("MatMul", ["x", "wk"], ["k"]),
        helper.make_node("MatMul", ["x", "wv"], ["v"]),
        helper.make_node("Reshape", ["q", "heads"], ["q4"]),
        helper.make_node("Reshape", ["k", "heads"], ["k4"]),
        helper.make_node("Reshape", ["v", "heads"], ["v4"]),
        helper.make_node("Transpose", ["q4"], ["qh"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["v4"], ["vh"], perm=[0, 2, 1, 3]),
        helper.make_node("MatMul", ["qh", "kt"], ["scores"]),
        helper.make_node("Mul", ["scores", "scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["attn"], axis=-1),
        helper.make_node("MatMul", ["attn", "vh"], ["ctx"]),
        helper.make_node("Transpose", ["ctx"], ["ctx_t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["ctx_t", "merged"], ["ctx3"]),
        helper.make_node("MatMul", ["ctx3", "wo"], ["proj"]),
        helper.make_node("Add", ["x", "proj"], ["res"]),
        helper.make_node("LayerNormalization", ["res", "gamma", "beta"], ["ln"], axis=-1),
        helper.make_node("MatMul", ["ln", "w1"], ["h"]),
        helper.make_node("Gelu", ["h"], ["g"]),
        helper.make_node("MatMul", ["g", "w2"], ["y"]),
    ]
    model = make_model(nodes, {"x": [1, t, d]}, ["y"], consts, opset=20)
    comparison = check_model(model, {"x": [1, t, d]})
    histogram = comparison.result.op_histogram()
    assert histogram["BATCH_MATMUL"] == 2
    assert histogram["FULLY_CONNECTED"] == 6
    assert comparison.result.summary()["inputs"][0]["shape"] == [1, t, d]
    # q, k and v move their heads in front for BATCH_MATMUL, the context moves them back.
    assert histogram["TRANSPOSE"] <= 5
