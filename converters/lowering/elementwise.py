"""Element-wise arithmetic: Add, Sub, Mul, Div, Max, Min, Pow, Sqrt and unary math.

These ops do not care about layout: the output takes the layout of the first non-constant
input of full rank and the other inputs are brought to it (constants in numpy, following
ONNX multidirectional broadcasting: shapes align on the right).
"""

from __future__ import annotations

import numpy as np

from edgeops.converters import layout
from edgeops.converters.layout import Perm
from edgeops.converters.lowering.context import Lowering, register
from edgeops.converters.onnx_import import Node

_BINARY = {
    "Add": "ADD",
    "Sub": "SUB",
    "Mul": "MUL",
    "Div": "DIV",
    "Max": "MAXIMUM",
    "Min": "MINIMUM",
}
_FUSABLE = {"ADD", "SUB", "MUL", "DIV"}
_UNARY = {
    "Sqrt": "SQRT",
    "Exp": "EXP",
    "Log": "LOG",
    "Neg": "NEG",
    "Abs": "ABS",
    "Floor": "FLOOR",
    "Ceil": "CEIL",
    "Sin": "SIN",
    "Cos": "COS",
}


def output_perm(ctx: Lowering, node: Node) -> Perm:
    """The layout an element-wise node computes in (see the module docstring)."""
    rank = ctx.rank(node.outputs[0])
    for name in node.inputs:
        if name and ctx.const(name) is None and ctx.rank(name) == rank:
            return ctx.perm(name)
    return layout.identity(rank)


def binary(ctx: Lowering, node: Node, opcode: str, a: str, b: str) -> None:
    """Emit ``opcode(a, b)`` for ONNX values ``a`` and ``b`` into the node's output."""
    perm = output_perm(ctx, node)
    rank = len(perm)
    options = {"fusedActivationFunction": "NONE"} if opcode in _FUSABLE else {}
    divisor = ctx.const(b)
    if opcode == "DIV" and divisor is not None and divisor.dtype.kind == "f":
        # x / c == x * (1/c) up to one rounding; MUL is faster and quantizes better.
        reciprocal = (1.0 / divisor.astype(np.float64)).astype(divisor.dtype)
        ctx.source.constants[f"{b}/reciprocal"] = reciprocal
        b, opcode = f"{b}/reciprocal", "MUL"
    inputs = [ctx.broadcast_tensor(name, rank, perm) for name in (a, b)]
    out = ctx.output(node.outputs[0], perm)
    ctx.add(opcode, inputs, [out], options)


@register(*_BINARY)
def lower_binary(ctx: Lowering, node: Node) -> None:
    """Add/Sub/Mul/Div/Max/Min → ADD/SUB/MUL/DIV/MAXIMUM/MINIMUM (Max/Min: 2 inputs)."""
    if len(node.inputs) != 2:
        if node.op_type in ("Max", "Min") and len(node.inputs) == 1:
            ctx.alias(node.outputs[0], ctx.tensor(node.inputs[0]), ctx.perm(node.inputs[0]))
            return
        ctx.unsupported(f"{len(node.inputs)} inputs (2 are lowered)")
    binary(ctx, node, _BINARY[node.op_type], node.inputs[0], node.inputs[1])


_COMPARE = {
    "Equal": "EQUAL",
    "Greater": "GREATER",
    "Less": "LESS",
    "GreaterOrEqual": "GREATER_EQUAL",
    "LessOrEqual": "LESS_EQUAL",
    "And": "LOGICAL_AND",
    "Or": "LOGICAL_OR",
}


@register(*_COMPARE)
def lower_compare(ctx: Lowering, node: Node) -> None:
    """Comparisons and logical And/Or → the TFLite op of the same meaning (bool output)."""
    binary(ctx, node, _COMPARE[node.op_type], node.inputs[0], node.inputs[1])


@register("Not")
def lower_not(ctx: Lowering, node: Node) -> None:
    """Not → LOGICAL_NOT."""
    name = node.inputs[0]
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], perm)
    ctx.add("LOGICAL_NOT", [x], [out])


@register("Where")
def lower_where(ctx: Lowering, node: Node) -> None:
    """Where(cond, a, b) → SELECT_V2 (broadcasting), in the layout of the first activation."""
    perm = output_perm(ctx, node)
    rank = len(perm)
    inputs = [ctx.broadcast_tensor(name, rank, perm) for name in node.inputs]
    out = ctx.output(node.outputs[0], perm)
    ctx.add("SELECT_V2", inputs, [out])


