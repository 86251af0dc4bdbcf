"""Conv (plain, depthwise, grouped; 1-D and 2-D) and ConvTranspose.

TFLite filters are OHWI for CONV_2D and TRANSPOSE_CONV and ``1 x H x W x (I*M)`` for
DEPTHWISE_CONV_2D; ONNX weights are ``O x I/group x kH x kW``. A grouped convolution that
is neither plain nor depthwise is one CONV_2D whose filter depth is ``I/group`` (CONV_2D
version 6, which LiteRT and tflite-runtime 2.14 both run, float and int8).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from edgeops.converters import layout
from edgeops.converters.lowering.context import Lowering, register
from edgeops.converters.lowering.padding import choose_padding, onnx_pads
from edgeops.converters.onnx_import import Node


def as_nhwc_2d(ctx: Lowering, node: Node) -> tuple[str, tuple[int, ...], bool]:
    """The input as an NHWC 4-D tensor; 1-D convs get a unit height."""
    x = node.inputs[0]
    shape = ctx.shape(x)
    if len(shape) == 4:
        return ctx.tensor(x, layout.NHWC), shape, False
    if len(shape) == 3:
        nlc = ctx.tensor(x, (0, 2, 1))
        n, c, length = shape
        out = ctx.temp(f"{x}/as_2d", (n, 1, length, c), ctx.dtype(x))
        ctx.add(
            "RESHAPE",
            [nlc, ctx.int32("shape", (n, 1, length, c))],
            [out],
            {"newShape": [n, 1, length, c]},
        )
        return out, (n, c, 1, length), True
    return ctx.unsupported(f"only 1-D and 2-D convolutions are lowered, got rank {len(shape)}")


def finish_nhwc_2d(ctx: Lowering, node: Node, result: str, one_d: bool) -> None:
    """Declare the node output from a 4-D NHWC result."""
    name = node.outputs[0]
    if not one_d:
        ctx.alias(name, result, layout.NHWC)
        ctx.graph.tensors[result].shape = layout.tflite_shape(ctx.shape(name), layout.NHWC)
        return
    out = ctx.output(name, (0, 2, 1))
    shape = list(ctx.graph.tensors[out].shape)
    ctx.add("RESHAPE", [result, ctx.int32("shape", shape)], [out], {"newShape": shape})


def _kernel_attrs(
    node: Node, kernel: tuple[int, ...], one_d: bool
) -> tuple[list[int], list[int], list[int]]:
    strides = list(node.attr("strides", [1] * (1 if one_d else 2)))
    dilations = list(node.attr("dilations", [1] * (1 if one_d else 2)))
    if one_d:
        strides, dilations = [1, *strides], [1, *dilations]
    return list(kernel), strides, dilations


@register("Conv")
def lower_conv(ctx: Lowering, node: Node) -> None:
    """Conv → CONV_2D (plain or grouped), DEPTHWISE_CONV_2D, or CONV_3D for 3-D."""
    weight = ctx.require_const(node.inputs[1], "the weight").astype(np.float32)
    if weight.ndim == 5:
        _lower_conv3d(ctx, node, weight)
        return
    if weight.ndim == 3:
        weight = weight[:, :, None, :]
    out_channels = weight.shape[0]
    bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
    bias = (
        ctx.require_const(bias_name, "the bias").astype(np.float32)
        if bias_name
        else np.zeros(out_channels, np.float32)
    )
    x, in_shape, one_d = as_nhwc_2d(ctx, node)
    group = int(node.attr("group", 1))
    in_channels = in_shape[1]
    kernel, strides, dilations = _kernel_attrs(node, weight.shape[2:], one_d)
    spatial = list(in_shape[2:])
    pads = onnx_pads(
        ctx,
        node,
        spatial=spatial[1:] if one_d else spatial,
        kernel=kernel[1:] if one_d else kernel,
        strides=strides[1:] if one_d else strides,
        dilations=dilations[1:] if one_d else dilations,
    )
    if one_d:
        pads = [(0, 0), *pads]
    x, padding = choose_padding(
        ctx,
        x,
        spatial=spatial,
        kernel=kernel,
        strides=strides,
        dilations=dilations,
        pads=pads,
        convolution=True,
    )
    options: dict[str, Any] = {
        "padding": padding,
        "strideH": strides[0],
        "strideW": strides[1],
        "dilationHFactor": dilations[0],
        "dilationWFactor": dilations[1],
        "fusedActivationFunction": "NONE",
    }
    out_nchw = ctx.shape(node.outputs[0])
    out_shape = (
        (out_nchw[0], 1, out_nchw[2], out_nchw[1])
        if one_d
        else layout.tflite_shape(out_nchw, layout.NHWC)
    )
    result = ctx.temp(node.outputs[0], out_shape, np.float32)
    if group == 1:
        filt = ctx.constant(f"{node.name}/filter", weight.transpose(0, 2, 3, 1))
        b = ctx.constant(f"{node.name}/bias", bias)
        ctx.add("CONV_2D", [x, filt, b], [result], options)
    elif group == in_channels and weight.shape[1] == 1:
        multiplier = out_channels // in_channels
        filt = ctx.constant(f"{node.name}/filter", weight.transpose(1, 2, 3, 0))
        b = ctx.constant(f"{node.name}/bias", bias)
        ctx.add(
            "DEPTHWISE_CONV_2D", [x, filt, b], [result], {**options, "depthMultiplier": multiplier}
        )
    else:
        if in_channels % group or out_channels % group:
            ctx.unsupported(f"group={group} does not divide the channels")
        # Grouped CONV_2D (version 6): the filter's input depth is C_in / group. Float and
        # int8 kernels of LiteRT and tflite-runtime 2.14, with and without XNNPACK, run it.
        filt = ctx.constant(f"{node.name}/filter", weight.transpose(0, 2, 3, 1))
        b = ctx.constant(f"{node.name}/bias", bias)
        ctx.add("CONV_2D", [x, filt, b], [result], options)
    finish_nhwc_2d(ctx, node, result, one_d)


def _lower_conv3d(ctx: Lowering, node: Node, weight: npt.NDArray[np.float32]) -> None:
    """3-D Conv → CONV_3D on NDHWC with a DHWIO filter (no groups in TFLite's CONV_3D)."""
    if int(node.attr("group", 1)) != 1:
        ctx.unsupported("grouped 3-D convolution (TFLite CONV_3D has no groups)")
    perm = layout.channels_last(5)
    x = ctx.tensor(node.inputs[0], perm)
    spatial = list(ctx.shape(node.inputs[0])[2:])
    kernel = list(weight.shape[2:])
    strides = [int(v) for v in node.attr("strides", [1, 1, 1])]
    dilations = [int(v) for v in node.attr("dilations", [1, 1, 1])]
    pads = onnx_pads(
        ctx, node, spatial=spatial, kernel=kernel, strides=strides, dilations=dilations
    )
    x, padding = choose_padding(
        ctx,
        x,
        spatial=spatial,
        kernel=kernel,
        strides=strides,
        dilations=dilations,
        pads=pads,
        convolution=True,
    )
    bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
    bias = (
        ctx.require_const(bias_name, "the bias").astype(np.float32)
        if bias_name
        else np.zeros(weight.shape[0], np.float32)
    )
    filt = ctx.constant(f"{node.name}/filter", weight.transpose(2, 3, 4, 1, 0))
    out = ctx.output(node.outputs[0], perm)
    ctx.add(
        "CONV_3D",
        [x, filt, ctx.constant(f"{node.name}/bias", bias)],
        [out],
        {
            "padding": padding,
            "strideD": strides[0],
            "strideH": strides[1],
            "strideW": strides[2],
            "dilationDFactor": dilations[0],
            "dilationHFactor": dilations[1],
            "dilationWFactor": dilations[2],
            "fusedActivationFunction": "NONE",
        },
    )


@register("ConvTranspose")
def lower_conv_transpose(ctx: Lowering, node: Node) -> None:
    """ConvTranspose → TRANSPOSE_CONV (VALID), then crop/pad to the ONNX output and add bias."""
    weight = ctx.require_const(node.inputs[1], "the weight").astype(np.float32)
    if weight.ndim != 4:
        ctx.unsupported("only 2-D transposed convolutions are lowered")
    group = int(node.attr("group", 1))
    if any(d != 1 for d in node.attr("dilations", [1, 1])):
        ctx.unsupported("dilated ConvTranspose (TFLite TRANSPOSE_CONV has no dilation)")
    if node.attr("output_shape") is not None:
        ctx.unsupported("the output_shape attribute (give pads instead)")
    auto_pad = node.attr("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        ctx.unsupported(f"auto_pad={auto_pad}")
    x = ctx.tensor(node.inputs[0], layout.NHWC)
    n, h, w, _ = ctx.graph.tensors[x].shape
    kh, kw = weight.shape[2:]
    sh, sw = node.attr("strides", [1, 1])
    pads = node.attr("pads", [0, 0, 0, 0]) if auto_pad == "NOTSET" else [0, 0, 0, 0]
    out_pad = node.attr("output_padding", [0, 0])
    per_group = weight.shape[1]
    out_channels = per_group * group
    full = (n, sh * (h - 1) + kh, sw * (w - 1) + kw, out_channels)
    bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
    bias = ctx.require_const(bias_name, "the bias").astype(np.float32) if bias_name else None
    target = layout.tflite_shape(ctx.shape(node.outputs[0]), layout.NHWC)
    options = {"padding": "VALID", "strideH": sh, "strideW": sw}
    simple = list(pads) == [0, 0, 0, 0] and list(out_pad) == [0, 0] and group == 1
    conv_out = ctx.temp(f"{node.outputs[0]}/full", full, np.float32)
    if group == 1:
        filt = ctx.constant(f"{node.name}/filter", weight.transpose(1, 2, 3, 0))
        ctx.add(
            "TRANSPOSE_CONV",
            [
                ctx.int32("output_shape", full),
                filt,
                x,
                ctx.constant(f"{node.name}/bias", bias) if simple and bias is not None else None,
            ],
            [conv_out],
            options,
        )
    else:
        # TRANSPOSE_CONV has no groups: SPLIT the channels, one per group, CONCATENATION.
        in_channels = ctx.graph.tensors[x].shape[3]
        if in_channels % group:
            ctx.unsupported(f"group={group} does not divide the channels")
        step = in_channels // group
        parts = [ctx.temp(f"{x}/group{g}", (n, h, w, step), np.float32) for g in range(group)]
        ctx.add("SPLIT", [ctx.int32("axis", 3), x], parts, {"numSplits": group})
        outs = []
        for g, part in enumerate(parts):
            w_g = weight[g * step : (g + 1) * step]  # (C_in/g, C_out/g, kH, kW)
            filt = ctx.constant(f"{node.name}/filter{g}", w_g.transpose(1, 2, 3, 0))
            out = ctx.temp(f"{node.outputs[0]}/group{g}", (*full[:3], per_group), np.float32)
            shape_g = ctx.int32("output_shape", (*full[:3], per_group))
            ctx.add("TRANSPOSE_CONV", [shape_g, filt, part, None], [out], dict(options))
            outs.append(out)
        ctx.add("CONCATENATION", outs, [conv_out], {"axis": 3, "fusedActivationFunction": "NONE"})
    current = conv_out
    if not simple:
        # ONNX keeps rows [top, top + out_h) of the full result (output_padding extends the
        # window past the end pad); rows past the full result are zero before the bias.
        top, left = pads[0], pads[1]
        end_h, end_w = min(top + target[1], full[1]), min(left + target[2], full[2])
        crop_shape = (n, end_h - top, end_w - left, out_channels)
        cropped = ctx.temp(f"{node.outputs[0]}/cropped", crop_shape, np.float32)
        ctx.add(
            "STRIDED_SLICE",
            [
                current,
                ctx.int32("begin", [0, top, left, 0]),
                ctx.int32("end", [n, end_h, end_w, out_channels]),
                ctx.int32("strides", [1, 1, 1, 1]),
            ],
            [cropped],
            {},
        )
        current = cropped
        extra_h, extra_w = target[1] - crop_shape[1], target[2] - crop_shape[2]
        if extra_h or extra_w:
            padded = ctx.temp(f"{node.outputs[0]}/out_pad", target, np.float32)
            ctx.add(
                "PAD",
                [current, ctx.int32("paddings", [[0, 0], [0, extra_h], [0, extra_w], [0, 0]])],
                [padded],
            )
            current = padded
        if bias is not None:
            biased = ctx.temp(f"{node.outputs[0]}/biased", target, np.float32)
            ctx.add(
                "ADD",
                [current, ctx.constant(f"{node.name}/bias", bias)],
                [biased],
                {"fusedActivationFunction": "NONE"},
            )
            current = biased
    ctx.alias(node.outputs[0], current, layout.NHWC)


__all__ = ["lower_conv", "lower_conv_transpose"]
