"""Data movement: Concat, Split, Slice, Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Pad,
DepthToSpace, SpaceToDepth, Gather, Cast, Identity, Expand, Tile.

Axis-aware ops keep their input's layout and remap their axes; Reshape and Flatten need the
ONNX element order and ask for the identity layout (one TRANSPOSE when the input is NHWC
with more than one non-unit spatial or channel dimension); Transpose emits nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeops.converters import layout
from edgeops.converters.layout import Perm
from edgeops.converters.lowering.context import Lowering, register
from edgeops.converters.onnx_import import Node
from edgeops.errors import ConversionError


def _norm(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _layout_of_inputs(ctx: Lowering, names: list[str]) -> Perm:
    for name in names:
        if name and ctx.const(name) is None:
            return ctx.perm(name)
    return layout.identity(ctx.rank(names[0]))


@register("Concat")
def lower_concat(ctx: Lowering, node: Node) -> None:
    """Concat → CONCATENATION on the remapped axis (inputs brought to one layout)."""
    rank = ctx.rank(node.outputs[0])
    axis = _norm(int(node.require("axis")), rank)
    names = [n for n in node.inputs if n and int(np.prod(ctx.shape(n))) > 0]
    perm = _layout_of_inputs(ctx, names)
    inputs = [ctx.tensor(n, perm) for n in names]
    out = ctx.output(node.outputs[0], perm)
    if len(inputs) == 1:
        shape = list(ctx.graph.tensors[out].shape)
        ctx.add("RESHAPE", [inputs[0], ctx.int32("shape", shape)], [out], {"newShape": shape})
        return
    ctx.add(
        "CONCATENATION",
        inputs,
        [out],
        {"axis": layout.tflite_axis(axis, perm), "fusedActivationFunction": "NONE"},
    )


@register("Split")
def lower_split(ctx: Lowering, node: Node) -> None:
    """Split → SPLIT (equal parts) or SPLIT_V, on the remapped axis."""
    name = node.inputs[0]
    rank = ctx.rank(name)
    axis = _norm(int(node.attr("axis", 0)), rank)
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    outputs = [ctx.output(o, perm) for o in node.outputs]
    sizes = [ctx.shape(o)[axis] for o in node.outputs]
    tfl_axis = layout.tflite_axis(axis, perm)
    if len(set(sizes)) == 1:
        ctx.add("SPLIT", [ctx.int32("axis", tfl_axis), x], outputs, {"numSplits": len(sizes)})
    else:
        ctx.add(
            "SPLIT_V",
            [x, ctx.int32("size_splits", sizes), ctx.int32("axis", tfl_axis)],
            outputs,
            {"numSplits": len(sizes)},
        )


@register("Slice")
def lower_slice(ctx: Lowering, node: Node) -> None:
    """Slice (constant starts/ends/axes/steps) → STRIDED_SLICE in the input's layout."""
    name = node.inputs[0]
    shape = ctx.shape(name)
    rank = len(shape)
    if ctx.source.opset < 10:
        starts, ends = node.require("starts"), node.require("ends")
        axes = node.attr("axes", list(range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts = ctx.require_const(node.inputs[1], "starts").tolist()
        ends = ctx.require_const(node.inputs[2], "ends").tolist()
        axes = (
            ctx.require_const(node.inputs[3], "axes").tolist()
            if len(node.inputs) > 3 and node.inputs[3]
            else list(range(len(starts)))
        )
        steps = (
            ctx.require_const(node.inputs[4], "steps").tolist()
            if len(node.inputs) > 4 and node.inputs[4]
            else [1] * len(starts)
        )
    begin = [0] * rank
    end = list(shape)
    stride = [1] * rank
    end_mask = 0
    for start, stop, given_axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = _norm(int(given_axis), rank)
        indices = range(*slice(int(start), int(stop), int(step)).indices(shape[axis]))
        if len(indices) == 0:
            ctx.unsupported("an empty slice")
        begin[axis] = indices[0]
        stride[axis] = int(step)
        last_next = indices[-1] + int(step)
        end[axis] = last_next
        if last_next < 0:
            end_mask |= 1 << axis
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], perm)
    t_begin = [begin[a] for a in perm]
    t_end = [end[a] for a in perm]
    t_stride = [stride[a] for a in perm]
    t_mask = sum(1 << i for i, a in enumerate(perm) if end_mask & (1 << a))
    ctx.add(
        "STRIDED_SLICE",
        [x, ctx.int32("begin", t_begin), ctx.int32("end", t_end), ctx.int32("strides", t_stride)],
        [out],
        {"endMask": t_mask},
    )


