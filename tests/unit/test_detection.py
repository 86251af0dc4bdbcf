"""Detection math on hand-checkable arrays: IoU, NMS, decoding and the match rate."""

from __future__ import annotations

import numpy as np

from edgeops.converters import detection as det


def test_iou_of_known_boxes() -> None:
    a = np.array([[0, 0, 2, 2]], dtype=np.float32)
    b = np.array([[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]], dtype=np.float32)
    np.testing.assert_allclose(det.iou_matrix(a, b), [[1 / 7, 1.0, 0.0]], rtol=1e-6)


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=np.float32)
    scores = np.array([0.6, 0.9, 0.5], dtype=np.float32)
    # IoU(0, 1) = 81 / 119 = 0.68: suppressed at 0.5, kept at 0.7.
    assert det.nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert det.nms(boxes, scores, 0.7).tolist() == [1, 0, 2]


def _yolo_output(entries: list[tuple[float, float, float, float, int, float]]) -> np.ndarray:
    anchors = det.yolov8_anchor_count(64, 64)
    out = np.zeros((1, 4 + 3, anchors), dtype=np.float32)
    for index, (cx, cy, w, h, cls, score) in enumerate(entries):
        out[0, :4, index] = [cx, cy, w, h]
        out[0, 4 + cls, index] = score
    return out


def test_decode_thresholds_and_runs_nms_per_class() -> None:
    out = _yolo_output(
        [
            (10, 10, 4, 4, 0, 0.9),
            (10, 10, 4, 4, 1, 0.8),  # same box, other class: kept
            (10.5, 10, 4, 4, 0, 0.7),  # same class, IoU 0.78: suppressed
            (40, 40, 4, 4, 2, 0.2),  # below 0.25
        ]
    )
    found = det.decode_yolov8(out)
    assert found.classes.tolist() == [0, 1]
    np.testing.assert_allclose(found.boxes[0], [8, 8, 12, 12])
    assert det.is_yolov8_output(out.shape, (64, 64))
    assert not det.is_yolov8_output(out.shape, (32, 32))


def test_match_rate_needs_same_class_and_overlap() -> None:
    reference = _yolo_output([(10, 10, 4, 4, 0, 0.9), (40, 40, 8, 8, 1, 0.8)])
    shifted = _yolo_output([(10.4, 10, 4, 4, 0, 0.5), (40, 40, 8, 8, 2, 0.8)])
    result = det.match_rate([reference], [shifted])
    assert (result.reference_detections, result.matched) == (2, 1)
    assert result.rate == 0.5
    empty = det.match_rate([np.zeros_like(reference)], [reference])
    assert empty.rate is None
