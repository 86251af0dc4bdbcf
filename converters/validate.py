"""Run the ONNX reference and the converted model on the same inputs, and time both.

The reference is onnxruntime (CPU, float32); the candidate is LiteRT (``ai_edge_litert``).
Inputs are samples in the ONNX model's layout (see :mod:`edgeops.converters.calibration`);
:class:`TfliteRunner` transposes image inputs to NHWC, quantizes them for an int8-I/O model,
and brings outputs back to the ONNX layout and to float.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeops.errors import ModelError

FloatArray = npt.NDArray[np.float32]
Sample = Mapping[str, npt.NDArray[Any]]


class TfliteRunner:
    """A LiteRT interpreter fed with ONNX-layout float inputs, giving float outputs."""

    def __init__(self, tflite: bytes, *, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_content=tflite, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"LiteRT cannot load the converted model: {exc}") from exc
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()

    def set_inputs(self, sample: Sample) -> None:
        """Set every input from ``sample`` (matched by name, else by position)."""
        values = list(sample.values())
        for position, detail in enumerate(self.inputs):
            array = sample.get(detail["name"])
            if array is None:
                array = values[position]
            array = _fit(np.asarray(array), tuple(int(d) for d in detail["shape"]))
            scale, zero_point = detail["quantization"]
            if detail["dtype"] == np.int8 and scale:
                array = np.clip(np.round(array / scale) + zero_point, -128, 127)
            self.interpreter.set_tensor(detail["index"], array.astype(detail["dtype"]))

    def invoke(self) -> None:
        """Run the model once on the inputs set last."""
        self.interpreter.invoke()

    def outputs_as_float(self, shapes: Sequence[tuple[int, ...] | None]) -> list[FloatArray]:
        """The outputs dequantized to float32 and laid out as ``shapes`` (ONNX) where given."""
        arrays = []
        for position, detail in enumerate(self.outputs):
            array = self.interpreter.get_tensor(detail["index"])
            scale, zero_point = detail["quantization"]
            if array.dtype == np.int8 and scale:
                array = (array.astype(np.float32) - zero_point) * np.float32(scale)
            want = shapes[position] if position < len(shapes) else None
            if want is not None and array.shape != want:
                if array.ndim == 4 and tuple(array.shape[i] for i in (0, 3, 1, 2)) == want:
                    array = array.transpose(0, 3, 1, 2)
                elif array.size == int(np.prod(want)):
                    array = array.reshape(want)
            arrays.append(np.asarray(array, dtype=np.float32))
        return arrays

    def run(self, sample: Sample, shapes: Sequence[tuple[int, ...] | None]) -> list[FloatArray]:
        """Outputs for one sample (see :meth:`outputs_as_float`)."""
        self.set_inputs(sample)
        self.invoke()
        return self.outputs_as_float(shapes)


def _fit(array: npt.NDArray[Any], shape: tuple[int, ...]) -> npt.NDArray[Any]:
    if array.shape == shape:
        return array
    if array.ndim == 4 and tuple(array.shape[i] for i in (0, 2, 3, 1)) == shape:
        return np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    if array.size == int(np.prod(shape)):
        return array.reshape(shape)
    raise ModelError(f"expected an input of shape {shape}, got {array.shape}")


class OnnxRunner:
    """An onnxruntime CPU session over the ONNX model."""

    def __init__(self, onnx_model: bytes, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                onnx_model, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped exceptions
            raise ModelError(f"onnxruntime cannot load the ONNX model: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, sample: Sample) -> list[FloatArray]:
        """The float32 outputs for one sample."""
        feed = {name: np.asarray(sample[name], dtype=np.float32) for name in self.input_names}
        return [np.asarray(v, dtype=np.float32) for v in self.session.run(None, feed)]


def median_ms(call: Callable[[], object], *, runs: int, warmup: int = 1) -> float:
    """Median wall time of ``call`` in milliseconds over ``runs`` runs after ``warmup``."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1e3)
    return float(statistics.median(times))


def latencies(
    onnx_model: bytes | None,
    tflite: bytes,
    sample: Sample,
    *,
    threads: Sequence[int] = (1, 2),
    runs: int = 5,
) -> dict[str, dict[str, float]]:
    """``{"litert": {"1": ms, "2": ms}, "onnxruntime": {...}}``: median latency per threads."""
    result: dict[str, dict[str, float]] = {"litert": {}, "onnxruntime": {}}
    for count in threads:
        runner = TfliteRunner(tflite, threads=count)
        runner.set_inputs(sample)
        result["litert"][str(count)] = median_ms(runner.invoke, runs=runs)
        if onnx_model is not None:
            session = OnnxRunner(onnx_model, threads=count)
            result["onnxruntime"][str(count)] = median_ms(
                functools.partial(session.run, sample), runs=runs
            )
    return result


__all__ = ["OnnxRunner", "TfliteRunner", "latencies", "median_ms"]
