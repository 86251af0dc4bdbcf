"""Open Inference Protocol (KServe v2) REST bodies, with the binary tensor data extension.

Pure functions from bytes to arrays and back, shared by the server, the tests, the
benchmark and any Python client on the device.

Binary extension (KServe "Binary Tensor Data Extension"): the body is the JSON object
followed by raw tensor bytes; the ``Inference-Header-Content-Length`` HTTP header gives the
JSON's length. An input sent that way carries ``"parameters": {"binary_data_size": n}``
instead of ``"data"``, and its bytes follow in input order: little-endian, row-major, no
padding. An output is returned that way when the request asks with
``"outputs": [{"name": ..., "parameters": {"binary_data": true}}]`` or, for all outputs,
``"parameters": {"binary_data_output": true}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeops.agent.runtimes.base import DTYPE_TO_PROTOCOL, PROTOCOL_TO_DTYPE, TensorSpec
from edgeops.errors import InferenceInputError

if TYPE_CHECKING:
    import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
#: the ``extensions`` this server lists in its metadata
EXTENSIONS = ("binary_tensor_data",)


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request."""

    inputs: dict[str, np.ndarray]
    #: output name -> return as binary; ``None`` when the request named no outputs
    outputs: dict[str, bool] | None
    binary_output_default: bool
    request_id: str | None


def _little_endian(dtype_name: str) -> np.dtype[Any]:
    import numpy as np

    return np.dtype(dtype_name).newbyteorder("<")


def _shape(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in value
    ):
        raise InferenceInputError(f"{where}: expected a shape of non-negative integers")
    return tuple(value)


