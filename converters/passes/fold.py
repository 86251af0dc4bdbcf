"""Constant folding: evaluate every node whose inputs are all known, including shape subgraphs.

A node is folded when each of its inputs is a constant, and ``Shape``/``Size`` nodes are
folded as soon as their input's shape is static. The evaluation uses the ONNX reference
implementation (``onnx.reference``), so every standard op folds with ONNX semantics —
Shape, Gather, Range, ConstantOfShape, Expand, Cast, Unsqueeze, Concat, Slice, arithmetic…
Folding and shape inference alternate until nothing changes, because a folded
``Reshape`` target lets inference fix the shapes after it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from edgeops.converters.onnx_import import Node, OnnxGraph
from edgeops.errors import ConversionError

#: A node whose folded value would exceed this many bytes is left as an op. Weights built
#: at run time (ConstantOfShape of a VGG classifier: 400 MB) still fold; the bound stops an
#: Expand of a constant from growing the model past what a device could load anyway.
MAX_FOLDED_BYTES = 1024 * 1024 * 1024
#: Ops never folded even when their inputs are constant (random or stateful).
_NEVER_FOLD = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
}


def fold_constants(graph: OnnxGraph, *, max_rounds: int = 32) -> OnnxGraph:
    """Replace every computable node by its value, alternating with shape inference."""
    from edgeops.converters.passes.shapes import infer_shapes

    result = graph.copy()
    for _ in range(max_rounds):
        folded = _fold_once(result)
        if not folded:
            return result
        result = infer_shapes(result)
    return result


def _fold_once(graph: OnnxGraph) -> int:
    kept: list[Node] = []
    folded = 0
    graph_outputs = set(graph.outputs)
    for node in graph.nodes:
        values = _evaluate(graph, node)
        if values is None or any(out in graph_outputs for out in node.outputs):
            kept.append(node)
            continue
        for name, value in zip(node.outputs, values, strict=False):
            if name:
                graph.constants[name] = value
                graph.shapes[name] = tuple(value.shape)
                graph.dtypes[name] = value.dtype
        folded += 1
    graph.nodes = kept
    return folded


def _evaluate(graph: OnnxGraph, node: Node) -> list[npt.NDArray[Any]] | None:
    if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER_FOLD:
        return None
    if node.op_type in ("Shape", "Size"):
        shape = graph.static_shape(node.inputs[0])
        if shape is None:
            return None
        if node.op_type == "Size":
            return [np.asarray(int(np.prod(shape)), dtype=np.int64)]
        start = int(node.attr("start", 0))
        end = node.attr("end")
        dims = shape[start:] if end is None else shape[start : int(end)]
        return [np.asarray(dims, dtype=np.int64)]
    present = [name for name in node.inputs if name]
    if not present or not all(name in graph.constants for name in present):
        return None
    if _inferred_bytes(graph, node) > MAX_FOLDED_BYTES:
        # Checked before evaluating too: a Conv with a pad of 2**28 on constant inputs
        # exhausted memory inside the reference evaluator (found by fuzzing).
        return None
    return _run_reference(graph, node)


def _inferred_bytes(graph: OnnxGraph, node: Node) -> int:
    """The size of the node's outputs by the inferred shapes (0 where unknown)."""
    total = 0
    for name in node.outputs:
        shape = graph.static_shape(name) if name else None
        if shape is not None:
            itemsize = np.dtype(graph.dtypes.get(name, np.float32)).itemsize
            total += int(np.prod(shape, dtype=np.float64)) * itemsize
    return total


def _run_reference(graph: OnnxGraph, node: Node) -> list[npt.NDArray[Any]] | None:
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    proto = helper.make_node(node.op_type, node.inputs, node.outputs, name=node.name, **node.attrs)
    inputs = [
        helper.make_tensor_value_info(
            n, helper.np_dtype_to_tensor_dtype(graph.constants[n].dtype), graph.constants[n].shape
        )
        for n in node.inputs
        if n
    ]
    outputs = [helper.make_tensor_value_info(n, 0, None) for n in node.outputs if n]
    model = helper.make_model(
        helper.make_graph([proto], "fold", inputs, outputs),
        opset_imports=[helper.make_opsetid("", graph.opset)],
    )
    try:
        evaluator = ReferenceEvaluator(model)
        results = evaluator.run(None, {n: graph.constants[n] for n in node.inputs if n})
    except Exception as exc:  # the reference implementation raises plain exceptions
        raise ConversionError(
            f"cannot evaluate constant {node.op_type} node {node.name!r}: {exc}"
        ) from exc
    arrays = [np.asarray(r) for r in results]
    if sum(a.nbytes for a in arrays) > MAX_FOLDED_BYTES:
        return None
    return arrays


__all__ = ["MAX_FOLDED_BYTES", "fold_constants"]