def _feeds_only_dense(ctx: Lowering, out_name: str) -> bool:
    """True when every reader of ``out_name`` is a Gemm/MatMul with constant weights on it."""
    readers = ctx.readers.get(out_name, [])
    if not readers or out_name in ctx.source.outputs:
        return False
    for reader in readers:
        if reader.op_type not in ("Gemm", "MatMul") or len(reader.inputs) < 2:
            return False
        if reader.inputs[0] != out_name or out_name in reader.inputs[1:]:
            return False
        weight = ctx.const(reader.inputs[1])
        if weight is None or weight.ndim != 2:
            return False
        if reader.op_type == "Gemm" and int(reader.attr("transA", 0)) == 0:
            continue
        if reader.op_type != "MatMul":
            return False
    return True


def _reshape_to(ctx: Lowering, node: Node, name: str, out_name: str) -> None:
    """RESHAPE ONNX value ``name`` (in ONNX element order) into ``out_name``.

    A flatten to ``N×K`` of a tensor held in another layout (an NHWC feature map before a
    classifier) that only fully-connected ops read keeps the held order instead: the
    columns come out permuted and the FC weights are permuted to match
    (:attr:`Lowering.feature_order`), so no TRANSPOSE runs.
    """
    perm = ctx.perm(name)
    in_shape = ctx.shape(name)
    out_shape = ctx.shape(out_name)
    if (
        ctx.const(name) is None
        and perm != layout.identity(len(perm))
        and perm[0] == 0
        and len(out_shape) == 2
        and out_shape[0] == in_shape[0]
        and _feeds_only_dense(ctx, out_name)
    ):
        x = ctx.tensor(name, perm)
        inner = [a - 1 for a in perm[1:]]
        ctx.feature_order[out_name] = (
            np.arange(out_shape[1]).reshape(in_shape[1:]).transpose(inner).reshape(-1)
        )
        out = ctx.output(out_name)
        shape = list(out_shape)
        ctx.add("RESHAPE", [x, ctx.int32("shape", shape)], [out], {"newShape": shape})
        return
    x = ctx.tensor(name, layout.identity(ctx.rank(name)))
    out = ctx.output(out_name)
    shape = list(ctx.graph.tensors[out].shape)
    ctx.add("RESHAPE", [x, ctx.int32("shape", shape)], [out], {"newShape": shape})


@register("Reshape")
def lower_reshape(ctx: Lowering, node: Node) -> None:
    """Reshape → RESHAPE, keeping the input's layout when the reshape allows it.

    Merging H and W of an NHWC tensor (YOLOv8's ``1×C×H×W → 1×C×HW``) is a RESHAPE of the
    NHWC tensor to ``1×HW×C``; only when the reshape mixes dimensions the layout has
    separated does it need the ONNX order (:func:`layout.reshape_perm`).
    """
    name = node.inputs[0]
    in_shape, out_shape = ctx.shape(name), ctx.shape(node.outputs[0])
    perm = ctx.perm(name)
    out_perm = layout.reshape_perm(in_shape, out_shape, perm)
    if out_perm is None and ctx.const(name) is None:
        # Move the least data: one TRANSPOSE that gathers each group, not a full trip
        # back to the ONNX order (channel shuffles keep their NHWC neighbours).
        regrouped = layout.regroup_perm(in_shape, out_shape, perm)
        if regrouped is not None and regrouped != layout.identity(len(in_shape)):
            perm = regrouped
            out_perm = layout.reshape_perm(in_shape, out_shape, perm)
    if out_perm is None or ctx.const(name) is not None:
        _reshape_to(ctx, node, name, node.outputs[0])
        return
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], out_perm)
    shape = list(ctx.graph.tensors[out].shape)
    ctx.add("RESHAPE", [x, ctx.int32("shape", shape)], [out], {"newShape": shape})


