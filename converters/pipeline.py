"""The converter entry point: ONNX (or ``.tflite``) in, TFLite out.

:func:`convert_model` runs, in order::

    load ONNX → fix input shapes → shape inference → fold constants and shape subgraphs
    → fold BatchNormalization → remove identities and dead nodes   (edgeops.converters.passes)
    → layout + lowering                                             (edgeops.converters.lowering)
    → fuse activations, collapse reshapes                           (lowering.fuse)
    → float16 weights | dynamic / int8 quantization                 (float16, quantize)
    → TFLite flatbuffer                                             (writer)

and returns a :class:`ConversionResult` holding the bytes and what a report needs. A
``.tflite`` source is inspected, loaded in LiteRT and passed through unchanged.
:func:`convert` does the same and writes the file atomically: nothing is left at the output
path when a step fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edgeops.converters.ir import Graph
from edgeops.converters.onnx_import import OnnxGraph
from edgeops.errors import ConfigError, ConversionError, ModelError

Mode = Literal["float32", "float16", "dynamic", "int8"]
MODES: tuple[str, ...] = ("float32", "float16", "dynamic", "int8")
Sample = dict[str, npt.NDArray[Any]]


@dataclass(frozen=True, kw_only=True)
class ConvertOptions:
    """What to convert to (all keyword-only; validated on creation).

    ``input_shapes`` pins ONNX inputs (required for dynamic dimensions); ``calibration`` is
    a folder of images, a ``.npy`` or a ``.npz`` (int8 calibrates on part of it and the rest
    is held out for validation; other modes hold it all out); ``preset`` names the image
    preprocessing (``yolov8``, ``imagenet``, ``none``); ``nhwc_inputs`` turns 4-D float inputs
    into NHWC (see :mod:`edgeops.converters.layout`). ``calibration_samples`` gives the
    samples in memory instead (dicts keyed by input name, ONNX layout); it wins over
    ``calibration``. ``calibration_count`` sets how many samples int8 calibrates on (the
    rest are held out); by default a quarter is held out
    (:func:`edgeops.converters.calibration.split_holdout`).
    """

    quantize: Mode = "float32"
    input_shapes: Mapping[str, Sequence[int]] = field(default_factory=dict)
    calibration: Path | None = None
    calibration_samples: Sequence[Mapping[str, npt.NDArray[Any]]] | None = None
    preset: str = "none"
    io_dtype: Literal["float32", "int8"] = "float32"
    calibration_method: Literal["auto", "minmax", "percentile"] = "auto"
    calibration_count: int | None = None
    nhwc_inputs: bool = True
    progress: bool = False

    def __post_init__(self) -> None:
        if self.quantize not in MODES:
            raise ConfigError(
                f"expected --quantize among {', '.join(MODES)}, got {self.quantize!r}"
            )
        if self.io_dtype not in ("float32", "int8"):
            raise ConfigError(f"expected --io-dtype float32 or int8, got {self.io_dtype!r}")
        if self.io_dtype == "int8" and self.quantize != "int8":
            raise ConfigError("--io-dtype int8 needs --quantize int8")
        if self.calibration_method not in ("auto", "minmax", "percentile"):
            raise ConfigError(
                "expected --calibration-method auto, minmax or percentile, got "
                f"{self.calibration_method!r}"
            )
        if self.calibration_count is not None and self.calibration_count < 1:
            raise ConfigError(
                f"expected --calibration-count of at least 1, got {self.calibration_count}"
            )


@dataclass
class ConversionResult:
    """A converted model and what went into it."""

    tflite: bytes
    source_format: Literal["onnx", "tflite"]
    mode: str
    graph: Graph | None = None
    float_graph: Graph | None = None
    onnx_graph: OnnxGraph | None = None
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    #: Inputs the TFLite model takes NHWC (transpose ONNX-layout data ``(0, 2, 3, 1)``).
    nhwc_inputs: list[str] = field(default_factory=list)
    holdout: list[Sample] = field(default_factory=list)
    calibration_count: int = 0
    quantize_result: Any = None
    timings: dict[str, float] = field(default_factory=dict)

    def op_histogram(self) -> dict[str, int]:
        """TFLite operators by opcode, most frequent first."""
        from edgeops.converters.tflite_read import inspect_tflite

        return inspect_tflite(self.tflite).ops

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: mode, size, op histogram, inputs/outputs, timings."""
        from edgeops.converters.tflite_read import inspect_tflite

        info = inspect_tflite(self.tflite)
        return {
            "source_format": self.source_format,
            "mode": self.mode,
            "size": len(self.tflite),
            "ops": info.ops,
            "op_count": sum(info.ops.values()),
            "inputs": [t.to_dict() for t in info.inputs],
            "outputs": [t.to_dict() for t in info.outputs],
            "calibration_samples": self.calibration_count,
            "holdout_samples": len(self.holdout),
            "seconds": {k: round(v, 3) for k, v in self.timings.items()},
        }


