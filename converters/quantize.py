"""Quantization passes on the TFLite-level graph: ``dynamic`` and full-integer ``int8``.

Both follow the TFLite 8-bit quantization specification (``real = scale × (q − zero_point)``):

* **Weights** of CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED are int8,
  symmetric (zero point 0, range [-127, 127]), one scale per output channel: dimension 0 of
  the OHWI / (out, in) filters, dimension 3 of the 1HW(I·M) depthwise filter.
* **Biases** are int32 with ``scale = input_scale × weight_scale[c]`` and zero point 0. When a
  bias would not fit in int32 the channel's weight scale grows until it does (the same repair
  TensorFlow's quantizer makes).
* **Activations** are asymmetric int8 (``[-128, 127]``) over the calibrated range widened to
  include 0, so that zero padding is exact.
* **Fixed output parameters**: LOGISTIC and SOFTMAX (scale 1/256, zero point -128), TANH
  (1/128, 0).
* **Same scale in and out**: the spec requires the output of MAX_POOL_2D, AVERAGE_POOL_2D,
  RESHAPE, TRANSPOSE, SQUEEZE, EXPAND_DIMS, PAD/PADV2, SLICE, STRIDED_SLICE, SPLIT/SPLIT_V,
  GATHER, RESIZE_*, DEPTH_TO_SPACE, SPACE_TO_DEPTH, TILE to carry its input's parameters. We
  *share* them: the output tensor takes the input's scale and zero point, with no extra op
  (these ops only move or select values, so the output range lies inside the input range).
  CONCATENATION, MAXIMUM and MINIMUM need all inputs and the output on one scale: the output
  takes the calibrated range of its own values, an input whose producer is free to choose its
  output scale (a convolution, an add…) is given that scale directly, and any other input
  is *requantized* by an int8→int8 QUANTIZE op.

``dynamic`` stores int8 weights for the operators of :data:`DYNAMIC_OPS` with at least
:data:`DYNAMIC_MIN_WEIGHTS` weights (TensorFlow's default) and keeps activations in float:
the runtimes run them with their hybrid kernels. Convolution weights are per channel;
FULLY_CONNECTED weights are per tensor (:data:`DYNAMIC_PER_TENSOR_OPS`), because a hybrid
FULLY_CONNECTED with per-channel weights needs version 12 and tflite-runtime 2.14's kernel
reads only the first scale. TRANSPOSE_CONV keeps float weights: 2.14 has no hybrid kernel
for it. ``int8`` calibrates every activation range by
running the float model in LiteRT on the calibration samples and converts every operator that
has an int8 kernel; the rest run in float between DEQUANTIZE and QUANTIZE ops. Ranges come
from min/max over the samples, or from a percentile of each sample's values averaged over
samples; the default, ``auto``, clips only the high-resolution activations of an image model
(stride ≤ :data:`HIGH_RES_MAX_STRIDE`, at :data:`HIGH_RES_PERCENTILE`): there an extreme value
is one pixel's edge response that one int8 scale would otherwise be stretched to cover,
while deeper down the rare large values are the evidence for a detection and must not be
clipped.

Two accuracy traps are handled on purpose (``docs/quantization.md`` has the measurements):

* **Mixed-range concatenation.** YOLOv8 concatenates box coordinates (0..320) with class
  scores (0..1) into its one output; a shared int8 scale of 1.25 leaves the scores with one
  level. A CONCATENATION whose input ranges differ by more than
  :attr:`QuantizeOptions.mixed_range_ratio` and whose result is only read in float (a float
  model output, or float operators) is done in float: each input is dequantized with its own
  parameters first.
* **The float tail** (:attr:`QuantizeOptions.float_tail`, on by default): operators after the
  last weight-carrying operator on every path to an output (YOLOv8's box decoding, the class
  sigmoid, a classifier's final softmax) stay in float. They are cheap — no weights, small
  tensors — and it is where values of very different ranges meet (anchor grid plus
  distances, times the stride), which one int8 scale per tensor resolves poorly.

And one choice of mixed precision (:attr:`QuantizeOptions.float_stem`, on by default with
float model I/O): in an image model deep enough to reach a stride of
:data:`FLOAT_STEM_DEPTH_STRIDE` and whose stem is light (:data:`FLOAT_STEM_MAX_MACS_SHARE`
of the compute), the *stem* — operators whose outputs are at a stride of at
most :data:`HIGH_RES_MAX_STRIDE` from the input — stays float. One int8 scale per tensor
resolves these early feature maps worst, and they are a small share of the compute (YOLOv8n:
score SQNR +4.6 dB on views of the calibration photos, 1-thread latency 0.26 → 0.28× float).
Their filters are stored as float16 behind a DEQUANTIZE, as in ``float16`` mode.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edgeops.converters.float16 import MIN_ELEMENTS as FLOAT16_MIN_ELEMENTS
from edgeops.converters.ir import Graph, Operator, QuantParams, Tensor
from edgeops.errors import ConfigError, ConversionError

#: ``dynamic`` mode leaves weight tensors smaller than this in float (TensorFlow's default).
DYNAMIC_MIN_WEIGHTS = 1024
#: Operators whose weights ``dynamic`` mode stores as int8. Not TRANSPOSE_CONV: LiteRT runs
#: it hybrid, but tflite-runtime 2.14 refuses the model ("weights->type != input->type").
DYNAMIC_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"})
#: Hybrid operators whose ``dynamic`` weights get one scale per tensor instead of per channel:
#: per-channel hybrid FULLY_CONNECTED is version 12, above the 10 of tflite-runtime 2.14, whose
#: kernel reads only the first scale (measured: 54 % max error; ``op_versions`` refuses it).
#: Hybrid CONV_2D and DEPTHWISE_CONV_2D (grouped too) read every channel's scale there.
DYNAMIC_PER_TENSOR_OPS = frozenset({"FULLY_CONNECTED"})

_F32 = np.dtype(np.float32)
_I8 = np.dtype(np.int8)
_I32 = np.dtype(np.int32)
_INT32_MAX = 2**31 - 1

#: Operators with int8 filters: opcode → (filter input index, bias input index, channel dim).
WEIGHTED_OPS: Mapping[str, tuple[int, int, int]] = {
    "CONV_2D": (1, 2, 0),
    "DEPTHWISE_CONV_2D": (1, 2, 3),
    "FULLY_CONNECTED": (1, 2, 0),
    "TRANSPOSE_CONV": (1, 3, 0),
}
#: The activation input of each weighted operator.
_WEIGHTED_INPUT = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 0, "FULLY_CONNECTED": 0, "TRANSPOSE_CONV": 2}

#: Operators whose int8 output scale is free (set from calibration).
FREE_OUTPUT_OPS = frozenset(
    {
        *WEIGHTED_OPS,
        "ADD",
        "SUB",
        "MUL",
        "MEAN",
        "SUM",
        "HARD_SWISH",
        "LEAKY_RELU",
        "RELU",
        "RELU6",
        "QUANTIZE",
    }
)
#: Fixed int8 output parameters (scale, zero point), TFLite quantization spec.
FIXED_OUTPUT_PARAMS: Mapping[str, tuple[float, int]] = {
    "LOGISTIC": (1.0 / 256.0, -128),
    "SOFTMAX": (1.0 / 256.0, -128),
    "TANH": (1.0 / 128.0, 0),
}
#: Operators whose output must carry the parameters of their (first float) input.
SAME_SCALE_OPS = frozenset(
    {
        "MAX_POOL_2D",
        "AVERAGE_POOL_2D",
        "RESHAPE",
        "TRANSPOSE",
        "SQUEEZE",
        "EXPAND_DIMS",
        "PAD",
        "PADV2",
        "SLICE",
        "STRIDED_SLICE",
        "SPLIT",
        "SPLIT_V",
        "GATHER",
        "RESIZE_NEAREST_NEIGHBOR",
        "RESIZE_BILINEAR",
        "DEPTH_TO_SPACE",
        "SPACE_TO_DEPTH",
        "TILE",
    }
)
#: Operators whose inputs and output must all share one scale; their output is calibrated.
SHARED_SCALE_OPS = frozenset({"CONCATENATION", "MAXIMUM", "MINIMUM"})
#: Every operator that runs in int8.
INT8_OPS = FREE_OUTPUT_OPS | set(FIXED_OUTPUT_PARAMS) | SAME_SCALE_OPS | SHARED_SCALE_OPS

Mode = Literal["dynamic", "int8"]
Method = Literal["auto", "minmax", "percentile"]
#: ``auto`` calibration clips activations at a stride of at most this from the input ...
HIGH_RES_MAX_STRIDE = 4
#: ... at this percentile of each sample's values (min/max everywhere else).
HIGH_RES_PERCENTILE = 99.9
#: ... when the full range is more than this many times the clipped one (a heavy tail).
HEAVY_TAIL_RATIO = 2.0
#: The float stem applies only to an image model with an activation at this stride or more ...
FLOAT_STEM_DEPTH_STRIDE = 16
#: ... and whose stem does at most this share of the multiply-accumulates of the weighted
#: operators: int8 runs about 4x faster than float32, so a float share s costs about
#: (1 - s) / 4 + s of the float latency, 0.325 at 0.1 — under the 0.35 target. (YOLOv8n:
#: 0.085; ResNet-50 0.22 and DenseNet-121 0.45 would pay too much and keep an int8 stem.)
FLOAT_STEM_MAX_MACS_SHARE = 0.1
Ranges = dict[str, tuple[float, float]]


@dataclass(frozen=True, kw_only=True)
class QuantizeOptions:
    """How to quantize (see the module docstring for what each choice means)."""

    io_dtype: Literal["float32", "int8"] = "float32"
    method: Method = "auto"
    percentile: float = 99.99
    float_tail: bool = True
    float_stem: bool = True
    mixed_range_ratio: float = 8.0

    def __post_init__(self) -> None:
        if self.io_dtype not in ("float32", "int8"):
            raise ConfigError(f"expected io dtype float32 or int8, got {self.io_dtype!r}")
        if self.method not in ("auto", "minmax", "percentile"):
            raise ConfigError(
                f"expected calibration method auto, minmax or percentile, got {self.method!r}"
            )
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"expected a percentile in (50, 100], got {self.percentile}")
        if not self.mixed_range_ratio > 1.0:
            raise ConfigError(f"expected a mixed-range ratio > 1, got {self.mixed_range_ratio}")


@dataclass
class QuantizeResult:
    """What the pass did, for the report."""

    float_ops: dict[str, int] = field(default_factory=dict)
    float_concats: list[str] = field(default_factory=list)
    requantized_inputs: int = 0
    calibration_samples: int = 0
    calibration_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# -- parameter arithmetic ----------------------------------------------------------------


def activation_params(lo: float, hi: float) -> QuantParams:
    """Asymmetric int8 parameters covering ``[lo, hi]`` widened to include 0 (spec: zero
    must be exactly representable)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise ConversionError(f"cannot quantize a tensor whose range is [{lo}, {hi}]")
    scale = (hi - lo) / 255.0
    if scale <= 0.0:
        scale = 1.0 / 255.0
    zero_point = int(np.clip(round(-128.0 - lo / scale), -128, 127))
    return QuantParams(
        np.array([scale], np.float32),
        np.array([zero_point], np.int64),
        min=np.array([lo], np.float32),
        max=np.array([hi], np.float32),
    )