@register("Flatten")
def lower_flatten(ctx: Lowering, node: Node) -> None:
    """Flatten → RESHAPE to 2-D, in the ONNX element order."""
    _reshape_to(ctx, node, node.inputs[0], node.outputs[0])


@register("Squeeze", "Unsqueeze")
def lower_squeeze(ctx: Lowering, node: Node) -> None:
    """Squeeze/Unsqueeze → RESHAPE; only size-1 axes move, so the layout carries over."""
    name = node.inputs[0]
    in_rank = ctx.rank(name)
    out_rank = ctx.rank(node.outputs[0])
    if len(node.inputs) > 1 and node.inputs[1]:
        axes = [int(a) for a in ctx.require_const(node.inputs[1], "axes").reshape(-1)]
    else:
        axes = [int(a) for a in node.attr("axes", [])]
    perm = ctx.perm(name)
    if node.op_type == "Squeeze":
        if not axes:
            axes = [a for a, d in enumerate(ctx.shape(name)) if d == 1]
        out_perm = layout.drop_axes(perm, [_norm(a, in_rank) for a in axes])
    else:
        out_perm = layout.insert_axes(perm, sorted(_norm(a, out_rank) for a in axes))
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], out_perm)
    shape = list(ctx.graph.tensors[out].shape)
    ctx.add("RESHAPE", [x, ctx.int32("shape", shape)], [out], {"newShape": shape})


@register("Transpose")
def lower_transpose(ctx: Lowering, node: Node) -> None:
    """Transpose emits nothing: its permutation moves into the output's layout."""
    name = node.inputs[0]
    rank = ctx.rank(name)
    onnx_perm = [int(p) for p in node.attr("perm", list(reversed(range(rank))))]
    if sorted(onnx_perm) != list(range(rank)):
        # An out-of-range axis indexed past the layout (found by fuzzing).
        raise ConversionError(
            f"Transpose node {node.name!r}: expected perm to be a permutation of "
            f"0..{rank - 1}, got {onnx_perm}"
        )
    perm = ctx.perm(name)
    ctx.alias(node.outputs[0], ctx.tensor(name, perm), layout.compose_transpose(perm, onnx_perm))


