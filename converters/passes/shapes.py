"""Input shapes and shape inference.

The TFLite model is static: every tensor has a fixed shape. :func:`fix_input_shapes` pins
the model inputs (from ``--input-shape`` or from the model when its input is already
static), :func:`infer_shapes` propagates shapes through the graph with ONNX shape inference
(``data_prop`` on, so shape arithmetic is followed), and falls back to running the graph once
in onnxruntime for the values ONNX inference leaves symbolic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from edgeops.converters.onnx_import import OnnxGraph, record_value_infos
from edgeops.errors import ConversionError, UnsupportedOpError


def fix_input_shapes(graph: OnnxGraph, input_shapes: Mapping[str, Sequence[int]]) -> OnnxGraph:
    """Pin every model input to a static shape.

    ``input_shapes`` maps input names to shapes; inputs it does not name must already be
    static in the model. Raises :class:`ConversionError` naming the input and its symbolic
    shape otherwise, or when a given shape contradicts a fixed dimension of the model.
    """
    unknown = sorted(set(input_shapes) - set(graph.inputs))
    if unknown:
        raise ConversionError(
            f"--input-shape names {', '.join(unknown)} but the model inputs are "
            f"{', '.join(graph.inputs)}"
        )
    result = graph.copy()
    for name in graph.inputs:
        declared = graph.shapes.get(name)
        if name in input_shapes:
            shape = tuple(int(d) for d in input_shapes[name])
            if any(d <= 0 for d in shape):
                raise ConversionError(f"input {name}: dimensions must be positive, got {shape}")
            if declared is not None:
                if len(declared) != len(shape):
                    raise ConversionError(
                        f"input {name}: the model declares rank {len(declared)} "
                        f"{_show(declared)}, got {shape}"
                    )
                for have, want in zip(declared, shape, strict=True):
                    if isinstance(have, int) and have > 0 and have != want:
                        raise ConversionError(
                            f"input {name}: the model fixes shape {_show(declared)}, got {shape}"
                        )
            result.shapes[name] = shape
            continue
        if declared is None or not all(isinstance(d, int) and d > 0 for d in declared):
            raise ConversionError(
                f"input {name} has the dynamic shape {_show(declared)}; give it with "
                f"--input-shape {name}="
                + ",".join(
                    str(d) if isinstance(d, int) and d > 0 else "N" for d in (declared or ())
                )
            )
    return result


def _show(shape: Sequence[Any] | None) -> str:
    if shape is None:
        return "[unknown]"
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def infer_shapes(graph: OnnxGraph) -> OnnxGraph:
    """Shapes and dtypes for every value, from ONNX shape inference (and onnxruntime)."""
    import onnx

    result = graph.copy()
    # Shapes inferred earlier may have been symbolic; inference starts from the inputs.
    result.shapes = {n: graph.shapes[n] for n in graph.inputs if n in graph.shapes}
    result.shapes.update({n: tuple(v.shape) for n, v in graph.constants.items()})
    model = result.to_proto(keep_shapes=True)
    # Outputs are re-inferred from the graph rather than trusted from the file.
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and friends
        raise ConversionError(f"ONNX shape inference failed: {exc}") from exc
    record_value_infos(result, inferred.graph)
    # Values ONNX cannot infer (a fused op newer than the model's opset) keep what an
    # earlier pass established.
    for name, shape in graph.shapes.items():
        if result.static_shape(name) is None and graph.static_shape(name) is not None:
            result.shapes[name] = shape
    missing = [
        out
        for node in result.nodes
        for out in node.outputs
        if out and (result.static_shape(out) is None or out not in result.dtypes)
    ]
    if missing:
        _shapes_from_onnxruntime(result, missing)
    return result


def _shapes_from_onnxruntime(graph: OnnxGraph, names: list[str]) -> None:
    """Run the graph once on zeros and read the shapes ONNX inference could not give."""
    import onnx
    import onnxruntime as ort

    if any(graph.static_shape(name) is None for name in graph.inputs):
        return
    model = graph.to_proto(keep_shapes=True)
    del model.graph.output[:]
    wanted = list(dict.fromkeys([*graph.outputs, *names]))
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        feeds = {
            name: np.zeros(graph.static_shape(name) or (), graph.dtypes[name])
            for name in graph.inputs
        }
        values = session.run(wanted, feeds)
    except Exception:  # onnxruntime raises its own Fail/InvalidGraph types
        # Left unknown: require_static_shapes names the node (often an op nobody runs).
        return
    for name, value in zip(wanted, values, strict=True):
        if not isinstance(value, np.ndarray):
            continue  # a sequence or map: no tensor shape to record
        array = value
        graph.shapes[name] = tuple(int(d) for d in array.shape)
        graph.dtypes[name] = array.dtype


def require_static_shapes(graph: OnnxGraph) -> None:
    """Check that lowering can start: every op has a lowering and every shape is static.

    Raises :class:`UnsupportedOpError` for the first node without a lowering (checked first:
    an op no runtime knows also leaves its shapes unknown), else :class:`ConversionError`
    naming the first value whose shape is not static.
    """
    from edgeops.converters.lowering import OP_TABLE

    for node in graph.nodes:
        if node.op_type not in OP_TABLE or node.domain not in ("", "ai.onnx"):
            domain = f" (domain {node.domain})" if node.domain else ""
            raise UnsupportedOpError(node.op_type, node.name, f"no TFLite lowering{domain}")
        for out in node.outputs:
            if out and graph.static_shape(out) is None:
                raise ConversionError(
                    f"the shape of {out!r} (output of {node.op_type} node {node.name!r}) is "
                    f"not static: {_show(graph.shapes.get(out))}"
                )


__all__ = ["fix_input_shapes", "infer_shapes", "require_static_shapes"]