def quantize_values(values: npt.NDArray[Any], params: QuantParams) -> npt.NDArray[np.int8]:
    """``values`` quantized per tensor with ``params`` (round half away from zero, clamp)."""
    q = np.round(values.astype(np.float64) / float(params.scales[0])) + int(params.zero_points[0])
    return np.clip(q, -128, 127).astype(np.int8)


def symmetric_weights(
    weights: npt.NDArray[np.float32], channel_dim: int
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Per-channel symmetric int8 weights in [-127, 127] and their scales (spec: zp 0)."""
    moved = np.moveaxis(weights.astype(np.float64), channel_dim, 0)
    peak = np.abs(moved.reshape(moved.shape[0], -1)).max(axis=1)
    # An all-zero channel still needs a positive scale; any value represents it exactly.
    scales = np.where(peak > 0, peak / 127.0, 1.0)
    return _apply_weight_scales(weights, scales, channel_dim), scales.astype(np.float32)


def symmetric_weights_per_tensor(
    weights: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.int8], float]:
    """Symmetric int8 weights in [-127, 127] with one scale for the whole tensor (zp 0)."""
    peak = float(np.abs(weights.astype(np.float64)).max()) if weights.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    q = np.clip(np.round(weights.astype(np.float64) / scale), -127, 127).astype(np.int8)
    return q, scale


def _apply_weight_scales(
    weights: npt.NDArray[np.float32], scales: npt.NDArray[Any], channel_dim: int
) -> npt.NDArray[np.int8]:
    shape = [1] * weights.ndim
    shape[channel_dim] = -1
    q = np.round(weights.astype(np.float64) / np.asarray(scales, np.float64).reshape(shape))
    return np.clip(q, -127, 127).astype(np.int8)


def _per_channel(scales: npt.NDArray[Any], dim: int) -> QuantParams:
    return QuantParams(
        np.asarray(scales, np.float32),
        np.zeros(len(scales), np.int64),
        quantized_dimension=dim,
    )


def _same(a: QuantParams, b: QuantParams) -> bool:
    return bool(np.array_equal(a.scales, b.scales) and np.array_equal(a.zero_points, b.zero_points))


def _copy(params: QuantParams) -> QuantParams:
    return QuantParams(
        params.scales.copy(),
        params.zero_points.copy(),
        params.quantized_dimension,
        None if params.min is None else params.min.copy(),
        None if params.max is None else params.max.copy(),
    )


# -- calibration -------------------------------------------------------------------------


def graph_feed(
    graph: Graph, sample: Mapping[str, npt.NDArray[Any]]
) -> list[npt.NDArray[np.float32]]:
    """The arrays of ``sample`` for the graph's inputs, in graph input order.

    Samples are keyed by the ONNX input names and laid out as the ONNX model expects; an
    image input the converter turned NHWC is transposed here (NCHW → NHWC).
    """
    feed: list[npt.NDArray[np.float32]] = []
    values = list(sample.values())
    for position, name in enumerate(graph.inputs):
        array = sample.get(name)
        if array is None:
            if len(values) != len(graph.inputs):
                raise ConfigError(
                    f"a sample has inputs {sorted(sample)}; the model expects {graph.inputs}"
                )
            array = values[position]
        feed.append(fit_layout(np.asarray(array, np.float32), graph.tensors[name].shape, name))
    return feed


def fit_layout(array: npt.NDArray[Any], shape: Sequence[int], name: str) -> npt.NDArray[Any]:
    """``array`` as ``shape``: unchanged, or NCHW → NHWC when that is what makes it fit."""
    shape = tuple(shape)
    if array.shape == shape:
        return array
    if array.ndim == 4 and tuple(array.shape[i] for i in (0, 2, 3, 1)) == shape:
        return np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    if array.size == int(np.prod(shape)) and array.ndim == len(shape) - 1:
        return array.reshape(shape)
    raise ConfigError(f"input {name!r}: expected shape {shape}, got {array.shape}")


def high_resolution_tensors(graph: Graph, *, max_stride: int = HIGH_RES_MAX_STRIDE) -> set[str]:
    """Activations of an image model at a stride of at most ``max_stride`` from its input.

    A 4-D float input ``[1, H, W, C]`` sets the input area; a 4-D activation whose
    ``h × w × max_stride²`` reaches it is "high resolution". Graph inputs are left out: their
    range (pixels) is known, never clipped.
    """
    areas = [
        graph.tensors[n].shape[1] * graph.tensors[n].shape[2]
        for n in graph.inputs
        if len(graph.tensors[n].shape) == 4 and graph.tensors[n].dtype == _F32
    ]
    if not areas:
        return set()
    area = max(areas)
    return {
        name
        for name, t in graph.tensors.items()
        if t.data is None
        and t.dtype == _F32
        and len(t.shape) == 4
        and name not in graph.inputs
        and t.shape[1] * t.shape[2] * max_stride**2 >= area
    }


def stem_tensors(graph: Graph) -> set[str]:
    """The high-resolution activations (:func:`high_resolution_tensors`) of an image model
    that also has a feature map (more than 1x1: a global pool does not count) at a stride of
    :data:`FLOAT_STEM_DEPTH_STRIDE` or more and whose stem does at most
    :data:`FLOAT_STEM_MAX_MACS_SHARE` of the weighted operators' multiply-accumulates; an empty
    set for other models (in a shallow one the "stem" would be the whole model, in a heavy-stem
    one it would cost the int8 speed)."""
    stem = high_resolution_tensors(graph)
    if not stem:
        return set()
    area = max(
        graph.tensors[n].shape[1] * graph.tensors[n].shape[2]
        for n in graph.inputs
        if len(graph.tensors[n].shape) == 4 and graph.tensors[n].dtype == _F32
    )
    deep = any(
        t.data is None
        and t.dtype == _F32
        and len(t.shape) == 4
        and 1 < t.shape[1] * t.shape[2] <= area / FLOAT_STEM_DEPTH_STRIDE**2
        for t in graph.tensors.values()
    )
    if not deep:
        return set()
    total = stem_macs = 0
    for op in graph.operators:
        if op.opcode in WEIGHTED_OPS:
            macs = _macs(graph, op)
            total += macs
            if all(n in stem for n in op.outputs):
                stem_macs += macs
    return stem if total and stem_macs <= FLOAT_STEM_MAX_MACS_SHARE * total else set()


def _macs(graph: Graph, op: Operator) -> int:
    """Multiply-accumulates of one weighted operator (filter taps per output value)."""
    filter_name = op.inputs[WEIGHTED_OPS[op.opcode][0]]
    assert filter_name is not None
    w = graph.tensors[filter_name].shape
    outputs = int(np.prod(graph.tensors[op.outputs[0]].shape))
    if op.opcode == "DEPTHWISE_CONV_2D":
        return outputs * w[1] * w[2]
    if op.opcode == "TRANSPOSE_CONV":
        return outputs * w[1] * w[2] * w[3]  # an upper bound: stride² × the real count
    return outputs * int(np.prod(w[1:]))


def calibrate_ranges(
    graph: Graph,
    samples: Sequence[Mapping[str, npt.NDArray[Any]]],
    *,
    method: Method = "auto",
    percentile: float = 99.99,
    progress: bool = True,
) -> Ranges:
    """The range of every float activation of ``graph`` over ``samples``.

    Runs the float graph in LiteRT with every intermediate tensor preserved. ``minmax``
    takes the extremes over all samples; ``percentile`` takes the ``percentile``-th and
    ``(100 - percentile)``-th percentile of each sample and averages them over samples;
    ``auto`` (the default) does the latter with :data:`HIGH_RES_PERCENTILE` on the
    high-resolution activations of an image model (:func:`high_resolution_tensors`) and
    min/max everywhere else (``docs/quantization.md`` has the measurements behind it).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeops.converters.calibration import track
    from edgeops.converters.writer import serialize

    if not samples:
        raise ConfigError("int8 quantization needs at least one calibration sample")
    interpreter = Interpreter(
        model_content=serialize(graph),
        experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    index_of = {name: index for index, name in enumerate(graph.tensors)}
    watched = [
        name
        for name, tensor in graph.tensors.items()
        if tensor.data is None and tensor.dtype == _F32
    ]
    clipped: dict[str, float] = {}
    if method == "percentile":
        clipped = dict.fromkeys(watched, percentile)
    elif method == "auto":
        clipped = dict.fromkeys(high_resolution_tensors(graph), HIGH_RES_PERCENTILE)
    input_indices = [d["index"] for d in interpreter.get_input_details()]
    lows: dict[str, list[float]] = {name: [] for name in watched}
    highs: dict[str, list[float]] = {name: [] for name in watched}
    items: Iterable[Mapping[str, npt.NDArray[Any]]] = samples
    if progress:
        items = track(samples, total=len(samples), description="calibrating")
    extremes: dict[str, tuple[float, float]] = {}
    for sample in items:
        for index, array in zip(input_indices, graph_feed(graph, sample), strict=True):
            interpreter.set_tensor(index, array)
        interpreter.invoke()
        for name in watched:
            values = interpreter.get_tensor(index_of[name])
            lo, hi = float(values.min()), float(values.max())
            if name in clipped:
                old_lo, old_hi = extremes.get(name, (lo, hi))
                extremes[name] = (min(lo, old_lo), max(hi, old_hi))
                if values.size > 1:
                    lo, hi = np.percentile(values, [100.0 - clipped[name], clipped[name]])
            lows[name].append(float(lo))
            highs[name].append(float(hi))
    ranges: Ranges = {}
    for name in watched:
        full = (min(lows[name]), max(highs[name]))
        if name in clipped:
            kept = (float(np.mean(lows[name])), float(np.mean(highs[name])))
            full = extremes[name]
            # ``auto`` clips only a heavy tail: a few values far beyond the bulk.
            heavy = (full[1] - full[0]) > HEAVY_TAIL_RATIO * (kept[1] - kept[0])
            ranges[name] = kept if method == "percentile" or heavy else full
        else:
            ranges[name] = full
    return ranges


# -- the passes --------------------------------------------------------------------------


def quantize_graph(
    graph: Graph,
    mode: Mode,
    calibration: Sequence[Mapping[str, npt.NDArray[Any]]] | None = None,
    *,
    options: QuantizeOptions | None = None,
    progress: bool = True,
    result: QuantizeResult | None = None,
) -> Graph:
    """A new graph: ``graph`` (float32) quantized in ``mode`` (``dynamic`` or ``int8``).

    ``calibration`` (int8 only) holds samples keyed by input name in the ONNX model's layout
    (see :func:`graph_feed`). ``result``, when given, is filled with what the pass did.
    """
    options = options or QuantizeOptions()
    result = result if result is not None else QuantizeResult()
    if mode == "dynamic":
        return quantize_dynamic(graph)
    if mode != "int8":
        raise ConfigError(f"expected quantization mode dynamic or int8, got {mode!r}")
    if not calibration:
        raise ConfigError("int8 quantization needs calibration samples (--calibration)")
    started = time.perf_counter()
    ranges = calibrate_ranges(
        graph,
        calibration,
        method=options.method,
        percentile=options.percentile,
        progress=progress,
    )
    result.calibration_samples = len(calibration)
    result.calibration_seconds = time.perf_counter() - started
    return quantize_int8(graph, ranges, options=options, result=result)


def quantize_dynamic(graph: Graph) -> Graph:
    """Int8 weights, float activations (the hybrid kernels).

    Per channel for the convolutions, per tensor for :data:`DYNAMIC_PER_TENSOR_OPS`.
    """
    out = _clone(graph)
    for op in out.operators:
        if op.opcode not in DYNAMIC_OPS:
            continue
        filter_index, _, dim = WEIGHTED_OPS[op.opcode]
        name = op.inputs[filter_index]
        tensor = out.tensors.get(name) if name is not None else None
        if tensor is None or tensor.data is None or tensor.dtype != _F32:
            continue
        if tensor.data.size < DYNAMIC_MIN_WEIGHTS:
            continue
        if op.opcode in DYNAMIC_PER_TENSOR_OPS:
            q, scale = symmetric_weights_per_tensor(tensor.data)
            params = QuantParams(np.array([scale], np.float32), np.zeros(1, np.int64))
        else:
            q, scales = symmetric_weights(tensor.data, dim)
            params = _per_channel(scales, dim)
        op.inputs[filter_index] = out.add_constant(f"{name}/int8", q, quantization=params)
    out.remove_unused()
    return out


def _clone(graph: Graph) -> Graph:
    return Graph(
        tensors={
            n: Tensor(t.name, t.shape, t.dtype, t.data, t.quantization)
            for n, t in graph.tensors.items()
        },
        operators=[
            Operator(
                op.opcode,
                list(op.inputs),
                list(op.outputs),
                dict(op.options),
                op.version,
                op.source,
            )
            for op in graph.operators
        ],
        inputs=list(graph.inputs),
        outputs=list(graph.outputs),
    )


def _float_inputs(graph: Graph, op: Operator) -> list[int]:
    return [
        i
        for i, name in enumerate(op.inputs)
        if name is not None and graph.tensors[name].dtype == _F32
    ]


def _tail_ops(graph: Graph) -> set[int]:
    """Indices of operators after the last weighted operator on every path to an output.

    An operator is in the tail when no weighted operator can be reached from its outputs.
    """
    consumers: dict[str, list[int]] = {}
    for index, op in enumerate(graph.operators):
        for name in op.inputs:
            if name is not None:
                consumers.setdefault(name, []).append(index)
    reaches_weighted = [False] * len(graph.operators)
    for index in range(len(graph.operators) - 1, -1, -1):
        op = graph.operators[index]
        reaches_weighted[index] = any(
            graph.operators[c].opcode in WEIGHTED_OPS or reaches_weighted[c]
            for name in op.outputs
            for c in consumers.get(name, [])
        )
    return {
        index
        for index, op in enumerate(graph.operators)
        if op.opcode not in WEIGHTED_OPS and not reaches_weighted[index]
    }


def quantize_int8(
    graph: Graph,
    ranges: Mapping[str, tuple[float, float]],
    *,
    options: QuantizeOptions | None = None,
    result: QuantizeResult | None = None,
) -> Graph:
    """Full-integer quantization of ``graph`` with calibrated activation ``ranges``."""
    options = options or QuantizeOptions()
    result = result if result is not None else QuantizeResult()
    return _Int8Builder(graph, ranges, options, result).build()


class _Int8Builder:
    """Builds the int8 graph operator by operator, in the source graph's order.

    Every activation has a *home* domain (int8 or float, that of its producer); a consumer in
    the other domain reads a converted copy made once by QUANTIZE or DEQUANTIZE.
    """

    def __init__(
        self,
        graph: Graph,
        ranges: Mapping[str, tuple[float, float]],
        options: QuantizeOptions,
        result: QuantizeResult,
    ) -> None:
        self.src = graph
        self.ranges = ranges
        self.options = options
        self.result = result
        self.out = Graph(inputs=list(graph.inputs), outputs=list(graph.outputs))
        # (source tensor name, "int8" | "float") -> tensor name in the new graph
        self.version: dict[tuple[str, str], str] = {}
        # source tensor name -> the new-graph tensor its producer writes (not a copy)
        self.home: dict[str, str] = {}
        self.consumers: dict[str, list[Operator]] = {}
        for op in graph.operators:
            for name in op.inputs:
                if name is not None:
                    self.consumers.setdefault(name, []).append(op)
        self.output_domain: dict[str, str] = {}
        for name in graph.outputs:
            int8_io = options.io_dtype == "int8" and graph.tensors[name].dtype == _F32
            self.output_domain[name] = "int8" if int8_io else "float"

    # -- decisions -----------------------------------------------------------------------

    def params_of_range(self, name: str) -> QuantParams:
        if name not in self.ranges:
            raise ConversionError(f"no calibrated range for tensor {name!r}")
        lo, hi = self.ranges[name]
        return activation_params(lo, hi)

    def decide_domains(self) -> list[str]:
        ops = self.src.operators
        domains = ["int8" if op.opcode in INT8_OPS else "float" for op in ops]
        for index, op in enumerate(ops):
            if domains[index] == "int8" and not all(
                self.src.tensors[n].dtype in (_F32, _I32, np.dtype(np.int64))
                for n in op.inputs
                if n is not None
            ):
                domains[index] = "float"
            if op.opcode in WEIGHTED_OPS:
                filter_index = WEIGHTED_OPS[op.opcode][0]
                if self.src.constant(op.inputs[filter_index]) is None:
                    domains[index] = "float"  # weights computed at run time: no int8 kernel
        # With int8 model outputs the tail's result is quantized anyway: keep it int8.
        if self.options.float_tail and self.options.io_dtype == "float32":
            for index in _tail_ops(self.src):
                domains[index] = "float"
        # int8 model inputs ask for an integer model: the stem stays int8 then.
        if self.options.float_stem and self.options.io_dtype == "float32":
            stem = stem_tensors(self.src)
            for index, op in enumerate(ops):
                if op.outputs and all(n in stem for n in op.outputs):
                    domains[index] = "float"
        # Mixed-range concatenations read only in float: do them in float (reverse order, so
        # a decision downstream is known when an upstream op asks "read only in float?").
        for index in range(len(ops) - 1, -1, -1):
            op = ops[index]
            if domains[index] != "int8" or op.opcode != "CONCATENATION":
                continue
            spans = [
                self.ranges[n][1] - self.ranges[n][0]
                for n in op.inputs
                if n is not None and n in self.ranges
            ]
            spans = [s for s in spans if s > 0]
            if len(spans) < 2 or max(spans) / min(spans) <= self.options.mixed_range_ratio:
                continue
            if self.output_domain.get(op.outputs[0]) == "int8":
                self.result.notes.append(
                    f"int8 output {op.outputs[0]!r} concatenates values whose ranges differ "
                    f"{max(spans) / min(spans):.0f}x under one scale: the smaller-range "
                    "channels lose precision (use --io-dtype float32 to keep them)"
                )
            elif self._read_only_in_float(op.outputs[0], domains):
                domains[index] = "float"
                self.result.float_concats.append(op.source or op.outputs[0])
        return domains

    def _read_only_in_float(self, name: str, domains: list[str]) -> bool:
        index_of = {id(op): i for i, op in enumerate(self.src.operators)}
        if name in self.output_domain and self.output_domain[name] != "float":
            return False
        readers = self.consumers.get(name, [])
        if not readers and name not in self.output_domain:
            return False
        return all(domains[index_of[id(op)]] == "float" for op in readers)

    # -- tensors -------------------------------------------------------------------------

    def add_like(self, source: str, dtype: np.dtype[Any], params: QuantParams | None) -> str:
        tensor = self.src.tensors[source]
        return self.out.add_tensor(source, tensor.shape, dtype, quantization=params)

    def read(self, name: str, domain: str) -> str:
        """The new-graph tensor holding source tensor ``name`` in ``domain``."""
        key = (name, domain)
        if key in self.version:
            return self.version[key]
        tensor = self.src.tensors[name]
        if tensor.data is not None:
            raise ConversionError(f"constant {name!r} read as an activation")
        other = "float" if domain == "int8" else "int8"
        if (name, other) not in self.version:
            raise ConversionError(f"tensor {name!r} is read before it is written")
        source_name = self.version[(name, other)]
        if domain == "int8":
            params = self.params_of_range(name)
            converted = self.out.add_tensor(f"{name}/int8", tensor.shape, _I8, quantization=params)
            self.out.operators.append(Operator("QUANTIZE", [source_name], [converted], source=name))
        else:
            converted = self.out.add_tensor(f"{name}/float", tensor.shape, _F32)
            self.out.operators.append(
                Operator("DEQUANTIZE", [source_name], [converted], source=name)
            )
        self.version[key] = converted
        return converted

    def write(self, name: str, domain: str, params: QuantParams | None) -> str:
        """Create the home tensor of source activation ``name`` in ``domain``."""
        tensor = self.src.tensors[name]
        if tensor.dtype != _F32:
            new = self.out.add_tensor(name, tensor.shape, tensor.dtype)
            self.version[(name, "float")] = new
            self.version[(name, "int8")] = new
            return new
        wanted = self.output_domain.get(name, domain)
        hint = name if wanted == domain else f"{name}/{domain}"
        if domain == "int8":
            new = self.out.add_tensor(hint, tensor.shape, _I8, quantization=params)
        else:
            new = self.out.add_tensor(hint, tensor.shape, _F32)
        self.version[(name, domain)] = new
        self.home[name] = new
        return new

    def constant(self, name: str, params: QuantParams | None = None) -> str:
        """A float constant quantized per tensor (its own range unless ``params`` is given)."""
        data = self.src.tensors[name].data
        assert data is not None
        if params is None:
            params = activation_params(float(data.min()), float(data.max()))
        return self.out.add_constant(
            f"{name}/int8", quantize_values(data, params), quantization=params
        )

    def keep_constant(self, name: str) -> str:
        key = (name, "const")
        if key not in self.version:
            tensor = self.src.tensors[name]
            assert tensor.data is not None
            self.version[key] = self.out.add_constant(
                name, tensor.data, quantization=tensor.quantization
            )
        return self.version[key]

    # -- operators -----------------------------------------------------------------------

    def build(self) -> Graph:
        src = self.src
        for name in src.inputs:
            tensor = src.tensors[name]
            if tensor.dtype == _F32 and self.options.io_dtype == "int8":
                self.out.tensors[name] = Tensor(
                    name, tensor.shape, _I8, quantization=self.params_of_range(name)
                )
                self.version[(name, "int8")] = name
            else:
                self.out.tensors[name] = Tensor(name, tensor.shape, tensor.dtype)
                self.version[(name, "float")] = name
                if tensor.dtype != _F32:
                    self.version[(name, "int8")] = name
        domains = self.decide_domains()
        for op, domain in zip(src.operators, domains, strict=True):
            if domain == "float":
                self.emit_float(op)
            elif op.opcode in WEIGHTED_OPS:
                self.emit_weighted(op)
            else:
                self.emit_int8(op)
        self.finish_outputs()
        self.out.validate()
        return self.out

    def emit_float(self, op: Operator) -> None:
        self.result.float_ops[op.opcode] = self.result.float_ops.get(op.opcode, 0) + 1
        half: str | None = None
        if op.opcode in WEIGHTED_OPS:
            # A float convolution in an int8 model (the stem) keeps its filter as float16
            # behind a DEQUANTIZE (TFLite's float16 scheme, folded at load): half the bytes.
            name = op.inputs[WEIGHTED_OPS[op.opcode][0]]
            data = self.src.constant(name)
            if data is not None and data.size >= FLOAT16_MIN_ELEMENTS:
                half = name
        inputs = [
            None
            if n is None
            else self.half_constant(n)
            if n == half
            else self.keep_constant(n)
            if self.src.tensors[n].data is not None
            else self.read(n, "float")
            for n in op.inputs
        ]
        outputs = [self.write(n, "float", None) for n in op.outputs]
        self.out.operators.append(
            Operator(op.opcode, inputs, outputs, dict(op.options), None, op.source)
        )

    def half_constant(self, name: str) -> str:
        key = (name, "float16")
        if key not in self.version:
            tensor = self.src.tensors[name]
            assert tensor.data is not None
            half = self.out.add_constant(f"{name}/fp16", tensor.data.astype(np.float16))
            restored = self.out.add_tensor(f"{name}/dequantized", tensor.shape, _F32)
            self.out.operators.append(Operator("DEQUANTIZE", [half], [restored], source=name))
            self.version[key] = restored
        return self.version[key]

    def emit_weighted(self, op: Operator) -> None:
        filter_index, bias_index, dim = WEIGHTED_OPS[op.opcode]
        x_index = _WEIGHTED_INPUT[op.opcode]
        x_source = op.inputs[x_index]
        assert x_source is not None
        x = self.read(x_source, "int8")
        x_params = self.out.tensors[x].quantization
        assert x_params is not None
        input_scale = float(x_params.scales[0])
        filter_name = op.inputs[filter_index]
        weights = self.src.constant(filter_name)
        assert weights is not None
        assert filter_name is not None
        bias_name = op.inputs[bias_index] if bias_index < len(op.inputs) else None
        bias = self.src.constant(bias_name)
        q_weights, scales = symmetric_weights(weights.astype(np.float32), dim)
        if bias is not None:
            # The int32 bias must hold bias / (input_scale × weight_scale): grow the weight
            # scale of any channel whose bias would overflow.
            needed = np.abs(bias.astype(np.float64)) / (input_scale * _INT32_MAX)
            if np.any(needed > scales):
                scales = np.maximum(scales, needed).astype(np.float32)
                q_weights = _apply_weight_scales(weights, scales, dim)
        inputs: list[str | None] = list(op.inputs)
        inputs[x_index] = x
        inputs[filter_index] = self.out.add_constant(
            f"{filter_name}/int8", q_weights, quantization=_per_channel(scales, dim)
        )
        if bias is not None and bias_name is not None:
            bias_scales = (input_scale * scales.astype(np.float64)).astype(np.float32)
            q_bias = np.clip(
                np.round(bias.astype(np.float64) / bias_scales.astype(np.float64)),
                -_INT32_MAX,
                _INT32_MAX,
            ).astype(np.int32)
            inputs[bias_index] = self.out.add_constant(
                f"{bias_name}/int32", q_bias, quantization=_per_channel(bias_scales, 0)
            )
        for i, name in enumerate(op.inputs):
            if i not in (x_index, filter_index, bias_index) and name is not None:
                inputs[i] = self.keep_constant(name)
        (out_name,) = op.outputs
        output = self.write(out_name, "int8", self.params_of_range(out_name))
        self.out.operators.append(
            Operator(op.opcode, inputs, [output], dict(op.options), None, op.source)
        )

    def emit_int8(self, op: Operator) -> None:
        code = op.opcode
        data = _float_inputs(self.src, op)
        inputs: list[str | None] = [None if n is None else n for n in op.inputs]
        shared: QuantParams | None = None
        if code in SAME_SCALE_OPS:
            first = op.inputs[data[0]]
            assert first is not None
            if self.src.tensors[first].data is not None:
                shared = activation_params(*_const_range(self.src, first))
            else:
                x = self.read(first, "int8")
                shared = self.out.tensors[x].quantization
        elif code in SHARED_SCALE_OPS:
            shared = self.shared_params(op, data)
        for i, name in enumerate(op.inputs):
            if name is None:
                continue
            tensor = self.src.tensors[name]
            if i not in data:
                inputs[i] = self.keep_constant(name)
            elif tensor.data is not None:
                inputs[i] = self.constant(name, shared)
            else:
                x = self.read(name, "int8")
                if shared is not None and code in SHARED_SCALE_OPS:
                    x = self.requantize(x, shared)
                inputs[i] = x
        outputs = []
        for name in op.outputs:
            if self.src.tensors[name].dtype != _F32:
                outputs.append(self.write(name, "int8", None))
            elif code in FIXED_OUTPUT_PARAMS:
                scale, zero_point = FIXED_OUTPUT_PARAMS[code]
                outputs.append(
                    self.write(name, "int8", QuantParams(np.array([scale]), np.array([zero_point])))
                )
            elif shared is not None:
                outputs.append(self.write(name, "int8", _copy(shared)))
            else:
                outputs.append(self.write(name, "int8", self.params_of_range(name)))
        self.out.operators.append(
            Operator(code, inputs, outputs, dict(op.options), None, op.source)
        )

    def shared_params(self, op: Operator, data: list[int]) -> QuantParams:
        """One set of parameters for every input and the output of ``op``."""
        current = []
        for i in data:
            name = op.inputs[i]
            assert name is not None
            if self.src.tensors[name].data is None:
                params = self.out.tensors[self.read(name, "int8")].quantization
                assert params is not None
                current.append(params)
        if current and all(_same(current[0], p) for p in current[1:]):
            return current[0]  # e.g. SPPF: max pools sharing their input's scale
        shared = self.params_of_range(op.outputs[0])
        for i in data:
            name = op.inputs[i]
            assert name is not None
            # An input whose producer may pick any output scale takes the shared one, so no
            # requantize op is needed (it is read only here, so nobody else depends on it).
            producer = self.src.producer(name)
            home = self.version.get((name, "int8"))
            if (
                producer is not None
                and producer.opcode in FREE_OUTPUT_OPS
                and home is not None
                and home == self.home.get(name)
                and len(self.consumers.get(name, [])) == 1
                and name not in self.output_domain
            ):
                self.out.tensors[home].quantization = _copy(shared)
        return shared

    def requantize(self, name: str, params: QuantParams) -> str:
        current = self.out.tensors[name].quantization
        assert current is not None
        if _same(current, params):
            return name
        self.result.requantized_inputs += 1
        tensor = self.out.tensors[name]
        new = self.out.add_tensor(f"{name}/requant", tensor.shape, _I8, quantization=_copy(params))
        self.out.operators.append(Operator("QUANTIZE", [name], [new], source=name))
        return new

    def finish_outputs(self) -> None:
        for position, name in enumerate(self.src.outputs):
            wanted = self.output_domain[name]
            tensor = self.src.tensors[name]
            if tensor.dtype != _F32:
                continue
            have = self.version.get((name, wanted))
            if have is None:
                have = self.read(name, wanted)
            if have != name:
                # The graph output keeps its name: rename the tensor that holds it.
                self._rename(have, name)
                self.version[(name, wanted)] = name
            self.out.outputs[position] = name

    def _rename(self, old: str, new: str) -> None:
        if new in self.out.tensors:
            raise ConversionError(f"cannot rename {old!r} to {new!r}: the name is taken")
        tensor = self.out.tensors.pop(old)
        tensor.name = new
        self.out.tensors[new] = tensor
        for op in self.out.operators:
            op.inputs = [new if n == old else n for n in op.inputs]
            op.outputs = [new if n == old else n for n in op.outputs]
        for key, value in list(self.version.items()):
            if value == old:
                self.version[key] = new


def _const_range(graph: Graph, name: str) -> tuple[float, float]:
    data = graph.tensors[name].data
    assert data is not None
    return float(data.min()), float(data.max())


__all__ = [
    "DYNAMIC_MIN_WEIGHTS",
    "DYNAMIC_OPS",
    "DYNAMIC_PER_TENSOR_OPS",
    "FIXED_OUTPUT_PARAMS",
    "FLOAT_STEM_DEPTH_STRIDE",
    "FLOAT_STEM_MAX_MACS_SHARE",
    "INT8_OPS",
    "SAME_SCALE_OPS",
    "SHARED_SCALE_OPS",
    "WEIGHTED_OPS",
    "QuantizeOptions",
    "QuantizeResult",
    "activation_params",
    "calibrate_ranges",
    "fit_layout",
    "graph_feed",
    "high_resolution_tensors",
    "quantize_dynamic",
    "quantize_graph",
    "quantize_int8",
    "quantize_values",
    "stem_tensors",
    "symmetric_weights",
    "symmetric_weights_per_tensor",
]
