"""Clean-up passes on the lowered TFLite graph (``Graph -> Graph``, in place and returned).

* :func:`fuse_activations` — a RELU / RELU6 / RELU_N1_TO_1 right after an op that has a
  ``fused_activation_function`` (schema.fbs: Conv2DOptions, AddOptions, …) becomes that
  option, when the op's output feeds nothing else;
* :func:`collapse_reshapes` — RESHAPE of a RESHAPE is one RESHAPE, and a RESHAPE to the shape
  it already has disappears.
"""

from __future__ import annotations

from edgeops.converters.ir import Graph, Operator

_FUSABLE_INTO = {
    "CONV_2D",
    "CONV_3D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "ADD",
    "SUB",
    "MUL",
    "DIV",
    # CONCATENATION has the option too, but kernels ignore it (a shufflenet test caught it).
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
}
_ACTIVATIONS = {"RELU": "RELU", "RELU6": "RELU6", "RELU_N1_TO_1": "RELU_N1_TO_1"}


def _single_consumer(graph: Graph, name: str) -> Operator | None:
    if name in graph.outputs:
        return None
    readers = graph.consumers(name)
    return readers[0] if len(readers) == 1 else None


def fuse_activations(graph: Graph) -> Graph:
    """Fold ReLU-family activations into the op in front of them."""
    removed: set[int] = set()
    for op in graph.operators:
        if op.opcode not in _FUSABLE_INTO or len(op.outputs) != 1:
            continue
        if op.options.get("fusedActivationFunction", "NONE") not in ("NONE", 0):
            continue
        reader = _single_consumer(graph, op.outputs[0])
        if reader is None or reader.opcode not in _ACTIVATIONS or id(reader) in removed:
            continue
        op.options["fusedActivationFunction"] = _ACTIVATIONS[reader.opcode]
        del graph.tensors[op.outputs[0]]
        op.outputs = [reader.outputs[0]]
        removed.add(id(reader))
    graph.operators = [op for op in graph.operators if id(op) not in removed]
    return graph


def collapse_reshapes(graph: Graph) -> Graph:
    """Merge RESHAPE chains and drop RESHAPEs that change nothing."""
    changed = True
    while changed:
        changed = False
        for op in list(graph.operators):
            if op.opcode != "RESHAPE":
                continue
            source = op.inputs[0]
            assert source is not None
            src = graph.tensors[source]
            out = graph.tensors[op.outputs[0]]
            producer = graph.producer(source)
            if (
                producer is not None
                and producer.opcode == "RESHAPE"
                and _single_consumer(graph, source) is op
            ):
                op.inputs[0] = producer.inputs[0]
                graph.operators.remove(producer)
                del graph.tensors[source]
                changed = True
                break
            if (
                src.shape == out.shape
                and op.outputs[0] not in graph.outputs
                and source not in graph.outputs
            ):
                for reader in graph.consumers(op.outputs[0]):
                    reader.inputs = [source if n == op.outputs[0] else n for n in reader.inputs]
                graph.operators.remove(op)
                del graph.tensors[op.outputs[0]]
                changed = True
                break
    graph.remove_unused()
    return graph


__all__ = ["collapse_reshapes", "fuse_activations"]