@register("Sum", "Mean")
def lower_sum_mean(ctx: Lowering, node: Node) -> None:
    """Variadic Sum/Mean → a chain of ADDs (Mean: then MUL by 1/n)."""
    names = [n for n in node.inputs if n]
    perm = output_perm(ctx, node)
    rank = len(perm)
    out_shape = layout.tflite_shape(ctx.shape(node.outputs[0]), perm)
    dtype = ctx.dtype(node.outputs[0])
    if len(names) == 1 and node.op_type == "Sum":
        ctx.alias(node.outputs[0], ctx.tensor(names[0]), ctx.perm(names[0]))
        return
    current = ctx.broadcast_tensor(names[0], rank, perm)
    steps = len(names) - 1 + (1 if node.op_type == "Mean" else 0)
    for index, name in enumerate(names[1:], start=1):
        last = index == steps
        target = (
            ctx.output(node.outputs[0], perm)
            if last
            else ctx.temp(f"{node.outputs[0]}/partial{index}", out_shape, dtype)
        )
        ctx.add(
            "ADD",
            [current, ctx.broadcast_tensor(name, rank, perm)],
            [target],
            {"fusedActivationFunction": "NONE"},
        )
        current = target
    if node.op_type == "Mean":
        out = ctx.output(node.outputs[0], perm)
        ctx.add(
            "MUL",
            [current, ctx.constant("inv_count", np.asarray([1 / len(names)], dtype))],
            [out],
            {"fusedActivationFunction": "NONE"},
        )


@register("Reciprocal")
def lower_reciprocal(ctx: Lowering, node: Node) -> None:
    """Reciprocal → DIV(1, x)."""
    name = node.inputs[0]
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], perm)
    one = ctx.constant("one", np.ones((1,) * len(perm), ctx.dtype(name)))
    ctx.add("DIV", [one, x], [out], {"fusedActivationFunction": "NONE"})


@register(*_UNARY)
def lower_unary(ctx: Lowering, node: Node) -> None:
    """Sqrt, Exp, Log, Neg, Abs, Floor, Ceil, Sin, Cos → the TFLite op of the same name."""
    name = node.inputs[0]
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    out = ctx.output(node.outputs[0], perm)
    ctx.add(_UNARY[node.op_type], [x], [out])


@register("Pow")
def lower_pow(ctx: Lowering, node: Node) -> None:
    """Pow: exponent 2 → SQUARE (as MUL x x), 0.5 → SQRT, 1 → no op, else POW."""
    base, exponent_name = node.inputs
    exponent = ctx.const(exponent_name)
    perm = ctx.perm(base)
    if exponent is not None and exponent.size == 1 and ctx.rank(node.outputs[0]) == len(perm):
        value = float(exponent.reshape(()))
        x = ctx.tensor(base, perm)
        if value == 1.0:
            ctx.alias(node.outputs[0], x, perm)
            return
        if value in (2.0, 0.5, -0.5):
            out = ctx.output(node.outputs[0], perm)
            if value == 2.0:
                ctx.add("MUL", [x, x], [out], {"fusedActivationFunction": "NONE"})
            else:
                ctx.add("SQRT" if value == 0.5 else "RSQRT", [x], [out])
            return
    binary(ctx, node, "POW", base, exponent_name)


@register("BatchNormalization")
def lower_batchnorm(ctx: Lowering, node: Node) -> None:
    """A BatchNormalization left after folding → MUL + ADD with per-channel constants."""
    if any(node.outputs[1:]):
        ctx.unsupported("training-mode outputs")
    name = node.inputs[0]
    gamma, beta, mean, var = (
        ctx.require_const(n, "the statistics").astype(np.float64) for n in node.inputs[1:5]
    )
    eps = float(node.attr("epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    rank = ctx.rank(name)
    perm = ctx.perm(name)
    shape = [1] * rank
    shape[1] = scale.size
    x = ctx.tensor(name, perm)
    scaled = ctx.temp(f"{node.outputs[0]}/scaled", ctx.graph.tensors[x].shape, np.float32)
    s = ctx.constant(f"{node.name}/scale", np.transpose(scale.reshape(shape), perm))
    t = ctx.constant(f"{node.name}/shift", np.transpose(shift.reshape(shape), perm))
    ctx.add("MUL", [x, s], [scaled], {"fusedActivationFunction": "NONE"})
    out = ctx.output(node.outputs[0], perm)
    ctx.add("ADD", [scaled, t], [out], {"fusedActivationFunction": "NONE"})


__all__ = ["binary", "lower_batchnorm", "lower_binary", "lower_pow", "lower_unary", "output_perm"]
