"""Inputs the fuzz targets found that once escaped as something other than an edgeops error,
each reduced to what triggers it."""

from __future__ import annotations

import contextlib

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgeops.converters.pipeline import convert_model
from edgeops.errors import EdgeopsError, ModelError


def _model(*, initializer: onnx.TensorProto | None = None, constant: bool = False) -> bytes:
    nodes = [helper.make_node("Add", ["x", "c"], ["y"])]
    inits = []
    tensor = initializer or numpy_helper.from_array(np.ones(4, np.float32), "c")
    if constant:
        nodes.insert(0, helper.make_node("Constant", [], ["c"], value=tensor))
    else:
        inits.append(tensor)
    graph = helper.make_graph(
        nodes,
        "regression",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _short_tensor() -> onnx.TensorProto:
    """Dims (7, 3, 3, 3) over raw data for 108 floats: numpy's reshape raised ValueError."""
    tensor = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "c")
    tensor.dims[0] = 7
    return tensor


def _empty_typed_tensor() -> onnx.TensorProto:
    """Dims (1,) with no data at all: onnx's to_array raised ValueError."""
    return onnx.TensorProto(name="c", data_type=onnx.TensorProto.FLOAT, dims=[1])


@pytest.mark.parametrize("make", [_short_tensor, _empty_typed_tensor])
@pytest.mark.parametrize("constant", [False, True], ids=["initializer", "constant-node"])
def test_onnx_tensor_data_that_disagrees_with_its_dims_is_a_model_error(make, constant):
    with pytest.raises(ModelError, match="does not hold its data"):
        convert_model(_model(initializer=make(), constant=constant))


def test_agent_config_path_of_an_unknown_user_home_is_a_config_error(tmp_path):
    """``~name/...`` for a user that does not exist: pathlib raised RuntimeError."""
    from edgeops.agent.config import AgentConfig
    from edgeops.errors import ConfigError

    text = (
        '[device]\nid = "pi-1"\nfleet = "f"\n'
        '[broker]\nurl = "mqtts://broker:8883"\nkey = "~no-such-user-edgeops/device.key"\n'
    )
    with pytest.raises(ConfigError, match=r"broker\.key: cannot expand"):
        AgentConfig.from_toml(text, base_dir=tmp_path, environ={})


def test_onnx_attribute_name_that_is_not_utf8_is_a_model_error():
    """proto2 hands invalid UTF-8 back as bytes; ``make_node(**attrs)`` raised TypeError."""
    model = onnx.ModelProto()
    model.ParseFromString(_model())
    model.graph.node[0].attribute.add(name="keepdims", type=onnx.AttributeProto.INT, i=1)
    data = model.SerializeToString().replace(b"keepdims", b"keep\x99ims")
    with pytest.raises(ModelError, match="attribute name is not UTF-8"):
        convert_model(data)


@pytest.mark.parametrize("perm", [[1], [0]])
def test_transpose_perm_that_is_not_a_permutation_is_a_conversion_error(perm):
    """ONNX shape inference (not strict) lets a short or long perm through, and the
    lowering indexed out of the layout: IndexError."""
    from edgeops.errors import ConversionError

    graph = helper.make_graph(
        [helper.make_node("Transpose", ["x"], ["y"], perm=perm)],
        "regression",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(ConversionError, match=r"expected perm to be a permutation of 0\.\.1"):
        convert_model(model.SerializeToString())


def _single(node: onnx.NodeProto, inits: dict[str, np.ndarray] | None = None) -> bytes:
    graph = helper.make_graph(
        [node],
        "regression",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 3, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v, k) for k, v in (inits or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


def test_empty_list_attribute_is_a_conversion_error():
    """``axes=[]`` has no element type to re-encode for shape inference: ValueError."""
    from edgeops.errors import ConversionError

    node = helper.make_node("ReduceMean", ["x"], ["y"])
    node.attribute.add(name="axes", type=onnx.AttributeProto.INTS)
    with pytest.raises(ConversionError, match="cannot re-encode its attributes"):
        convert_model(_single(node))


def test_pad_with_too_few_pads_is_a_conversion_error():
    """The one-op Add model with its op turned into Pad: the constant (one float) becomes
    the pads of a 2-D input and indexed past the list in the lowering: IndexError."""
    from edgeops.agent.runtimes.testing import onnx_add_model
    from edgeops.errors import ConversionError

    model = onnx.ModelProto()
    model.ParseFromString(onnx_add_model())
    model.graph.node[0].op_type = "Pad"
    with pytest.raises(ConversionError, match="expected 4 pads for 2 axes, got 1"):
        convert_model(model.SerializeToString())


def test_missing_required_attribute_is_a_model_error():
    """Concat without ``axis`` reached ``int(None)`` in the lowering: TypeError. The import
    now holds every node to its ONNX schema."""
    model = onnx.ModelProto()
    model.ParseFromString(_model())
    model.graph.node[0].op_type = "Concat"
    # A declared output shape stands in for what ONNX shape inference cannot infer.
    for dim in (2, 4):
        model.graph.output[0].type.tensor_type.shape.dim.add(dim_value=dim)
    with pytest.raises(ModelError, match="lacks its required attribute 'axis'"):
        convert_model(model.SerializeToString())


def test_unknown_element_type_is_a_model_error():
    """An elem_type enum onnx does not know: KeyError from its dtype table."""
    model = onnx.ModelProto()
    model.ParseFromString(_model())
    model.graph.input[0].type.tensor_type.elem_type = 33
    with pytest.raises(ModelError, match="unknown element type 33"):
        convert_model(model.SerializeToString())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda node: node.input.pop(), "takes 2 to 2 inputs, got 1"),
        (
            lambda node: node.attribute.add(name="axis", type=onnx.AttributeProto.INTS),
            "attribute 'axis' has type 7, its schema says 2",
        ),
    ],
    ids=["inputs", "attribute-type"],
)
def test_node_that_breaks_its_onnx_schema_is_a_model_error(edit, message):
    """A Slice without ends reached ``node.inputs[2]`` (IndexError); a Conv with an
    attribute of the wrong type reached ``list(None)`` (TypeError). Shown here on Concat and
    Add, the same schema check."""
    model = onnx.ModelProto()
    model.ParseFromString(_model())
    node = model.graph.node[0]
    if "axis" in message:
        node.op_type = "Concat"
    edit(node)
    with pytest.raises(ModelError, match=message):
        convert_model(model.SerializeToString())