@register("Pad")
def lower_pad(ctx: Lowering, node: Node) -> None:
    """Pad: constant → PAD/PADV2, reflect → MIRROR_PAD(REFLECT), edge (≤ 1) → SYMMETRIC."""
    name = node.inputs[0]
    rank = ctx.rank(name)
    mode = node.attr("mode", "constant")
    if ctx.source.opset < 11:
        pads = list(node.require("pads"))
        value = float(node.attr("value", 0.0))
        axes = list(range(rank))
    else:
        pads = [int(p) for p in ctx.require_const(node.inputs[1], "pads").reshape(-1)]
        value_data = ctx.const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
        if len(node.inputs) > 2 and node.inputs[2] and value_data is None:
            ctx.unsupported("a non-constant pad value")
        value = float(value_data.reshape(())) if value_data is not None else 0.0
        axes = (
            [_norm(int(a), rank) for a in ctx.require_const(node.inputs[3], "axes")]
            if len(node.inputs) > 3 and node.inputs[3]
            else list(range(rank))
        )
    count = len(axes)
    if len(pads) != 2 * count:
        # A short pads list indexed past its end (found by fuzzing).
        raise ConversionError(
            f"Pad node {node.name!r}: expected {2 * count} pads for {count} axes, got {len(pads)}"
        )
    per_axis = {axes[i]: (int(pads[i]), int(pads[i + count])) for i in range(count)}
    if any(b < 0 or a < 0 for b, a in per_axis.values()):
        ctx.unsupported("negative pads (cropping)")
    perm = ctx.perm(name)
    paddings = [list(per_axis.get(a, (0, 0))) for a in perm]
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], perm)
    table = ctx.int32("paddings", paddings)
    if mode == "constant":
        if value == 0.0:
            ctx.add("PAD", [x, table], [out])
        else:
            ctx.add(
                "PADV2",
                [x, table, ctx.constant("pad_value", np.asarray(value, ctx.dtype(name)))],
                [out],
            )
    elif mode == "reflect":
        ctx.add("MIRROR_PAD", [x, table], [out], {"mode": "REFLECT"})
    elif mode == "edge" and all(max(p) <= 1 for p in paddings):
        # Repeating the edge once is SYMMETRIC mirroring by one element.
        ctx.add("MIRROR_PAD", [x, table], [out], {"mode": "SYMMETRIC"})
    elif mode == "edge":
        # Wider edge pads gather clamped indices along each padded axis.
        current = x
        shape = list(ctx.graph.tensors[x].shape)
        padded_axes = [i for i, p in enumerate(paddings) if p != [0, 0]]
        for step, axis in enumerate(padded_axes):
            before, after = paddings[axis]
            index = np.clip(np.arange(-before, shape[axis] + after), 0, shape[axis] - 1)
            shape[axis] += before + after
            last = step == len(padded_axes) - 1
            target = (
                out if last else ctx.temp(f"{node.outputs[0]}/edge{axis}", shape, ctx.dtype(name))
            )
            ctx.add("GATHER", [current, ctx.int32("indices", index)], [target], {"axis": axis})
            current = target
    else:
        ctx.unsupported(f"mode={mode}")


@register("DepthToSpace", "SpaceToDepth")
def lower_depth_space(ctx: Lowering, node: Node) -> None:
    """DepthToSpace (DCR; CRD via a channel GATHER) and SpaceToDepth → the NHWC ops."""
    name = node.inputs[0]
    block = int(node.require("blocksize"))
    x = ctx.tensor(name, layout.NHWC)
    out = ctx.output(node.outputs[0], layout.NHWC)
    if node.op_type == "SpaceToDepth":
        ctx.add("SPACE_TO_DEPTH", [x], [out], {"blockSize": block})
        return
    if node.attr("mode", "DCR") == "CRD":
        # CRD reads channel c*b*b + i*b + j where DCR reads (i*b + j)*C' + c: reorder first.
        channels = ctx.shape(name)[1]
        depth = channels // (block * block)
        order = np.arange(channels).reshape(depth, block * block).T.reshape(-1)
        reordered = ctx.temp(f"{name}/dcr", ctx.graph.tensors[x].shape, ctx.dtype(name))
        ctx.add("GATHER", [x, ctx.int32("indices", order)], [reordered], {"axis": 3})
        x = reordered
    ctx.add("DEPTH_TO_SPACE", [x], [out], {"blockSize": block})


@register("Gather")
def lower_gather(ctx: Lowering, node: Node) -> None:
    """Gather with constant indices → GATHER on the remapped axis."""
    name, index_name = node.inputs
    if ctx.const(index_name) is None:
        _gather_dynamic(ctx, node)
        return
    indices = ctx.require_const(index_name, "the indices").astype(np.int64)
    shape = ctx.shape(name)
    rank = len(shape)
    axis = _norm(int(node.attr("axis", 0)), rank)
    indices = np.where(indices < 0, indices + shape[axis], indices).astype(np.int32)
    perm = ctx.perm(name)
    if indices.ndim == 0:
        out_perm = layout.drop_axes(perm, [axis])
    elif indices.ndim == 1:
        out_perm = perm
    else:
        perm = layout.identity(rank)
        out_perm = layout.identity(ctx.rank(node.outputs[0]))
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], out_perm)
    tfl_axis = layout.tflite_axis(axis, perm)
    if indices.ndim == 0:
        # A scalar index drops the axis; gather with [i] and reshape, since a 0-D constant
        # operand is read as shape [1] by some runtimes.
        kept = list(ctx.graph.tensors[x].shape)
        kept[tfl_axis] = 1
        picked = ctx.temp(f"{node.outputs[0]}/picked", kept, ctx.dtype(name))
        ctx.add(
            "GATHER", [x, ctx.int32("indices", indices.reshape(1))], [picked], {"axis": tfl_axis}
        )
        dims = list(ctx.graph.tensors[out].shape)
        ctx.add("RESHAPE", [picked, ctx.int32("shape", dims)], [out], {"newShape": dims})
        return
    ctx.add("GATHER", [x, ctx.int32("indices", indices)], [out], {"axis": tfl_axis})


