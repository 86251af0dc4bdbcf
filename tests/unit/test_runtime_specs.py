"""TensorSpec, input validation, runtime choice and the fake runtime (no runtime library)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeops.agent.runtimes import (
    TensorSpec,
    available_runtimes,
    load_model,
    resolve_runtime,
    validate_inputs,
)
from edgeops.agent.runtimes.testing import fake_add_runtime
from edgeops.errors import InferenceInputError, ModelError, StateError

SPECS = (
    TensorSpec(name="image", shape=(1, 2, 2, 3), dtype="uint8", scale=0.5, zero_point=3),
    TensorSpec(name="boxes", shape=(-1, 4), dtype="float32"),
)


def good_inputs() -> dict[str, np.ndarray]:
    return {
        "image": np.zeros((1, 2, 2, 3), np.uint8),
        "boxes": np.zeros((5, 4), np.float32),
    }


def test_spec_reports_protocol_datatype_and_json() -> None:
    assert SPECS[0].datatype == "UINT8"
    assert SPECS[1].datatype == "FP32"
    assert SPECS[0].to_json() == {
        "name": "image",
        "shape": [1, 2, 2, 3],
        "dtype": "uint8",
        "scale": 0.5,
        "zero_point": 3,
    }
    assert "scale" not in SPECS[1].to_json()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "", "shape": (1,), "dtype": "float32"}, "needs a name"),
        ({"name": "x", "shape": (1,), "dtype": "complex64"}, "expected a dtype"),
        ({"name": "x", "shape": (-2,), "dtype": "float32"}, "bad shape"),
        ({"name": "x", "shape": (1,), "dtype": "int8", "scale": 0.1}, "go together"),
    ],
)
def test_spec_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TensorSpec(**kwargs)  # type: ignore[arg-type]


def test_open_dimension_accepts_any_size() -> None:
    assert SPECS[1].accepts_shape((0, 4))
    assert SPECS[1].accepts_shape((17, 4))
    assert not SPECS[1].accepts_shape((17, 5))
    assert not SPECS[1].accepts_shape((4,))


def test_validate_accepts_matching_inputs_and_makes_them_contiguous() -> None:
    inputs = good_inputs()
    inputs["boxes"] = np.zeros((4, 5), np.float32).T  # (5, 4), not C-contiguous
    checked = validate_inputs(SPECS, inputs)
    assert checked["boxes"].flags.c_contiguous
    assert checked["boxes"].shape == (5, 4)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("boxes"), "missing input 'boxes'"),
        (lambda d: d.update(extra=np.zeros(1)), r"unknown input\(s\) \['extra'\]"),
        (
            lambda d: d.update(image=np.zeros((1, 2, 2, 3), np.float32)),
            "input 'image': expected dtype uint8, got float32",
        ),
        (
            lambda d: d.update(image=np.zeros((1, 2, 3, 3), np.uint8)),
            r"input 'image': expected shape \[1, 2, 2, 3\], got \[1, 2, 3, 3\]",
        ),
        (lambda d: d.update(boxes=[[0.0] * 4]), "expected a numpy array, got list"),
    ],
)
def test_validate_names_what_was_expected_and_what_came(change, message: str) -> None:
    inputs = good_inputs()
    change(inputs)
    with pytest.raises(InferenceInputError, match=message):
        validate_inputs(SPECS, inputs)


def test_inference_input_error_is_a_model_error() -> None:
    assert issubclass(InferenceInputError, ModelError)


def test_resolve_runtime_by_suffix_and_by_name(tmp_path: Path) -> None:
    assert resolve_runtime(tmp_path / "m.onnx", "onnxruntime") == "onnxruntime"
    assert resolve_runtime(tmp_path / "m.tflite", "tflite_runtime") == "tflite_runtime"
    with pytest.raises(ModelError, match=r"expected a \.tflite or \.onnx model, got 'm\.pt'"):
        resolve_runtime(tmp_path / "m.pt")
    with pytest.raises(ModelError, match=r"cannot run a \.onnx model"):
        resolve_runtime(tmp_path / "m.onnx", "ai_edge_litert")
    with pytest.raises(ModelError, match="expected a runtime in"):
        resolve_runtime(tmp_path / "m.onnx", "tensorflow")


def test_load_model_refuses_missing_file_and_bad_threads(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "absent.onnx", runtime="onnxruntime")
    with pytest.raises(ModelError, match="expected threads >= 1, got 0"):
        load_model(tmp_path / "absent.onnx", threads=0)


def test_available_runtimes_lists_versions_only() -> None:
    found = available_runtimes()
    assert set(found) <= {"ai_edge_litert", "tflite_runtime", "onnxruntime"}
    assert all(isinstance(version, str) and version for version in found.values())


def test_fake_runtime_validates_counts_and_refuses_after_close() -> None:
    fake = fake_add_runtime(constant=2.0)
    out = fake.run({"x": np.ones((1, 4), np.float32)})
    np.testing.assert_array_equal(out["y"], np.full((1, 4), 3.0, np.float32))
    assert fake.runs == 1
    with pytest.raises(InferenceInputError):
        fake.run({"x": np.ones((1, 3), np.float32)})
    fake.close()
    with pytest.raises(StateError):
        fake.run({"x": np.ones((1, 4), np.float32)})


def test_fake_runtime_failure_is_a_model_error() -> None:
    fake = fake_add_runtime(fail_with="tensor arena exhausted")
    with pytest.raises(ModelError, match="tensor arena exhausted"):
        fake.run({"x": np.ones((1, 4), np.float32)})
