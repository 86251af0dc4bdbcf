"""Remove what computes nothing: Identity/Dropout nodes and nodes no output depends on."""

from __future__ import annotations

from edgeops.converters.onnx_import import OnnxGraph

#: Ops that pass their first input through unchanged at inference (Dropout: ONNX opset 13,
#: ``training_mode`` defaults to false and the mask output is optional).
_PASS_THROUGH = {"Identity", "Dropout"}


def remove_identities(graph: OnnxGraph) -> OnnxGraph:
    """Rewire readers of each Identity/Dropout output to read its input instead.

    When the output is a model output, the producer of the input is renamed instead, so the
    model keeps its output names. An identity from a model input straight to a model output
    is kept (lowering turns it into a copy).
    """
    result = graph.copy()
    outputs = set(result.outputs)
    kept = []
    for node in result.nodes:
        if node.op_type not in _PASS_THROUGH or (
            node.op_type == "Dropout" and len(node.outputs) > 1 and node.outputs[1]
        ):
            kept.append(node)
            continue
        if node.op_type == "Dropout" and node.attrs.get("training_mode"):
            kept.append(node)
            continue
        source, target = node.inputs[0], node.outputs[0]
        if target in outputs:
            if source in result.inputs or source in result.constants or source in outputs:
                kept.append(node)
                continue
            _rename(result, source, target)
        else:
            _rename(result, target, source)
    result.nodes = kept
    return result


def _rename(graph: OnnxGraph, old: str, new: str) -> None:
    for node in graph.nodes:
        node.inputs = [new if name == old else name for name in node.inputs]
        node.outputs = [new if name == old else name for name in node.outputs]
    graph.outputs = [new if name == old else name for name in graph.outputs]


def remove_dead_nodes(graph: OnnxGraph) -> OnnxGraph:
    """Drop nodes and constants that no model output depends on."""
    result = graph.copy()
    live = set(result.outputs)
    kept = []
    for node in reversed(result.nodes):
        if any(out in live for out in node.outputs if out):
            kept.append(node)
            live.update(name for name in node.inputs if name)
    kept.reverse()
    result.nodes = kept
    result.constants = {k: v for k, v in result.constants.items() if k in live}
    return result


__all__ = ["remove_dead_nodes", "remove_identities"]