def _parameters(entry: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    params = entry.get("parameters", {})
    if not isinstance(params, dict):
        raise InferenceInputError(f"{where}: expected 'parameters' to be an object")
    return params


def decode_request(
    body: bytes | bytearray, header_length: int | None, specs: Sequence[TensorSpec]
) -> InferRequest:
    """Decode an inference request body for a model with input ``specs``.

    Raises :class:`InferenceInputError` naming what was wrong: malformed JSON, an unknown
    or missing input, a datatype or shape the model does not take, a binary size that does
    not add up.
    """
    import numpy as np

    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise InferenceInputError(
                f"{HEADER_LENGTH} is {header_length}, but the body has {len(body)} bytes"
            )
        json_part, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        json_part, binary = body, memoryview(b"")
    try:
        request = json.loads(json_part)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InferenceInputError(f"the request is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InferenceInputError("the request's JSON is nested too deeply") from exc
    if not isinstance(request, dict):
        raise InferenceInputError("expected the request to be a JSON object")
    raw_inputs = request.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InferenceInputError("expected 'inputs' to be a non-empty list")
    by_name = {spec.name: spec for spec in specs}
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for index, entry in enumerate(raw_inputs):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InferenceInputError(f"inputs[{index}]: expected an object with a 'name'")
        name = entry["name"]
        where = f"input {name!r}"
        spec = by_name.get(name)
        if spec is None:
            raise InferenceInputError(f"unknown input {name!r}; the model takes {sorted(by_name)}")
        if name in arrays:
            raise InferenceInputError(f"{where} appears twice")
        datatype = entry.get("datatype")
        if datatype != spec.datatype:
            raise InferenceInputError(
                f"{where}: expected datatype {spec.datatype}, got {datatype!r}"
            )
        shape = _shape(entry.get("shape"), where)
        if not spec.accepts_shape(shape):
            raise InferenceInputError(
                f"{where}: expected shape {list(spec.shape)}, got {list(shape)}"
            )
        count = math.prod(shape)
        dtype = _little_endian(spec.dtype)
        size = _parameters(entry, where).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InferenceInputError(f"{where}: binary_data_size must be an integer >= 0")
            if size != count * dtype.itemsize:
                raise InferenceInputError(
                    f"{where}: shape {list(shape)} of {datatype} needs "
                    f"{count * dtype.itemsize} bytes, binary_data_size says {size}"
                )
            if offset + size > len(binary):
                raise InferenceInputError(
                    f"{where}: expected {size} bytes of binary data, "
                    f"only {len(binary) - offset} left in the body"
                )
            arrays[name] = np.frombuffer(binary[offset : offset + size], dtype=dtype).reshape(shape)
            offset += size
            continue
        if "data" not in entry:
            raise InferenceInputError(f"{where}: expected 'data' or a binary_data_size parameter")
        try:
            # Out-of-range values raise instead of wrapping or becoming inf, and a float
            # for an integer tensor is refused rather than truncated.
            with np.errstate(all="raise"):
                if dtype.kind in "iub":
                    probe = np.asarray(entry["data"])
                    if probe.size and probe.dtype.kind not in "iub":
                        raise InferenceInputError(
                            f"{where}: expected integers for {datatype}, got {probe.dtype}"
                        )
                array = np.asarray(entry["data"], dtype=dtype)
        except (ValueError, TypeError, OverflowError, FloatingPointError, RecursionError) as exc:
            raise InferenceInputError(f"{where}: data is not {datatype}: {exc}") from exc
        if array.size != count:
            raise InferenceInputError(
                f"{where}: shape {list(shape)} needs {count} values, got {array.size}"
            )
        arrays[name] = array.reshape(shape)
    if offset != len(binary):
        raise InferenceInputError(
            f"the body has {len(binary) - offset} bytes of binary data that no input claims"
        )
    params = _parameters(request, "the request")
    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise InferenceInputError("binary_data_output must be true or false")
    outputs: dict[str, bool] | None = None
    raw_outputs = request.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise InferenceInputError("expected 'outputs' to be a list")
        outputs = {}
        for index, entry in enumerate(raw_outputs):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise InferenceInputError(f"outputs[{index}]: expected an object with a 'name'")
            flag = _parameters(entry, f"output {entry['name']!r}").get(
                "binary_data", binary_default
            )
            if not isinstance(flag, bool):
                raise InferenceInputError("binary_data must be true or false")
            outputs[entry["name"]] = flag
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InferenceInputError("expected 'id' to be a string")
    return InferRequest(arrays, outputs, binary_default, request_id)


def encode_response(
    *,
    model_name: str,
    model_version: str,
    outputs: Mapping[str, np.ndarray],
    binary: Mapping[str, bool],
    request_id: str | None = None,
) -> tuple[bytes, int | None]:
    """The response body and, when any output is binary, the JSON part's length."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in outputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": DTYPE_TO_PROTOCOL[array.dtype.name],
            "shape": list(array.shape),
        }
        if binary.get(name, False):
            blob = array.astype(_little_endian(array.dtype.name), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    response: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "outputs": entries,
    }
    if request_id is not None:
        response["id"] = request_id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def encode_request(
    inputs: Mapping[str, np.ndarray],
    *,
    binary_inputs: bool = True,
    binary_outputs: bool = True,
    outputs: Sequence[str] | None = None,
    request_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A request body and its extra HTTP headers (a client's side of :func:`decode_request`)."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in inputs.items():
        entry: dict[str, Any] = {
            "name": name,
            "datatype": DTYPE_TO_PROTOCOL[array.dtype.name],
            "shape": list(array.shape),
        }
        if binary_inputs:
            blob = array.astype(_little_endian(array.dtype.name), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    request: dict[str, Any] = {"inputs": entries}
    if binary_outputs:
        request["parameters"] = {"binary_data_output": True}
    if outputs is not None:
        request["outputs"] = [
            {"name": name, "parameters": {"binary_data": binary_outputs}} for name in outputs
        ]
    if request_id is not None:
        request["id"] = request_id
    header = json.dumps(request, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json"}
    if blobs:
        headers = {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
    return b"".join([header, *blobs]), headers


def decode_response(body: bytes, header_length: int | None) -> dict[str, np.ndarray]:
    """The output arrays of a response body (a client's side of :func:`encode_response`)."""
    import numpy as np

    json_part = body if header_length is None else body[:header_length]
    binary = memoryview(body)[header_length or len(body) :]
    response = json.loads(json_part)
    if "error" in response:
        raise InferenceInputError(str(response["error"]))
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for entry in response["outputs"]:
        dtype = _little_endian(PROTOCOL_TO_DTYPE[entry["datatype"]])
        shape = tuple(entry["shape"])
        size = entry.get("parameters", {}).get("binary_data_size")
        if size is not None:
            arrays[entry["name"]] = np.frombuffer(
                binary[offset : offset + size], dtype=dtype
            ).reshape(shape)
            offset += size
        else:
            arrays[entry["name"]] = np.asarray(entry["data"], dtype=dtype).reshape(shape)
    return arrays