def test_values_outside_int32_are_a_conversion_error():
    """Shape, axis and padding operands are int32 in TFLite: numpy raised OverflowError."""
    from edgeops.converters.lowering.context import int32_array
    from edgeops.errors import ConversionError

    assert int32_array([1, -1, 2**31 - 1], "shape").dtype == np.int32
    with pytest.raises(ConversionError, match="do not fit TFLite's int32"):
        int32_array([1, 2**33], "shape")


def test_layout_of_a_value_whose_rank_or_axis_disagrees_is_a_conversion_error():
    """IndexError and ValueError escaped from the layout helpers."""
    from edgeops.converters import layout
    from edgeops.errors import ConversionError

    perm = (0, 2, 3, 1)  # NCHW held as NHWC
    with pytest.raises(ConversionError, match="expected a rank-4 value"):
        layout.tflite_shape((1, 3), perm)
    with pytest.raises(ConversionError, match=r"expected an axis in \[-4, 3\], got 4"):
        layout.tflite_axis(4, perm)
    assert layout.tflite_axis(-1, perm) == perm.index(3)


def test_gemm_whose_c_does_not_broadcast_is_a_conversion_error():
    """A constant C of 5 values for a 1x1 output: numpy's broadcast_to raised ValueError."""
    from edgeops.errors import ConversionError

    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "b", "c"], ["y"], transB=1)],
        "regression",
        [
            helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4]),
            # B an input, not a constant: the general Gemm path, where C is broadcast
            helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1, 4]),
        ],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.ones(5, np.float32), "c")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with pytest.raises(ConversionError, match="does not broadcast to the output shape"):
        convert_model(model.SerializeToString())


def test_constant_folding_does_not_materialise_a_huge_padded_conv():
    """A Conv of constants with a pad of 2**28: the folder evaluated it and exhausted memory.
    The inferred output size is now checked against the fold cap before evaluating."""
    import tracemalloc

    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["w", "w", "b"], ["c"], pads=[2**28, 1, 1, 1]),
            helper.make_node("Add", ["x", "x"], ["y"]),
        ],
        "regression",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w"),
            numpy_helper.from_array(np.zeros(4, np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    tracemalloc.start()
    try:
        with contextlib.suppress(EdgeopsError):
            convert_model(model.SerializeToString())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"


def test_agent_config_infinite_number_is_a_config_error(tmp_path):
    """``port = 8e499`` is an infinite TOML float: int() raised OverflowError."""
    from edgeops.agent.config import AgentConfig
    from edgeops.errors import ConfigError

    text = '[device]\nid = "a"\nfleet = "f"\n[broker]\nurl = "mqtts://b"\n[api]\nport = 8e499\n'
    with pytest.raises(ConfigError, match="infinity"):
        AgentConfig.from_toml(text, base_dir=tmp_path, environ={})


def test_value_defined_twice_is_a_model_error():
    """Two nodes writing ``y`` (and inputs and initializers listed twice): the output
    renaming raised KeyError."""
    model = onnx.ModelProto()
    model.ParseFromString(_model())
    model.graph.node.append(model.graph.node[0])
    with pytest.raises(ModelError, match="'y' is defined twice"):
        convert_model(model.SerializeToString())
    model.ParseFromString(_model())
    model.graph.input.append(model.graph.input[0])
    with pytest.raises(ModelError, match="graph input 'x' is listed twice"):
        convert_model(model.SerializeToString())


@pytest.mark.parametrize(
    ("attribute", "values"), [("strides", [2, -3]), ("pads", [1, 1, -1, 1]), ("dilations", [0, 1])]
)
def test_conv_window_attributes_below_their_spec_bounds_are_a_model_error(attribute, values):
    """A negative stride left the output shape unknown, so the fold cap could not see the
    2**30 pad of a constant Conv, which then took gigabytes."""
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], **{attribute: values})],
        "regression",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(ModelError, match=f"{attribute} must be >="):
        convert_model(model.SerializeToString())