def is_tflite(source: Path | bytes) -> bool:
    """True when ``source`` is a TFLite flatbuffer (by its file identifier)."""
    if isinstance(source, bytes):
        head = source[:8]
    else:
        try:
            with Path(source).open("rb") as handle:
                head = handle.read(8)
        except OSError as exc:
            raise ModelError(f"cannot read model {source}: {exc.strerror}") from exc
    return len(head) == 8 and head[4:8] == b"TFL3"


def lower_onnx(graph: OnnxGraph, *, nhwc_inputs: bool = True) -> Graph:
    """Lowering plus the TFLite-level clean-up passes (float32 result)."""
    from edgeops.converters.lowering import lower
    from edgeops.converters.lowering.fuse import collapse_reshapes, fuse_activations

    lowered = lower(graph, nhwc_inputs=nhwc_inputs)
    lowered = collapse_reshapes(lowered)
    lowered = fuse_activations(lowered)
    lowered.validate()
    return lowered


def convert_model(
    source: str | os.PathLike[str] | bytes, options: ConvertOptions | None = None
) -> ConversionResult:
    """Convert an ONNX model (path or bytes) — or pass a ``.tflite`` through — in memory."""
    options = options or ConvertOptions()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if is_tflite(source if isinstance(source, bytes) else Path(source)):
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        return _pass_through(data, options)

    from edgeops.converters.onnx_import import load_onnx
    from edgeops.converters.passes import import_passes
    from edgeops.converters.writer import serialize

    onnx_graph = import_passes(load_onnx(source), options.input_shapes)
    timings["import"] = time.perf_counter() - started
    input_shapes = {name: onnx_graph.static_shape(name) or () for name in onnx_graph.inputs}

    mark = time.perf_counter()
    float_graph = lower_onnx(onnx_graph, nhwc_inputs=options.nhwc_inputs)
    timings["lower"] = time.perf_counter() - mark

    samples = _load_samples(options, input_shapes)
    calibration: list[Sample] = []
    holdout: list[Sample] = samples
    if options.quantize == "int8" and samples:
        from edgeops.converters.calibration import split_holdout

        split = split_holdout(samples, calibration_count=options.calibration_count)
        calibration, holdout = list(split.calibration), list(split.evaluation)

    mark = time.perf_counter()
    graph, quantize_result = _apply_mode(float_graph, options, calibration)
    timings["quantize"] = time.perf_counter() - mark

    mark = time.perf_counter()
    tflite = serialize(graph)
    timings["write"] = time.perf_counter() - mark
    timings["total"] = time.perf_counter() - started
    return ConversionResult(
        tflite=tflite,
        source_format="onnx",
        mode=options.quantize,
        graph=graph,
        float_graph=float_graph,
        onnx_graph=onnx_graph,
        input_shapes={k: tuple(v) for k, v in input_shapes.items()},
        nhwc_inputs=[
            name
            for name in onnx_graph.inputs
            if options.nhwc_inputs
            and len(input_shapes[name]) == 4
            and onnx_graph.dtypes.get(name, np.dtype(np.float32)).kind == "f"
        ],
        holdout=holdout,
        calibration_count=len(calibration),
        quantize_result=quantize_result,
        timings=timings,
    )


