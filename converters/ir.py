"""The TFLite-level graph: lowering produces it, quantization rewrites it, the writer reads it.

The converter has two graph forms. ONNX import passes work on
:class:`edgeops.converters.onnx_import.OnnxGraph` (ONNX ops, NCHW). Lowering turns that into
this module's :class:`Graph`, whose operators are TFLite builtin operators with TFLite input
conventions and NHWC image layout. Every later step — fused activations, float16 weights,
int8/dynamic quantization (``edgeops.converters.quantize.quantize_graph``) — is a function
``Graph -> Graph`` on this form, and :func:`edgeops.converters.writer.write_tflite` serializes
whatever it holds, including per-tensor and per-channel quantization parameters.

Contract (stable; a change is recorded in the "Changes" list at the end of this docstring):

* :class:`Tensor` — ``name`` (unique in the graph), ``shape`` (a tuple of ints, static: the
  import passes fix every shape), ``dtype`` (a numpy dtype: float32, float16, int8, uint8,
  int16, int32, int64, bool), ``data`` (an ``np.ndarray`` of exactly that shape and dtype for
  constants, ``None`` for activations and graph inputs), ``quantization`` (``None`` or
  :class:`QuantParams`).
* :class:`QuantParams` — ``scales`` (float32 1-D), ``zero_points`` (int64 1-D, same length),
  ``quantized_dimension`` (the axis that ``scales`` runs along when it has more than one
  element: 0 for CONV_2D / FULLY_CONNECTED filters, 3 for DEPTHWISE_CONV_2D filters, per the
  TFLite quantization spec). Optional ``min``/``max`` (float32 1-D) are recorded for tools.
* :class:`Operator` — ``opcode`` is the TFLite ``BuiltinOperator`` name (``"CONV_2D"``);
  ``inputs`` are tensor names in TFLite order, ``None`` for an omitted optional input (the
  writer encodes it as -1); ``outputs`` are tensor names; ``options`` is a dict whose keys are
  the field names of the schema's ``<Name>OptionsT`` class for that opcode (``"padding"``,
  ``"strideW"``, ``"fusedActivationFunction"``…) and whose enum values may be given by name
  (``"SAME"``, ``"RELU6"``) or number; ``version`` is ``None`` to let the writer compute it from
  the operator and its tensor types (``edgeops.converters.op_versions``), or an int to force
  it; ``source`` names the ONNX node it came from, for error messages.
* :class:`Graph` — ``tensors`` (name → Tensor), ``operators`` (topologically sorted: every
  input of an operator is a graph input, a constant, or an output of an earlier operator),
  ``inputs``/``outputs`` (tensor names, in the order of the ONNX model's inputs/outputs).
  Helpers: :meth:`Graph.producer`, :meth:`Graph.consumers`, :meth:`Graph.add_tensor`,
  :meth:`Graph.add_constant`, :meth:`Graph.unique_name`, :meth:`Graph.toposort`,
  :meth:`Graph.remove_unused`, :meth:`Graph.validate`.

TFLite input conventions used by lowering (the quantizer relies on them):
CONV_2D ``[input NHWC, filter OHWI, bias (O,)]`` (a grouped convolution is one CONV_2D whose
filter depth I is the input depth divided by the group count); DEPTHWISE_CONV_2D
``[input, filter 1HW(I*M), bias]`` with ``depthMultiplier`` in the options;
TRANSPOSE_CONV ``[output_shape int32, filter OHWI, input, bias or None]``;
FULLY_CONNECTED ``[input, weights (out, in), bias or None]`` with ``keepNumDims``.
Image activations are NHWC. Float models carry float32 activations and weights; float16 mode
stores weights as float16 constants that feed a DEQUANTIZE operator.

Changes:

* Grouped convolutions are one grouped CONV_2D (filter depth = input depth / groups,
  version 6) instead of SPLIT + CONV_2D + CONCATENATION; checked float and int8 in LiteRT
  and tflite-runtime 2.14. Per-channel quantization along filter dimension 0 is unchanged.
* Writer rule (``op_versions``), not a change to these classes: a FULLY_CONNECTED with a
  float32 input and per-channel int8 weights (``dynamic`` mode) is version 12, above the
  10 that tflite-runtime 2.14 reads, so the writer refuses it. Its 2.14 kernel reads only
  the first weight scale (measured: 54 % max error against onnxruntime, where LiteRT is
  right). Hybrid FULLY_CONNECTED weights must be per-tensor; per-channel stays right for
  CONV_2D / DEPTHWISE_CONV_2D (hybrid, checked in 2.14) and for full-int8 FULLY_CONNECTED.
  ``quantize_dynamic`` gives FULLY_CONNECTED one weight scale per tensor and leaves
  TRANSPOSE_CONV float (2.14 has no hybrid TRANSPOSE_CONV).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeops.errors import ConversionError


@dataclass
class QuantParams:
    """Affine quantization of one tensor: ``real = scale * (q - zero_point)``.

    One scale per tensor, or one per slice along ``quantized_dimension`` (per-channel).
    """

    scales: npt.NDArray[np.float32]
    zero_points: npt.NDArray[np.int64]
    quantized_dimension: int = 0
    min: npt.NDArray[np.float32] | None = None
    max: npt.NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        self.scales = np.atleast_1d(np.asarray(self.scales, dtype=np.float32))
        self.zero_points = np.atleast_1d(np.asarray(self.zero_points, dtype=np.int64))
        if self.scales.shape != self.zero_points.shape or self.scales.ndim != 1:
            raise ConversionError(
                f"quantization needs 1-D scales and zero points of one length, got "
                f"{self.scales.shape} and {self.zero_points.shape}"
            )


@dataclass
class Tensor:
    """One TFLite tensor: an activation (``data is None``) or a constant."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    data: npt.NDArray[Any] | None = None
    quantization: QuantParams | None = None

    def __post_init__(self) -> None:
        self.shape = tuple(int(d) for d in self.shape)
        self.dtype = np.dtype(self.dtype)
        if self.data is not None and (
            self.data.shape != self.shape or self.data.dtype != self.dtype
        ):
            raise ConversionError(
                f"constant {self.name!r}: expected data of shape {self.shape} and dtype "
                f"{self.dtype}, got {self.data.shape} {self.data.dtype}"
            )

    @property
    def is_constant(self) -> bool:
        """True when the tensor holds data baked into the model."""
        return self.data is not None


