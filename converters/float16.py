"""``float16`` mode: weights stored as float16, computation in float32.

This is TFLite's float16 post-training scheme: each float32 constant operand becomes a
float16 constant feeding a DEQUANTIZE operator (DEQUANTIZE version 3 reads float16) whose
float32 output the original operator reads. CPU runtimes fold the DEQUANTIZE once at load
(XNNPACK does), so latency is that of float32 and the file is about half the size. Constants
smaller than :data:`MIN_ELEMENTS` stay float32: they weigh nothing and each would cost an op.
"""

from __future__ import annotations

import numpy as np

from edgeops.converters.ir import Graph, Operator

#: Float constants with fewer elements than this are left in float32.
MIN_ELEMENTS = 64


def to_float16(graph: Graph) -> Graph:
    """Store every large float32 constant as float16 behind a DEQUANTIZE (in place)."""
    replacements: dict[str, str] = {}
    new_ops: list[Operator] = []
    for name, tensor in list(graph.tensors.items()):
        data = tensor.data
        if data is None or data.dtype != np.float32 or data.size < MIN_ELEMENTS:
            continue
        if tensor.quantization is not None:
            continue
        half = graph.add_constant(f"{name}/fp16", data.astype(np.float16))
        restored = graph.add_tensor(f"{name}/dequantized", tensor.shape, np.float32)
        new_ops.append(Operator("DEQUANTIZE", [half], [restored], source=name))
        replacements[name] = restored
    if not replacements:
        return graph
    for op in graph.operators:
        op.inputs = [replacements.get(n, n) if n is not None else None for n in op.inputs]
    graph.operators = new_ops + graph.operators
    graph.remove_unused()
    return graph


__all__ = ["MIN_ELEMENTS", "to_float16"]
