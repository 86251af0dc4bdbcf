"""Serialize an :class:`~edgeops.converters.ir.Graph` to a TFLite flatbuffer, without TensorFlow.

The flatbuffer is built with the object API of the schema module that ships in
``ai-edge-litert`` (``ai_edge_litert.schema_py_generated``) and numpy. Rules the runtimes
rely on (``tensorflow/compiler/mlir/lite/schema/schema.fbs``):

* buffer 0 is the empty sentinel buffer; every tensor without data points at it;
* an operator code ≥ 127 stores 127 (``PLACEHOLDER_FOR_GREATER_OP_CODES``) in
  ``deprecated_builtin_code`` and the real code in ``builtin_code``; smaller codes store the
  same value in both (``schema_utils.cc GetBuiltinCode`` reads the larger of the two, which
  is how both LiteRT and tflite-runtime 2.14 decode it);
* an omitted optional input is the tensor index -1;
* constant data is aligned to 16 bytes so that runtimes may map it in place.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeops.converters.ir import Graph, Tensor
from edgeops.converters.op_versions import operator_version
from edgeops.errors import ConversionError

#: Schema version written in ``Model.version`` (TFLite schema v3).
SCHEMA_VERSION = 3
#: Alignment of constant data in the file, in bytes.
DATA_ALIGNMENT = 16

# Options table type of each builtin operator that takes options (schema.fbs BuiltinOptions).
_OPTIONS_OF: dict[str, str] = {
    "ADD": "AddOptions",
    "SUB": "SubOptions",
    "MUL": "MulOptions",
    "DIV": "DivOptions",
    "CONV_2D": "Conv2DOptions",
    "CONV_3D": "Conv3DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "TRANSPOSE_CONV": "TransposeConvOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "BATCH_MATMUL": "BatchMatMulOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "CONCATENATION": "ConcatenationOptions",
    "RESHAPE": "ReshapeOptions",
    "SOFTMAX": "SoftmaxOptions",
    "TRANSPOSE": "TransposeOptions",
    "PAD": "PadOptions",
    "PADV2": "PadV2Options",
    "MIRROR_PAD": "MirrorPadOptions",
    "MEAN": "ReducerOptions",
    "SUM": "ReducerOptions",
    "REDUCE_MAX": "ReducerOptions",
    "REDUCE_MIN": "ReducerOptions",
    "REDUCE_PROD": "ReducerOptions",
    "SPLIT": "SplitOptions",
    "SPLIT_V": "SplitVOptions",
    "STRIDED_SLICE": "StridedSliceOptions",
    "SLICE": "SliceOptions",
    "GATHER": "GatherOptions",
    "RESIZE_BILINEAR": "ResizeBilinearOptions",
    "RESIZE_NEAREST_NEIGHBOR": "ResizeNearestNeighborOptions",
    "LEAKY_RELU": "LeakyReluOptions",
    "SQUEEZE": "SqueezeOptions",
    "DEPTH_TO_SPACE": "DepthToSpaceOptions",
    "SPACE_TO_DEPTH": "SpaceToDepthOptions",
    "CAST": "CastOptions",
    "DEQUANTIZE": "DequantizeOptions",
    "QUANTIZE": "QuantizeOptions",
    "HARD_SWISH": "HardSwishOptions",
    "MAXIMUM": "MaximumMinimumOptions",
    "MINIMUM": "MaximumMinimumOptions",
    "POW": "PowOptions",
    "SQUARE": "SquareOptions",
    "EXPAND_DIMS": "ExpandDimsOptions",
    "TILE": "TileOptions",
    "EXP": "ExpOptions",
    "ABS": "AbsOptions",
    "NEG": "NegOptions",
    "GELU": "GeluOptions",
    "ARG_MAX": "ArgMaxOptions",
    "ARG_MIN": "ArgMinOptions",
    "LOCAL_RESPONSE_NORMALIZATION": "LocalResponseNormalizationOptions",
    "LOG_SOFTMAX": "LogSoftmaxOptions",
}

_TENSOR_TYPES: dict[np.dtype[Any], str] = {
    np.dtype(np.float32): "FLOAT32",
    np.dtype(np.float16): "FLOAT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.int64): "INT64",
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int8): "INT8",
    np.dtype(np.float64): "FLOAT64",
}


def _schema() -> Any:
    import ai_edge_litert.schema_py_generated as schema

    return schema


def tensor_type(dtype: np.dtype[Any]) -> int:
    """The schema ``TensorType`` value of a numpy dtype."""
    name = _TENSOR_TYPES.get(np.dtype(dtype))
    if name is None:
        raise ConversionError(f"TFLite has no tensor type for numpy dtype {dtype}")
    return int(getattr(_schema().TensorType, name))


def builtin_code(opcode: str) -> int:
    """The schema ``BuiltinOperator`` value of an opcode name."""
    value = getattr(_schema().BuiltinOperator, opcode, None)
    if value is None:
        raise ConversionError(f"{opcode!r} is not a TFLite builtin operator")
    return int(value)


def _enum_fields() -> dict[str, Any]:
    schema = _schema()
    return {
        "padding": schema.Padding,
        "fusedActivationFunction": schema.ActivationFunctionType,
        "mode": schema.MirrorPadMode,
        "inDataType": schema.TensorType,
        "outDataType": schema.TensorType,
        "outputType": schema.TensorType,
    }


def _build_options(opcode: str, options: dict[str, Any], source: str) -> tuple[int, Any]:
    schema = _schema()
    table = _OPTIONS_OF.get(opcode)
    if table is None:
        if options:
            raise ConversionError(f"{opcode} takes no options, got {sorted(options)}")
        return 0, None
    obj = getattr(schema, f"{table}T")()
    enums = _enum_fields()
    for key, given in options.items():
        value = given
        if not hasattr(obj, key):
            raise ConversionError(f"{table} has no field {key!r} (node {source!r})")
        if isinstance(value, str):
            enum = enums.get(key)
            if enum is None or not hasattr(enum, value):
                raise ConversionError(f"{table}.{key} has no value {value!r}")
            value = getattr(enum, value)
        elif isinstance(value, np.dtype):
            value = tensor_type(value)
        setattr(obj, key, value)
    return int(getattr(schema.BuiltinOptions, table)), obj


def _quantization(tensor: Tensor) -> Any:
    quant = tensor.quantization
    if quant is None:
        return None
    q = _schema().QuantizationParametersT()
    q.scale = quant.scales.astype(np.float32)
    q.zeroPoint = quant.zero_points.astype(np.int64)
    q.quantizedDimension = int(quant.quantized_dimension)
    if quant.min is not None and quant.max is not None:
        q.min = quant.min.astype(np.float32)
        q.max = quant.max.astype(np.float32)
    return q


@functools.cache
def _aligned_buffer_class() -> Any:
    schema = _schema()

    class AlignedBufferT(schema.BufferT):  # type: ignore[misc,name-defined]
        """A buffer whose data vector starts on a :data:`DATA_ALIGNMENT` boundary."""

        def Pack(self, builder: Any) -> Any:  # noqa: N802 - flatbuffers naming
            vector = None
            if self.data is not None:
                payload = self.data
                builder.StartVector(1, len(payload), DATA_ALIGNMENT)
                builder.head = builder.head - len(payload)
                builder.Bytes[builder.head : builder.head + len(payload)] = payload
                builder.vectorNumElems = len(payload)
                vector = builder.EndVector()
            schema.BufferStart(builder)
            if vector is not None:
                schema.BufferAddData(builder, vector)
            return schema.BufferEnd(builder)

    return AlignedBufferT


def _aligned_buffer(data: bytes | None) -> Any:
    buffer = _aligned_buffer_class()()
    buffer.data = data
    return buffer


def serialize(graph: Graph, *, description: str = "edgeops converter") -> bytes:
    """The TFLite flatbuffer bytes of ``graph`` (validated first)."""
    import flatbuffers  # type: ignore[import-untyped,unused-ignore]

    schema = _schema()
    graph.validate()

    buffers = [_aligned_buffer(None)]  # buffer 0: the empty sentinel (schema.fbs)
    tensor_index: dict[str, int] = {}
    tensors: list[Any] = []
    for name, tensor in graph.tensors.items():
        t = schema.TensorT()
        t.name = name
        if any(not -(2**31) <= int(d) < 2**31 for d in tensor.shape):
            # TFLite shapes are int32 (found by fuzzing: numpy's OverflowError)
            raise ConversionError(f"tensor {name!r}: shape {list(tensor.shape)} exceeds int32")
        t.shape = np.asarray(tensor.shape, dtype=np.int32)
        t.type = tensor_type(tensor.dtype)
        t.quantization = _quantization(tensor)
        if tensor.data is not None:
            raw = np.ascontiguousarray(tensor.data).astype(tensor.data.dtype.newbyteorder("<"))
            buffers.append(_aligned_buffer(raw.tobytes()))
            t.buffer = len(buffers) - 1
        else:
            t.buffer = 0
        tensor_index[name] = len(tensors)
        tensors.append(t)

    opcode_index: dict[tuple[str, int], int] = {}
    operator_codes: list[Any] = []
    operators: list[Any] = []
    for op in graph.operators:
        version = operator_version(graph, op)
        key = (op.opcode, version)
        if key not in opcode_index:
            code = builtin_code(op.opcode)
            oc = schema.OperatorCodeT()
            oc.builtinCode = code
            oc.deprecatedBuiltinCode = min(
                code, int(schema.BuiltinOperator.PLACEHOLDER_FOR_GREATER_OP_CODES)
            )
            oc.version = version
            opcode_index[key] = len(operator_codes)
            operator_codes.append(oc)
        o = schema.OperatorT()
        o.opcodeIndex = opcode_index[key]
        o.inputs = np.asarray(
            [-1 if name is None else tensor_index[name] for name in op.inputs], dtype=np.int32
        )
        o.outputs = np.asarray([tensor_index[name] for name in op.outputs], dtype=np.int32)
        o.builtinOptionsType, o.builtinOptions = _build_options(op.opcode, op.options, op.source)
        operators.append(o)

    subgraph = schema.SubGraphT()
    subgraph.tensors = tensors
    subgraph.operators = operators
    subgraph.inputs = np.asarray([tensor_index[n] for n in graph.inputs], dtype=np.int32)
    subgraph.outputs = np.asarray([tensor_index[n] for n in graph.outputs], dtype=np.int32)
    subgraph.name = "main"

    signature = schema.SignatureDefT()
    signature.signatureKey = "serving_default"
    signature.subgraphIndex = 0
    signature.inputs = [_tensor_map(schema, n, tensor_index[n]) for n in graph.inputs]
    signature.outputs = [_tensor_map(schema, n, tensor_index[n]) for n in graph.outputs]

    model = schema.ModelT()
    model.version = SCHEMA_VERSION
    model.description = description
    model.operatorCodes = operator_codes
    model.subgraphs = [subgraph]
    model.buffers = buffers
    model.signatureDefs = [signature]

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tensor_map(schema: Any, name: str, index: int) -> Any:
    entry = schema.TensorMapT()
    entry.name = name
    entry.tensorIndex = index
    return entry


def write_tflite(graph: Graph, path: str | os.PathLike[str]) -> int:
    """Write ``graph`` to ``path`` atomically (temp file + rename); return the size in bytes.

    Nothing is left at ``path`` when serialization fails.
    """
    data = serialize(graph)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(data)


__all__ = ["DATA_ALIGNMENT", "builtin_code", "serialize", "tensor_type", "write_tflite"]
