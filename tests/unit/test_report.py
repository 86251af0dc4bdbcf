"""Report metrics on hand-checkable arrays, and the report's JSON form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edgeops.converters.report import (
    ConversionReport,
    DetectionMetrics,
    OutputMetrics,
    compare_outputs,
    cosine_similarity,
    max_abs_error,
    sqnr_db,
)


def test_sqnr_of_known_noise() -> None:
    ref = np.array([3.0, 4.0])  # signal energy 25
    assert sqnr_db(ref, ref + np.array([0.5, 0.0])) == pytest.approx(10 * math.log10(100))
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(np.zeros(2), np.ones(2)) == -math.inf


def test_cosine_and_max_abs_error() -> None:
    assert cosine_similarity([1.0, 0.0], [0.0, 2.0]) == pytest.approx(0.0)
    assert cosine_similarity([1.0, 1.0], [2.0, 2.0]) == pytest.approx(1.0)
    assert cosine_similarity([0.0], [0.0]) == 1.0
    assert max_abs_error([1.0, 2.0], [1.5, 0.0]) == 2.0


def test_compare_outputs_pools_samples() -> None:
    refs = [[np.array([1.0, 2.0])], [np.array([3.0, -1.0])]]
    outs = [[np.array([1.0, 2.5])], [np.array([3.0, -1.0])]]
    (metrics,) = compare_outputs(["y"], refs, outs)
    assert metrics.max_abs_error == 0.5
    assert metrics.reference_range == 4.0
    assert metrics.relative_max_error == 0.125
    assert metrics.sqnr_db == pytest.approx(10 * math.log10(15 / 0.25))


def test_report_json_is_strict_and_says_when_inputs_were_random() -> None:
    report = ConversionReport(
        mode="int8",
        source_size=1000,
        output_size=250,
        float_tflite_size=1000,
        op_histogram={"CONV_2D": 2},
        evaluation="random inputs: uniform [0, 1), no held-out data was given",
        evaluated_samples=4,
        calibration_samples=0,
        outputs=(OutputMetrics("y", (1, 4), math.inf, 1.0, 0.0, 2.0),),
        detection=DetectionMetrics("y", 0.25, 0.5, 4, 3, 5, 30.0, 20.0, ((0.1, 8, 6),)),
        latency_ms={"litert": {"1": 2.0}},
    )
    data = report.to_dict()
    text = json.dumps(data, allow_nan=False)  # no NaN/Infinity tokens
    assert json.loads(text)["outputs"][0]["sqnr_db"] == "inf"
    assert data["random_inputs"] is True
    assert data["size_ratio_vs_float_tflite"] == 0.25
    assert data["detection"]["match_rate"] == 0.75
    assert data["detection"]["by_threshold"][0]["match_rate"] == 0.75
    assert data["key_figures"]["detection_match_rate"] == 0.75
    assert data["key_figures"]["litert_latency_ms_1_thread"] == 2.0


def test_bundle_create_reads_the_key_figures_of_a_convert_report(tmp_path) -> None:
    from edgeops.bundle.create import _read_report

    report = ConversionReport(
        mode="int8",
        source_size=1000,
        output_size=250,
        float_tflite_size=1000,
        op_histogram={"CONV_2D": 2},
        evaluation="held-out samples (7), none used for calibration",
        evaluated_samples=7,
        calibration_samples=16,
        outputs=(OutputMetrics("y", (1, 4), 35.0, 0.999, 0.1, 2.0),),
    )
    path = tmp_path / "report.json"
    # The shape edgeops convert --report writes: the summary, validation nested inside.
    path.write_text(json.dumps({"model": "m.onnx", "validation": report.to_dict()}))
    lineage, _ = _read_report(path)
    assert lineage.report == report.key_figures()
    assert lineage.report["min_sqnr_db"] == 35.0
