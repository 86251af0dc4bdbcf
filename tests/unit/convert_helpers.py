"""Build tiny ONNX models, convert them, run both sides, compare.

Used by the per-op conformance tests (``test_convert_*.py``) and reusable for int8 ones:
:func:`check_op` builds a one-node model, converts it in the given mode, runs onnxruntime on
the ONNX model and LiteRT on the result, and asserts the float32 tolerance of the converter
conformance suite: max abs error ≤ ``rel_tol`` × the range of the reference output.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeops.converters.pipeline import ConversionResult, ConvertOptions, convert_model, run_tflite

#: Float32 conformance tolerance: max abs error ≤ FLOAT_REL_TOL × reference output range.
FLOAT_REL_TOL = 1e-4

_NP_TO_ONNX = {
    np.dtype(np.float32): TensorProto.FLOAT,
    np.dtype(np.int64): TensorProto.INT64,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.bool_): TensorProto.BOOL,
    np.dtype(np.float64): TensorProto.DOUBLE,
}


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[int | str]],
    outputs: Sequence[str],
    initializers: Mapping[str, Any] | None = None,
    *,
    opset: int = 17,
    input_dtypes: Mapping[str, Any] | None = None,
    output_dtypes: Mapping[str, Any] | None = None,
) -> bytes:
    """An ONNX model (bytes) from nodes, named input shapes, output names and constants."""
    dtypes = dict(input_dtypes or {})
    graph = helper.make_graph(
        list(nodes),
        "test",
        [
            helper.make_tensor_value_info(
                name, _NP_TO_ONNX[np.dtype(dtypes.get(name, np.float32))], list(shape)
            )
            for name, shape in inputs.items()
        ],
        [
            helper.make_tensor_value_info(
                name, _NP_TO_ONNX[np.dtype((output_dtypes or {}).get(name, np.float32))], None
            )
            for name in outputs
        ],
        initializer=[
            numpy_helper.from_array(np.asarray(value), name)
            for name, value in (initializers or {}).items()
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def run_onnx(model: bytes, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Run the ONNX model in onnxruntime (CPU, default optimizations)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, dict(feeds))]


def random_feeds(
    inputs: Mapping[str, Sequence[int]], *, seed: int = 0, low: float = -2.0, high: float = 2.0
) -> dict[str, np.ndarray]:
    """Uniform random float32 inputs of the given (static) shapes."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.uniform(low, high, size=tuple(int(d) for d in shape)).astype(np.float32)
        for name, shape in inputs.items()
    }


@dataclass
class Comparison:
    """The outcome of one ONNX-vs-TFLite comparison."""

    result: ConversionResult
    expected: list[np.ndarray]
    actual: list[np.ndarray]

    def errors(self) -> list[float]:
        """Max abs error per output, relative to the reference output's range.

        A one-element or constant output has no range: the scale is then floored at 1e-2 of
        the largest reference magnitude (and at 1e-6): the 1e-4 tolerance then allows about
        ten float32 ulps of a single value instead of reading rounding as a 100 % error.
        """
        result = []
        for expected, actual in zip(self.expected, self.actual, strict=True):
            if not expected.size:
                result.append(0.0)
                continue
            e = expected.astype(np.float64)
            scale = max(float(np.ptp(e)), 1e-2 * float(np.max(np.abs(e))), 1e-6)
            result.append(float(np.max(np.abs(actual.astype(np.float64) - e))) / scale)
        return result

    def count(self, opcode: str) -> int:
        """How many TFLite operators of ``opcode`` the converted model holds."""
        return self.result.op_histogram().get(opcode, 0)