def _pass_through(data: bytes, options: ConvertOptions) -> ConversionResult:
    from edgeops.converters.tflite_read import check_loads, inspect_tflite

    if options.quantize != "float32":
        raise ConfigError(
            f"a .tflite input is passed through as it is; --quantize {options.quantize} "
            "needs the ONNX model"
        )
    summary = inspect_tflite(data)
    check_loads(data)
    shapes = {t.name: t.shape for t in summary.inputs}
    return ConversionResult(
        tflite=data,
        source_format="tflite",
        mode="as-is",
        input_shapes=shapes,
        holdout=_load_samples(options, shapes),
    )


def _load_samples(
    options: ConvertOptions, input_shapes: Mapping[str, Sequence[int]]
) -> list[Sample]:
    if options.calibration_samples is not None:
        return [dict(sample) for sample in options.calibration_samples]
    if options.calibration is None:
        return []
    from edgeops.converters.calibration import load_samples, preset

    return list(load_samples(options.calibration, input_shapes, preprocess=preset(options.preset)))


def _apply_mode(
    graph: Graph, options: ConvertOptions, calibration: list[Sample]
) -> tuple[Graph, Any]:
    if options.quantize == "float32":
        return graph, None
    if options.quantize == "float16":
        from edgeops.converters.float16 import to_float16

        return to_float16(_copy_graph(graph)), None
    try:
        from edgeops.converters.quantize import QuantizeOptions, QuantizeResult, quantize_graph
    except ImportError as exc:
        raise ConversionError(
            f"--quantize {options.quantize} is not available in this build: {exc}"
        ) from exc
    result = QuantizeResult()
    quantized = quantize_graph(
        graph,
        options.quantize,
        calibration,
        options=QuantizeOptions(io_dtype=options.io_dtype, method=options.calibration_method),
        progress=options.progress,
        result=result,
    )
    return quantized, result


def _copy_graph(graph: Graph) -> Graph:
    from copy import deepcopy

    return deepcopy(graph)


def convert(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: ConvertOptions | None = None,
) -> ConversionResult:
    """Convert ``source`` and write the TFLite model to ``output`` atomically."""
    result = convert_model(source, options)
    _atomic_write(Path(output), result.tflite)
    return result


def _atomic_write(path: Path, data: bytes) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME=1,3,320,320`` (the ``--input-shape`` syntax)."""
    name, sep, dims = text.rpartition("=")
    if not sep or not name:
        raise ConfigError(f"expected --input-shape NAME=D1,D2,..., got {text!r}")
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
    except ValueError:
        raise ConfigError(f"expected integer dimensions in --input-shape, got {text!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise ConfigError(f"expected positive dimensions in --input-shape, got {text!r}")
    return name, shape


def run_tflite(
    data: bytes, inputs: Mapping[str, npt.NDArray[Any]], *, nhwc_inputs: bool = True
) -> list[npt.NDArray[Any]]:
    """Run a float-I/O model converted here on ONNX-layout inputs; outputs in ONNX layout.

    With ``nhwc_inputs`` (the converter's default), every 4-D float input is an image input
    that the model takes NHWC, so it is transposed on the way in — by that rule, not by
    comparing shapes, which cannot tell ``1×2×2×2`` NCHW from NHWC.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    interpreter.allocate_tensors()
    for detail in interpreter.get_input_details():
        array = np.asarray(inputs[detail["name"]])
        if nhwc_inputs and array.ndim == 4 and array.dtype.kind == "f":
            array = array.transpose(0, 2, 3, 1)
        interpreter.set_tensor(detail["index"], array.astype(detail["dtype"]))
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]


__all__ = [
    "MODES",
    "ConversionResult",
    "ConvertOptions",
    "Mode",
    "convert",
    "convert_model",
    "is_tflite",
    "lower_onnx",
    "parse_input_shape",
    "run_tflite",
]
