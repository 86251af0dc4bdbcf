"""YOLOv8-style detection outputs: decoding, NMS, IoU and the detection match rate.

A YOLOv8 detect head (Ultralytics export) has one output ``[1, 4 + classes, anchors]``: rows
0..3 are the box centre x, y, width and height in input pixels, the other rows are per-class
sigmoid scores in 0..1. ``anchors`` is the number of grid cells at strides 8, 16 and 32.

The converter's task metric for such models is the *detection match rate*: of the detections
that the float reference finds (score ≥ :data:`CONF_THRESHOLD` after per-class NMS), the share
that the converted model also finds with the same class and IoU ≥ :data:`MATCH_IOU`.
The threshold 0.25 is Ultralytics' default prediction confidence; NMS uses IoU 0.7, its
default as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Minimum class score of a detection (Ultralytics ``predict`` default).
CONF_THRESHOLD = 0.25
#: NMS IoU threshold (Ultralytics default).
NMS_IOU = 0.7
#: IoU at which a converted detection counts as the same as a float one.
MATCH_IOU = 0.5
#: At most this many detections per image survive NMS (Ultralytics ``max_det``).
MAX_DETECTIONS = 300

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Detections:
    """Boxes ``[K, 4]`` as x1, y1, x2, y2; ``scores`` and ``classes`` ``[K]``."""

    boxes: FloatArray
    scores: FloatArray
    classes: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def yolov8_anchor_count(height: int, width: int, strides: Sequence[int] = (8, 16, 32)) -> int:
    """The number of grid cells a YOLOv8 head predicts for an input of ``height × width``."""
    return sum(-(-height // s) * -(-width // s) for s in strides)


def is_yolov8_output(shape: Sequence[int], input_hw: tuple[int, int] | None) -> bool:
    """True when ``shape`` is ``[1, 4 + classes, anchors]`` for an input of ``input_hw``."""
    if input_hw is None or len(shape) != 3 or shape[0] != 1:
        return False
    return shape[2] == yolov8_anchor_count(*input_hw) and 5 <= shape[1] <= 4 + 1000


def box_channels(output: FloatArray) -> FloatArray:
    """The box rows (cx, cy, w, h) of a ``[1, 4 + classes, anchors]`` output."""
    return output[:, :4]


def score_channels(output: FloatArray) -> FloatArray:
    """The class-score rows of a ``[1, 4 + classes, anchors]`` output."""
    return output[:, 4:]


def iou_matrix(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pairwise IoU of boxes ``a [N, 4]`` and ``b [M, 4]`` (x1, y1, x2, y2) as ``[N, M]``."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.astype(np.float32)


def nms(boxes: FloatArray, scores: FloatArray, iou_threshold: float) -> npt.NDArray[np.int64]:
    """Greedy non-maximum suppression; the indices kept, highest score first.

    Ties in score keep the lower index first (a stable sort), so the result is deterministic.
    """
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    ious = iou_matrix(boxes[order], boxes[order])
    for rank in range(len(order)):
        if suppressed[rank]:
            continue
        keep.append(int(order[rank]))
        suppressed |= ious[rank] > iou_threshold
    return np.asarray(keep, dtype=np.int64)


def decode_yolov8(
    output: FloatArray,
    *,
    conf_threshold: float = CONF_THRESHOLD,
    iou_threshold: float = NMS_IOU,
    max_detections: int = MAX_DETECTIONS,
) -> Detections:
    """Detections of one image from a ``[1, 4 + classes, anchors]`` YOLOv8 output.

    Like Ultralytics' ``non_max_suppression`` (single label per box): each anchor takes its
    best class; anchors scoring ≥ ``conf_threshold`` go through NMS per class.
    """
    rows = np.asarray(output, dtype=np.float32).reshape(output.shape[-2], output.shape[-1])
    scores_all = rows[4:]
    classes = np.argmax(scores_all, axis=0)
    scores = scores_all[classes, np.arange(rows.shape[1])]
    chosen = scores >= conf_threshold
    cx, cy, w, h = rows[:4, chosen]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    scores, classes = scores[chosen], classes[chosen].astype(np.int64)
    # Per-class NMS with one call: shift each class's boxes far apart (Ultralytics' trick).
    offset = (classes.astype(np.float32) * 8192.0)[:, None]
    keep = nms(boxes + offset, scores, iou_threshold)[:max_detections]
    return Detections(boxes[keep], scores[keep].astype(np.float32), classes[keep])


def match_count(
    reference: Detections, candidate: Detections, *, iou_threshold: float = MATCH_IOU
) -> int:
    """How many reference detections the candidate also finds (same class, IoU ≥ threshold).

    Greedy one-to-one matching: reference detections in descending score order each take the
    unused candidate of the same class with the highest IoU.
    """
    if len(reference) == 0 or len(candidate) == 0:
        return 0
    ious = iou_matrix(reference.boxes, candidate.boxes)
    same_class = reference.classes[:, None] == candidate.classes[None, :]
    ious = np.where(same_class, ious, -1.0)
    used = np.zeros(len(candidate), dtype=bool)
    matched = 0
    for index in np.argsort(-reference.scores, kind="stable"):
        row = np.where(used, -1.0, ious[index])
        best = int(np.argmax(row))
        if row[best] >= iou_threshold:
            used[best] = True
            matched += 1
    return matched


@dataclass(frozen=True)
class MatchResult:
    """Detection match over a set of images at one confidence threshold."""

    conf_threshold: float
    reference_detections: int
    matched: int
    candidate_detections: int

    @property
    def rate(self) -> float | None:
        """``matched / reference_detections``, or None when the reference found nothing."""
        if self.reference_detections == 0:
            return None
        return self.matched / self.reference_detections


def match_rate(
    references: Sequence[FloatArray],
    candidates: Sequence[FloatArray],
    *,
    conf_threshold: float = CONF_THRESHOLD,
    iou_threshold: float = MATCH_IOU,
) -> MatchResult:
    """Detection match of ``candidates`` against ``references`` (raw YOLOv8 outputs per image)."""
    total = matched = found = 0
    for reference, candidate in zip(references, candidates, strict=True):
        ref = decode_yolov8(reference, conf_threshold=conf_threshold)
        cand = decode_yolov8(candidate, conf_threshold=conf_threshold)
        total += len(ref)
        found += len(cand)
        matched += match_count(ref, cand, iou_threshold=iou_threshold)
    return MatchResult(conf_threshold, total, matched, found)


__all__ = [
    "CONF_THRESHOLD",
    "MATCH_IOU",
    "NMS_IOU",
    "Detections",
    "MatchResult",
    "box_channels",
    "decode_yolov8",
    "iou_matrix",
    "is_yolov8_output",
    "match_count",
    "match_rate",
    "nms",
    "score_channels",
    "yolov8_anchor_count",
]
