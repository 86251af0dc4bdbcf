"""Operator versions: which version each emitted operator needs, and the most a runtime reads.

A TFLite operator's version tells the runtime which kernel features it relies on
(``tensorflow/lite/tools/versioning/op_version.cc`` is the authority; the rules below
follow it for the operators and tensor types this converter emits). A runtime refuses a
model whose operator version it does not register, so the versions must be exact enough and
never above what the oldest supported runtime knows: ``tflite-runtime`` 2.14
(:data:`MAX_VERSIONS_TFLITE_2_14`, the one list of such limits).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeops.converters.ir import Graph, Operator
from edgeops.errors import ConversionError

#: Highest version of each builtin operator that tflite-runtime 2.14 registers, measured:
#: a one-operator model per (operator, version) loaded in tflite-runtime 2.14.0, whose
#: interpreter refuses an unregistered version ("Didn't find op for builtin opcode")
#: before looking at the tensors. LiteRT 2.3 registers at least as much for every entry
#: (``tests/unit/test_convert_writer.py`` checks that part). Only operators the converter
#: may emit are listed; emitting another is a converter bug caught by
#: :func:`operator_version`.
MAX_VERSIONS_TFLITE_2_14: dict[str, int] = {
    "ABS": 5,
    "ADD": 5,
    "ARG_MAX": 3,
    "ARG_MIN": 3,
    "AVERAGE_POOL_2D": 3,
    "BATCH_MATMUL": 4,
    "CAST": 5,
    "CEIL": 1,
    "CONCATENATION": 4,
    "CONV_2D": 7,
    "CONV_3D": 1,
    "COS": 1,
    "DEPTHWISE_CONV_2D": 7,
    "DEPTH_TO_SPACE": 2,
    "DEQUANTIZE": 5,
    "DIV": 2,
    "ELU": 1,
    "EQUAL": 4,
    "EXP": 2,
    "EXPAND_DIMS": 1,
    "FLOOR": 1,
    "FULLY_CONNECTED": 10,
    "GATHER": 6,
    "GELU": 2,
    "GREATER": 2,
    "GREATER_EQUAL": 3,
    "HARD_SWISH": 1,
    "LEAKY_RELU": 2,
    "LESS": 3,
    "LESS_EQUAL": 2,
    "LOCAL_RESPONSE_NORMALIZATION": 1,
    "LOG": 1,
    "LOGICAL_AND": 1,
    "LOGICAL_NOT": 1,
    "LOGICAL_OR": 1,
    "LOGISTIC": 3,
    "LOG_SOFTMAX": 2,
    "MAXIMUM": 4,
    "MAX_POOL_2D": 3,
    "MEAN": 3,
    "MINIMUM": 4,
    "MIRROR_PAD": 3,
    "MUL": 7,
    "NEG": 1,
    "NOT_EQUAL": 3,
    "PAD": 4,
    "PADV2": 4,
    "POW": 1,
    "PRELU": 1,
    "QUANTIZE": 3,
    "REDUCE_MAX": 3,
    "REDUCE_MIN": 3,
    "REDUCE_PROD": 2,
    "RELU": 3,
    "RELU6": 3,
    "RELU_N1_TO_1": 1,
    "RESHAPE": 1,
    "RESIZE_BILINEAR": 4,
    "RESIZE_NEAREST_NEIGHBOR": 4,
    "RSQRT": 2,
    "SELECT_V2": 2,
    "SIN": 1,
    "SLICE": 6,
    "SOFTMAX": 3,
    "SPACE_TO_DEPTH": 2,
    "SPLIT": 4,
    "SPLIT_V": 2,
    "SQRT": 1,
    "SQUARE": 1,
    "SQUEEZE": 2,
    "STRIDED_SLICE": 8,
    "SUB": 5,
    "SUM": 2,
    "TANH": 3,
    "TILE": 3,
    "TRANSPOSE": 6,
    "TRANSPOSE_CONV": 4,
}

_INT8 = np.dtype(np.int8)
_UINT8 = np.dtype(np.uint8)
_INT16 = np.dtype(np.int16)
_INT64 = np.dtype(np.int64)
_F32 = np.dtype(np.float32)

# Operators whose version is 1 for float, 2 for int8/uint8 and 3 for int16 activations
# (op_version.cc groups SOFTMAX, MEAN, RELU6, RSQRT… this way).
_INT8_IS_2_INT16_IS_3 = {
    "AVERAGE_POOL_2D",
    "LOGISTIC",
    "MAX_POOL_2D",
    "MEAN",
    "MIRROR_PAD",
    "REDUCE_MAX",
    "REDUCE_MIN",
    "RELU",
    "RELU6",
    "RSQRT",
    "SOFTMAX",
    "LOG_SOFTMAX",
    "TANH",
    "CONCATENATION",
    "DEPTH_TO_SPACE",
    "SPACE_TO_DEPTH",
    "SPLIT_V",
    "SUM",
    "REDUCE_PROD",
}


def _flag(options: dict[str, Any], key: str) -> bool:
    return bool(options.get(key, False))


def _is_per_channel(graph: Graph, name: str | None) -> bool:
    if name is None:
        return False
    quant = graph.tensors[name].quantization
    return quant is not None and quant.scales.size > 1


def operator_version(graph: Graph, op: Operator) -> int:
    """The version ``op`` needs given its tensor types and options (op_version.cc rules)."""
    if op.opcode not in MAX_VERSIONS_TFLITE_2_14:
        raise ConversionError(f"no version rule for TFLite operator {op.opcode}")
    version = op.version if op.version is not None else _rule(graph, op)
    limit = MAX_VERSIONS_TFLITE_2_14[op.opcode]
    if version > limit:
        raise ConversionError(
            f"{op.opcode} needs version {version} but tflite-runtime 2.14 reads at most "
            f"{limit} (node {op.source!r})"
        )
    return version


def _rule(graph: Graph, op: Operator) -> int:
    def dtype(names: list[str | None], index: int) -> np.dtype[Any] | None:
        if index >= len(names) or names[index] is None:
            return None
        name = names[index]
        assert name is not None
        return graph.tensors[name].dtype

    in0, in1 = dtype(op.inputs, 0), dtype(op.inputs, 1)
    out0 = dtype(list(op.outputs), 0)
    code = op.opcode
    rank0 = len(graph.tensors[op.inputs[0]].shape) if op.inputs and op.inputs[0] else 0
    max_rank = max((len(graph.tensors[n].shape) for n in op.inputs if n is not None), default=0)
    broadcast = (
        len(op.inputs) >= 2
        and op.inputs[0] is not None
        and op.inputs[1] is not None
        and graph.tensors[op.inputs[0]].shape != graph.tensors[op.inputs[1]].shape
    )

    if code == "CONV_2D":
        in_depth = graph.tensors[op.inputs[0]].shape[-1] if op.inputs[0] else 0
        filter_depth = graph.tensors[op.inputs[1]].shape[-1] if op.inputs[1] else 0
        if in_depth != filter_depth:
            return 6  # grouped convolution
        if in0 == _INT8 and in1 == _INT8 and out0 == _INT8:
            return 3
        if in0 == _F32 and in1 == _INT8:
            return 5 if _is_per_channel(graph, op.inputs[1]) else 2
        return 1
    if code == "DEPTHWISE_CONV_2D":
        if in0 == _F32 and in1 == _INT8:
            return 6 if _is_per_channel(graph, op.inputs[1]) else 4
        if in0 == _INT8 and in1 == _INT8:
            return 3
        dilated = op.options.get("dilationWFactor", 1) != 1
        dilated = dilated or op.options.get("dilationHFactor", 1) != 1
        return 2 if dilated else 1
    if code == "FULLY_CONNECTED":
        if in0 == _F32 and in1 == _INT8 and _is_per_channel(graph, op.inputs[1]):
            # Hybrid FC with per-channel weights needs version 12; tflite-runtime 2.14's
            # kernel (version <= 10) reads only the first scale (measured: 54 % error).
            return 12
        if in0 == _INT16 and in1 == _INT8:
            return 7
        if len(op.inputs) == 2 or (len(op.inputs) == 3 and op.inputs[2] is None):
            return 6
        if _flag(op.options, "keepNumDims"):
            return 5
        if in0 == _INT8 and in1 == _INT8:
            return 4
        if in0 == _F32 and in1 == _INT8:
            return 9 if _flag(op.options, "asymmetricQuantizeInputs") else 3
        return 1
    if code == "TRANSPOSE_CONV":
        if op.options.get("fusedActivationFunction", 0) not in (0, "NONE"):
            return 4
        if len(op.inputs) == 4 and op.inputs[3] is not None:
            return 3
        return 2 if in1 == _INT8 else 1
    if code == "DEQUANTIZE":
        if in0 in (_INT16, np.dtype(np.float16)):
            return 3
        if in0 == _INT8:
            return 5 if _is_per_channel(graph, op.inputs[0]) else 2
        return 1
    if code == "QUANTIZE":
        if _is_per_channel(graph, op.outputs[0]):
            return 3
        return 2 if out0 == _INT16 else 1
    if code in ("ADD",):
        if in0 == _INT64:
            return 4
        return 2 if in0 == _INT8 else 1
    if code == "SUB":
        if in0 == _INT64:
            return 4
        if broadcast and max_rank > 4:
            return 3
        return 2 if in0 == _INT8 else 1
    if code == "MUL":
        if in0 == _INT64:
            return 5
        if in0 == _INT16:
            return 4
        return 2 if in0 == _INT8 else 1
    if code == "DIV":
        return 2 if broadcast and max_rank > 4 else 1
    if code in ("MAXIMUM", "MINIMUM"):
        if broadcast and max_rank > 4:
            return 3
        return 2 if in0 == _INT8 else 1
    if code == "TRANSPOSE":
        if rank0 > 5:
            return 6
        if rank0 > 4:
            return 4
        return 2 if in0 == _INT8 else 1
    if code in ("PAD", "PADV2"):
        if rank0 > 4:
            return 4
        return 2 if in0 in (_INT8, _UINT8) else 1
    if code == "STRIDED_SLICE":
        if rank0 > 4:
            return 4
        return 2 if in0 == _INT8 else 1
    if code == "SLICE":
        if rank0 > 4:
            return 5
        return 2 if in0 == _INT8 else 1
    if code == "SPLIT":
        data = dtype(op.inputs, 1)
        return 2 if data == _INT8 else 1
    if code == "GATHER":
        return 2 if in0 == _INT8 else 1
    if code == "BATCH_MATMUL":
        return 2 if in0 == _INT8 else 1
    if code == "RESIZE_BILINEAR":
        if _flag(op.options, "halfPixelCenters"):
            return 3
        return 2 if in0 == _INT8 else 1
    if code == "RESIZE_NEAREST_NEIGHBOR":
        if _flag(op.options, "halfPixelCenters") or _flag(op.options, "alignCorners"):
            return 3
        return 2 if in0 == _INT8 else 1
    if code == "LEAKY_RELU":
        return 2 if in0 == _INT16 else 1
    if code == "CAST":
        return 1
    if code in _INT8_IS_2_INT16_IS_3:
        if in0 == _INT16:
            return 3
        return 2 if in0 in (_INT8, _UINT8) else 1
    if code in ("EQUAL", "NOT_EQUAL", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL"):
        return 2 if in0 == _INT8 else 1
    if code in ("ARG_MAX", "ARG_MIN"):
        return 2 if in0 == _INT8 else 1
    if code in ("TILE",):
        return 3 if in0 == _INT8 else 1
    if code in ("ABS", "NEG", "GELU", "EXP"):
        return 2 if in0 == _INT8 else 1
    return 1


__all__ = ["MAX_VERSIONS_TFLITE_2_14", "operator_version"]
