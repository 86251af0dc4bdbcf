"""Resize / Upsample (nearest and bilinear) → RESIZE_NEAREST_NEIGHBOR / RESIZE_BILINEAR.

ONNX describes a resize by ``coordinate_transformation_mode`` (asymmetric, align_corners,
half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn) and, for nearest, ``nearest_mode``
(floor, ceil, round_prefer_floor, round_prefer_ceil). TFLite has two flags,
``align_corners`` and ``half_pixel_centers`` (``reference_ops::ResizeNearestNeighbor`` and
``ResizeBilinear``). Instead of a hand-made table of which combinations agree, the lowering
computes, for each spatial axis, the source coordinates ONNX samples and those each TFLite
flag setting samples, and picks the setting that samples the same ones; if none does, the
conversion stops naming the attributes.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from edgeops.converters import layout
from edgeops.converters.lowering.context import Lowering, register
from edgeops.converters.onnx_import import Node

_CANDIDATES = [(False, False), (False, True), (True, False)]


def _onnx_coords(mode: str, out_size: int, in_size: int, scale: float) -> npt.NDArray[np.float64]:
    x = np.arange(out_size, dtype=np.float64)
    if mode == "asymmetric":
        return x / scale
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_size > 1 else np.zeros_like(x)
    if mode == "align_corners":
        return x * (in_size - 1) / (out_size - 1) if out_size > 1 else np.zeros_like(x)
    if mode == "tf_half_pixel_for_nn":
        return (x + 0.5) / scale
    raise ValueError(mode)


def _onnx_nearest(coords: npt.NDArray[np.float64], nearest_mode: str, in_size: int) -> list[int]:
    if nearest_mode == "floor":
        idx = np.floor(coords)
    elif nearest_mode == "ceil":
        idx = np.ceil(coords)
    elif nearest_mode == "round_prefer_floor":
        idx = np.where(coords - np.floor(coords) == 0.5, np.floor(coords), np.round(coords))
    else:  # round_prefer_ceil
        idx = np.floor(coords + 0.5)
    return [int(i) for i in np.clip(idx, 0, in_size - 1)]


def _tflite_nearest(out_size: int, in_size: int, align: bool, half: bool) -> list[int]:
    scale = (in_size - 1) / (out_size - 1) if align and out_size > 1 else in_size / out_size
    result = []
    for x in range(out_size):
        offset = 0.5 if half else 0.0
        # TfLiteRound rounds halves away from zero; coordinates are non-negative here.
        value = math.floor(x * scale + 0.5) if align else math.floor((x + offset) * scale)
        result.append(min(int(value), in_size - 1))
    return result


def _bilinear_taps(coords: npt.NDArray[np.float64], in_size: int) -> npt.NDArray[np.float64]:
    """(low, high, weight) per output position after clamping as both runtimes do."""
    clamped = np.clip(coords, 0, in_size - 1)
    low = np.floor(clamped)
    high = np.minimum(low + 1, in_size - 1)
    return np.stack([low, high, clamped - low], axis=1)


def _tflite_bilinear(
    out_size: int, in_size: int, align: bool, half: bool
) -> npt.NDArray[np.float64]:
    x = np.arange(out_size, dtype=np.float64)
    if align and out_size > 1:
        coords = x * (in_size - 1) / (out_size - 1)
    elif half:
        coords = (x + 0.5) * (in_size / out_size) - 0.5
    else:
        coords = x * (in_size / out_size)
    return _bilinear_taps(coords, in_size)


@register("Resize", "Upsample")
def lower_resize(ctx: Lowering, node: Node) -> None:
    """Resize/Upsample of the two spatial axes of a 4-D NCHW tensor."""
    name = node.inputs[0]
    in_shape = ctx.shape(name)
    out_shape = ctx.shape(node.outputs[0])
    if len(in_shape) != 4 or in_shape[:2] != out_shape[:2]:
        ctx.unsupported("only resizing the two spatial axes of a 4-D tensor")
    mode = node.attr("mode", "nearest")
    if node.op_type == "Upsample" or ctx.source.opset < 11:
        coord_mode = "asymmetric"
        nearest_mode = "floor"
    else:
        coord_mode = node.attr("coordinate_transformation_mode", "half_pixel")
        nearest_mode = node.attr("nearest_mode", "round_prefer_floor")
    if mode not in ("nearest", "linear", "bilinear"):
        ctx.unsupported(f"mode={mode}")
    if coord_mode == "tf_crop_and_resize":
        ctx.unsupported("coordinate_transformation_mode=tf_crop_and_resize")
    if node.attr("antialias", 0) and any(o < i for i, o in zip(in_shape, out_shape, strict=True)):
        ctx.unsupported("antialias when downscaling")
    scales = _scales(ctx, node, in_shape, out_shape)
    chosen = None
    for align, half in _CANDIDATES:
        matches = True
        for axis in (2, 3):
            i, o, s = in_shape[axis], out_shape[axis], scales[axis - 2]
            coords = _onnx_coords(coord_mode, o, i, s)
            if mode == "nearest":
                same = _onnx_nearest(coords, nearest_mode, i) == _tflite_nearest(o, i, align, half)
            else:
                same = bool(
                    np.allclose(
                        _bilinear_taps(coords, i), _tflite_bilinear(o, i, align, half), atol=1e-6
                    )
                )
            matches = matches and same
        if matches:
            chosen = (align, half)
            break
    if chosen is None:
        ctx.unsupported(
            f"mode={mode} coordinate_transformation_mode={coord_mode}"
            + (f" nearest_mode={nearest_mode}" if mode == "nearest" else "")
            + f" from {in_shape[2:]} to {out_shape[2:]} matches no TFLite resize"
        )
    x = ctx.tensor(name, layout.NHWC)
    out = ctx.output(node.outputs[0], layout.NHWC)
    opcode = "RESIZE_NEAREST_NEIGHBOR" if mode == "nearest" else "RESIZE_BILINEAR"
    ctx.add(
        opcode,
        [x, ctx.int32("size", list(out_shape[2:]))],
        [out],
        {"alignCorners": chosen[0], "halfPixelCenters": chosen[1]},
    )


def _scales(
    ctx: Lowering, node: Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...]
) -> list[float]:
    """The per-axis scale ONNX uses in its coordinate formulas (given, or out / in)."""
    scale_input = None
    if node.op_type == "Upsample":
        scale_input = node.inputs[1] if len(node.inputs) > 1 else ""
        given = ctx.const(scale_input) if scale_input else None
        if given is None:
            given = np.asarray(node.attr("scales", []), dtype=np.float32)
    elif ctx.source.opset < 11:
        # Resize-10 takes (X, scales).
        given = ctx.const(node.inputs[1]) if len(node.inputs) > 1 else None
    else:
        names = node.inputs
        given = ctx.const(names[2]) if len(names) > 2 and names[2] else None
        if len(names) > 3 and names[3]:
            given = None  # sizes given: ONNX derives the scale as out / in
    if given is not None and given.size == 4:
        return [float(given[2]), float(given[3])]
    return [out_shape[2] / in_shape[2], out_shape[3] / in_shape[3]]


__all__ = ["lower_resize"]
