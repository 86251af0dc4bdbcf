"""Fakes and tiny real models for tests, benchmarks and demos.

* :class:`FakeRuntime` — a :class:`~edgeops.agent.runtimes.ModelRuntime` whose result is a
  Python function, for unit tests of everything that holds a runtime.
* :func:`tflite_add_model`, :func:`tflite_image_mean_model` — real ``.tflite`` flatbuffers,
  written with the schema module that ships in ``ai-edge-litert`` (no TensorFlow).
* :func:`onnx_add_model` — the ONNX twin of the add model (needs the ``onnx`` package).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, Any

from edgeops.agent.runtimes.base import TensorSpec, validate_inputs
from edgeops.errors import ModelError, StateError

if TYPE_CHECKING:
    import numpy as np


class FakeRuntime:
    """A runtime that computes ``fn(inputs)``, optionally slowly or failing.

    ``delay`` seconds are slept inside ``run`` (to hold requests in flight); ``fail_with``
    makes every run raise :class:`ModelError` with that message. ``runs`` counts calls and
    ``closed`` tells whether :meth:`close` was called; ``run`` after close raises
    :class:`StateError`, like the real runtimes, so a test catches a premature close.
    """

    def __init__(
        self,
        *,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        fn: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]],
        delay: float = 0.0,
        fail_with: str | None = None,
        name: str = "fake",
        version: str = "0",
    ) -> None:
        self._inputs = tuple(inputs)
        self._outputs = tuple(outputs)
        self._fn = fn
        self.delay = delay
        self.fail_with = fail_with
        self._name = name
        self._version = version
        self._lock = threading.Lock()
        self.runs = 0
        self.closed = False

    @property
    def name(self) -> str:
        """The fake's name (``"fake"`` unless given)."""
        return self._name

    @property
    def version(self) -> str:
        """The fake's version string."""
        return self._version

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The declared inputs."""
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The declared outputs."""
        return self._outputs

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate like a real runtime, wait ``delay``, then return ``fn(inputs)``."""
        arrays = validate_inputs(self._inputs, inputs)
        if self.closed:
            raise StateError(f"the {self._name} model was closed")
        with self._lock:
            self.runs += 1
        if self.delay:
            time.sleep(self.delay)
        if self.closed:
            raise StateError(f"the {self._name} model was closed while running")
        if self.fail_with is not None:
            raise ModelError(self.fail_with)
        return self._fn(arrays)

    def close(self) -> None:
        """Mark the fake closed."""
        self.closed = True


def fake_add_runtime(constant: float = 1.0, **kwargs: Any) -> FakeRuntime:
    """A fake with the add model's interface: ``y = x + constant`` on float32 ``[1, 4]``."""
    return FakeRuntime(
        inputs=[TensorSpec(name="x", shape=(1, 4), dtype="float32")],
        outputs=[TensorSpec(name="y", shape=(1, 4), dtype="float32")],
        fn=lambda arrays: {"y": arrays["x"] + constant},
        **kwargs,
    )


def _finish(model: Any) -> bytes:
    # flatbuffers ships no type information; through import_module it is plainly Any.
    flatbuffers: Any = import_module("flatbuffers")
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _tensor(schema: Any, name: str, shape: Sequence[int], ttype: int, buffer: int) -> Any:
    tensor = schema.TensorT()
    tensor.name = name
    tensor.shape = [max(dim, 1) for dim in shape]
    if any(dim == -1 for dim in shape):
        tensor.shapeSignature = list(shape)
    tensor.type = ttype
    tensor.buffer = buffer
    return tensor


def _opcode(schema: Any, builtin: int) -> Any:
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = builtin
    code.version = 1
    return code


def _buffers(schema: Any, *payloads: bytes) -> list[Any]:
    # Buffer 0 is the empty sentinel that every non-constant tensor points at.
    out = [schema.BufferT()]
    for payload in payloads:
        buffer = schema.BufferT()
        buffer.data = list(payload)
        out.append(buffer)
    return out


