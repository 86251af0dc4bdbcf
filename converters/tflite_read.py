"""Inspecting an existing ``.tflite`` file: what it holds, and whether LiteRT can run it.

A ``.tflite`` given to ``edgeops convert`` is passed through unchanged after
:func:`inspect_tflite` has read its structure with the schema module and
:func:`check_loads` has loaded it in LiteRT and run it once on zeros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeops.errors import ModelError

#: Largest .tflite accepted (flatbuffers address 2 GB).
MAX_TFLITE_BYTES = 2 * 1024**3 - 1
_IDENTIFIER = b"TFL3"


@dataclass
class TensorInfo:
    """Name, shape, dtype and quantization of one model input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: list[float] = field(default_factory=list)
    zero_point: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }


@dataclass
class TfliteSummary:
    """The structure of a TFLite model."""

    size: int
    subgraphs: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    ops: dict[str, int]
    op_versions: dict[str, int]
    description: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "size": self.size,
            "subgraphs": self.subgraphs,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "ops": self.ops,
            "op_versions": self.op_versions,
            "description": self.description,
        }


def inspect_tflite(data: bytes) -> TfliteSummary:
    """Read the structure of a TFLite flatbuffer; :class:`ModelError` if it is not one."""
    import ai_edge_litert.schema_py_generated as schema

    if len(data) > MAX_TFLITE_BYTES:
        raise ModelError(f"expected a .tflite under 2 GB, got {len(data)} bytes")
    if len(data) < 8 or data[4:8] != _IDENTIFIER:
        raise ModelError("not a TFLite model (missing the TFL3 file identifier)")
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
    except Exception as exc:  # flatbuffers raises struct and index errors on bad data
        raise ModelError(f"the TFLite flatbuffer is malformed: {exc}") from exc
    if not model.subgraphs:
        raise ModelError("the TFLite model has no subgraph")
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    main = model.subgraphs[0]

    def info(index: int) -> TensorInfo:
        tensor = main.tensors[index]
        quant = tensor.quantization
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
        return TensorInfo(
            name=name,
            shape=tuple(int(d) for d in (tensor.shape if tensor.shape is not None else [])),
            dtype=type_names.get(tensor.type, str(tensor.type)).lower(),
            scale=[float(s) for s in (quant.scale if quant and quant.scale is not None else [])],
            zero_point=[
                int(z) for z in (quant.zeroPoint if quant and quant.zeroPoint is not None else [])
            ],
        )

    ops: dict[str, int] = {}
    versions: dict[str, int] = {}
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            number = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
            name = op_names.get(number, f"OP_{number}")
            if name == "CUSTOM" and code.customCode:
                custom = code.customCode
                name = f"CUSTOM:{custom.decode() if isinstance(custom, bytes) else custom}"
            ops[name] = ops.get(name, 0) + 1
            versions[name] = max(versions.get(name, 0), int(code.version))
    description = model.description
    return TfliteSummary(
        size=len(data),
        subgraphs=len(model.subgraphs),
        inputs=[info(i) for i in main.inputs],
        outputs=[info(i) for i in main.outputs],
        ops=dict(sorted(ops.items(), key=lambda item: (-item[1], item[0]))),
        op_versions=dict(sorted(versions.items())),
        description=description.decode() if isinstance(description, bytes) else str(description),
    )


def check_loads(data: bytes, *, run: bool = True) -> None:
    """Load the model in LiteRT, allocate its tensors and (``run``) invoke it once on zeros.

    Raises :class:`ModelError` with LiteRT's reason when it cannot.
    """
    from ai_edge_litert.interpreter import Interpreter

    try:
        interpreter = Interpreter(model_content=data)
        interpreter.allocate_tensors()
        if run:
            for detail in interpreter.get_input_details():
                interpreter.set_tensor(
                    detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"])
                )
            interpreter.invoke()
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"LiteRT cannot run the model: {exc}") from exc


__all__ = ["MAX_TFLITE_BYTES", "TensorInfo", "TfliteSummary", "check_loads", "inspect_tflite"]
