"""ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd → MEAN, SUM, REDUCE_MAX/MIN/PROD.

Axes come from the ``axes`` attribute (before opset 18; ReduceSum from opset 13) or the
second input, and are remapped through the input's layout. ``keepdims=0`` drops them from
the layout too (:func:`edgeops.converters.layout.drop_axes`).
"""

from __future__ import annotations

import numpy as np

from edgeops.converters import layout
from edgeops.converters.lowering.context import Lowering, register
from edgeops.converters.onnx_import import Node

_REDUCERS = {
    "ReduceMean": "MEAN",
    "ReduceSum": "SUM",
    "ReduceMax": "REDUCE_MAX",
    "ReduceMin": "REDUCE_MIN",
    "ReduceProd": "REDUCE_PROD",
}


@register(*_REDUCERS)
def lower_reduce(ctx: Lowering, node: Node) -> None:
    """Reduce* → the TFLite reducer over the remapped axes."""
    name = node.inputs[0]
    rank = ctx.rank(name)
    if len(node.inputs) > 1 and node.inputs[1]:
        axes = [int(a) for a in ctx.require_const(node.inputs[1], "axes").reshape(-1)]
    else:
        axes = [int(a) for a in node.attr("axes", [])]
    if not axes:
        if int(node.attr("noop_with_empty_axes", 0)):
            ctx.alias(node.outputs[0], ctx.tensor(name), ctx.perm(name))
            return
        axes = list(range(rank))
    axes = sorted({a + rank if a < 0 else a for a in axes})
    keep = bool(node.attr("keepdims", 1))
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    tfl_axes = sorted(layout.tflite_axis(a, perm) for a in axes)
    out_perm = perm if keep else layout.drop_axes(perm, axes)
    out = ctx.output(node.outputs[0], out_perm)
    ctx.add(_REDUCERS[node.op_type], [x, ctx.int32("axes", tfl_axes)], [out], {"keepDims": keep})


@register("ArgMax", "ArgMin")
def lower_arg(ctx: Lowering, node: Node) -> None:
    """ArgMax/ArgMin → ARG_MAX/ARG_MIN (int32 indices), RESHAPE for ``keepdims``."""
    if int(node.attr("select_last_index", 0)):
        ctx.unsupported("select_last_index=1")
    name = node.inputs[0]
    rank = ctx.rank(name)
    axis = int(node.attr("axis", 0))
    axis = axis + rank if axis < 0 else axis
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    dropped = layout.drop_axes(perm, [axis])
    reduced_shape = [d for i, d in enumerate(ctx.graph.tensors[x].shape) if perm[i] != axis]
    opcode = "ARG_MAX" if node.op_type == "ArgMax" else "ARG_MIN"
    options = {"outputType": "INT32"}
    if not int(node.attr("keepdims", 1)):
        out = ctx.output(node.outputs[0], dropped, dtype=np.int32)
        ctx.add(opcode, [x, ctx.int32("axis", [layout.tflite_axis(axis, perm)])], [out], options)
        return
    flat = ctx.temp(f"{node.outputs[0]}/indices", reduced_shape, np.int32)
    ctx.add(opcode, [x, ctx.int32("axis", [layout.tflite_axis(axis, perm)])], [flat], options)
    out = ctx.output(node.outputs[0], perm, dtype=np.int32)
    shape = list(ctx.graph.tensors[out].shape)
    ctx.add("RESHAPE", [flat, ctx.int32("shape", shape)], [out], {"newShape": shape})


__all__ = ["lower_arg", "lower_reduce"]
