"""Int8 YOLOv8n on real photos: calibrated on 16, judged on the 7 others against onnxruntime.

The detector (nudenet's YOLOv8n) looks for nudity, so ordinary photos give few detections:
the 7 held-out photos give 2 at confidence 0.25 (``benchmarks/convert_yolov8n.py`` prints the
counts, and the match on 5 views of each held-out photo and at lower thresholds). The test
therefore also checks the score channels directly, and that the shared-scale trap (boxes
and scores on one int8 scale) is what it is known to be: scores destroyed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from edgeops import assets
from edgeops.converters import calibration as cal
from edgeops.converters import detection as det
from edgeops.converters.pipeline import ConvertOptions, convert_model
from edgeops.converters.quantize import QuantizeOptions, quantize_graph
from edgeops.converters.report import report_for, sqnr_db
from edgeops.converters.validate import OnnxRunner, TfliteRunner
from edgeops.converters.writer import serialize

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHAPE = (1, 3, 320, 320)


@pytest.fixture(scope="module")
def converted() -> dict[str, Any]:
    model = assets.yolov8n_onnx().read_bytes()
    samples = cal.load_samples(assets.photos(), {"images": SHAPE}, preprocess=cal.YOLOV8)
    float_result = convert_model(model, ConvertOptions(input_shapes={"images": SHAPE}))
    int8_result = convert_model(
        model,
        ConvertOptions(
            quantize="int8",
            input_shapes={"images": SHAPE},
            calibration_samples=samples,
            calibration_count=16,
        ),
    )
    return {"model": model, "samples": samples, "float": float_result, "int8": int8_result}


def test_holdout_is_disjoint_from_calibration(converted: dict[str, Any]) -> None:
    result = converted["int8"]
    assert result.calibration_count == 16
    assert len(result.holdout) == len(converted["samples"]) - 16 == 7
    calibration_ids = {
        id(s) for s in cal.split_holdout(converted["samples"], calibration_count=16).calibration
    }
    assert not calibration_ids & {id(s) for s in result.holdout}


def test_int8_size_and_detection_match(converted: dict[str, Any]) -> None:
    float_size = len(converted["float"].tflite)
    int8 = converted["int8"]
    assert len(int8.tflite) <= 0.27 * float_size

    report = report_for(int8, source=converted["model"], latency_runs=1, threads=(1,))
    assert report.evaluated_samples == 7
    assert not report.random_inputs
    detection = report.detection
    assert detection is not None
    assert detection.reference_detections >= 2  # few, but not none (see the module doc)
    assert detection.match_rate is not None
    assert detection.match_rate >= 0.90
    # Measured with the float stem: 2/2, 5/5 at 0.1, 8/8 at 0.05 (without it: 2/2, 4/5, 6/8).
    lower = {threshold: (found, matched) for threshold, found, matched in detection.by_threshold}
    assert lower[0.05][1] >= 0.85 * lower[0.05][0]
    (output,) = report.outputs
    # Measured: 41.1 dB, box 41.1 dB, scores 17.9 dB (benchmarks/convert_yolov8n.py; without
    # the float stem 35.8 / 35.8 / 15.9 dB).
    assert output.sqnr_db >= 35.0
    assert detection.box_sqnr_db >= 35.0
    assert detection.score_sqnr_db >= 15.0
    # The stem (the 7 convolutions at stride <= 4) runs in float with float16 filters.
    assert int8.quantize_result.float_ops["CONV_2D"] == 7
    assert report.to_dict()["size_ratio_vs_float_tflite"] <= 0.27


def test_float32_matches_onnxruntime(converted: dict[str, Any]) -> None:
    reference = OnnxRunner(converted["model"])
    runner = TfliteRunner(converted["float"].tflite)
    refs = [reference.run(s)[0] for s in converted["samples"]]
    outs = [runner.run(s, [refs[0].shape])[0] for s in converted["samples"]]
    ref = np.concatenate(refs)
    got = np.concatenate(outs)
    assert np.abs(ref - got).max() <= 1e-3 * (ref.max() - ref.min())
    match = det.match_rate(refs, outs, conf_threshold=0.05)
    assert match.reference_detections > 0
    assert match.rate == 1.0


def test_shared_output_scale_destroys_scores(converted: dict[str, Any]) -> None:
    int8 = converted["int8"]
    split = cal.split_holdout(converted["samples"], calibration_count=16)
    trap = quantize_graph(
        int8.float_graph,
        "int8",
        split.calibration,
        options=QuantizeOptions(float_tail=False, mixed_range_ratio=math.inf),
        progress=False,
    )
    reference = OnnxRunner(converted["model"])
    fixed_runner = TfliteRunner(int8.tflite)
    trap_runner = TfliteRunner(serialize(trap))
    refs = np.concatenate([reference.run(s)[0] for s in split.evaluation])
    fixed = np.concatenate([fixed_runner.run(s, [refs.shape])[0] for s in split.evaluation])
    trapped = np.concatenate([trap_runner.run(s, [refs.shape])[0] for s in split.evaluation])
    fixed_score = sqnr_db(refs[:, 4:], fixed[:, 4:])
    trap_score = sqnr_db(refs[:, 4:], trapped[:, 4:])
    # One scale of ~1.26 for 0..320 boxes and 0..1 scores leaves every score at 0.
    assert trap_score <= 1.0
    assert fixed_score >= trap_score + 5.0
