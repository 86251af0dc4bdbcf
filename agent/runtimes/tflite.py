"""TFLite models on LiteRT (``ai_edge_litert``) or the older ``tflite_runtime``.

Both packages expose the same ``Interpreter`` class; only the import differs. The
interpreter is not thread-safe (its tensors are shared state between ``set_tensor``,
``invoke`` and ``get_tensor``), so each runtime serializes ``run`` with its own lock.

The interpreter applies XNNPACK, LiteRT's default delegate, to the operators it supports and
packs their weights into the delegate's own memory; without another delegate, the model
file's pages are then handed back to the kernel
(:func:`~edgeops.agent.runtimes.pages.page_out_file`, decision 0007).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeops.agent.runtimes.base import TensorSpec, validate_inputs
from edgeops.agent.runtimes.pages import page_out_file
from edgeops.errors import ModelError, StateError

if TYPE_CHECKING:
    import numpy as np

#: runtime name -> module holding ``Interpreter`` and ``load_delegate``
TFLITE_MODULES: dict[str, str] = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
}


def _spec_from_details(details: Mapping[str, Any]) -> TensorSpec:
    import numpy as np

    signature = details.get("shape_signature")
    shape = signature if signature is not None and len(signature) else details["shape"]
    scale, zero_point = details.get("quantization", (0.0, 0))
    quantized = bool(scale)
    return TensorSpec(
        name=str(details["name"]),
        shape=tuple(int(dim) for dim in shape),
        dtype=np.dtype(details["dtype"]).name,
        scale=float(scale) if quantized else None,
        zero_point=int(zero_point) if quantized else None,
    )


def _check_loadable(library: str, path: Path) -> None:
    # The interpreter's Delegate object raises from its __del__ when the library fails to
    # load, which surfaces as an unraisable exception; trying dlopen first avoids building it.
    import ctypes

    try:
        ctypes.CDLL(library)
    except OSError as exc:
        raise ModelError(f"cannot load {path.name}: delegate {library!r}: {exc}") from exc


class TFLiteRuntime:
    """A ``.tflite`` model on one of the two TFLite interpreters (see :data:`TFLITE_MODULES`)."""

    def __init__(
        self,
        path: Path,
        *,
        runtime: str = "ai_edge_litert",
        threads: int = 1,
        delegates: Sequence[str] = (),
    ) -> None:
        if runtime not in TFLITE_MODULES:
            raise ValueError(f"expected a runtime in {sorted(TFLITE_MODULES)}, got {runtime!r}")
        try:
            module = import_module(TFLITE_MODULES[runtime])
        except ImportError as exc:
            raise ModelError(
                f"cannot load {path.name}: runtime {runtime} is not installed"
            ) from exc
        self._name = runtime
        self._version = str(getattr(import_module(runtime), "__version__", "unknown"))
        self._lock = threading.Lock()
        for library in delegates:
            _check_loadable(library, path)
        try:
            loaded = [module.load_delegate(library) for library in delegates]
            interpreter = module.Interpreter(
                model_path=str(path),
                num_threads=threads,
                experimental_delegates=loaded or None,
            )
            interpreter.allocate_tensors()
            input_details = interpreter.get_input_details()
            output_details = interpreter.get_output_details()
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"cannot load {path} with {runtime}: {exc}") from exc
        self._interpreter: Any = interpreter
        self._input_index = {str(d["name"]): int(d["index"]) for d in input_details}
        self._output_index = [(str(d["name"]), int(d["index"])) for d in output_details]
        self._inputs = tuple(_spec_from_details(d) for d in input_details)
        self._outputs = tuple(_spec_from_details(d) for d in output_details)
        self._current_shapes = {str(d["name"]): tuple(d["shape"]) for d in input_details}
        if not delegates:
            # XNNPACK packed the weights in allocate_tensors; the file's pages are a second,
            # mostly unread copy. Other delegates may read the file later, so they keep it.
            page_out_file(path)

    @property
    def name(self) -> str:
        """``ai_edge_litert`` or ``tflite_runtime``."""
        return self._name

    @property
    def version(self) -> str:
        """The version of the interpreter package."""
        return self._version

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs."""
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs."""
        return self._outputs

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model once (serialized: the interpreter holds shared tensor state)."""
        arrays = validate_inputs(self._inputs, inputs)
        with self._lock:
            interpreter = self._interpreter
            if interpreter is None:
                raise StateError(f"the {self._name} model was closed")
            try:
                self._resize_if_needed(interpreter, arrays)
                for name, array in arrays.items():
                    interpreter.set_tensor(self._input_index[name], array)
                interpreter.invoke()
                # get_tensor returns a copy, so results stay valid after the lock is released
                return {name: interpreter.get_tensor(index) for name, index in self._output_index}
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"{self._name} failed to run the model: {exc}") from exc

    def _resize_if_needed(self, interpreter: Any, arrays: Mapping[str, np.ndarray]) -> None:
        # Only models with open dimensions (-1) get here with a new shape; validate_inputs
        # has already refused anything else.
        changed = False
        for name, array in arrays.items():
            if self._current_shapes[name] != array.shape:
                interpreter.resize_tensor_input(self._input_index[name], list(array.shape))
                self._current_shapes[name] = array.shape
                changed = True
        if changed:
            interpreter.allocate_tensors()

    def close(self) -> None:
        """Drop the interpreter once no ``run`` holds it."""
        with self._lock:
            self._interpreter = None
