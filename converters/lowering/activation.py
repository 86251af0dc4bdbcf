"""Activations: Relu, Clip, LeakyRelu, PRelu, Sigmoid, HardSigmoid, HardSwish, Tanh, Elu,
Selu, Softplus, Mish, Gelu, Softmax, LogSoftmax.

All are layout-indifferent except (Log)Softmax, whose TFLite kernel works on the last axis.
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


def _exponential_linear(ctx: Lowering, node: Node, alpha: float, gamma: float) -> None:
    """``gamma · (x if x > 0 else alpha · (exp(x) − 1))``: ELU when both are 1, else
    RELU, MINIMUM, EXP and arithmetic (Elu with alpha ≠ 1, Selu)."""
    name = node.inputs[0]
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    if alpha == 1.0 and gamma == 1.0:
        out = ctx.output(node.outputs[0], perm)
        ctx.add("ELU", [x], [out])
        return
    shape = ctx.graph.tensors[x].shape
    dtype = ctx.dtype(name)
    ones = (1,) * len(perm)

    def temp(hint: str) -> str:
        return ctx.temp(f"{node.outputs[0]}/{hint}", shape, dtype)

    positive, negative, exp, scaled = temp("positive"), temp("negative"), temp("exp"), temp("neg")
    ctx.add("RELU", [x], [positive])
    ctx.add("MINIMUM", [x, ctx.constant("zero", np.zeros(ones, dtype))], [negative])
    ctx.add("EXP", [negative], [exp])
    # alpha·gamma·exp(min(x,0)) − alpha·gamma is the negative branch (0 for x > 0).
    ctx.add(
        "MUL",
        [exp, ctx.constant("alpha", np.full(ones, alpha * gamma, dtype))],
        [scaled],
        {"fusedActivationFunction": "NONE"},
    )
    shifted = temp("shifted")
    ctx.add(
        "SUB",
        [scaled, ctx.constant("alpha", np.full(ones, alpha * gamma, dtype))],
        [shifted],
        {"fusedActivationFunction": "NONE"},
    )
    if gamma != 1.0:
        grown = temp("positive_scaled")
        ctx.add(
            "MUL",
            [positive, ctx.constant("gamma", np.full(ones, gamma, dtype))],
            [grown],
            {"fusedActivationFunction": "NONE"},
        )
        positive = grown
    out = ctx.output(node.outputs[0], perm)
    ctx.add("ADD", [positive, shifted], [out], {"fusedActivationFunction": "NONE"})


@register("Elu")
def lower_elu(ctx: Lowering, node: Node) -> None:
    """Elu → ELU (alpha 1) or its decomposition."""
    _exponential_linear(ctx, node, float(node.attr("alpha", 1.0)), 1.0)


@register("Selu")
def lower_selu(ctx: Lowering, node: Node) -> None:
    """Selu (ONNX defaults alpha 1.67326, gamma 1.0507) → the ELU decomposition."""
    alpha = float(node.attr("alpha", 1.67326319217681884765625))
    gamma = float(node.attr("gamma", 1.05070102214813232421875))
    _exponential_linear(ctx, node, alpha, gamma)


@register("Softplus", "Mish")
def lower_softplus(ctx: Lowering, node: Node) -> None:
    """Softplus ``log(1 + exp(x))`` as ``relu(x) + log(1 + exp(−|x|))`` (no overflow);
    Mish ``x · tanh(softplus(x))`` adds TANH and MUL."""
    name = node.inputs[0]
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    shape = ctx.graph.tensors[x].shape
    dtype = ctx.dtype(name)
    ones = (1,) * len(perm)
    steps = ["abs", "neg", "exp", "plus_one", "log", "relu"]
    t = {k: ctx.temp(f"{node.outputs[0]}/{k}", shape, dtype) for k in steps}
    ctx.add("ABS", [x], [t["abs"]])
    ctx.add("NEG", [t["abs"]], [t["neg"]])
    ctx.add("EXP", [t["neg"]], [t["exp"]])
    ctx.add(
        "ADD",
        [t["exp"], ctx.constant("one", np.ones(ones, dtype))],
        [t["plus_one"]],
        {"fusedActivationFunction": "NONE"},
    )
    ctx.add("LOG", [t["plus_one"]], [t["log"]])
    ctx.add("RELU", [x], [t["relu"]])
    if node.op_type == "Softplus":
        out = ctx.output(node.outputs[0], perm)
        ctx.add("ADD", [t["relu"], t["log"]], [out], {"fusedActivationFunction": "NONE"})
        return
    softplus = ctx.temp(f"{node.outputs[0]}/softplus", shape, dtype)
    ctx.add("ADD", [t["relu"], t["log"]], [softplus], {"fusedActivationFunction": "NONE"})
    squashed = ctx.temp(f"{node.outputs[0]}/tanh", shape, dtype)
    ctx.add("TANH", [softplus], [squashed])
    out = ctx.output(node.outputs[0], perm)
    ctx.add("MUL", [x, squashed], [out], {"fusedActivationFunction": "NONE"})


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
    """PRelu → PRELU when the slope varies only along the last TFLite axis, else
    ``RELU(x) + slope · MINIMUM(x, 0)`` (XNNPACK's PRELU takes per-last-axis slopes only).

    Before opset 7 a 1-D slope of the channel count applies along axis 1 (PRelu-6).
    """
    name, slope_name = node.inputs
    perm = ctx.perm(name)
    rank = len(perm)
    x = ctx.tensor(name, perm)
    slope = ctx.const(slope_name)
    shape = ctx.shape(name)
    legacy = slope is not None and ctx.source.opset < 7 and slope.ndim == 1 and rank > 2
    if legacy and slope is not None and slope.size == shape[1]:
        slope = slope.reshape((shape[1],) + (1,) * (rank - 2))
    if slope is None:
        alpha = ctx.broadcast_tensor(slope_name, rank, perm)
        alpha_shape = ctx.graph.tensors[alpha].shape
    else:
        full = slope.reshape((1,) * (rank - slope.ndim) + slope.shape).astype(np.float32)
        held = np.transpose(full, perm)
        if all(d == 1 for d in held.shape[:-1]):
            # One slope per channel spelled out: tflite-runtime 2.14's XNNPACK PRELU reads
            # a 1-element slope as if it had one value per channel (wrong results).
            held = np.broadcast_to(held, (1,) * (rank - 1) + (ctx.graph.tensors[x].shape[-1],))
        alpha_shape = held.shape
        alpha = ctx.constant(f"{node.name}/slope", held)
    out = ctx.output(node.outputs[0], perm)
    if all(d == 1 for d in alpha_shape[:-1]):
        ctx.add("PRELU", [x, alpha], [out])
        return
    x_shape = ctx.graph.tensors[x].shape
    dtype = ctx.dtype(name)
    positive = ctx.temp(f"{node.outputs[0]}/positive", x_shape, dtype)
    ctx.add("RELU", [x], [positive])
    negative = ctx.temp(f"{node.outputs[0]}/negative", x_shape, dtype)
    ctx.add("MINIMUM", [x, ctx.constant("zero", np.zeros((1,) * rank, dtype))], [negative])
    scaled = ctx.temp(f"{node.outputs[0]}/scaled", x_shape, dtype)
    ctx.add("MUL", [negative, alpha], [scaled], {"fusedActivationFunction": "NONE"})
    ctx.add("ADD", [positive, scaled], [out], {"fusedActivationFunction": "NONE"})


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


@register("Softmax", "LogSoftmax")
def lower_softmax(ctx: Lowering, node: Node) -> None:
    """Softmax/LogSoftmax → SOFTMAX/LOG_SOFTMAX on the last TFLite axis (the layout moves
    the axis there).

    Before opset 13 Softmax normalises over all axes from ``axis`` on (coerced to 2-D);
    that is lowered with RESHAPEs around SOFTMAX.
    """
    name = node.inputs[0]
    rank = ctx.rank(name)
    opcode = "SOFTMAX" if node.op_type == "Softmax" else "LOG_SOFTMAX"
    options: dict[str, float] = {"beta": 1.0} if opcode == "SOFTMAX" else {}
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
        ctx.add(opcode, [reshaped], [soft], options)
        out = ctx.output(node.outputs[0])
        ctx.add("RESHAPE", [soft, ctx.int32("shape", shape)], [out], {"newShape": list(shape)})
        return
    perm = ctx.perm(name)
    if perm[-1] != axis:
        perm = (*tuple(a for a in perm if a != axis), axis)
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], perm)
    ctx.add(opcode, [x], [out], options)


__all__ = [
    "lower_clip",
    "lower_hard_sigmoid",
    "lower_leaky_relu",
    "lower_prelu",
    "lower_simple",
    "lower_softmax",
]
