"""Layout propagation, property-tested: random chains of axis-aware ops after an NHWC conv.

Each example starts from a convolution (so the value is held NHWC) and applies a random
sequence of Transpose, Softmax, Reduce, Concat, Slice, Reshape, Unsqueeze/Squeeze, MaxPool,
Pad, Gather, Flatten, Split and broadcast arithmetic, tracking the ONNX shape; the converted
model must agree with onnxruntime. Any wrong axis remapping or layout bookkeeping shows up
as a mismatch (this test found a crash in the flatten-into-dense lookahead).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from convert_helpers import check_model, make_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import helper

OPS = [
    "transpose",
    "softmax",
    "reduce",
    "concat",
    "slice",
    "merge",
    "unsqueeze",
    "squeeze",
    "pool",
    "add",
]


@st.composite
def chains(
    draw: st.DrawFn, *, image: bool = True
) -> tuple[list[Any], dict[str, np.ndarray], list[int]]:
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    consts: dict[str, np.ndarray] = {}
    if image:
        shape = [1, 4, 6, 5]  # the 1x1 conv of the [1, 3, 6, 5] input
        consts["w"] = rng.normal(size=(4, 3, 1, 1)).astype(np.float32)
        nodes: list[Any] = [helper.make_node("Conv", ["x", "w"], ["v0"])]
    else:
        shape = [2, 4, 5]  # a sequence input, kept in its own layout
        nodes = [helper.make_node("Relu", ["x"], ["v0"])]
    current = "v0"
    for step in range(draw(st.integers(1, 5))):
        op = draw(st.sampled_from(OPS))
        rank = len(shape)
        out = f"v{step + 1}"
        if op == "transpose":
            perm = draw(st.permutations(list(range(rank))))
            nodes.append(helper.make_node("Transpose", [current], [out], perm=perm))
            shape = [shape[p] for p in perm]
        elif op == "softmax":
            axis = draw(st.integers(-rank, rank - 1))
            nodes.append(helper.make_node("Softmax", [current], [out], axis=axis))
        elif op == "reduce" and rank > 1:
            axes = sorted(draw(st.sets(st.integers(0, rank - 1), min_size=1, max_size=rank - 1)))
            keep = draw(st.booleans())
            nodes.append(
                helper.make_node("ReduceMax", [current], [out], axes=axes, keepdims=int(keep))
            )
            shape = (
                [1 if a in axes else d for a, d in enumerate(shape)]
                if keep
                else [d for a, d in enumerate(shape) if a not in axes]
            )
        elif op == "concat":
            axis = draw(st.integers(0, rank - 1))
            nodes.append(helper.make_node("Concat", [current, current], [out], axis=axis))
            shape[axis] *= 2
        elif op == "slice" and max(shape) > 1:
            axis = draw(st.sampled_from([a for a, d in enumerate(shape) if d > 1]))
            name = f"s{step}"
            consts[f"{name}_starts"] = np.asarray([1], np.int64)
            consts[f"{name}_ends"] = np.asarray([shape[axis]], np.int64)
            consts[f"{name}_axes"] = np.asarray([axis], np.int64)
            nodes.append(
                helper.make_node(
                    "Slice", [current, f"{name}_starts", f"{name}_ends", f"{name}_axes"], [out]
                )
            )
            shape[axis] -= 1
        elif op == "merge" and rank > 1:
            axis = draw(st.integers(0, rank - 2))
            shape = [*shape[:axis], shape[axis] * shape[axis + 1], *shape[axis + 2 :]]
            consts[f"shape{step}"] = np.asarray(shape, np.int64)
            nodes.append(helper.make_node("Reshape", [current, f"shape{step}"], [out]))
        elif op == "unsqueeze" and rank < 5:
            axis = draw(st.integers(0, rank))
            consts[f"axes{step}"] = np.asarray([axis], np.int64)
            nodes.append(helper.make_node("Unsqueeze", [current, f"axes{step}"], [out]))
            shape.insert(axis, 1)
        elif op == "squeeze" and 1 in shape and rank > 1:
            axis = shape.index(1)
            consts[f"axes{step}"] = np.asarray([axis], np.int64)
            nodes.append(helper.make_node("Squeeze", [current, f"axes{step}"], [out]))
            shape.pop(axis)
        elif op == "pool" and rank == 4 and shape[2] > 1 and shape[3] > 1:
            nodes.append(helper.make_node("MaxPool", [current], [out], kernel_shape=[2, 2]))
            shape = [shape[0], shape[1], shape[2] - 1, shape[3] - 1]
        elif op == "pad":
            pads = [draw(st.integers(0, 2)) for _ in range(2 * rank)]
            consts[f"pads{step}"] = np.asarray(pads, np.int64)
            nodes.append(helper.make_node("Pad", [current, f"pads{step}"], [out]))
            shape = [d + pads[a] + pads[a + rank] for a, d in enumerate(shape)]
        elif op == "gather":
            axis = draw(st.integers(0, rank - 1))
            scalar = draw(st.booleans()) and rank > 1
            index = rng.integers(0, shape[axis], size=() if scalar else (2,))
            consts[f"idx{step}"] = np.asarray(index, np.int64)
            nodes.append(helper.make_node("Gather", [current, f"idx{step}"], [out], axis=axis))
            shape = shape[:axis] + ([] if scalar else [2]) + shape[axis + 1 :]
        elif op == "flatten":
            axis = draw(st.integers(0, rank))
            nodes.append(helper.make_node("Flatten", [current], [out], axis=axis))
            shape = [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))]
        elif op == "split" and max(shape) > 1:
            axis = draw(st.sampled_from([a for a, d in enumerate(shape) if d > 1]))
            first = draw(st.integers(1, shape[axis] - 1))
            consts[f"split{step}"] = np.asarray([first, shape[axis] - first], np.int64)
            nodes.append(
                helper.make_node(
                    "Split", [current, f"split{step}"], [out, f"{out}_rest"], axis=axis
                )
            )
            shape[axis] = first
        else:  # add a constant broadcast along a random subset of axes
            const_shape = [d if draw(st.booleans()) else 1 for d in shape]
            consts[f"c{step}"] = rng.normal(size=const_shape).astype(np.float32)
            nodes.append(helper.make_node("Add", [current, f"c{step}"], [out]))
        current = out if nodes[-1].output[0] == out else current
    nodes.append(helper.make_node("Relu", [current], ["y"]))
    return nodes, consts, shape


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains())
def test_random_chains_after_nhwc_conv_match_onnxruntime(
    chain: tuple[list[Any], dict[str, np.ndarray], list[int]],
) -> None:
    nodes, consts, _ = chain
    model = make_model(nodes, {"x": [1, 3, 6, 5]}, ["y"], consts)
    check_model(model, {"x": [1, 3, 6, 5]})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains(image=False))
def test_random_chains_on_a_sequence_input_match_onnxruntime(
    chain: tuple[list[Any], dict[str, np.ndarray], list[int]],
) -> None:
    nodes, consts, _ = chain
    model = make_model(nodes, {"x": [2, 4, 5]}, ["y"], consts)
    check_model(model, {"x": [2, 4, 5]})