@dataclass
class Operator:
    """One TFLite builtin operator (see the module docstring for the conventions)."""

    opcode: str
    inputs: list[str | None]
    outputs: list[str]
    options: dict[str, Any] = field(default_factory=dict)
    version: int | None = None
    source: str = ""


@dataclass
class Graph:
    """A TFLite subgraph with its tensors; operators are kept in topological order."""

    tensors: dict[str, Tensor] = field(default_factory=dict)
    operators: list[Operator] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    # -- queries -------------------------------------------------------------------------

    def producer(self, name: str) -> Operator | None:
        """The operator that writes tensor ``name``, or None for inputs and constants."""
        for op in self.operators:
            if name in op.outputs:
                return op
        return None

    def consumers(self, name: str) -> list[Operator]:
        """The operators that read tensor ``name``, in graph order."""
        return [op for op in self.operators if name in op.inputs]

    def constant(self, name: str | None) -> npt.NDArray[Any] | None:
        """The data of tensor ``name`` if it is a constant, else None."""
        if name is None:
            return None
        tensor = self.tensors.get(name)
        return None if tensor is None else tensor.data

    # -- building ------------------------------------------------------------------------

    def unique_name(self, hint: str) -> str:
        """``hint`` itself if no tensor has that name yet, else ``hint_1``, ``hint_2``…"""
        if hint not in self.tensors:
            return hint
        for index in itertools.count(1):
            candidate = f"{hint}_{index}"
            if candidate not in self.tensors:
                return candidate
        raise AssertionError("unreachable")  # pragma: no cover

    def add_tensor(
        self,
        hint: str,
        shape: Sequence[int],
        dtype: npt.DTypeLike,
        *,
        quantization: QuantParams | None = None,
    ) -> str:
        """Add an activation tensor under a fresh name derived from ``hint``; return the name."""
        name = self.unique_name(hint)
        self.tensors[name] = Tensor(
            name, tuple(shape), np.dtype(dtype), None, quantization=quantization
        )
        return name

    def add_constant(
        self, hint: str, data: npt.ArrayLike, *, quantization: QuantParams | None = None
    ) -> str:
        """Add a constant tensor holding ``data`` under a fresh name; return the name."""
        array = np.ascontiguousarray(data)
        name = self.unique_name(hint)
        self.tensors[name] = Tensor(
            name, array.shape, array.dtype, array, quantization=quantization
        )
        return name

    # -- maintenance ---------------------------------------------------------------------

    def toposort(self) -> None:
        """Reorder operators so that each comes after the producers of its inputs.

        Keeps the current order wherever it is already valid (a stable Kahn's algorithm).
        """
        produced_by: dict[str, int] = {}
        for index, op in enumerate(self.operators):
            for out in op.outputs:
                produced_by[out] = index
        deps: list[set[int]] = [
            {produced_by[i] for i in op.inputs if i is not None and i in produced_by}
            for op in self.operators
        ]
        done: set[int] = set()
        order: list[int] = []
        pending = list(range(len(self.operators)))
        while pending:
            progressed = False
            remaining = []
            for index in pending:
                if deps[index] <= done:
                    order.append(index)
                    done.add(index)
                    progressed = True
                else:
                    remaining.append(index)
            if not progressed:
                raise ConversionError("the graph has a cycle; cannot order its operators")
            pending = remaining
        self.operators = [self.operators[i] for i in order]

    def remove_unused(self) -> None:
        """Drop operators whose outputs nobody reads and tensors nobody references."""
        live: set[str] = set(self.outputs)
        kept: list[Operator] = []
        for op in reversed(self.operators):
            if any(out in live for out in op.outputs):
                kept.append(op)
                live.update(i for i in op.inputs if i is not None)
        kept.reverse()
        self.operators = kept
        referenced = set(self.inputs) | set(self.outputs)
        for op in kept:
            referenced.update(i for i in op.inputs if i is not None)
            referenced.update(op.outputs)
        self.tensors = {n: t for n, t in self.tensors.items() if n in referenced}

    def validate(self) -> None:
        """Raise :class:`ConversionError` if names dangle or the order is not topological."""
        available = set(self.inputs) | {n for n, t in self.tensors.items() if t.is_constant}
        for io_name in itertools.chain(self.inputs, self.outputs):
            if io_name not in self.tensors:
                raise ConversionError(f"graph input/output {io_name!r} has no tensor")
        for op in self.operators:
            for in_name in op.inputs:
                if in_name is None:
                    continue
                if in_name not in self.tensors:
                    raise ConversionError(f"{op.opcode} reads unknown tensor {in_name!r}")
                if in_name not in available:
                    raise ConversionError(
                        f"{op.opcode} reads {in_name!r} before any operator writes it"
                    )
            for name in op.outputs:
                if name not in self.tensors:
                    raise ConversionError(f"{op.opcode} writes unknown tensor {name!r}")
                available.add(name)
        for name in self.outputs:
            if name not in available:
                raise ConversionError(f"graph output {name!r} is never written")

    def opcode_histogram(self) -> dict[str, int]:
        """How many operators of each opcode the graph holds, most frequent first."""
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.opcode] = counts.get(op.opcode, 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def iter_constants(graph: Graph) -> Iterable[Tensor]:
    """The constant tensors of ``graph``."""
    return (t for t in graph.tensors.values() if t.is_constant)


__all__ = ["Graph", "Operator", "QuantParams", "Tensor", "iter_constants"]