def tflite_add_model(
    *, shape: Sequence[int] = (1, 4), constant: float = 1.0, names: tuple[str, str] = ("x", "y")
) -> bytes:
    """A float32 model ``y = x + constant`` (one ADD op); ``-1`` in ``shape`` leaves it open."""
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    x_name, y_name = names
    const_shape = [1] * len(shape)
    const = np.full(const_shape, constant, dtype="<f4").tobytes()
    tensors = [
        _tensor(schema, x_name, shape, schema.TensorType.FLOAT32, 0),
        _tensor(schema, "constant", const_shape, schema.TensorType.FLOAT32, 1),
        _tensor(schema, y_name, shape, schema.TensorType.FLOAT32, 0),
    ]
    op = schema.OperatorT()
    op.opcodeIndex = 0
    op.inputs = [0, 1]
    op.outputs = [2]
    op.builtinOptionsType = schema.BuiltinOptions.AddOptions
    op.builtinOptions = schema.AddOptionsT()
    return _model(
        schema,
        tensors=tensors,
        operators=[op],
        inputs=[0],
        outputs=[2],
        opcodes=[_opcode(schema, schema.BuiltinOperator.ADD)],
        buffers=_buffers(schema, const),
    )


def tflite_image_mean_model(*, height: int = 320, width: int = 320, channels: int = 3) -> bytes:
    """A uint8 image model: ``[1, H, W, C]`` quantized (scale 1/255) → per-channel mean ``[1, C]``.

    DEQUANTIZE then MEAN over height and width: real work on every pixel, so the input's
    full size travels through the runtime, and a known answer (the mean of ``x / 255``).
    """
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    image = _tensor(schema, "image", (1, height, width, channels), schema.TensorType.UINT8, 0)
    quant = schema.QuantizationParametersT()
    quant.scale = [1.0 / 255.0]
    quant.zeroPoint = [0]
    image.quantization = quant
    tensors = [
        image,
        _tensor(schema, "pixels", (1, height, width, channels), schema.TensorType.FLOAT32, 0),
        _tensor(schema, "axes", (2,), schema.TensorType.INT32, 1),
        _tensor(schema, "mean", (1, channels), schema.TensorType.FLOAT32, 0),
    ]
    dequantize = schema.OperatorT()
    dequantize.opcodeIndex = 0
    dequantize.inputs = [0]
    dequantize.outputs = [1]
    mean = schema.OperatorT()
    mean.opcodeIndex = 1
    mean.inputs = [1, 2]
    mean.outputs = [3]
    mean.builtinOptionsType = schema.BuiltinOptions.ReducerOptions
    reducer = schema.ReducerOptionsT()
    reducer.keepDims = False
    mean.builtinOptions = reducer
    opcodes = [
        _opcode(schema, schema.BuiltinOperator.DEQUANTIZE),
        _opcode(schema, schema.BuiltinOperator.MEAN),
    ]
    axes = np.array([1, 2], dtype="<i4").tobytes()
    return _model(
        schema,
        tensors=tensors,
        operators=[dequantize, mean],
        inputs=[0],
        outputs=[3],
        opcodes=opcodes,
        buffers=_buffers(schema, axes),
    )


def _model(
    schema: Any,
    *,
    tensors: list[Any],
    operators: list[Any],
    inputs: list[int],
    outputs: list[int],
    opcodes: list[Any],
    buffers: list[Any],
) -> bytes:
    subgraph = schema.SubGraphT()
    subgraph.tensors = tensors
    subgraph.operators = operators
    subgraph.inputs = inputs
    subgraph.outputs = outputs
    subgraph.name = "main"
    model = schema.ModelT()
    model.version = 3
    model.description = "edgeops test model"
    model.operatorCodes = opcodes
    model.subgraphs = [subgraph]
    model.buffers = buffers
    return _finish(model)


def onnx_add_model(*, shape: Sequence[int] = (1, 4), constant: float = 1.0) -> bytes:
    """The ONNX twin of :func:`tflite_add_model`; ``-1`` in ``shape`` becomes a named dim."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dims: list[int | str] = [dim if dim >= 0 else f"d{i}" for i, dim in enumerate(shape)]
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "constant"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
        [numpy_helper.from_array(np.array([constant], dtype=np.float32), "constant")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())
