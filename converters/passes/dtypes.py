"""Demote float64 to float32: TFLite kernels have no float64 arithmetic.

ADD, MUL, CONV_2D… reject FLOAT64 tensors (``tflite/kernels/add.cc``: "Type FLOAT64 is
unsupported"), so a model exported in double precision is computed in float32: float64
inputs, constants and ``Cast(to=DOUBLE)`` all become float32. The converted model's inputs
and outputs are then float32; values agree with the float64 model to float32 precision.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from edgeops.converters.onnx_import import OnnxGraph

_F64 = np.dtype(np.float64)
_F32 = np.dtype(np.float32)


def demote_float64(graph: OnnxGraph) -> OnnxGraph:
    """Replace every float64 value, constant and cast target by float32."""
    result = graph.copy()
    result.constants = {
        k: v.astype(np.float32) if v.dtype == _F64 else v for k, v in result.constants.items()
    }
    result.dtypes = {k: _F32 if v == _F64 else v for k, v in result.dtypes.items()}
    for node in result.nodes:
        if node.op_type == "Cast" and node.attrs.get("to") == TensorProto.DOUBLE:
            node.attrs = {**node.attrs, "to": TensorProto.FLOAT}
    return result


__all__ = ["demote_float64"]
