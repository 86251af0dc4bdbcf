"""Open Inference Protocol bodies: JSON and binary tensors, both directions, and bad requests."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeops.agent.runtimes import TensorSpec
from edgeops.agent.serving import decode_request, decode_response, encode_request, encode_response
from edgeops.agent.serving.protocol import HEADER_LENGTH
from edgeops.errors import InferenceInputError

SPECS = (
    TensorSpec(name="image", shape=(1, 4, 4, 3), dtype="uint8"),
    TensorSpec(name="scale", shape=(-1,), dtype="float32"),
)


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (1, 4, 4, 3), dtype=np.uint8),
        "scale": np.array([0.5, -2.25], np.float32),
    }


def header_length(headers: dict[str, str]) -> int | None:
    value = headers.get(HEADER_LENGTH)
    return int(value) if value is not None else None


@pytest.mark.parametrize("binary", [True, False])
def test_request_roundtrip(binary: bool) -> None:
    body, headers = encode_request(inputs(), binary_inputs=binary, request_id="r1")
    request = decode_request(body, header_length(headers), SPECS)
    for name, array in inputs().items():
        np.testing.assert_array_equal(request.inputs[name], array)
        assert request.inputs[name].dtype == array.dtype
    assert request.request_id == "r1"
    assert request.binary_output_default is True
    assert request.outputs is None
    if binary:
        # raw bytes after the JSON, not numbers as text
        assert len(body) == header_length(headers) + 48 + 8


@pytest.mark.parametrize("binary", [True, False])
def test_response_roundtrip(binary: bool) -> None:
    outputs: dict[str, np.ndarray] = {
        "boxes": np.arange(12, dtype=np.float32).reshape(1, 3, 4),
        "half": np.array([1.5, 2.0], np.float16),
    }
    body, length = encode_response(
        model_name="m",
        model_version="2",
        outputs=outputs,
        binary=dict.fromkeys(outputs, binary),
        request_id="r9",
    )
    assert (length is not None) is binary
    header = json.loads(body if length is None else body[:length])
    assert header["model_name"] == "m"
    assert header["model_version"] == "2"
    assert header["id"] == "r9"
    assert [o["datatype"] for o in header["outputs"]] == ["FP32", "FP16"]
    decoded = decode_response(body, length)
    for name, array in outputs.items():
        np.testing.assert_array_equal(decoded[name], array)


def test_binary_for_some_outputs_only() -> None:
    outputs: dict[str, np.ndarray] = {"a": np.ones(2, np.float32), "b": np.zeros(3, np.int64)}
    body, length = encode_response(
        model_name="m", model_version="1", outputs=outputs, binary={"b": True}
    )
    assert length is not None
    header = json.loads(body[:length])
    assert header["outputs"][0]["data"] == [1.0, 1.0]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 24}
    assert len(body) - length == 24


def test_requested_outputs_with_per_output_binary_flag() -> None:
    request = {
        "inputs": [{"name": "scale", "datatype": "FP32", "shape": [1], "data": [1]}],
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "a"}, {"name": "b", "parameters": {"binary_data": False}}],
    }
    decoded = decode_request(json.dumps(request).encode(), None, SPECS[1:])
    assert decoded.outputs == {"a": True, "b": False}


def test_nested_json_data_is_accepted() -> None:
    request = {
        "inputs": [{"name": "scale", "datatype": "FP32", "shape": [2], "data": [[1.0], [2.0]]}]
    }
    decoded = decode_request(json.dumps(request).encode(), None, SPECS[1:])
    np.testing.assert_array_equal(decoded.inputs["scale"], [1.0, 2.0])


def body_of(*entries: Mapping[str, object], **extra: object) -> bytes:
    return json.dumps({"inputs": list(entries), **extra}).encode()


SCALE: dict[str, object] = {"name": "scale", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"\xff\xfe", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (body_of(), None, "non-empty list"),
        (body_of({"datatype": "FP32"}), None, "with a 'name'"),
        (body_of({**SCALE, "name": "other"}), None, "unknown input 'other'"),
        (body_of(SCALE, SCALE), None, "appears twice"),
        (body_of({**SCALE, "datatype": "FP64"}), None, "expected datatype FP32, got 'FP64'"),
        (body_of({**SCALE, "shape": [2, 1]}), None, r"expected shape \[-1\], got \[2, 1\]"),
        (body_of({**SCALE, "shape": [-1]}), None, "non-negative integers"),
        (body_of({**SCALE, "shape": "2"}), None, "non-negative integers"),
        (body_of({**SCALE, "shape": [3]}), None, "needs 3 values, got 2"),
        (body_of({**SCALE, "data": ["a", "b"]}), None, "data is not FP32"),
        (
            body_of(
                {"name": "image", "datatype": "UINT8", "shape": [1, 4, 4, 3], "data": [300] * 48}
            ),
            None,
            "data is not UINT8",
        ),
        (body_of({k: v for k, v in SCALE.items() if k != "data"}), None, "expected 'data'"),
        (body_of({**SCALE, "data": [1e300, 0.0]}), None, "data is not FP32: overflow"),
        (
            body_of(
                {"name": "image", "datatype": "UINT8", "shape": [1, 4, 4, 3], "data": [1.5] * 48}
            ),
            None,
            "expected integers for UINT8",
        ),
        (
            body_of(
                {"name": "image", "datatype": "UINT8", "shape": [1, 4, 4, 3], "data": [-1] * 48}
            ),
            None,
            "data is not UINT8",
        ),
        (b"[" * 100_000, None, "nested too deeply"),
        (body_of(SCALE, parameters={"binary_data_output": "yes"}), None, "true or false"),
        (body_of(SCALE, outputs={"name": "y"}), None, "'outputs' to be a list"),
        (body_of(SCALE, id=5), None, "'id' to be a string"),
        (body_of(SCALE), 10_000, "Inference-Header-Content-Length is 10000"),
        (body_of(SCALE), 0, "Inference-Header-Content-Length is 0"),
    ],
)
def test_bad_requests_say_what_is_wrong(body: bytes, length: int | None, message: str) -> None:
    with pytest.raises(InferenceInputError, match=message):
        decode_request(body, length, SPECS)


def binary_body(declared: int, actual: int) -> tuple[bytes, int]:
    header = body_of(
        {
            "name": "scale",
            "datatype": "FP32",
            "shape": [2],
            "parameters": {"binary_data_size": declared},
        }
    )
    return header + b"\0" * actual, len(header)


@pytest.mark.parametrize(
    ("declared", "actual", "message"),
    [
        (7, 7, "needs 8 bytes, binary_data_size says 7"),
        (8, 4, "expected 8 bytes of binary data, only 4 left"),
        (8, 12, "4 bytes of binary data that no input claims"),
        (-8, 8, "integer >= 0"),
    ],
)
def test_binary_sizes_must_add_up(declared: int, actual: int, message: str) -> None:
    body, length = binary_body(declared, actual)
    with pytest.raises(InferenceInputError, match=message):
        decode_request(body, length, SPECS)


def test_error_response_decodes_as_error() -> None:
    with pytest.raises(InferenceInputError, match="boom"):
        decode_response(b'{"error": "boom"}', None)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            *("inputs", "name", "datatype", "shape", "data", "parameters"),
                            *("outputs", "binary_data_size", "binary_data", "binary_data_output"),
                            "id",
                        ]
                    ),
                    inner,
                    max_size=5,
                )
            ),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
    ),
    st.none() | st.integers(min_value=-5, max_value=400),
)
def test_any_body_is_decoded_or_refused_with_input_error(body: bytes, length: int | None) -> None:
    # a request from outside can only end in arrays or a 400, never in another exception
    try:
        request = decode_request(body, length, SPECS)
    except InferenceInputError:
        return
    by_name = {spec.name: spec for spec in SPECS}
    for name, array in request.inputs.items():
        assert array.dtype.name == by_name[name].dtype
        assert by_name[name].accepts_shape(array.shape)
