"""Conformance: Concat, Split, Slice, Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Pad,
DepthToSpace, SpaceToDepth, Gather, Cast, Identity, Expand — on NCHW image tensors (which
the converter holds NHWC, so the axes are remapped) and on plain tensors.
"""

from __future__ import annotations

import numpy as np
import pytest
from convert_helpers import Comparison, check_model, make_model
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import NodeProto, helper

from edgeops.errors import EdgeopsError

RNG = np.random.default_rng(11)
W = RNG.normal(size=(4, 3, 1, 1)).astype(np.float32)


def _after_conv(node_factory, out_names=("y",), shape=(1, 3, 6, 5), constants=None) -> Comparison:
    """Run the op on the output of a 1x1 conv, i.e. on an NHWC-held tensor."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), *node_factory("c")]
    model = make_model(nodes, {"x": list(shape)}, list(out_names), {"w": W, **(constants or {})})
    return check_model(model, {"x": list(shape)})


def _plain(node, inputs: dict[str, list[int]], constants=None, outputs=("y",)) -> Comparison:
    model = make_model([node], inputs, list(outputs), constants or {})
    return check_model(model, inputs)


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_concat_nhwc(axis: int) -> None:
    _after_conv(
        lambda c: [helper.make_node("Concat", [c, c, "k"], ["y"], axis=axis)],
        constants={"k": RNG.normal(size=(1, 4, 6, 5)).astype(np.float32)},
    )


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat_plain(axis: int) -> None:
    _plain(
        helper.make_node("Concat", ["a", "b"], ["y"], axis=axis), {"a": [2, 3, 4], "b": [2, 3, 4]}
    )


@pytest.mark.parametrize(("axis", "split"), [(1, None), (1, [1, 3]), (2, [2, 4]), (3, None)])
def test_split_nhwc(axis: int, split: list[int] | None) -> None:
    def build(c: str):
        if split is None:
            n = 2 if axis == 1 else (2 if axis == 2 else 5)
            return [
                helper.make_node(
                    "Split", [c], [f"y{i}" for i in range(n)], axis=axis, num_outputs=n
                )
            ]
        return [helper.make_node("Split", [c, "s"], ["y0", "y1"], axis=axis)]

    n = 2 if split is not None or axis != 3 else 5
    constants = {"s": np.asarray(split, np.int64)} if split else None
    nodes_out = [f"y{i}" for i in range(n)]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), *build("c")]
    model = make_model(
        nodes, {"x": [1, 3, 6, 5]}, nodes_out, {"w": W, **(constants or {})}, opset=18
    )
    check_model(model, {"x": [1, 3, 6, 5]})


@pytest.mark.parametrize(
    ("starts", "ends", "axes", "steps"),
    [
        ([0], [2], [1], [1]),
        ([1, 1], [5, 4], [2, 3], [2, 1]),
        ([-1], [-100], [3], [-1]),
        ([0, 2], [100, -1], [1, 2], [1, 1]),
        ([5], [0], [2], [-2]),
    ],
)
def test_slice_nhwc(starts, ends, axes, steps) -> None:
    constants = {
        "st": np.asarray(starts, np.int64),
        "en": np.asarray(ends, np.int64),
        "ax": np.asarray(axes, np.int64),
        "sp": np.asarray(steps, np.int64),
    }
    _after_conv(
        lambda c: [helper.make_node("Slice", [c, "st", "en", "ax", "sp"], ["y"])],
        constants=constants,
    )


@pytest.mark.parametrize("shape", [[1, 80], [1, 4, 20], [4, 5, 4], [1, 2, 2, 5, 4], [-1]])
def test_reshape_nhwc_needs_onnx_order(shape: list[int]) -> None:
    _after_conv(
        lambda c: [helper.make_node("Reshape", [c, "s"], ["y"])],
        constants={"s": np.asarray(shape, np.int64)},
        shape=(1, 3, 4, 5),
    )


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_flatten(axis: int) -> None:
    _after_conv(lambda c: [helper.make_node("Flatten", [c], ["y"], axis=axis)])


@pytest.mark.parametrize("perm", [[0, 2, 3, 1], [0, 3, 1, 2], [1, 0, 2, 3], [0, 1, 3, 2]])
def test_transpose_nhwc(perm: list[int]) -> None:
    _after_conv(
        lambda c: [
            helper.make_node("Transpose", [c], ["t"], perm=perm),
            helper.make_node("Relu", ["t"], ["y"]),
        ]
    )


def test_transpose_then_softmax_then_conv() -> None:
    # YOLOv8's DFL head: reshape, transpose, softmax over the bins, 1x1 conv, reshape.
    w = np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1)
    nodes = [
        helper.make_node("Reshape", ["x", "s1"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1, 3]),
        helper.make_node("Softmax", ["t"], ["sm"], axis=1),
        helper.make_node("Conv", ["sm", "w"], ["c"]),
        helper.make_node("Reshape", ["c", "s2"], ["y"]),
    ]
    consts = {
        "s1": np.asarray([1, 4, 16, 50], np.int64),
        "w": w,
        "s2": np.asarray([1, 4, 50], np.int64),
    }
    model = make_model(nodes, {"x": [1, 64, 50]}, ["y"], consts)
    comparison = check_model(model, {"x": [1, 64, 50]})
    assert comparison.count("TRANSPOSE") <= 1


@pytest.mark.parametrize("axes", [[0], [2], [0, 2]])
def test_squeeze_unsqueeze(axes: list[int]) -> None:
    nodes = lambda c: [  # noqa: E731
        helper.make_node("Unsqueeze", [c, "a"], ["u"]),
        helper.make_node("Squeeze", ["u", "a"], ["y"]),
    ]
    _after_conv(nodes, constants={"a": np.asarray(axes, np.int64)})


def test_squeeze_unit_spatial() -> None:
    _after_conv(
        lambda c: [helper.make_node("Squeeze", [c, "a"], ["y"])],
        constants={"a": np.asarray([2, 3], np.int64)},
        shape=(1, 3, 1, 1),
    )


@pytest.mark.parametrize(
    ("pads", "mode", "value"),
    [
        ([0, 0, 1, 2, 0, 0, 2, 1], "constant", 0.0),
        ([0, 1, 1, 0, 0, 0, 1, 1], "constant", 1.5),
        ([0, 0, 2, 1, 0, 0, 1, 2], "reflect", 0.0),
        ([0, 0, 1, 1, 0, 0, 1, 1], "edge", 0.0),
    ],
)
def test_pad(pads: list[int], mode: str, value: float) -> None:
    constants = {"p": np.asarray(pads, np.int64), "v": np.asarray(value, np.float32)}
    _after_conv(
        lambda c: [helper.make_node("Pad", [c, "p", "v"], ["y"], mode=mode)], constants=constants
    )


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode: str) -> None:
    w = RNG.normal(size=(8, 3, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("DepthToSpace", ["c"], ["y"], blocksize=2, mode=mode),
    ]
    model = make_model(nodes, {"x": [1, 3, 3, 4]}, ["y"], {"w": w})
    check_model(model, {"x": [1, 3, 3, 4]})


def test_space_to_depth() -> None:
    _after_conv(
        lambda c: [helper.make_node("SpaceToDepth", [c], ["y"], blocksize=2)], shape=(1, 3, 4, 6)
    )


@pytest.mark.parametrize(
    ("axis", "indices"), [(1, [2, 0]), (1, 1), (2, [[0, 1], [3, 2]]), (3, [-1])]
)
def test_gather(axis: int, indices) -> None:
    _after_conv(
        lambda c: [helper.make_node("Gather", [c, "i"], ["y"], axis=axis)],
        constants={"i": np.asarray(indices, np.int64)},
    )


def test_cast_and_identity() -> None:
    nodes = lambda c: [  # noqa: E731
        helper.make_node("Identity", [c], ["i"]),
        helper.make_node("Cast", ["i"], ["y"], to=1),
    ]
    _after_conv(nodes)


def test_expand() -> None:
    _after_conv(
        lambda c: [helper.make_node("Expand", [c, "s"], ["y"])],
        constants={"s": np.asarray([2, 4, 6, 5], np.int64)},
    )


def test_gather_with_runtime_indices() -> None:
    node = helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)
    table = RNG.normal(size=(10, 4)).astype(np.float32)
    model = make_model(
        [node], {"ids": [2, 3]}, ["y"], {"table": table}, input_dtypes={"ids": np.int64}
    )
    ids = np.asarray([[0, 9, 3], [4, 4, 1]], np.int64)
    check_model(model, {"ids": [2, 3]}, feeds={"ids": ids})


def test_edge_pad_wider_than_one() -> None:
    constants = {"p": np.asarray([0, 0, 3, 1, 0, 0, 0, 2], np.int64)}
    _after_conv(
        lambda c: [helper.make_node("Pad", [c, "p"], ["y"], mode="edge")], constants=constants
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),
            st.integers(-9, 9),
            st.integers(-9, 9),
            st.sampled_from([1, 2, 3, -1, -2]),
        ),
        min_size=1,
        max_size=3,
        unique_by=lambda t: t[0],
    )
)
def test_slice_property(specs: list[tuple[int, int, int, int]]) -> None:
    # Any starts/ends/steps (negative, out of range, reversed) on an NHWC-held tensor:
    # matches onnxruntime, or an empty result is refused.
    shape = [1, 4, 6, 5]
    sizes = [len(range(*slice(s, e, st_).indices(shape[a]))) for a, s, e, st_ in specs]
    constants = {
        "st": np.asarray([s[1] for s in specs], np.int64),
        "en": np.asarray([s[2] for s in specs], np.int64),
        "ax": np.asarray([s[0] for s in specs], np.int64),
        "sp": np.asarray([s[3] for s in specs], np.int64),
    }

    def build(c: str) -> list[NodeProto]:
        return [helper.make_node("Slice", [c, "st", "en", "ax", "sp"], ["y"])]

    if all(sizes):
        _after_conv(build, constants=constants)
    else:
        with pytest.raises(EdgeopsError):
            _after_conv(build, constants=constants)
