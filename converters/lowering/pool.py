"""MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.

Border rules (ONNX MaxPool/AveragePool, opset 19):

* ``ceil_mode`` adds windows at the end: the output size is ``ceil((in + pads - k) / s) + 1``
  (a window that would start in the end padding is dropped, as onnxruntime does); the
  lowering pads the end so that a VALID pool gives that size.
* MaxPool pads with -inf, which is what TFLite SAME does, or an explicit PADV2 with the
  lowest float.
* AveragePool divides by the number of elements counted: ``count_include_pad=0`` counts
  only real elements (TFLite SAME does the same), ``count_include_pad=1`` counts the pads
  but not the extra ``ceil_mode`` cells. When TFLite's own rule differs, the pool runs VALID
  on zero-padded input and a constant per-position MUL corrects the divisor.
"""

from __future__ import annotations

import math

import numpy as np

from edgeops.converters import layout
from edgeops.converters.lowering.context import Lowering, register
from edgeops.converters.lowering.conv import as_nhwc_2d, finish_nhwc_2d
from edgeops.converters.lowering.padding import choose_padding, onnx_pads, pad_nhwc, same_pads
from edgeops.converters.onnx_import import Node

_LOWEST = float(np.finfo(np.float32).min)


def _out_size(size: int, *, k: int, s: int, d: int, before: int, after: int, ceil: bool) -> int:
    effective = (k - 1) * d + 1
    span = size + before + after - effective
    out = (math.ceil(span / s) if ceil else span // s) + 1
    if ceil and (out - 1) * s >= size + before:
        out -= 1  # the last window would start inside the end padding
    return out


def _pool_geometry(
    ctx: Lowering, node: Node
) -> tuple[list[int], list[int], list[int], list[tuple[int, int]], list[tuple[int, int]]]:
    """Kernel, strides, dilations, ONNX pads and the pads a VALID pool needs (ceil_mode)."""
    shape = ctx.shape(node.inputs[0])
    if len(shape) not in (3, 4):
        ctx.unsupported(f"only 1-D and 2-D pooling is lowered, got rank {len(shape)}")
    dims = len(shape) - 2
    kernel = [int(k) for k in node.require("kernel_shape")]
    strides = [int(s) for s in node.attr("strides", [1] * dims)]
    dilations = [int(d) for d in node.attr("dilations", [1] * dims)]
    if any(d != 1 for d in dilations):
        ctx.unsupported("dilated pooling")
    spatial = list(shape[2:])
    pads = onnx_pads(
        ctx, node, spatial=spatial, kernel=kernel, strides=strides, dilations=dilations
    )
    if dims == 1:
        # 1-D pooling runs as 2-D over a unit height (see conv.as_nhwc_2d).
        kernel, strides, dilations = [1, *kernel], [1, *strides], [1, *dilations]
        spatial, pads = [1, *spatial], [(0, 0), *pads]
    ceil = bool(node.attr("ceil_mode", 0))
    valid_pads = []
    for i in range(2):
        before, after = pads[i]
        out = _out_size(
            spatial[i], k=kernel[i], s=strides[i], d=1, before=before, after=after, ceil=ceil
        )
        needed_after = (out - 1) * strides[i] + kernel[i] - spatial[i] - before
        valid_pads.append((before, max(needed_after, 0)))
    expected = list(ctx.shape(node.outputs[0])[2:])
    if dims == 1:
        expected = [1, *expected]
    produced = [(spatial[i] + sum(valid_pads[i]) - kernel[i]) // strides[i] + 1 for i in range(2)]
    if produced != expected:
        ctx.unsupported(
            f"a ceil_mode window starts past the input: ONNX shape inference gives "
            f"{expected} outputs, onnxruntime and the converter {produced}"
        )
    return kernel, strides, dilations, pads, valid_pads


@register("MaxPool")
def lower_max_pool(ctx: Lowering, node: Node) -> None:
    """MaxPool → MAX_POOL_2D (SAME, VALID, or VALID after a -inf PADV2)."""
    if len(node.outputs) > 1 and node.outputs[1]:
        ctx.unsupported("the Indices output")
    if int(node.attr("storage_order", 0)) != 0:
        ctx.unsupported("storage_order=1")
    kernel, strides, dilations, _, valid_pads = _pool_geometry(ctx, node)
    x, in_shape, one_d = as_nhwc_2d(ctx, node)
    spatial = list(in_shape[2:])
    x, padding = choose_padding(
        ctx,
        x,
        spatial=spatial,
        kernel=kernel,
        strides=strides,
        dilations=dilations,
        pads=valid_pads,
        pad_value=_LOWEST,
    )
    result = ctx.temp(node.outputs[0], _out_nhwc(ctx, node, one_d), ctx.dtype(node.inputs[0]))
    ctx.add("MAX_POOL_2D", [x], [result], _options(kernel, strides, padding))
    finish_nhwc_2d(ctx, node, result, one_d)


def _out_nhwc(ctx: Lowering, node: Node, one_d: bool) -> tuple[int, ...]:
    shape = ctx.shape(node.outputs[0])
    if one_d:
        return (shape[0], 1, shape[2], shape[1])
    return layout.tflite_shape(shape, layout.NHWC)


def _options(kernel: list[int], strides: list[int], padding: str) -> dict[str, object]:
    return {
        "padding": padding,
        "strideH": strides[0],
        "strideW": strides[1],
        "filterHeight": kernel[0],
        "filterWidth": kernel[1],
        "fusedActivationFunction": "NONE",
    }


@register("AveragePool")
def lower_average_pool(ctx: Lowering, node: Node) -> None:
    """AveragePool → AVERAGE_POOL_2D, with a divisor correction where TFLite's differs."""
    kernel, strides, _, pads, valid_pads = _pool_geometry(ctx, node)
    include_pad = bool(node.attr("count_include_pad", 0))
    x, in_shape, one_d = as_nhwc_2d(ctx, node)
    spatial = list(in_shape[2:])
    out = ctx.temp(node.outputs[0], _out_nhwc(ctx, node, one_d), ctx.dtype(node.inputs[0]))
    same = [same_pads(spatial[i], kernel[i], strides[i], 1) for i in range(2)]
    no_pads = all(b == 0 and a == 0 for b, a in valid_pads)
    if no_pads or (not include_pad and [tuple(p) for p in valid_pads] == same):
        padding = "VALID" if no_pads else "SAME"
        ctx.add("AVERAGE_POOL_2D", [x], [out], _options(kernel, strides, padding))
        finish_nhwc_2d(ctx, node, out, one_d)
        return
    # VALID pool over zero-padded input divides by the full kernel area; rescale each
    # output position to ONNX's divisor.
    padded = pad_nhwc(ctx, x, valid_pads)
    pooled = ctx.temp(f"{node.outputs[0]}/sum_over_area", ctx.graph.tensors[out].shape, np.float32)
    ctx.add("AVERAGE_POOL_2D", [padded], [pooled], _options(kernel, strides, "VALID"))
    out_hw = ctx.graph.tensors[out].shape[1:3]
    divisors = []
    for axis in range(2):
        before, after = pads[axis]
        low, high = (-before, spatial[axis] + after) if include_pad else (0, spatial[axis])
        counts = []
        for o in range(out_hw[axis]):
            start = o * strides[axis] - valid_pads[axis][0]
            end = start + kernel[axis]
            counts.append(max(min(end, high) - max(start, low), 1))
        divisors.append(np.asarray(counts, dtype=np.float64))
    area = kernel[0] * kernel[1]
    scale = area / np.outer(divisors[0], divisors[1])
    factor = ctx.constant(f"{node.name}/divisor", scale.reshape(1, *out_hw, 1))
    ctx.add("MUL", [pooled, factor], [out], {"fusedActivationFunction": "NONE"})
    finish_nhwc_2d(ctx, node, out, one_d)


@register("GlobalAveragePool", "GlobalMaxPool")
def lower_global_pool(ctx: Lowering, node: Node) -> None:
    """GlobalAveragePool → MEAN, GlobalMaxPool → REDUCE_MAX over the spatial axes."""
    name = node.inputs[0]
    rank = ctx.rank(name)
    perm = ctx.perm(name)
    x = ctx.tensor(name, perm)
    axes = [layout.tflite_axis(a, perm) for a in range(2, rank)]
    out = ctx.output(node.outputs[0], perm)
    opcode = "MEAN" if node.op_type == "GlobalAveragePool" else "REDUCE_MAX"
    ctx.add(opcode, [x, ctx.int32("axes", sorted(axes))], [out], {"keepDims": True})


__all__ = ["lower_average_pool", "lower_global_pool", "lower_max_pool"]
