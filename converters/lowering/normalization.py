"""LayerNormalization and InstanceNormalization (decomposed into TFLite arithmetic), LRN.

TFLite has no normalization builtin, so both become
``d = x - MEAN(x); y = d * RSQRT(MEAN(d * d) + eps) * scale + bias`` over the normalized
axes (ONNX LayerNormalization, opset 17: the axes from ``axis`` to the last; ONNX
InstanceNormalization: the spatial axes, with per-channel scale and bias). The axes are
remapped through the input's layout like any reduction.
"""

from __future__ import annotations

import numpy as np

from edgeops.converters import layout
from edgeops.converters.lowering.context import Lowering, register
from edgeops.converters.onnx_import import Node


def _normalize(
    ctx: Lowering, node: Node, axes: list[int], eps: float
) -> tuple[str, tuple[int, ...]]:
    """Emit the normalization of the node's input over ONNX ``axes``; return (tensor, perm)."""
    name = node.inputs[0]
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    shape = ctx.graph.tensors[x].shape
    reduced = list(shape)
    tfl_axes = sorted(layout.tflite_axis(a, perm) for a in axes)
    for axis in tfl_axes:
        reduced[axis] = 1
    dtype = ctx.dtype(name)
    out = node.outputs[0]
    axes_const = ctx.int32("axes", tfl_axes)
    mean = ctx.temp(f"{out}/mean", reduced, dtype)
    ctx.add("MEAN", [x, axes_const], [mean], {"keepDims": True})
    centred = ctx.temp(f"{out}/centred", shape, dtype)
    ctx.add("SUB", [x, mean], [centred], {"fusedActivationFunction": "NONE"})
    squared = ctx.temp(f"{out}/squared", shape, dtype)
    ctx.add("MUL", [centred, centred], [squared], {"fusedActivationFunction": "NONE"})
    var = ctx.temp(f"{out}/variance", reduced, dtype)
    ctx.add("MEAN", [squared, axes_const], [var], {"keepDims": True})
    shifted = ctx.temp(f"{out}/variance_eps", reduced, dtype)
    ctx.add(
        "ADD",
        [var, ctx.constant("epsilon", np.asarray([eps], dtype))],
        [shifted],
        {"fusedActivationFunction": "NONE"},
    )
    inv = ctx.temp(f"{out}/inv_std", reduced, dtype)
    ctx.add("RSQRT", [shifted], [inv])
    normed = ctx.temp(f"{out}/normalized", shape, dtype)
    ctx.add("MUL", [centred, inv], [normed], {"fusedActivationFunction": "NONE"})
    return normed, perm


def _affine(
    ctx: Lowering,
    node: Node,
    *,
    normed: str,
    perm: tuple[int, ...],
    scale: str,
    bias: str,
    param_shape: list[int],
) -> None:
    """``normed * scale + bias`` with ONNX-broadcast parameters, into the node's output."""
    rank = len(perm)
    shape = ctx.graph.tensors[normed].shape
    dtype = ctx.dtype(node.inputs[0])

    def operand(param: str) -> str:
        data = ctx.require_const(param, "scale and bias").astype(np.float32).reshape(param_shape)
        full = data.reshape((1,) * (rank - data.ndim) + data.shape)
        return ctx.constant(param, np.transpose(full, perm))

    scaled = ctx.temp(f"{node.outputs[0]}/scaled", shape, dtype)
    ctx.add("MUL", [normed, operand(scale)], [scaled], {"fusedActivationFunction": "NONE"})
    if bias:
        out = ctx.output(node.outputs[0], perm)
        ctx.add("ADD", [scaled, operand(bias)], [out], {"fusedActivationFunction": "NONE"})
    else:
        ctx.alias(node.outputs[0], scaled, perm)


@register("LayerNormalization")
def lower_layer_norm(ctx: Lowering, node: Node) -> None:
    """LayerNormalization over the axes from ``axis`` on (mean/inv-std outputs unsupported)."""
    if any(node.outputs[1:]):
        ctx.unsupported("the Mean and InvStdDev outputs")
    rank = ctx.rank(node.inputs[0])
    axis = int(node.attr("axis", -1))
    axis = axis + rank if axis < 0 else axis
    axes = list(range(axis, rank))
    normed, perm = _normalize(ctx, node, axes, float(node.attr("epsilon", 1e-5)))
    param_shape = list(ctx.shape(node.inputs[0])[axis:])
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    _affine(
        ctx,
        node,
        normed=normed,
        perm=perm,
        scale=node.inputs[1],
        bias=bias,
        param_shape=param_shape,
    )


@register("InstanceNormalization")
def lower_instance_norm(ctx: Lowering, node: Node) -> None:
    """InstanceNormalization over the spatial axes, per-channel scale and bias."""
    shape = ctx.shape(node.inputs[0])
    rank = len(shape)
    normed, perm = _normalize(ctx, node, list(range(2, rank)), float(node.attr("epsilon", 1e-5)))
    param_shape = [shape[1]] + [1] * (rank - 2)
    _affine(
        ctx,
        node,
        normed=normed,
        perm=perm,
        scale=node.inputs[1],
        bias=node.inputs[2],
        param_shape=param_shape,
    )


@register("LRN")
def lower_lrn(ctx: Lowering, node: Node) -> None:
    """LRN across channels → LOCAL_RESPONSE_NORMALIZATION on the NHWC channel axis.

    ONNX divides by ``(bias + alpha / size · Σ x²)^beta`` over ``size`` channels centred on
    each one; TFLite sums over ``2·radius + 1`` channels with ``alpha`` unscaled, so
    ``radius = (size − 1) / 2`` and ``alpha = alpha / size`` (odd ``size`` only: an even
    window is not centred).
    """
    size = int(node.require("size"))
    if size % 2 == 0:
        ctx.unsupported(f"even size={size} (the TFLite window is centred)")
    if ctx.rank(node.inputs[0]) != 4:
        ctx.unsupported("LRN on a tensor that is not 4-D")
    x = ctx.tensor(node.inputs[0], layout.NHWC)
    out = ctx.output(node.outputs[0], layout.NHWC)
    ctx.add(
        "LOCAL_RESPONSE_NORMALIZATION",
        [x],
        [out],
        {
            "radius": (size - 1) // 2,
            "bias": float(node.attr("bias", 1.0)),
            "alpha": float(node.attr("alpha", 1e-4)) / size,
            "beta": float(node.attr("beta", 0.75)),
        },
    )


__all__ = ["lower_instance_norm", "lower_layer_norm", "lower_lrn"]
