"""Reading an ONNX model into :class:`OnnxGraph`, the form the import passes rewrite.

:class:`OnnxGraph` is deliberately plain: nodes with a dict of attributes, constants as numpy
arrays (initializers and ``Constant`` nodes both land there), and a shape and dtype per value
once :func:`edgeops.converters.passes.shapes.infer_shapes` has run. Passes in
``edgeops.converters.passes`` are functions ``OnnxGraph -> OnnxGraph``;
:meth:`OnnxGraph.to_proto` goes back to an ``onnx.ModelProto`` for ONNX shape inference
and for running the graph in onnxruntime.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgeops.errors import ConversionError, ModelError

#: Largest ONNX file accepted (protobuf itself stops at 2 GB).
MAX_ONNX_BYTES = 2 * 1024**3 - 1


@dataclass
class Node:
    """One ONNX node; ``inputs`` keeps ``""`` for an omitted optional input."""

    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""

    def attr(self, key: str, default: Any = None) -> Any:
        """The attribute ``key`` (strings decoded), or ``default``."""
        value = self.attrs.get(key, default)
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ConversionError(
                    f"{self.op_type} node {self.name!r}: attribute {key!r} is not UTF-8 text"
                ) from exc
        return value

    def require(self, key: str) -> Any:
        """The attribute ``key``, which the op's schema requires; a model without it is
        malformed (fuzzing found lowerings calling ``int(None)``)."""
        if key not in self.attrs:
            raise ConversionError(
                f"{self.op_type} node {self.name!r}: missing required attribute {key!r}"
            )
        return self.attr(key)


@dataclass
class OnnxGraph:
    """An ONNX graph as plain data: nodes in topological order, constants, shapes, dtypes."""

    nodes: list[Node]
    constants: dict[str, npt.NDArray[Any]]
    inputs: list[str]
    outputs: list[str]
    shapes: dict[str, tuple[int | str | None, ...] | None]
    dtypes: dict[str, np.dtype[Any]]
    opset: int
    ir_version: int = 8

    def copy(self) -> OnnxGraph:
        """A copy whose node list and dicts can be changed without touching this one."""
        return OnnxGraph(
            nodes=[copy.copy(n) for n in self.nodes],
            constants=dict(self.constants),
            inputs=list(self.inputs),
            outputs=list(self.outputs),
            shapes=dict(self.shapes),
            dtypes=dict(self.dtypes),
            opset=self.opset,
            ir_version=self.ir_version,
        )

    def static_shape(self, name: str) -> tuple[int, ...] | None:
        """The shape of ``name`` if every dimension is a known integer, else None."""
        if name in self.constants:
            return tuple(self.constants[name].shape)
        shape = self.shapes.get(name)
        if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
            return None
        return tuple(int(d) for d in shape if isinstance(d, int))

    def producers(self) -> dict[str, Node]:
        """Map from value name to the node that produces it."""
        return {out: node for node in self.nodes for out in node.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        """Map from value name to the nodes that read it."""
        result: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.inputs:
                if name:
                    result.setdefault(name, []).append(node)
        return result

    def to_proto(self, *, keep_shapes: bool = True) -> Any:
        """This graph as an ``onnx.ModelProto`` (inputs typed, constants as initializers)."""
        from onnx import helper, numpy_helper

        def value_info(name: str) -> Any:
            dtype = self.dtypes.get(name, np.dtype(np.float32))
            shape = self.shapes.get(name)
            elem = helper.np_dtype_to_tensor_dtype(dtype)
            if shape is None or not keep_shapes:
                return helper.make_tensor_value_info(name, elem, None)
            return helper.make_tensor_value_info(name, elem, list(shape))

        nodes = []
        for n in self.nodes:
            try:
                nodes.append(
                    helper.make_node(
                        n.op_type,
                        n.inputs,
                        n.outputs,
                        name=n.name,
                        domain=n.domain or None,
                        **n.attrs,
                    )
                )
            except (ValueError, TypeError) as exc:
                # An empty list attribute has no type to re-encode (found by fuzzing).
                raise ConversionError(
                    f"node {n.name!r}: cannot re-encode its attributes: {exc}"
                ) from exc

        initializers = [numpy_helper.from_array(v, name=k) for k, v in self.constants.items()]
        graph = helper.make_graph(
            nodes,
            "edgeops",
            [value_info(n) for n in self.inputs],
            [value_info(n) for n in self.outputs],
            initializer=initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = max(self.ir_version, 7)
        return model


def _shape_of(type_proto: Any) -> tuple[int | str | None, ...] | None:
    tensor_type = type_proto.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for dim in tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def record_value_infos(graph: OnnxGraph, proto_graph: Any) -> None:
    """Copy shapes and dtypes from a proto's inputs, outputs and value_info into ``graph``."""
    from onnx import helper

    for info in [*proto_graph.input, *proto_graph.output, *proto_graph.value_info]:
        if not info.type.HasField("tensor_type"):
            continue
        elem = info.type.tensor_type.elem_type
        if elem:
            try:
                graph.dtypes[info.name] = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
            except (KeyError, ValueError, TypeError) as exc:  # an enum value onnx does not know
                raise ModelError(
                    f"not a valid ONNX model: {info.name!r} has unknown element type {elem}"
                ) from exc
        shape = _shape_of(info.type)
        if shape is not None:
            graph.shapes[info.name] = shape


