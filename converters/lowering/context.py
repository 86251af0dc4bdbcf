"""The state one lowering run shares between op lowerings, and the op table.

Each ONNX op type maps to one function ``(Lowering, Node) -> None`` registered with
:func:`register` (one module per op family in this package). A lowering reads its inputs
with :meth:`Lowering.tensor` — in whatever layout it needs; the context inserts the
TRANSPOSE or RESHAPE, once per value and layout — and declares its outputs with
:meth:`Lowering.output`, stating the layout they come out in (see
:mod:`edgeops.converters.layout`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from edgeops.converters import layout
from edgeops.converters.ir import Graph, Operator
from edgeops.converters.layout import Perm
from edgeops.converters.onnx_import import Node, OnnxGraph
from edgeops.errors import ConversionError, UnsupportedOpError

LoweringFn = Callable[["Lowering", Node], None]

#: The op table: ONNX op type → the one function that lowers it.
OP_TABLE: dict[str, LoweringFn] = {}


def register(*op_types: str) -> Callable[[LoweringFn], LoweringFn]:
    """Decorator: make ``fn`` the lowering of each of ``op_types``."""

    def decorate(fn: LoweringFn) -> LoweringFn:
        for op_type in op_types:
            if op_type in OP_TABLE:
                raise AssertionError(f"two lowerings for {op_type}")
            OP_TABLE[op_type] = fn
        return fn

    return decorate


@dataclass
class Value:
    """Where an ONNX value lives in the TFLite graph, and in which layout."""

    tensor: str
    perm: Perm


def int32_array(values: npt.ArrayLike, what: str) -> npt.NDArray[np.int32]:
    """``values`` as int32, TFLite's type for shapes, axes and paddings; a model whose
    values do not fit is refused (fuzzing found numpy's OverflowError escaping here)."""
    wide = np.asarray(values)
    if wide.size and wide.dtype.kind in "iu":
        low, high = int(wide.min()), int(wide.max())
        if low < -(2**31) or high >= 2**31:
            raise ConversionError(f"{what}: values {low}..{high} do not fit TFLite's int32")
    try:
        return np.asarray(values, dtype=np.int32)
    except (OverflowError, ValueError, TypeError) as exc:
        raise ConversionError(f"{what}: expected int32 values, got {values!r:.80}") from exc


class Lowering:
    """One lowering run: the ONNX graph being read and the TFLite graph being built."""

    def __init__(self, source: OnnxGraph, *, nhwc_inputs: bool = True) -> None:
        self.source = source
        self.graph = Graph()
        self.values: dict[str, Value] = {}
        self._views: dict[tuple[str, Perm], str] = {}
        self.node: Node | None = None
        #: Who reads each ONNX value (for lowerings that look one op ahead).
        self.readers = source.consumers()
        #: 2-D values whose TFLite columns are a permutation of the ONNX ones: column j
        #: holds ONNX feature ``order[j]`` (a flatten of an NHWC tensor read only by
        #: fully-connected ops, whose weights absorb the permutation).
        self.feature_order: dict[str, npt.NDArray[np.int64]] = {}
        for name in source.inputs:
            shape = self.shape(name)
            dtype = self.dtype(name)
            perm = (
                layout.channels_last(len(shape))
                if nhwc_inputs and len(shape) == 4 and dtype.kind == "f"
                else layout.identity(len(shape))
            )
            tensor = self.graph.add_tensor(name, layout.tflite_shape(shape, perm), dtype)
            self.graph.inputs.append(tensor)
            self.values[name] = Value(tensor, perm)

    # -- reading the ONNX side -----------------------------------------------------------

    def shape(self, name: str) -> tuple[int, ...]:
        """The static ONNX shape of value ``name``."""
        shape = self.source.static_shape(name)
        if shape is None:
            raise ConversionError(f"value {name!r} has no static shape")
        return shape

    def rank(self, name: str) -> int:
        """The ONNX rank of value ``name``."""
        return len(self.shape(name))

    def dtype(self, name: str) -> np.dtype[Any]:
        """The numpy dtype of value ``name``."""
        if name in self.source.constants:
            return self.source.constants[name].dtype
        dtype = self.source.dtypes.get(name)
        if dtype is None:
            raise ConversionError(f"value {name!r} has no known element type")
        return dtype

    def const(self, name: str) -> npt.NDArray[Any] | None:
        """The data of ``name`` when it is a constant, else None (also for ``""``)."""
        if not name:
            return None
        return self.source.constants.get(name)

    def require_const(self, name: str, what: str) -> npt.NDArray[Any]:
        """The data of constant ``name``, or an :class:`UnsupportedOpError` about ``what``."""
        value = self.const(name)
        if value is None:
            self.unsupported(f"{what} must be a constant")
        return value

    def perm(self, name: str) -> Perm:
        """The layout of ``name`` in the TFLite graph (constants: the ONNX layout)."""
        if name in self.values:
            return self.values[name].perm
        return layout.identity(self.rank(name))

    def unsupported(self, detail: str) -> NoReturn:
        """Stop the conversion: the current node cannot be lowered, for ``detail``."""
        node = self.node
        raise UnsupportedOpError(node.op_type if node else "?", node.name if node else "?", detail)

    # -- building the TFLite side --------------------------------------------------------

    def constant(self, hint: str, data: npt.ArrayLike) -> str:
        """A new constant tensor holding ``data`` (float64 stored as float32)."""
        array = np.asarray(data)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        return self.graph.add_constant(hint, array)

    def int32(self, hint: str, values: npt.ArrayLike) -> str:
        """A new int32 constant (shape, axis, padding and index operands)."""
        return self.graph.add_constant(hint, int32_array(values, hint))

    def temp(self, hint: str, shape: Sequence[int], dtype: npt.DTypeLike) -> str:
        """A new intermediate activation tensor."""
        return self.graph.add_tensor(hint, shape, dtype)

    def add(
        self,
        opcode: str,
        inputs: Sequence[str | None],
        outputs: Sequence[str],
        options: dict[str, Any] | None = None,
    ) -> Operator:
        """Append a TFLite operator for the current node."""
        op = Operator(
            opcode,
            list(inputs),
            list(outputs),
            dict(options or {}),
            source=self.node.name if self.node else "",
        )
        self.graph.operators.append(op)
        return op

    def output(self, name: str, perm: Perm | None = None, *, dtype: Any = None) -> str:
        """Declare ONNX output ``name`` as coming out laid out by ``perm``; return its tensor."""
        shape = self.shape(name)
        perm = layout.identity(len(shape)) if perm is None else perm
        tensor = self.graph.add_tensor(
            name, layout.tflite_shape(shape, perm), dtype or self.dtype(name)
        )
        self.values[name] = Value(tensor, perm)
        return tensor

    def alias(self, name: str, tensor: str, perm: Perm) -> None:
        """Declare ONNX value ``name`` to be an existing TFLite tensor (no op emitted)."""
        self.values[name] = Value(tensor, perm)

    def tensor(self, name: str, perm: Perm | None = None) -> str:
        """The TFLite tensor of ONNX value ``name`` laid out by ``perm`` (None: as it is).

        Constants are transposed in numpy. Activations get one TRANSPOSE per value and
        layout — a RESHAPE when only size-1 dimensions move.
        """
        constant = self.const(name)
        if constant is not None:
            perm = layout.identity(constant.ndim) if perm is None else perm
            key = (name, perm)
            if key not in self._views:
                self._views[key] = self.constant(name, np.transpose(constant, perm))
            return self._views[key]
        if name not in self.values:
            raise ConversionError(f"value {name!r} is read before it is computed")
        value = self.values[name]
        if perm is None or perm == value.perm:
            return value.tensor
        key = (name, perm)
        if key in self._views:
            return self._views[key]
        shape = self.shape(name)
        new_shape = layout.tflite_shape(shape, perm)
        out = self.temp(f"{name}/{'_'.join(map(str, perm))}", new_shape, self.dtype(name))
        if layout.same_memory_order(shape, value.perm, perm):
            self.add(
                "RESHAPE",
                [value.tensor, self.int32("shape", new_shape)],
                [out],
                {"newShape": list(new_shape)},
            )
        else:
            self.add(
                "TRANSPOSE",
                [value.tensor, self.int32("perm", layout.relative(value.perm, perm))],
                [out],
            )
        self._views[key] = out
        return out

    def broadcast_tensor(self, name: str, rank: int, perm: Perm) -> str:
        """``name`` reshaped to ``rank`` by ONNX broadcasting (leading 1s), laid out by ``perm``."""
        own_rank = self.rank(name)
        if own_rank == rank:
            return self.tensor(name, perm)
        if own_rank > rank or len(perm) != rank:
            # ONNX broadcasting only prepends 1s (found by fuzzing: numpy's ValueError).
            raise ConversionError(
                f"{name!r} of rank {own_rank} cannot broadcast to rank {rank} (layout {list(perm)})"
            )
        constant = self.const(name)
        shape = (1,) * (rank - own_rank) + self.shape(name)
        if constant is not None:
            key = (f"{name}@{rank}", perm)
            if key not in self._views:
                self._views[key] = self.constant(name, np.transpose(constant.reshape(shape), perm))
            return self._views[key]
        flat = self.tensor(name, layout.identity(own_rank))
        target = layout.tflite_shape(shape, perm)
        out = self.temp(f"{name}/rank{rank}", target, self.dtype(name))
        # The inserted axes have size 1. If `perm` keeps the original axes in their order,
        # only size-1 axes move and one RESHAPE does it; otherwise data must be transposed.
        original_axes = [a for a in perm if a >= rank - own_rank]
        if original_axes != sorted(original_axes):
            expanded = self.temp(f"{name}/expanded", shape, self.dtype(name))
            self.add(
                "RESHAPE", [flat, self.int32("shape", shape)], [expanded], {"newShape": list(shape)}
            )
            self.add("TRANSPOSE", [expanded, self.int32("perm", perm)], [out])
        else:
            self.add(
                "RESHAPE", [flat, self.int32("shape", target)], [out], {"newShape": list(target)}
            )
        return out


__all__ = ["OP_TABLE", "Lowering", "LoweringFn", "Value", "register"]
