"""Fuse the exported form of exact GELU into one ``Gelu`` node (lowered to TFLite GELU).

PyTorch exports ``gelu(x) = x · ½ · (1 + erf(x / √2))`` before opset 20 as
``Div(x, √2) → Erf → Add(1) → Mul(x) → Mul(½)`` (or with ``Mul(x, ½)`` first, or
``Mul(x, 1/√2)`` for the division). TFLite has no ERF builtin but has GELU, so the whole
pattern becomes one node; an Erf outside the pattern stays unsupported.
"""

from __future__ import annotations

import math

import numpy as np

from edgeops.converters.onnx_import import Node, OnnxGraph


def _scalar(graph: OnnxGraph, name: str) -> float | None:
    value = graph.constants.get(name)
    if value is None or value.size != 1:
        return None
    return float(np.asarray(value).reshape(()))


def _other(node: Node, name: str) -> str | None:
    """The input of a two-input node that is not ``name``."""
    if len(node.inputs) != 2 or name not in node.inputs:
        return None
    return node.inputs[1] if node.inputs[0] == name else node.inputs[0]


def fuse_gelu(graph: OnnxGraph) -> OnnxGraph:
    """Replace each exact-GELU subgraph by a ``Gelu`` node (see the module docstring)."""
    result = graph.copy()
    producers = result.producers()
    consumers = result.consumers()
    outputs = set(result.outputs)

    def only_reader(name: str) -> Node | None:
        readers = consumers.get(name, [])
        return readers[0] if len(readers) == 1 and name not in outputs else None

    removed: set[int] = set()
    added: dict[int, Node] = {}
    for erf in result.nodes:
        if erf.op_type != "Erf":
            continue
        scaled = producers.get(erf.inputs[0])
        if scaled is None or only_reader(erf.inputs[0]) is not erf:
            continue
        x = scaled.inputs[0]
        factor = _scalar(result, scaled.inputs[1])
        if factor is None or not (
            (scaled.op_type == "Div" and math.isclose(factor, math.sqrt(2), rel_tol=1e-4))
            or (scaled.op_type == "Mul" and math.isclose(factor, 1 / math.sqrt(2), rel_tol=1e-4))
        ):
            continue
        add = only_reader(erf.outputs[0])
        if add is None or add.op_type != "Add":
            continue
        one = _other(add, erf.outputs[0])
        if one is None or _scalar(result, one) != 1.0:
            continue
        mul = only_reader(add.outputs[0])
        if mul is None or mul.op_type != "Mul":
            continue
        partner = _other(mul, add.outputs[0])
        chain: list[Node] = [scaled, erf, add, mul]
        if partner == x:
            last = only_reader(mul.outputs[0])
            if last is None or last.op_type != "Mul":
                continue
            half = _other(last, mul.outputs[0])
            if half is None or _scalar(result, half) != 0.5:
                continue
            chain.append(last)
        else:
            half_node = producers.get(partner or "")
            if half_node is None or half_node.op_type != "Mul" or x not in half_node.inputs:
                continue
            half = _other(half_node, x)
            if (
                half is None
                or _scalar(result, half) != 0.5
                or only_reader(partner or "") is not mul
            ):
                continue
            chain.append(half_node)
            last = mul
        gelu = Node("Gelu", f"{last.name}/gelu", [x], [last.outputs[0]], {}, "")
        # Gelu is element-wise: its output has x's shape and type (ONNX shape inference
        # does not know Gelu before opset 20).
        if x in result.shapes:
            result.shapes[last.outputs[0]] = result.shapes[x]
        if x in result.dtypes:
            result.dtypes[last.outputs[0]] = result.dtypes[x]
        removed.update(id(n) for n in chain)
        added[id(last)] = gelu
    if not removed:
        return result
    result.nodes = [
        added.get(id(n), n) for n in result.nodes if id(n) not in removed or id(n) in added
    ]
    return result


__all__ = ["fuse_gelu"]
