"""Whole-model conversion of the real YOLOv8n (nudenet 320n.onnx) on real photos.

float32 must stay within 1e-3 of the output range of onnxruntime and keep every float
detection; float16 is checked at a looser bound. Time and peak RSS of converting are
measured in a child process (``benchmarks/`` records the same figures as JSON).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from edgeops.assets import photos, yolov8n_onnx
from edgeops.converters.calibration import YOLOV8, preprocess_image, read_image
from edgeops.converters.detection import match_rate
from edgeops.converters.pipeline import ConvertOptions, convert_model, run_tflite

pytestmark = pytest.mark.integration

SHAPE = (1, 3, 320, 320)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    return [preprocess_image(read_image(p), YOLOV8, SHAPE) for p in photos()[:8]]


@pytest.fixture(scope="module")
def reference(images: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(yolov8n_onnx()), providers=["CPUExecutionProvider"])
    return [session.run(None, {"images": x})[0] for x in images]


def _outputs(mode: str, images: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]:
    result = convert_model(
        yolov8n_onnx(),
        ConvertOptions(quantize=mode, input_shapes={"images": SHAPE}),  # type: ignore[arg-type]
    )
    return [run_tflite(result.tflite, {"images": x})[0] for x in images], result.summary()


def test_float32_matches_onnxruntime_on_photos(
    images: list[np.ndarray], reference: list[np.ndarray]
) -> None:
    outputs, summary = _outputs("float32", images)
    assert summary["outputs"][0]["shape"] == [1, 22, 2100]
    assert summary["inputs"][0]["shape"] == [1, 320, 320, 3]
    for got, want in zip(outputs, reference, strict=True):
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) <= 1e-3 * np.ptp(want)
    match = match_rate(reference, outputs)
    assert match.reference_detections > 0
    assert match.matched == match.reference_detections
    # Only the DFL bins (softmax axis last, then the 1x1 conv wants NHWC) and the class
    # scores joining the ONNX-layout output move data; every reshape keeps the layout.
    assert summary["ops"].get("TRANSPOSE", 0) <= 2


def test_float16_halves_the_file_and_keeps_detections(
    images: list[np.ndarray], reference: list[np.ndarray]
) -> None:
    outputs, summary = _outputs("float16", images)
    _, float32 = _outputs("float32", images[:1])
    assert summary["size"] < 0.55 * float32["size"]
    for got, want in zip(outputs, reference, strict=True):
        assert np.max(np.abs(got - want)) <= 1e-2 * np.ptp(want)
    match = match_rate(reference, outputs)
    assert match.matched >= 0.95 * match.reference_detections


def test_conversion_time_and_memory() -> None:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec,
    # so a child of a large pytest process would report the parent's peak.
    script = (
        "import json, time\n"
        "from edgeops.assets import yolov8n_onnx\n"
        "from edgeops.converters.pipeline import ConvertOptions, convert_model\n"
        "start = time.perf_counter()\n"
        "convert_model(yolov8n_onnx(), ConvertOptions(input_shapes={'images': (1, 3, 320, 320)}))\n"
        "seconds = time.perf_counter() - start\n"
        "status = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
        "print(json.dumps({'seconds': seconds, 'peak_rss_mb': int(status) / 1024}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    # The anchor (onnx2tf with TensorFlow) takes 62 s and 1.5 GB for the same conversion.
    assert figures["seconds"] < 20
    assert figures["peak_rss_mb"] < 1024