def from_proto(model: Any) -> OnnxGraph:
    """Build an :class:`OnnxGraph` from an ``onnx.ModelProto``.

    ``Constant`` nodes become constants; nodes of other domains than the default ONNX one
    are refused (:class:`~edgeops.errors.UnsupportedOpError` names them at lowering).
    """
    from onnx import helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ConversionError("the ONNX model does not import the default operator set")
    constants: dict[str, npt.NDArray[Any]] = {
        init.name: _tensor_array(init, f"initializer {init.name!r}")
        for init in model.graph.initializer
    }
    for value in [*model.graph.input, *model.graph.output]:
        if value.name not in constants and not value.type.HasField("tensor_type"):
            kind = value.type.WhichOneof("value") or "untyped"
            raise ConversionError(
                f"{value.name!r} is a {kind.replace('_type', '')}, not a tensor: TFLite "
                "models take and return tensors only"
            )
    _check_text(model.graph)
    _check_single_assignment(model.graph)
    nodes: list[Node] = []
    for index, proto in enumerate(model.graph.node):
        name = proto.name or f"{proto.op_type}_{index}"
        _check_schema(proto, name, int(opset))
        attrs = {a.name: helper.get_attribute_value(a) for a in proto.attribute}
        if proto.op_type == "Constant" and proto.domain in ("", "ai.onnx"):
            constants[proto.output[0]] = _constant_value(proto, attrs)
            continue
        nodes.append(
            Node(
                proto.op_type,
                name,
                list(proto.input),
                list(proto.output),
                attrs,
                proto.domain if proto.domain != "ai.onnx" else "",
            )
        )
    graph = OnnxGraph(
        nodes=nodes,
        constants=constants,
        inputs=[i.name for i in model.graph.input if i.name not in constants],
        outputs=[o.name for o in model.graph.output],
        shapes={},
        dtypes={},
        opset=int(opset),
        ir_version=int(model.ir_version),
    )
    record_value_infos(graph, model.graph)
    for name, value in constants.items():
        graph.shapes[name] = tuple(int(d) for d in value.shape)
        graph.dtypes[name] = value.dtype
    return graph


