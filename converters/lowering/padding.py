"""ONNX pads versus TFLite SAME/VALID, shared by convolutions and pools.

TFLite knows two paddings (``tensorflow/lite/kernels/padding.h``): VALID (none) and SAME,
which pads ``total = max((ceil(in / s) - 1) * s + (k - 1) * d + 1 - in, 0)`` with
``total // 2`` before and the rest after. ONNX pads are explicit (or ``auto_pad``); when they
are not one of those two, the lowering pads explicitly with a PAD/PADV2 operator and runs
the op VALID.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edgeops.converters.lowering.context import Lowering
from edgeops.converters.onnx_import import Node


def same_pads(in_size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite SAME padding (before, after) along one spatial axis."""
    out = math.ceil(in_size / stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - in_size, 0)
    return total // 2, total - total // 2


def _same_total(in_size: int, kernel: int, stride: int, dilation: int) -> int:
    """The SAME padding total before TFLite clamps it at 0 (may be negative)."""
    out = math.ceil(in_size / stride)
    return (out - 1) * stride + (kernel - 1) * dilation + 1 - in_size


def onnx_pads(
    ctx: Lowering,
    node: Node,
    *,
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
) -> list[tuple[int, int]]:
    """The (before, after) pads per spatial axis that the ONNX node asks for."""
    auto_pad = node.attr("auto_pad", "NOTSET")
    rank = len(spatial)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        result = []
        for i in range(rank):
            before, after = same_pads(spatial[i], kernel[i], strides[i], dilations[i])
            result.append((before, after) if auto_pad == "SAME_UPPER" else (after, before))
        return result
    if auto_pad == "VALID":
        return [(0, 0)] * rank
    if auto_pad != "NOTSET":
        ctx.unsupported(f"auto_pad={auto_pad}")
    pads = list(node.attr("pads", [0] * (2 * rank)))
    return [(int(pads[i]), int(pads[i + rank])) for i in range(rank)]


def pad_nhwc(
    ctx: Lowering,
    tensor: str,
    pads: Sequence[tuple[int, int]],
    value: float = 0.0,
) -> str:
    """Explicitly pad the spatial axes of an NHWC tensor (PAD for zeros, else PADV2)."""
    src = ctx.graph.tensors[tensor]
    rank = len(src.shape)
    full = [(0, 0)] + [tuple(p) for p in pads] + [(0, 0)] * (rank - 1 - len(pads))
    shape = [d + b + a for d, (b, a) in zip(src.shape, full, strict=True)]
    out = ctx.temp(f"{tensor}/padded", shape, src.dtype)
    paddings = ctx.int32("paddings", np.asarray(full, dtype=np.int32))
    if value == 0.0:
        ctx.add("PAD", [tensor, paddings], [out])
    else:
        fill = ctx.constant("pad_value", np.asarray(value, dtype=src.dtype))
        ctx.add("PADV2", [tensor, paddings, fill], [out])
    return out


def choose_padding(
    ctx: Lowering,
    tensor: str,
    *,
    spatial: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[tuple[int, int]],
    pad_value: float = 0.0,
    same_allowed: bool = True,
    convolution: bool = False,
) -> tuple[str, str]:
    """Return ``(input tensor, "SAME" | "VALID")`` realising ``pads`` exactly.

    ``convolution``: tflite-runtime 2.14's XNNPACK delegate computes CONV_2D and
    DEPTHWISE_CONV_2D wrongly under SAME when an axis's unclamped SAME total,
    ``(ceil(in / s) − 1) · s + k_eff − in``, is negative (a stride larger than the kernel;
    measured: 52 of 480 geometries off by up to 60 %, LiteRT and the reference kernels
    right). Such convolutions get an explicit PAD and VALID, which give the same result.
    """
    if all(b == 0 and a == 0 for b, a in pads):
        return tensor, "VALID"
    same = [same_pads(spatial[i], kernel[i], strides[i], dilations[i]) for i in range(len(spatial))]
    if convolution and any(
        _same_total(spatial[i], kernel[i], strides[i], dilations[i]) < 0
        for i in range(len(spatial))
    ):
        same_allowed = False
    if same_allowed and [tuple(p) for p in pads] == same:
        return tensor, "SAME"
    if any(b < 0 or a < 0 for b, a in pads):
        ctx.unsupported(f"negative pads {list(pads)}")
    return pad_nhwc(ctx, tensor, pads, pad_value), "VALID"


__all__ = ["choose_padding", "onnx_pads", "pad_nhwc", "same_pads"]
