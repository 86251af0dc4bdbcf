"""Activations: Relu, Clip, LeakyRelu, PRelu, Sigmoid, HardSigmoid, HardSwish, Tanh, Softmax,
Elu-free. Layout-indifferent except Softmax, whose TFLite kernel works on the last axis.
"""

from __future__ import annotations

import numpy as np

from edgeops.converters import layout
from edgeops.converters.lowering.context import Lowering, register
from edgeops.converters.onnx_import import Node

_SIMPLE = {"Relu": "RELU", "Sigmoid": "LOGISTIC", "Tanh": "TANH", "HardSwish": "HARD_SWISH"}


@register(*_SIMPLE)
def lower_simple(ctx: Lowering, node: Node) -> None:
    """Relu → RELU, Sigmoid → LOGISTIC, Tanh → TANH, HardSwish → HARD_SWISH."""
    name = node.inputs[0]
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], perm)
    ctx.add(_SIMPLE[node.op_type], [x], [out])


def _bound(ctx: Lowering, node: Node, index: int, attr: str, default: float) -> float:
    if ctx.source.opset < 11:
        return float(node.attr(attr, default))
    if len(node.inputs) > index and node.inputs[index]:
        return float(ctx.require_const(node.inputs[index], f"the {attr} bound").reshape(()))
    return default


@register("Elu")
def lower_elu(ctx: Lowering, node: Node) -> None:
    """Elu with alpha 1 → ELU (TFLite's ELU has no alpha)."""
    if float(node.attr("alpha", 1.0)) != 1.0:
        ctx.unsupported(f"alpha={node.attr('alpha')} (TFLite ELU has alpha 1)")
    name = node.inputs[0]
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], perm)
    ctx.add("ELU", [x], [out])


@register("Gelu")
def lower_gelu(ctx: Lowering, node: Node) -> None:
    """Gelu (opset 20, or fused from its Erf form by the import passes) → GELU."""
    name = node.inputs[0]
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], perm)
    approximate = node.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        ctx.unsupported(f"approximate={approximate}")
    ctx.add("GELU", [x], [out], {"approximate": approximate == "tanh"})


@register("Clip")
def lower_clip(ctx: Lowering, node: Node) -> None:
    """Clip → RELU / RELU6 / RELU_N1_TO_1 when the bounds match, else MINIMUM + MAXIMUM."""
    low = _bound(ctx, node, 1, "min", -np.inf)
    high = _bound(ctx, node, 2, "max", np.inf)
    name = node.inputs[0]
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    fused = {(0.0, 6.0): "RELU6", (-1.0, 1.0): "RELU_N1_TO_1", (0.0, np.inf): "RELU"}
    opcode = fused.get((low, high))
    if opcode is not None:
        out = ctx.output(node.outputs[0], perm)
        ctx.add(opcode, [x], [out])
        return
    current = x
    shape = ctx.graph.tensors[x].shape
    dtype = ctx.dtype(name)
    steps = [("MINIMUM", high), ("MAXIMUM", low)]
    steps = [(op, v) for op, v in steps if np.isfinite(v)]
    if not steps:
        ctx.alias(node.outputs[0], x, perm)
        return
    for i, (opcode, bound) in enumerate(steps):
        last = i == len(steps) - 1
        target = (
            ctx.output(node.outputs[0], perm)
            if last
            else ctx.temp(f"{node.outputs[0]}/clip_high", shape, dtype)
        )
        ctx.add(opcode, [current, ctx.constant("bound", np.asarray([bound], dtype))], [target])
        current = target


@register("LeakyRelu")
def lower_leaky_relu(ctx: Lowering, node: Node) -> None:
    """LeakyRelu → LEAKY_RELU."""
    name = node.inputs[0]
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], perm)
    ctx.add("LEAKY_RELU", [x], [out], {"alpha": float(node.attr("alpha", 0.01))})


@register("PRelu")
def lower_prelu(ctx: Lowering, node: Node) -> None:
    """PRelu → PRELU with the slope broadcast and laid out like the input."""
    name, slope = node.inputs
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    alpha = ctx.broadcast_tensor(slope, len(perm), perm)
    out = ctx.output(node.outputs[0], perm)
    ctx.add("PRELU", [x, alpha], [out])


@register("HardSigmoid")
def lower_hard_sigmoid(ctx: Lowering, node: Node) -> None:
    """HardSigmoid: ``max(0, min(1, alpha * x + beta))`` → MUL, ADD, MINIMUM, MAXIMUM."""
    alpha = float(node.attr("alpha", 0.2))
    beta = float(node.attr("beta", 0.5))
    name = node.inputs[0]
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    shape = ctx.graph.tensors[x].shape
    dtype = ctx.dtype(name)
    scaled = ctx.temp(f"{node.outputs[0]}/scaled", shape, dtype)
    ctx.add(
        "MUL",
        [x, ctx.constant("alpha", np.asarray([alpha], dtype))],
        [scaled],
        {"fusedActivationFunction": "NONE"},
    )
    shifted = ctx.temp(f"{node.outputs[0]}/shifted", shape, dtype)
    ctx.add(
        "ADD",
        [scaled, ctx.constant("beta", np.asarray([beta], dtype))],
        [shifted],
        {"fusedActivationFunction": "NONE"},
    )
    high = ctx.temp(f"{node.outputs[0]}/clip_high", shape, dtype)
    ctx.add("MINIMUM", [shifted, ctx.constant("one", np.asarray([1.0], dtype))], [high])
    out = ctx.output(node.outputs[0], perm)
    ctx.add("MAXIMUM", [high, ctx.constant("zero", np.asarray([0.0], dtype))], [out])


@register("Softmax")
def lower_softmax(ctx: Lowering, node: Node) -> None:
    """Softmax → SOFTMAX on the last TFLite axis (the layout moves the axis there).

    Before opset 13 Softmax normalises over all axes from ``axis`` on (coerced to 2-D);
    that is lowered with RESHAPEs around SOFTMAX.
    """
    name = node.inputs[0]
    rank = ctx.rank(name)
    default_axis = -1 if ctx.source.opset >= 13 else 1
    axis = int(node.attr("axis", default_axis))
    axis = axis + rank if axis < 0 else axis
    if ctx.source.opset < 13 and axis != rank - 1:
        shape = ctx.shape(name)
        flat = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
        x = ctx.tensor(name, layout.identity(rank))
        reshaped = ctx.temp(f"{name}/2d", flat, ctx.dtype(name))
        ctx.add("RESHAPE", [x, ctx.int32("shape", flat)], [reshaped], {"newShape": list(flat)})
        soft = ctx.temp(f"{node.outputs[0]}/2d", flat, ctx.dtype(name))
        ctx.add("SOFTMAX", [reshaped], [soft], {"beta": 1.0})
        out = ctx.output(node.outputs[0])
        ctx.add("RESHAPE", [soft, ctx.int32("shape", shape)], [out], {"newShape": list(shape)})
        return
    perm = ctx.perm(name)
    if perm[-1] != axis:
        perm = (*tuple(a for a in perm if a != axis), axis)
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], perm)
    ctx.add("SOFTMAX", [x], [out], {"beta": 1.0})


__all__ = [
    "lower_clip",
    "lower_hard_sigmoid",
    "lower_leaky_relu",
    "lower_prelu",
    "lower_simple",
    "lower_softmax",
]
