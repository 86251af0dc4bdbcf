"""ONNX models on onnxruntime: the path for ONNX bundles and Jetson boards.

``InferenceSession.run`` is thread-safe, so unlike the TFLite runtimes this one does not
serialize calls; ``delegates`` are onnxruntime execution providers
(``"CUDAExecutionProvider"``, ``"TensorrtExecutionProvider"``), tried in order, CPU last.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeops.agent.runtimes.base import TensorSpec, validate_inputs
from edgeops.errors import ModelError, StateError

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

# onnxruntime reports types as "tensor(float)"; the names inside map onto numpy's.
_ONNX_TYPES = {
    "tensor(bool)": "bool",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(float16)": "float16",
    "tensor(float)": "float32",
    "tensor(double)": "float64",
}


def _spec_from_node(node: Any) -> TensorSpec:
    dtype = _ONNX_TYPES.get(str(node.type))
    if dtype is None:
        raise ModelError(f"tensor {node.name!r} has type {node.type}, which edgeops cannot serve")
    # Symbolic ("batch") or missing dimensions are open dimensions.
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape)
    return TensorSpec(name=str(node.name), shape=shape, dtype=dtype)


class OnnxRuntime:
    """An ``.onnx`` model on onnxruntime."""

    def __init__(self, path: Path, *, threads: int = 1, delegates: Sequence[str] = ()) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError(
                f"cannot load {path.name}: runtime onnxruntime is not installed"
            ) from exc
        self._version = str(ort.__version__)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # A board profile names the providers a Jetson has; where one is missing (another
        # build of onnxruntime, no TensorRT), run on what is there instead of failing.
        available = set(ort.get_available_providers())
        missing = [name for name in delegates if name not in available]
        if missing:
            log.warning("onnxruntime has no %s here; using %s", missing, sorted(available))
        providers = [name for name in delegates if name in available]
        providers.append("CPUExecutionProvider")
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
            self._inputs = tuple(_spec_from_node(node) for node in session.get_inputs())
            self._outputs = tuple(_spec_from_node(node) for node in session.get_outputs())
        except ModelError:
            raise
        except Exception as exc:
            # onnxruntime raises its own exception classes from a compiled module
            # (InvalidProtobuf, NoSuchFile, Fail...), with no common importable base.
            raise ModelError(f"cannot load {path} with onnxruntime: {exc}") from exc
        self._session: Any = session
        self._providers = list(session.get_providers())
        self._output_names = [spec.name for spec in self._outputs]
        self._closing = threading.Lock()

    @property
    def name(self) -> str:
        """``onnxruntime``."""
        return "onnxruntime"

    @property
    def version(self) -> str:
        """The onnxruntime version."""
        return self._version

    @property
    def providers(self) -> list[str]:
        """The execution providers the session runs on, preferred first."""
        return list(self._providers)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs."""
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs."""
        return self._outputs

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model once."""
        arrays = validate_inputs(self._inputs, inputs)
        session = self._session
        if session is None:
            raise StateError("the onnxruntime model was closed")
        try:
            results = session.run(self._output_names, arrays)
        except Exception as exc:
            raise ModelError(f"onnxruntime failed to run the model: {exc}") from exc
        return dict(zip(self._output_names, results, strict=True))

    def close(self) -> None:
        """Drop the session; a ``run`` already under way keeps its own reference."""
        with self._closing:
            self._session = None
