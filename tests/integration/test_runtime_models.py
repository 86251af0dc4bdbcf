"""Real LiteRT and onnxruntime on tiny models written without TensorFlow."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgeops.agent.runtimes import ModelRuntime, load_model
from edgeops.agent.runtimes.testing import (
    onnx_add_model,
    tflite_add_model,
    tflite_image_mean_model,
)
from edgeops.errors import InferenceInputError, ModelError, StateError

pytestmark = pytest.mark.integration


@pytest.fixture(params=["ai_edge_litert", "onnxruntime"])
def add_model(request, tmp_path: Path) -> Iterator[ModelRuntime]:
    runtime = request.param
    if runtime == "onnxruntime":
        path = tmp_path / "add.onnx"
        path.write_bytes(onnx_add_model(constant=1.5))
    else:
        path = tmp_path / "add.tflite"
        path.write_bytes(tflite_add_model(constant=1.5))
    model = load_model(path, runtime=runtime)
    assert model.name == runtime
    yield model
    model.close()


def test_add_model_runs_and_reports_specs(add_model: ModelRuntime) -> None:
    assert [(s.name, s.shape, s.dtype) for s in add_model.inputs] == [("x", (1, 4), "float32")]
    assert [(s.name, s.shape, s.dtype) for s in add_model.outputs] == [("y", (1, 4), "float32")]
    assert add_model.version
    x = np.array([[0.0, 1.0, -2.0, 3.5]], np.float32)
    out = add_model.run({"x": x})
    np.testing.assert_allclose(out["y"], x + 1.5)
    assert out["y"].dtype == np.float32


def test_bad_inputs_are_refused_before_the_runtime(add_model: ModelRuntime) -> None:
    with pytest.raises(InferenceInputError, match="expected dtype float32, got float64"):
        add_model.run({"x": np.zeros((1, 4))})
    with pytest.raises(InferenceInputError, match=r"expected shape \[1, 4\], got \[2, 4\]"):
        add_model.run({"x": np.zeros((2, 4), np.float32)})


def test_run_after_close_is_a_state_error(add_model: ModelRuntime) -> None:
    add_model.close()
    add_model.close()  # idempotent
    with pytest.raises(StateError, match="closed"):
        add_model.run({"x": np.zeros((1, 4), np.float32)})


def test_concurrent_runs_give_each_caller_its_own_answer(add_model: ModelRuntime) -> None:
    # The TFLite interpreter shares tensor buffers between callers; without the runtime's
    # lock, one thread's input would leak into another's output.
    errors: list[str] = []

    def worker(value: float) -> None:
        x = np.full((1, 4), value, np.float32)
        for _ in range(300):
            y = add_model.run({"x": x})["y"]
            if not np.allclose(y, value + 1.5):
                errors.append(f"{value}: {y}")

    threads = [threading.Thread(target=worker, args=(float(i),)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_quantized_uint8_image_model(tmp_path: Path) -> None:
    path = tmp_path / "image.tflite"
    path.write_bytes(tflite_image_mean_model(height=32, width=24))
    model = load_model(path, threads=2)
    (spec,) = model.inputs
    assert (spec.name, spec.shape, spec.dtype) == ("image", (1, 32, 24, 3), "uint8")
    assert spec.scale == pytest.approx(1 / 255)
    assert spec.zero_point == 0
    image = np.random.default_rng(0).integers(0, 256, (1, 32, 24, 3), dtype=np.uint8)
    out = model.run({"image": image})
    np.testing.assert_allclose(out["mean"][0], image.reshape(-1, 3).mean(0) / 255, atol=1e-5)


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_open_batch_dimension_resizes(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"dyn{suffix}"
    build = tflite_add_model if suffix == ".tflite" else onnx_add_model
    path.write_bytes(build(shape=(-1, 4)))
    model = load_model(path)
    assert model.inputs[0].shape == (-1, 4)
    for batch in (3, 1, 5):
        out = model.run({"x": np.ones((batch, 4), np.float32)})
        np.testing.assert_allclose(out["y"], np.full((batch, 4), 2.0))


@pytest.mark.parametrize("suffix", [".tflite", ".onnx"])
def test_corrupt_file_is_a_model_error_chained(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"broken{suffix}"
    path.write_bytes(b"this is not a model" * 10)
    with pytest.raises(ModelError, match="cannot load") as info:
        load_model(path)
    assert info.value.__cause__ is not None


def test_missing_delegate_library_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "add.tflite"
    path.write_bytes(tflite_add_model())
    with pytest.raises(ModelError, match="cannot load"):
        load_model(path, delegates=["libedgeops-no-such-delegate.so"])


def test_auto_picks_litert_for_tflite_and_onnxruntime_for_onnx(tmp_path: Path) -> None:
    (tmp_path / "a.tflite").write_bytes(tflite_add_model())
    (tmp_path / "a.onnx").write_bytes(onnx_add_model())
    assert load_model(tmp_path / "a.tflite").name == "ai_edge_litert"
    assert load_model(tmp_path / "a.onnx").name == "onnxruntime"


def test_importing_runtimes_serving_telemetry_hardware_loads_no_heavy_module() -> None:
    code = (
        "import sys, edgeops.agent, edgeops.agent.runtimes, edgeops.agent.runtimes.tflite, "
        "edgeops.agent.runtimes.onnx, edgeops.agent.runtimes.testing, edgeops.agent.serving, "
        "edgeops.agent.telemetry, edgeops.hardware\n"
        "heavy = {'numpy', 'onnx', 'onnxruntime', 'typer', 'rich', 'ai_edge_litert', "
        "'tflite_runtime', 'importlib.metadata'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_board_profiles_drive_loading(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edgeops.agent.runtimes.onnx import OnnxRuntime
    from edgeops.hardware import get_profile

    (tmp_path / "a.tflite").write_bytes(tflite_add_model())
    (tmp_path / "a.onnx").write_bytes(onnx_add_model())
    generic = get_profile("generic-x86_64").load_options(tmp_path / "a.tflite", machine="x86_64")
    model = load_model(
        tmp_path / "a.tflite",
        runtime=generic.runtime,
        threads=generic.threads,
        delegates=generic.delegates,
    )
    assert model.name == "ai_edge_litert"
    # A Jetson profile asks for TensorRT and CUDA; this machine's onnxruntime has neither,
    # so the model runs on the CPU provider and the gap is logged, not fatal.
    jetson = get_profile("jetson-orin-nano").load_options(tmp_path / "a.onnx", machine="aarch64")
    model = load_model(
        tmp_path / "a.onnx", runtime=jetson.runtime, threads=2, delegates=jetson.delegates
    )
    assert isinstance(model, OnnxRuntime)
    assert model.providers[-1] == "CPUExecutionProvider"
    assert "TensorrtExecutionProvider" in caplog.text
    np.testing.assert_allclose(model.run({"x": np.zeros((1, 4), np.float32)})["y"], 1.0)
