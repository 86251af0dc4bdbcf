"""Fold ``BatchNormalization`` into the ``Conv`` (or ``ConvTranspose``) in front of it.

Inference-mode batch norm is ``y = (x - mean) / sqrt(var + eps) * gamma + beta``
(ONNX BatchNormalization, opset 15), a per-channel affine map, so it merges into the conv's
weights and bias: ``W' = W * s`` and ``b' = (b - mean) * s + beta`` with
``s = gamma / sqrt(var + eps)``. Only when the conv output feeds nothing but the batch norm.
"""

from __future__ import annotations

import numpy as np

from edgeops.converters.onnx_import import OnnxGraph


def fold_batchnorm(graph: OnnxGraph) -> OnnxGraph:
    """Merge each BatchNormalization that directly follows a constant-weight conv."""
    result = graph.copy()
    producers = result.producers()
    consumers = result.consumers()
    removed: set[int] = set()
    for node in result.nodes:
        if node.op_type != "BatchNormalization" or (
            len(node.outputs) > 1 and any(node.outputs[1:])
        ):
            continue
        conv = producers.get(node.inputs[0])
        if conv is None or conv.op_type not in ("Conv", "ConvTranspose"):
            continue
        if len(consumers.get(conv.outputs[0], [])) != 1 or conv.outputs[0] in result.outputs:
            continue
        params = [result.constants.get(name) for name in node.inputs[1:5]]
        weight = result.constants.get(conv.inputs[1])
        if weight is None or any(p is None for p in params):
            continue
        gamma, beta, mean, var = (np.asarray(p, dtype=np.float64) for p in params)
        eps = float(node.attr("epsilon", 1e-5))
        scale = gamma / np.sqrt(var + eps)
        bias_name = conv.inputs[2] if len(conv.inputs) > 2 and conv.inputs[2] else None
        bias = (
            np.asarray(result.constants[bias_name], dtype=np.float64)
            if bias_name is not None and bias_name in result.constants
            else np.zeros_like(mean)
        )
        if bias_name is not None and bias_name not in result.constants:
            continue
        if conv.op_type == "Conv":
            new_weight = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        else:
            # ConvTranspose weights are (C_in, C_out / group, k...); group 1 only here.
            if int(conv.attr("group", 1)) != 1:
                continue
            new_weight = weight * scale.reshape(1, -1, *([1] * (weight.ndim - 2)))
        new_bias = (bias - mean) * scale + beta
        weight_name = f"{conv.name}/bn_folded_weight"
        bias_out = f"{conv.name}/bn_folded_bias"
        result.constants[weight_name] = new_weight.astype(weight.dtype)
        result.constants[bias_out] = new_bias.astype(weight.dtype)
        result.shapes[weight_name] = tuple(new_weight.shape)
        result.shapes[bias_out] = tuple(new_bias.shape)
        result.dtypes[weight_name] = weight.dtype
        result.dtypes[bias_out] = weight.dtype
        conv.inputs = [conv.inputs[0], weight_name, bias_out]
        conv.outputs = [node.outputs[0]]
        removed.add(id(node))
    result.nodes = [n for n in result.nodes if id(n) not in removed]
    return result


__all__ = ["fold_batchnorm"]
