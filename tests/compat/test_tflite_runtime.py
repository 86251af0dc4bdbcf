"""tflite-runtime 2.14 (Raspberry Pi OS 32-bit, numpy<2) runs what LiteRT runs.

Runs only in the separate venv of ``scripts/test-tflite-runtime``, which first writes the
models with ``tests/compat/make_models.py`` from the main venv and points
``EDGEOPS_COMPAT_MODELS`` at them.
"""

from __future__ import annotations

import http.client
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from edgeops.agent.runtimes import available_runtimes, load_model
from edgeops.agent.serving import (
    HEADER_LENGTH,
    ApiConfig,
    InferenceServer,
    ModelHolder,
    ModelInfo,
    decode_response,
    encode_request,
)

pytestmark = pytest.mark.tflite_runtime

MODELS = ["add", "image_mean", "converted_float32", "converted_int8"]


@pytest.fixture(scope="module", autouse=True)
def tflite_runtime_installed() -> None:
    # A fixture, not a module-level importorskip, so that the main run (which deselects
    # the marker) collects this file without a skip line.
    pytest.importorskip("tflite_runtime")


@pytest.fixture(scope="module")
def models_dir() -> Path:
    where = os.environ.get("EDGEOPS_COMPAT_MODELS")
    if not where or not (Path(where) / "add.tflite").is_file():
        pytest.fail(
            "EDGEOPS_COMPAT_MODELS does not point at the models of tests/compat/make_models.py; "
            "run scripts/test-tflite-runtime"
        )
    return Path(where)


def load_case(models_dir: Path, name: str):
    data = np.load(models_dir / f"{name}.npz")
    pick = {
        prefix: {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith(prefix + ":")}
        for prefix in ("input", "expected", "litert")
    }
    return models_dir / f"{name}.tflite", pick, float(data["atol"])


def test_this_venv_is_the_pi_os_32bit_stack() -> None:
    runtimes = available_runtimes()
    assert runtimes["tflite_runtime"].startswith("2.14")
    assert "ai_edge_litert" not in runtimes
    assert int(np.__version__.split(".")[0]) < 2


@pytest.mark.parametrize("name", MODELS)
def test_model_runs_like_the_reference_and_like_litert(models_dir: Path, name: str) -> None:
    path, case, atol = load_case(models_dir, name)
    model = load_model(path, runtime="tflite_runtime", threads=2)
    assert model.name == "tflite_runtime"
    assert [spec.name for spec in model.inputs] == list(case["input"])
    outputs = model.run(case["input"])
    for key, expected in case["expected"].items():
        np.testing.assert_allclose(outputs[key], expected, atol=atol)
        # same kernels as LiteRT: within one int8 step (1/256) for the quantized model
        np.testing.assert_allclose(outputs[key], case["litert"][key], atol=min(atol, 0.008))
    model.close()


def test_auto_picks_tflite_runtime_without_litert(models_dir: Path) -> None:
    model = load_model(models_dir / "add.tflite")
    assert model.name == "tflite_runtime"


def test_quantized_input_spec(models_dir: Path) -> None:
    model = load_model(models_dir / "image_mean.tflite", runtime="tflite_runtime")
    (spec,) = model.inputs
    assert (spec.dtype, spec.shape, spec.zero_point) == ("uint8", (1, 320, 320, 3), 0)
    assert spec.scale == pytest.approx(1 / 255)


def test_concurrent_runs_are_serialized(models_dir: Path) -> None:
    model = load_model(models_dir / "add.tflite", runtime="tflite_runtime")
    wrong: list[float] = []

    def worker(value: float) -> None:
        x = np.full((1, 4), value, np.float32)
        for _ in range(200):
            if not np.allclose(model.run({"x": x})["y"], value + 1.5):
                wrong.append(value)

    threads = [threading.Thread(target=worker, args=(float(i),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []


def test_inference_api_serves_on_tflite_runtime(models_dir: Path) -> None:
    path, case, atol = load_case(models_dir, "image_mean")
    holder = ModelHolder()
    holder.swap(load_model(path, runtime="tflite_runtime"), ModelInfo(name="meanpix"))
    with InferenceServer(holder, ApiConfig(port=0), poll_interval=0.05) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        body, headers = encode_request(case["input"])
        conn.request("POST", "/v2/models/meanpix/infer", body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        assert response.status == 200
        length = response.getheader(HEADER_LENGTH)
        outputs = decode_response(payload, int(length) if length else None)
        conn.close()
    holder.close()
    np.testing.assert_allclose(outputs["mean"], case["expected"]["mean"], atol=atol)
