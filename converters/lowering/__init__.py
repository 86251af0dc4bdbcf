"""Lowering: ONNX nodes to TFLite builtin operators, found from one table.

:data:`OP_TABLE` maps each supported ONNX op type to the one function that lowers it; the
functions live in one module per op family (``conv``, ``pool``, ``matmul``,
``activation``, ``elementwise``, ``normalization``, ``reduce``, ``tensor``, ``resize``).
:func:`lower` walks the import-pass output in order and builds an
:class:`~edgeops.converters.ir.Graph`; later passes on that graph (:mod:`.fuse`) fold
activations into the ops in front of them.
"""

from __future__ import annotations

from edgeops.converters import layout
from edgeops.converters.ir import Graph
from edgeops.converters.lowering import (  # noqa: F401 - each module fills OP_TABLE
    activation,
    conv,
    elementwise,
    matmul,
    normalization,
    pool,
    reduce,
    resize,
)
from edgeops.converters.lowering import tensor as tensor_ops  # noqa: F401 - same
from edgeops.converters.lowering.context import OP_TABLE, Lowering, register
from edgeops.converters.onnx_import import OnnxGraph
from edgeops.errors import UnsupportedOpError


def supported_ops() -> list[str]:
    """The ONNX op types the converter lowers, sorted."""
    return sorted(OP_TABLE)


def lower(source: OnnxGraph, *, nhwc_inputs: bool = True) -> Graph:
    """Lower an import-passed ONNX graph to a TFLite graph.

    Raises :class:`UnsupportedOpError` naming the first node whose op type, domain or
    attributes the table cannot lower.
    """
    ctx = Lowering(source, nhwc_inputs=nhwc_inputs)
    for node in source.nodes:
        ctx.node = node
        fn = OP_TABLE.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if fn is None:
            domain = f" (domain {node.domain})" if node.domain else ""
            raise UnsupportedOpError(node.op_type, node.name, f"no TFLite lowering{domain}")
        fn(ctx, node)
    ctx.node = None
    for name in source.outputs:
        rank = ctx.rank(name)
        tensor_name = ctx.tensor(name, layout.identity(rank))
        if (
            ctx.const(name) is not None
            or tensor_name in ctx.graph.inputs
            or tensor_name in ctx.graph.outputs
        ):
            # A constant output, an input passed straight through, or an output listed
            # twice still needs an operator (and a tensor of its own name) to produce it.
            tensor_name = _copy(ctx, tensor_name, name)
        final = _rename(ctx.graph, tensor_name, name)
        ctx.graph.outputs.append(final)
    ctx.graph.remove_unused()
    ctx.graph.validate()
    return ctx.graph


def _copy(ctx: Lowering, tensor_name: str, hint: str) -> str:
    src = ctx.graph.tensors[tensor_name]
    out = ctx.temp(hint, src.shape, src.dtype)
    ctx.add(
        "RESHAPE",
        [tensor_name, ctx.int32("shape", src.shape)],
        [out],
        {"newShape": list(src.shape)},
    )
    return out


def _rename(graph: Graph, current: str, wanted: str) -> str:
    """Give the output tensor the ONNX output name, moving any other holder of that name."""
    if current == wanted:
        return current
    if current in graph.inputs or current in graph.outputs:
        return current
    if wanted in graph.tensors:
        _rename_tensor(graph, wanted, graph.unique_name(f"{wanted}/inner"))
    _rename_tensor(graph, current, wanted)
    return wanted


def _rename_tensor(graph: Graph, old: str, new: str) -> None:
    tensor = graph.tensors.pop(old)
    tensor.name = new
    graph.tensors[new] = tensor
    for op in graph.operators:
        op.inputs = [new if name == old else name for name in op.inputs]
        op.outputs = [new if name == old else name for name in op.outputs]
    graph.inputs = [new if name == old else name for name in graph.inputs]
    graph.outputs = [new if name == old else name for name in graph.outputs]


__all__ = ["OP_TABLE", "Lowering", "lower", "register", "supported_ops"]
