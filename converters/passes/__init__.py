"""ONNX import passes: small functions ``OnnxGraph -> OnnxGraph`` run before lowering.

Order used by :func:`edgeops.converters.pipeline.convert` (:func:`import_passes`):
fix input shapes → float64 to float32 → shape inference → fold constants and shape
subgraphs → fold BatchNormalization into the convolution before it → fuse exact GELU
→ remove identities → remove dead nodes → shape inference again (every value must have a
static shape for lowering, and every op a lowering).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from edgeops.converters.onnx_import import OnnxGraph
from edgeops.converters.passes.batchnorm import fold_batchnorm
from edgeops.converters.passes.cleanup import remove_dead_nodes, remove_identities
from edgeops.converters.passes.dtypes import demote_float64
from edgeops.converters.passes.fold import fold_constants
from edgeops.converters.passes.gelu import fuse_gelu
from edgeops.converters.passes.shapes import (
    fix_input_shapes,
    infer_shapes,
    require_static_shapes,
)
from edgeops.errors import UnsupportedOpError


def import_passes(
    graph: OnnxGraph, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> OnnxGraph:
    """Run every import pass in order; the result has a static shape for every value."""
    _check_domains(graph)
    graph = fix_input_shapes(graph, input_shapes or {})
    graph = demote_float64(graph)
    graph = infer_shapes(graph)
    graph = fold_constants(graph)
    graph = fold_batchnorm(graph)
    graph = fuse_gelu(graph)
    graph = remove_identities(graph)
    graph = remove_dead_nodes(graph)
    graph = infer_shapes(graph)
    require_static_shapes(graph)
    return graph


def _check_domains(graph: OnnxGraph) -> None:
    """Ops of other domains (training, vendor extensions) have no lowering: say so first."""
    for node in graph.nodes:
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(
                node.op_type, node.name, f"no TFLite lowering (domain {node.domain})"
            )


__all__ = [
    "demote_float64",
    "fix_input_shapes",
    "fold_batchnorm",
    "fold_constants",
    "fuse_gelu",
    "import_passes",
    "infer_shapes",
    "remove_dead_nodes",
    "remove_identities",
    "require_static_shapes",
]
