"""tflite-runtime 2.14 (Raspberry Pi OS 32-bit, numpy<2) runs what LiteRT runs.

Runs only in the separate venv of ``scripts/test-tflite-runtime``, which first writes the
models with ``tests/compat/make_models.py`` from the main venv and points
``EDGEOPS_COMPAT_MODELS`` at them. Besides hand-written models, that is one converted graph
per op family in float32, int8 and dynamic, and the int8 YOLOv8n on its 7 held-out photos,
each checked here against the onnxruntime float32 reference and against LiteRT at the
tolerances stored beside it (chosen in ``make_models.py``).
"""

from __future__ import annotations

import http.client
import json
import math
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
#: The op families of ``tests/unit/test_convert_<family>.py`` that ``make_models.py`` covers;
#: those with weights are also converted in ``dynamic`` mode.
FAMILIES = [
    "conv",
    "pool",
    "elementwise",
    "activation",
    "matmul",
    "normalization",
    "reduce",
    "resize",
    "tensor",
]
WITH_DYNAMIC = {"conv", "matmul"}
CONVERTED = [
    f"{family}_{mode}"
    for family in FAMILIES
    for mode in ("float32", "int8", "dynamic")
    if mode != "dynamic" or family in WITH_DYNAMIC
]


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
    """The model path and its arrays, grouped by prefix: ``input``, ``expected``, ``litert``,
    and per output ``atol``, ``litert_atol``, ``min_sqnr_db``."""
    data = np.load(models_dir / f"{name}.npz")
    prefixes = ("input", "expected", "litert", "atol", "litert_atol", "min_sqnr_db")
    pick = {
        prefix: {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith(prefix + ":")}
        for prefix in prefixes
    }
    return models_dir / f"{name}.tflite", pick


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def check_case(models_dir: Path, name: str) -> None:
    path, case = load_case(models_dir, name)
    model = load_model(path, runtime="tflite_runtime", threads=2)
    assert model.name == "tflite_runtime"
    assert [spec.name for spec in model.inputs] == list(case["input"])
    outputs = model.run(case["input"])
    model.close()
    assert set(outputs) == set(case["expected"])
    for key, expected in case["expected"].items():
        got = outputs[key]
        assert got.shape == expected.shape, f"{key}: shape {got.shape}, expected {expected.shape}"
        atol = float(case["atol"][key])
        if math.isfinite(atol):
            np.testing.assert_allclose(got, expected, atol=atol, rtol=0, err_msg=key)
        floor = float(case["min_sqnr_db"][key])
        assert sqnr_db(expected, got) >= floor, f"{key}: SQNR {sqnr_db(expected, got):.1f} dB"
        # LiteRT ran the same file: the kernels agree up to their rounding
        near = float(case["litert_atol"][key])
        np.testing.assert_allclose(got, case["litert"][key], atol=near, rtol=0, err_msg=key)


def test_this_venv_is_the_pi_os_32bit_stack() -> None:
    runtimes = available_runtimes()
    assert runtimes["tflite_runtime"].startswith("2.14")
    assert "ai_edge_litert" not in runtimes
    assert int(np.__version__.split(".")[0]) < 2


@pytest.mark.parametrize("name", MODELS)
def test_model_runs_like_the_reference_and_like_litert(models_dir: Path, name: str) -> None:
    check_case(models_dir, name)


def test_every_converted_case_was_written(models_dir: Path) -> None:
    written = [c["name"] for c in json.loads((models_dir / "cases.json").read_text())]
    assert sorted(written) == sorted([*CONVERTED, "yolov8n_int8"])


@pytest.mark.parametrize("name", CONVERTED)
def test_converted_op_family_runs_like_onnxruntime_and_litert(models_dir: Path, name: str) -> None:
    check_case(models_dir, name)


def test_yolov8n_int8_on_held_out_photos(models_dir: Path) -> None:
    from edgeops.converters.detection import match_rate

    data = np.load(models_dir / "yolov8n_int8.npz")
    model = load_model(models_dir / "yolov8n_int8.tflite", runtime="tflite_runtime", threads=2)
    outputs = np.stack([model.run({"images": x})["output0"] for x in data["images"]])
    model.close()
    expected, litert = data["expected"], data["litert"]
    assert outputs.shape == expected.shape == (7, 1, 22, 2100)
    # Against onnxruntime float32, the integration test's floors for LiteRT (measured in
    # 2.14: box rows 40.2 dB, score rows 19.1 dB; LiteRT 41.1 and 17.9 dB).
    assert sqnr_db(expected[:, :, :4], outputs[:, :, :4]) >= 35.0
    assert sqnr_db(expected[:, :, 4:], outputs[:, :, 4:]) >= 15.0
    # Detections (measured in 2.14 as in LiteRT: 2/2 at 0.25, 8/8 at 0.05).
    strict = match_rate(list(expected), list(outputs))
    assert strict.reference_detections >= 2
    assert strict.matched == strict.reference_detections
    loose = match_rate(list(expected), list(outputs), conf_threshold=0.05)
    assert loose.matched >= 0.85 * loose.reference_detections
    # Against LiteRT on the same file, where the float model sees something (score >= 0.05):
    # 2.14's reference int8 kernels round differently from XNNPACK's, and the difference
    # grows through 57 int8 convolutions (measured: boxes within 10.3 px, scores 0.06).
    seen = expected[:, 0, 4:].max(axis=1) >= 0.05
    assert seen.sum() > 0
    box_gap = np.abs(outputs[:, 0, :4] - litert[:, 0, :4]).transpose(0, 2, 1)[seen]
    score_gap = np.abs(outputs[:, 0, 4:] - litert[:, 0, 4:]).transpose(0, 2, 1)[seen]
    assert box_gap.max() <= 16.0
    assert score_gap.max() <= 0.1


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
    path, case = load_case(models_dir, "image_mean")
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
    atol = float(case["atol"]["mean"])
    np.testing.assert_allclose(outputs["mean"], case["expected"]["mean"], atol=atol)
