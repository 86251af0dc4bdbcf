"""Gemm and MatMul: FULLY_CONNECTED when the weight is a constant matrix, else BATCH_MATMUL.

FULLY_CONNECTED computes ``y = x · Wᵀ + b`` over the last axis with weights stored
``(out, in)``; ``keepNumDims`` keeps the leading axes of a rank > 2 input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from edgeops.converters import layout
from edgeops.converters.lowering.context import Lowering, register
from edgeops.converters.onnx_import import Node
from edgeops.errors import ConversionError


def _fully_connected(
    ctx: Lowering,
    node: Node,
    x_name: str,
    weight_out_in: npt.NDArray[Any],
    bias: npt.NDArray[Any] | None,
) -> None:
    features = ctx.shape(x_name)[-1] if ctx.rank(x_name) else 0
    if weight_out_in.ndim != 2 or weight_out_in.shape[1] != features:
        # Found by fuzzing: a weight for another input width indexed out of range.
        raise ConversionError(
            f"{node.op_type} node {node.name!r}: expected a weight taking {features} "
            f"features, got shape {list(weight_out_in.shape)} (out, in)"
        )
    order = ctx.feature_order.get(x_name)
    if order is not None:
        # The input's columns are ONNX features order[j]; permute the weights the same way.
        weight_out_in = weight_out_in[:, order]
    rank = ctx.rank(x_name)
    perm = ctx.perm(x_name)
    # FC reduces the last TFLite axis; the ONNX last axis must sit there.
    if perm[-1] != rank - 1:
        perm = layout.identity(rank)
    x = ctx.tensor(x_name, perm)
    weights = ctx.constant(f"{node.name}/weights", weight_out_in.astype(np.float32))
    units = weight_out_in.shape[0]
    b = ctx.constant(
        f"{node.name}/bias",
        np.zeros(units, np.float32) if bias is None else bias.astype(np.float32),
    )
    out_perm = perm if rank > 1 else layout.identity(1)
    out = ctx.output(node.outputs[0], out_perm)
    ctx.add(
        "FULLY_CONNECTED",
        [x, weights, b],
        [out],
        {"fusedActivationFunction": "NONE", "keepNumDims": rank > 2},
    )


@register("Gemm")
def lower_gemm(ctx: Lowering, node: Node) -> None:
    """Gemm ``alpha·A'·B' + beta·C`` → FULLY_CONNECTED (B constant) or BATCH_MATMUL."""
    a, b_name = node.inputs[0], node.inputs[1]
    c_name = node.inputs[2] if len(node.inputs) > 2 else ""
    alpha = float(node.attr("alpha", 1.0))
    beta = float(node.attr("beta", 1.0))
    if int(node.attr("transA", 0)):
        ctx.unsupported("transA=1")
    weight = ctx.const(b_name)
    c = ctx.const(c_name) if c_name else None
    if weight is None or (c_name and c is None):
        _gemm_general(ctx, node, alpha=alpha, beta=beta)
        return
    w = weight.astype(np.float64)
    w = w if int(node.attr("transB", 0)) else w.T  # → (out, in)
    units = w.shape[0]
    bias = None
    if c is not None:
        if c.size not in (1, units) or (c.ndim == 2 and c.shape[0] != 1):
            ctx.unsupported(f"C of shape {c.shape} (a per-row bias)")
        bias = np.broadcast_to(c.astype(np.float64).reshape(-1), (units,)) * beta
    _fully_connected(ctx, node, a, w * alpha, bias)


def _gemm_general(ctx: Lowering, node: Node, *, alpha: float, beta: float) -> None:
    """Gemm with a non-constant B or C: BATCH_MATMUL (``adjY`` for transB), MUL, ADD."""
    a, b_name = node.inputs[0], node.inputs[1]
    c_name = node.inputs[2] if len(node.inputs) > 2 else ""
    out_name = node.outputs[0]
    shape = ctx.shape(out_name)
    dtype = ctx.dtype(out_name)
    x = ctx.tensor(a, layout.identity(2))
    y = ctx.tensor(b_name, layout.identity(2))
    has_c = bool(c_name)
    product = (
        ctx.output(out_name)
        if alpha == 1.0 and not has_c
        else ctx.temp(f"{out_name}/product", shape, dtype)
    )
    ctx.add(
        "BATCH_MATMUL",
        [x, y],
        [product],
        {"adjX": False, "adjY": bool(int(node.attr("transB", 0)))},
    )
    current = product
    if alpha != 1.0:
        scaled = ctx.output(out_name) if not has_c else ctx.temp(f"{out_name}/scaled", shape, dtype)
        ctx.add(
            "MUL",
            [current, ctx.constant("alpha", np.full((1, 1), alpha, dtype))],
            [scaled],
            {"fusedActivationFunction": "NONE"},
        )
        current = scaled
    if has_c:
        c_const = ctx.const(c_name)
        if c_const is not None:
            try:
                c_values = np.broadcast_to(c_const.astype(np.float64) * beta, shape)
            except ValueError as exc:  # found by fuzzing: a C that does not broadcast
                raise ConversionError(
                    f"Gemm node {node.name!r}: C of shape {list(c_const.shape)} does not "
                    f"broadcast to the output shape {list(shape)}"
                ) from exc
            c_tensor = ctx.constant(f"{node.name}/c", c_values.astype(dtype))
        else:
            if beta != 1.0:
                ctx.unsupported("a non-constant C with beta != 1")
            c_tensor = ctx.broadcast_tensor(c_name, 2, layout.identity(2))
        out = ctx.output(out_name)
        ctx.add("ADD", [current, c_tensor], [out], {"fusedActivationFunction": "NONE"})


@register("MatMul")
def lower_matmul(ctx: Lowering, node: Node) -> None:
    """MatMul → FULLY_CONNECTED for a constant 2-D right operand, else BATCH_MATMUL."""
    a, b = node.inputs
    weight = ctx.const(b)
    if weight is not None and weight.ndim == 2 and ctx.const(a) is None and ctx.rank(a) >= 2:
        _fully_connected(ctx, node, a, weight.astype(np.float64).T, None)
        return
    rank_a, rank_b = ctx.rank(a), ctx.rank(b)
    if rank_a < 2 or rank_b < 2:
        ctx.unsupported("1-D operands of a non-constant MatMul")
    rank = ctx.rank(node.outputs[0])
    x = ctx.broadcast_tensor(a, rank, layout.identity(rank))
    y = ctx.broadcast_tensor(b, rank, layout.identity(rank))
    out = ctx.output(node.outputs[0])
    ctx.add("BATCH_MATMUL", [x, y], [out], {"adjX": False, "adjY": False})


__all__ = ["lower_gemm", "lower_matmul"]