def _gather_dynamic(ctx: Lowering, node: Node) -> None:
    """Gather with run-time indices (an embedding lookup) → CAST to int32 + GATHER.

    Indices must be non-negative: ONNX allows negative ones, TFLite's GATHER does not.
    """
    name, index_name = node.inputs
    rank = ctx.rank(name)
    axis = int(node.attr("axis", 0))
    axis = axis + rank if axis < 0 else axis
    perm = layout.identity(rank)
    x = ctx.tensor(name, perm)
    indices = ctx.tensor(index_name, layout.identity(ctx.rank(index_name)))
    if ctx.dtype(index_name) != np.int32:
        cast = ctx.temp(f"{index_name}/int32", ctx.graph.tensors[indices].shape, np.int32)
        ctx.add(
            "CAST",
            [indices],
            [cast],
            {"inDataType": ctx.dtype(index_name), "outDataType": np.dtype(np.int32)},
        )
        indices = cast
    out = ctx.output(node.outputs[0])
    ctx.add("GATHER", [x, indices], [out], {"axis": axis})


@register("Cast")
def lower_cast(ctx: Lowering, node: Node) -> None:
    """Cast → CAST (a no-op when the type does not change)."""
    name = node.inputs[0]
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    target: Any = ctx.dtype(node.outputs[0])
    if target == ctx.dtype(name):
        ctx.alias(node.outputs[0], x, perm)
        return
    if target == np.int64:
        target = np.dtype(np.int32)  # TFLite index math is int32
    out = ctx.output(node.outputs[0], perm, dtype=target)
    ctx.add("CAST", [x], [out], {"inDataType": ctx.dtype(name), "outDataType": target})


@register("Identity", "Dropout")
def lower_identity(ctx: Lowering, node: Node) -> None:
    """Identity (and inference Dropout) emit nothing; the output aliases the input."""
    name = node.inputs[0]
    ctx.alias(node.outputs[0], ctx.tensor(name), ctx.perm(name))


@register("Expand", "Tile")
def lower_expand(ctx: Lowering, node: Node) -> None:
    """Expand/Tile with constant shape/repeats → TILE in the input's layout."""
    name = node.inputs[0]
    out_shape = ctx.shape(node.outputs[0])
    rank = len(out_shape)
    if ctx.rank(name) != rank:
        perm = layout.identity(rank)
        x = ctx.broadcast_tensor(name, rank, perm)
    else:
        perm = ctx.perm(name)
        x = ctx.tensor(name, perm)
    in_shape = ctx.graph.tensors[x].shape
    target = layout.tflite_shape(out_shape, perm)
    if any(t % s for s, t in zip(in_shape, target, strict=True)):
        ctx.unsupported(f"expanding {in_shape} to {target}")
    multiples = [t // s for s, t in zip(in_shape, target, strict=True)]
    out = ctx.output(node.outputs[0], perm)
    ctx.add("TILE", [x, ctx.int32("multiples", multiples)], [out])


__all__ = [
    "lower_cast",
    "lower_concat",
    "lower_depth_space",
    "lower_expand",
    "lower_gather",
    "lower_identity",
    "lower_pad",
    "lower_reshape",
    "lower_slice",
    "lower_split",
    "lower_squeeze",
    "lower_transpose",
]
