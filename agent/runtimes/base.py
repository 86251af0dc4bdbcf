"""The runtime interface: tensor specs, the :class:`ModelRuntime` protocol, input checks.

Only the standard library is imported here; numpy appears in annotations only, so code that
needs a spec (the bundle manifest, the inference API's metadata) does not pay for numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from edgeops.errors import InferenceInputError

if TYPE_CHECKING:
    import numpy as np

#: numpy dtype names a tensor may have; the Open Inference Protocol names beside them.
DTYPE_TO_PROTOCOL: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
PROTOCOL_TO_DTYPE: dict[str, str] = {value: key for key, value in DTYPE_TO_PROTOCOL.items()}


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    """One input or output of a model.

    ``shape`` uses ``-1`` for a dimension the model leaves open (a dynamic batch);
    ``dtype`` is a numpy dtype name (``"float32"``, ``"uint8"``); ``scale`` and
    ``zero_point`` are the affine quantization of an integer tensor
    (``real = scale * (q - zero_point)``), ``None`` when the tensor is not quantized.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a tensor needs a name")
        if self.dtype not in DTYPE_TO_PROTOCOL:
            raise ValueError(
                f"tensor {self.name!r}: expected a dtype in {sorted(DTYPE_TO_PROTOCOL)}, "
                f"got {self.dtype!r}"
            )
        if any(dim < -1 for dim in self.shape):
            raise ValueError(f"tensor {self.name!r}: bad shape {list(self.shape)}")
        if (self.scale is None) != (self.zero_point is None):
            raise ValueError(f"tensor {self.name!r}: scale and zero_point go together")

    @property
    def datatype(self) -> str:
        """The Open Inference Protocol datatype (``FP32``, ``UINT8``...)."""
        return DTYPE_TO_PROTOCOL[self.dtype]

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        """Whether a concrete ``shape`` fits this spec (``-1`` matches any size)."""
        return len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        )

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict (used by manifests and the inference API's metadata)."""
        out: dict[str, object] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.scale is not None:
            out["scale"] = self.scale
            out["zero_point"] = self.zero_point
        return out


@runtime_checkable
class ModelRuntime(Protocol):
    """A loaded model ready to run; one per model file.

    ``run`` may be called from many threads at once (implementations serialize when their
    library is not thread-safe). ``close`` releases the interpreter; ``run`` afterwards
    raises :class:`~edgeops.errors.StateError`.
    """

    @property
    def name(self) -> str:
        """The runtime's name: ``ai_edge_litert``, ``tflite_runtime`` or ``onnxruntime``."""
        ...

    @property
    def version(self) -> str:
        """The version of the runtime library."""
        ...

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs, in the model's order."""
        ...

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs, in the model's order."""
        ...

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model once; raises :class:`~edgeops.errors.ModelError` on failure."""
        ...

    def close(self) -> None:
        """Release the interpreter; idempotent."""
        ...


def validate_inputs(
    specs: Sequence[TensorSpec], inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Check ``inputs`` against ``specs``; return them as C-contiguous arrays by name.

    No silent conversions: a float64 array for a float32 input is an error, because the
    caller probably forgot a preprocessing step. Raises :class:`InferenceInputError`.
    """
    import numpy as np

    wanted = {spec.name for spec in specs}
    unknown = sorted(set(inputs) - wanted)
    if unknown:
        raise InferenceInputError(f"unknown input(s) {unknown}; the model takes {sorted(wanted)}")
    checked: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name not in inputs:
            raise InferenceInputError(f"missing input {spec.name!r}")
        array = inputs[spec.name]
        if not isinstance(array, np.ndarray):
            raise InferenceInputError(
                f"input {spec.name!r}: expected a numpy array, got {type(array).__name__}"
            )
        if array.dtype.name != spec.dtype:
            raise InferenceInputError(
                f"input {spec.name!r}: expected dtype {spec.dtype}, got {array.dtype.name}"
            )
        if not spec.accepts_shape(array.shape):
            raise InferenceInputError(
                f"input {spec.name!r}: expected shape {list(spec.shape)}, got {list(array.shape)}"
            )
        checked[spec.name] = np.ascontiguousarray(array)
    return checked