#: Ops with kernel windows, whose window attributes the ONNX spec bounds from below.
_WINDOWED_OPS = frozenset(
    {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool"}
)
_WINDOW_ATTRIBUTE_MINIMUM = {"strides": 1, "dilations": 1, "kernel_shape": 1, "pads": 0}


def _check_schema(proto: Any, name: str, opset: int) -> None:
    """Hold a node of the default domain to its ONNX schema: input count, required
    attributes, attribute types. A model that breaks its schema is malformed; refusing it
    here keeps each lowering from meeting ``None`` or an int where it expects a list
    (fuzzing found several). Ops without a schema are left to the lowering table."""
    import onnx.defs

    if proto.domain not in ("", "ai.onnx"):
        return
    try:
        schema = onnx.defs.get_schema(proto.op_type, opset)
    except onnx.defs.SchemaError:
        return
    where = f"{proto.op_type} node {name!r}"
    count = len(proto.input)
    if not schema.min_input <= count <= schema.max_input:
        raise ModelError(
            f"not a valid ONNX model: {where} takes {schema.min_input} to {schema.max_input} "
            f"inputs, got {count}"
        )
    declared = schema.attributes
    for attr in proto.attribute:
        spec = declared.get(attr.name)
        expected = None if spec is None else int(spec.type)  # type: ignore[call-overload]
        if expected is not None and int(attr.type) != expected:
            raise ModelError(
                f"not a valid ONNX model: {where}: attribute {attr.name!r} has type "
                f"{int(attr.type)}, its schema says {expected}"
            )
    if proto.op_type in _WINDOWED_OPS:
        # The spec bounds these; a negative stride left the output shape unknown, and
        # constant folding then padded by 2**30 inside the reference evaluator (fuzzing).
        for attr in proto.attribute:
            low = _WINDOW_ATTRIBUTE_MINIMUM.get(attr.name)
            if low is not None and any(int(v) < low for v in attr.ints):
                raise ModelError(
                    f"not a valid ONNX model: {where}: {attr.name} must be >= {low}, got "
                    f"{list(attr.ints)}"
                )
    given = {attr.name for attr in proto.attribute}
    for attr_name, spec in declared.items():
        if spec.required and attr_name not in given:
            raise ModelError(
                f"not a valid ONNX model: {where} lacks its required attribute {attr_name!r}"
            )


def _check_single_assignment(graph: Any) -> None:
    """Each value is defined once: by a graph input, an initializer or one node output
    (ONNX's SSA rule). A model that defines a name twice is malformed; found by fuzzing (two
    nodes writing ``y`` broke the renaming of outputs with a KeyError)."""
    seen_inputs: set[str] = set()
    for value in graph.input:
        if value.name in seen_inputs:
            raise ModelError(f"not a valid ONNX model: graph input {value.name!r} is listed twice")
        seen_inputs.add(value.name)
    defined: set[str] = set()
    for init in graph.initializer:
        if init.name in defined:
            raise ModelError(f"not a valid ONNX model: initializer {init.name!r} is given twice")
        defined.add(init.name)
    defined |= seen_inputs
    for node in graph.node:
        for out in node.output:
            if not out:
                continue
            if out in defined:
                raise ModelError(
                    f"not a valid ONNX model: {out!r} is defined twice (again by "
                    f"{node.op_type} node {node.name!r})"
                )
            defined.add(out)


def _check_text(graph: Any) -> None:
    """ONNX is proto2, so a name with invalid UTF-8 parses and comes back as ``bytes``;
    refuse it here rather than deep in a pass (found by fuzzing: an attribute name)."""
    names: list[tuple[str, Any]] = [
        *(("value name", v.name) for v in [*graph.input, *graph.output, *graph.initializer]),
    ]
    for node in graph.node:
        names += [("op type", node.op_type), ("node name", node.name), ("domain", node.domain)]
        names += [("value name", n) for n in [*node.input, *node.output]]
        names += [("attribute name", a.name) for a in node.attribute]
    for what, value in names:
        if not isinstance(value, str):
            raise ModelError(f"not a valid ONNX model: a {what} is not UTF-8 text: {value!r}")


def _tensor_array(tensor: Any, what: str) -> npt.NDArray[Any]:
    """A TensorProto's values; a tensor whose data disagrees with its dims or type is a
    malformed model, not a crash (found by the ``onnx_bytes`` fuzz target)."""
    from onnx import numpy_helper

    try:
        return np.asarray(numpy_helper.to_array(tensor))
    except Exception as exc:  # numpy's reshape/frombuffer and onnx raise ValueError, TypeError…
        raise ModelError(f"not a valid ONNX model: {what} does not hold its data: {exc}") from exc


def _constant_value(proto: Any, attrs: dict[str, Any]) -> npt.NDArray[Any]:
    if "value" in attrs:
        return _tensor_array(attrs["value"], f"Constant node {proto.name!r}")
    scalar_kinds = {
        "value_float": np.float32,
        "value_int": np.int64,
        "value_floats": np.float32,
        "value_ints": np.int64,
    }
    for key, dtype in scalar_kinds.items():
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    raise ConversionError(
        f"Constant node {proto.name!r} uses an attribute the converter does not read: "
        f"{sorted(attrs)}"
    )


def load_onnx(source: str | os.PathLike[str] | bytes) -> OnnxGraph:
    """Read an ONNX model file (or its bytes) into an :class:`OnnxGraph`.

    Raises :class:`~edgeops.errors.ModelError` when the file is missing, too large or not a
    valid ONNX model.
    """
    import onnx

    try:
        if isinstance(source, bytes):
            model = onnx.load_model_from_string(source)
        else:
            path = Path(source)
            try:
                size = path.stat().st_size
            except OSError as exc:
                raise ModelError(f"cannot read ONNX model {path}: {exc.strerror}") from exc
            if size > MAX_ONNX_BYTES:
                raise ModelError(f"expected an ONNX file under 2 GB, got {size} bytes")
            # From a path, weights stored as external data next to the file are read too.
            model = onnx.load_model(str(path), load_external_data=True)
    except ModelError:
        raise
    except Exception as exc:  # protobuf raises DecodeError, onnx raises on missing data
        raise ModelError(f"not a valid ONNX model: {exc}") from exc
    if not model.graph.node:
        raise ModelError("the ONNX model has no nodes")
    return from_proto(model)


__all__ = ["MAX_ONNX_BYTES", "Node", "OnnxGraph", "from_proto", "load_onnx", "record_value_infos"]
