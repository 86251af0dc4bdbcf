"""Model runtimes behind one interface: LiteRT, tflite-runtime, onnxruntime.

::

    from edgeops.agent.runtimes import load_model

    model = load_model(Path("model.tflite"), threads=4)   # runtime="auto"
    model.inputs            # (TensorSpec(name=..., shape=(1, 320, 320, 3), dtype="uint8", ...),)
    outputs = model.run({"images": array})                 # {"output0": array, ...}
    model.close()

``runtime="auto"`` picks ``ai_edge_litert`` for ``.tflite`` when it imports, else
``tflite_runtime`` (Raspberry Pi OS 32-bit, numpy<2); ``onnxruntime`` for ``.onnx``.
The runtime libraries (and numpy) are imported only when a model is loaded.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from importlib import import_module
from pathlib import Path

from edgeops.agent.runtimes.base import (
    DTYPE_TO_PROTOCOL,
    PROTOCOL_TO_DTYPE,
    ModelRuntime,
    TensorSpec,
    validate_inputs,
)
from edgeops.errors import ModelError

#: every runtime name :func:`load_model` accepts (besides ``"auto"``), with its distribution
RUNTIMES: dict[str, str] = {
    "ai_edge_litert": "ai-edge-litert",
    "tflite_runtime": "tflite-runtime",
    "onnxruntime": "onnxruntime",
}
_SUFFIXES = {".tflite": ("ai_edge_litert", "tflite_runtime"), ".onnx": ("onnxruntime",)}


def _installed_version(module: str) -> str | None:
    """The version in ``<module>-<version>.dist-info`` next to the package, if any.

    Cheaper than ``importlib.metadata`` (which pulls in ``email`` and ``zipfile``, about
    4 MB of RSS) and it does not import the runtime itself.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        for info in Path(location).parent.glob(f"{module}-*.dist-info"):
            return info.name[len(module) + 1 : -len(".dist-info")]
    return None


def available_runtimes() -> dict[str, str]:
    """Installed runtimes, name -> version, found without importing them."""
    found: dict[str, str] = {}
    for name in RUNTIMES:
        version = _installed_version(name)
        if version is not None:
            found[name] = version
    return found


def _importable(runtime: str) -> bool:
    # find_spec alone is not enough: ai_edge_litert may be installed but built for another
    # numpy, which only shows when its interpreter module is imported.
    module = "onnxruntime" if runtime == "onnxruntime" else f"{runtime}.interpreter"
    try:
        import_module(module)
    except ImportError:
        return False
    return True


def resolve_runtime(path: Path, runtime: str = "auto") -> str:
    """The runtime :func:`load_model` would use for ``path``; raises :class:`ModelError`."""
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ModelError(f"expected a .tflite or .onnx model, got {path.name!r}")
    candidates = _SUFFIXES[suffix]
    if runtime != "auto":
        if runtime not in RUNTIMES:
            raise ModelError(f"expected a runtime in {sorted(RUNTIMES)} or 'auto', got {runtime!r}")
        if runtime not in candidates:
            raise ModelError(f"runtime {runtime} cannot run a {suffix} model")
        return runtime
    for candidate in candidates:
        if _importable(candidate):
            return candidate
    raise ModelError(f"no runtime for {path.name}: install one of {list(candidates)}")


def load_model(
    path: Path,
    *,
    runtime: str = "auto",
    threads: int = 1,
    delegates: Sequence[str] = (),
) -> ModelRuntime:
    """Load ``path`` on ``runtime`` (see the module docstring for ``"auto"``).

    ``threads`` is the interpreter's thread count (from the board profile); ``delegates``
    are TFLite delegate libraries (``"libedgetpu.so.1"``) or onnxruntime execution
    providers. Raises :class:`ModelError` when the file cannot be read or loaded.
    """
    path = Path(path)
    if threads < 1:
        raise ModelError(f"expected threads >= 1, got {threads}")
    chosen = resolve_runtime(path, runtime)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    if chosen == "onnxruntime":
        from edgeops.agent.runtimes.onnx import OnnxRuntime

        return OnnxRuntime(path, threads=threads, delegates=delegates)
    from edgeops.agent.runtimes.tflite import TFLiteRuntime

    return TFLiteRuntime(path, runtime=chosen, threads=threads, delegates=delegates)


__all__ = [
    "DTYPE_TO_PROTOCOL",
    "PROTOCOL_TO_DTYPE",
    "RUNTIMES",
    "ModelRuntime",
    "TensorSpec",
    "available_runtimes",
    "load_model",
    "resolve_runtime",
    "validate_inputs",
]