def convert_and_compare(
    model: bytes,
    feeds: Mapping[str, np.ndarray],
    *,
    quantize: str = "float32",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    calibration: Any = None,
) -> Comparison:
    """Convert ``model`` and run it on ``feeds`` in onnxruntime and LiteRT (ONNX layout).

    ``calibration`` is a path (folder, .npy, .npz) or a list of samples (dicts keyed by
    input name, ONNX layout) for int8.
    """
    samples = None
    path = None
    if isinstance(calibration, (list, tuple)):
        samples = calibration
    else:
        path = calibration
    options = ConvertOptions(
        quantize=quantize,  # type: ignore[arg-type]
        input_shapes=dict(input_shapes or {}),
        calibration=path,
        calibration_samples=samples,
    )
    result = convert_model(model, options)
    expected = run_onnx(model, feeds)
    actual = run_tflite(result.tflite, feeds)
    assert len(actual) == len(expected)
    for e, a in zip(expected, actual, strict=True):
        assert a.shape == e.shape, f"output shape {a.shape}, expected {e.shape}"
    _dump(result.tflite, feeds, expected)
    return Comparison(result, expected, actual)


def _dump(tflite: bytes, feeds: Mapping[str, np.ndarray], expected: list[np.ndarray]) -> None:
    """With ``EDGEOPS_DUMP_CONVERTED=DIR``, keep each converted model and its reference.

    Lets the same conformance cases be replayed in another runtime (the numpy<2
    tflite-runtime 2.14 venv) without converting there.
    """
    import hashlib
    import os
    from pathlib import Path

    folder = os.environ.get("EDGEOPS_DUMP_CONVERTED")
    if not folder:
        return
    digest = hashlib.sha256(tflite).hexdigest()[:16]
    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    (target / f"{digest}.tflite").write_bytes(tflite)
    arrays = {f"input:{k}": v for k, v in feeds.items()}
    arrays.update({f"output:{i}": v for i, v in enumerate(expected)})
    np.savez(target / f"{digest}.npz", **arrays)  # type: ignore[arg-type]


def check_model(
    model: bytes,
    inputs: Mapping[str, Sequence[int]],
    *,
    rel_tol: float = FLOAT_REL_TOL,
    seed: int = 0,
    feeds: Mapping[str, np.ndarray] | None = None,
    quantize: str = "float32",
    calibration: Any = None,
) -> Comparison:
    """Convert, run both runtimes on random inputs and assert the relative tolerance."""
    feeds = dict(feeds) if feeds is not None else random_feeds(inputs, seed=seed)
    comparison = convert_and_compare(model, feeds, quantize=quantize, calibration=calibration)
    for index, error in enumerate(comparison.errors()):
        assert error <= rel_tol, f"output {index}: error {error:.3g} of the range > {rel_tol}"
    return comparison


def check_op(
    op_type: str,
    inputs: Mapping[str, Sequence[int]],
    *,
    attrs: Mapping[str, Any] | None = None,
    constants: Mapping[str, np.ndarray] | None = None,
    input_order: Sequence[str] | None = None,
    outputs: int = 1,
    opset: int = 17,
    rel_tol: float = FLOAT_REL_TOL,
    quantize: str = "float32",
    seed: int = 0,
    calibration: Any = None,
) -> Comparison:
    """One-node model: ``op_type`` over ``inputs`` (activations) and ``constants``.

    ``input_order`` lists the node's inputs by name (``""`` for an omitted optional one);
    by default the activations then the constants, in the order given.
    """
    constants = dict(constants or {})
    order = list(input_order) if input_order is not None else [*inputs, *constants]
    output_names = [f"y{i}" for i in range(outputs)]
    node = helper.make_node(
        op_type, order, output_names, name=f"{op_type.lower()}_0", **dict(attrs or {})
    )
    model = make_model([node], inputs, output_names, constants, opset=opset)
    return check_model(
        model, inputs, rel_tol=rel_tol, seed=seed, quantize=quantize, calibration=calibration
    )


__all__ = [
    "FLOAT_REL_TOL",
    "Comparison",
    "check_model",
    "check_op",
    "convert_and_compare",
    "make_model",
    "random_feeds",
    "run_onnx",
]
