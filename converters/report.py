"""The validation report every conversion gets: accuracy against the ONNX model, size, speed.

For each output: SQNR in dB (``10·log10(Σref² / Σ(ref − out)²)``; ``inf`` when identical),
cosine similarity and max abs error against onnxruntime float32, on held-out samples (never
the calibration ones); random inputs only when the user gave no data, and then
:attr:`ConversionReport.evaluation` says so. For a YOLOv8-style detection output it adds the
detection match rate at Ultralytics' default confidence 0.25 (and at lower thresholds, since
a detector may find little on the given images) plus SQNR separately for the box and the
class-score channels. Size before and after, the op histogram and the LiteRT latency at 1 and
2 threads next to onnxruntime's complete it.

:func:`build_report` is what ``edgeops convert`` calls; :meth:`ConversionReport.to_dict` is
what ``--report`` writes and ``edgeops bundle create --report`` reads (its ``key_figures``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

#: Confidence thresholds at which the detection match is also reported (besides 0.25).
LOW_THRESHOLDS = (0.1, 0.05)
#: At most this many held-out samples are evaluated.
MAX_EVAL_SAMPLES = 64
#: Random samples drawn when the user gives no data.
RANDOM_SAMPLES = 4


# -- metrics -----------------------------------------------------------------------------


def sqnr_db(reference: npt.ArrayLike, candidate: npt.ArrayLike) -> float:
    """Signal-to-quantization-noise ratio in dB; ``inf`` when the arrays are equal."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(candidate, dtype=np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def cosine_similarity(reference: npt.ArrayLike, candidate: npt.ArrayLike) -> float:
    """Cosine of the angle between the flattened arrays (1.0 when both are zero)."""
    a = np.asarray(reference, dtype=np.float64).ravel()
    b = np.asarray(candidate, dtype=np.float64).ravel()
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.dot(a, b) / norms)


def max_abs_error(reference: npt.ArrayLike, candidate: npt.ArrayLike) -> float:
    """Largest absolute difference."""
    diff = np.asarray(reference, dtype=np.float64) - np.asarray(candidate, dtype=np.float64)
    return float(np.max(np.abs(diff))) if diff.size else 0.0


def _json_number(value: float) -> float | str:
    # JSON has no infinity: write it as the string "inf" / "-inf".
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return round(value, 6)


# -- the report --------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputMetrics:
    """Accuracy of one output over every evaluated sample."""

    name: str
    shape: tuple[int, ...]
    sqnr_db: float
    cosine: float
    max_abs_error: float
    reference_range: float

    @property
    def relative_max_error(self) -> float:
        """``max_abs_error`` as a share of the reference output's range (max − min)."""
        return self.max_abs_error / self.reference_range if self.reference_range else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "name": self.name,
            "shape": list(self.shape),
            "sqnr_db": _json_number(self.sqnr_db),
            "cosine": round(self.cosine, 8),
            "max_abs_error": _json_number(self.max_abs_error),
            "reference_range": _json_number(self.reference_range),
            "relative_max_error": _json_number(self.relative_max_error),
        }


@dataclass(frozen=True)
class DetectionMetrics:
    """YOLOv8-style detection match of the converted model against the float reference."""

    output: str
    conf_threshold: float
    iou_threshold: float
    reference_detections: int
    matched: int
    candidate_detections: int
    box_sqnr_db: float
    score_sqnr_db: float
    by_threshold: tuple[tuple[float, int, int], ...] = ()

    @property
    def match_rate(self) -> float | None:
        """Share of the reference detections found; None when the reference found none."""
        return self.matched / self.reference_detections if self.reference_detections else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "output": self.output,
            "conf_threshold": self.conf_threshold,
            "iou_threshold": self.iou_threshold,
            "reference_detections": self.reference_detections,
            "matched": self.matched,
            "candidate_detections": self.candidate_detections,
            "match_rate": self.match_rate,
            "box_sqnr_db": _json_number(self.box_sqnr_db),
            "score_sqnr_db": _json_number(self.score_sqnr_db),
            "by_threshold": [
                {
                    "conf_threshold": t,
                    "reference_detections": ref,
                    "matched": hit,
                    "match_rate": hit / ref if ref else None,
                }
                for t, ref, hit in self.by_threshold
            ],
        }


@dataclass(frozen=True)
class ConversionReport:
    """Everything a reader needs to trust (or not) one converted model."""

    mode: str
    source_size: int
    output_size: int
    float_tflite_size: int | None
    op_histogram: Mapping[str, int]
    evaluation: str
    evaluated_samples: int
    calibration_samples: int
    outputs: tuple[OutputMetrics, ...]
    detection: DetectionMetrics | None = None
    latency_ms: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    float_ops: Mapping[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def random_inputs(self) -> bool:
        """True when no user data was available and the model was checked on noise."""
        return self.evaluation.startswith("random")

    def key_figures(self) -> dict[str, Any]:
        """The few numbers a bundle manifest keeps (worst output SQNR, match, size, latency)."""
        figures: dict[str, Any] = {
            "mode": self.mode,
            "size": self.output_size,
            "evaluation": self.evaluation,
            "evaluated_samples": self.evaluated_samples,
            "min_sqnr_db": _json_number(min((o.sqnr_db for o in self.outputs), default=math.inf)),
            "max_relative_error": _json_number(
                max((o.relative_max_error for o in self.outputs), default=0.0)
            ),
        }
        if self.detection is not None:
            figures["detection_match_rate"] = self.detection.match_rate
            figures["score_sqnr_db"] = _json_number(self.detection.score_sqnr_db)
        if "1" in self.latency_ms.get("litert", {}):
            figures["litert_latency_ms_1_thread"] = round(self.latency_ms["litert"]["1"], 3)
        return figures

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``--report``)."""
        return {
            "mode": self.mode,
            "source_size": self.source_size,
            "output_size": self.output_size,
            "float_tflite_size": self.float_tflite_size,
            "size_ratio_vs_source": round(self.output_size / max(self.source_size, 1), 6),
            "size_ratio_vs_float_tflite": (
                round(self.output_size / self.float_tflite_size, 6)
                if self.float_tflite_size
                else None
            ),
            "op_histogram": dict(self.op_histogram),
            "evaluation": self.evaluation,
            "random_inputs": self.random_inputs,
            "evaluated_samples": self.evaluated_samples,
            "calibration_samples": self.calibration_samples,
            "outputs": [o.to_dict() for o in self.outputs],
            "detection": None if self.detection is None else self.detection.to_dict(),
            "latency_ms": {k: dict(v) for k, v in self.latency_ms.items()},
            "float_ops": dict(self.float_ops),
            "notes": list(self.notes),
            "key_figures": self.key_figures(),
        }


# -- building it -------------------------------------------------------------------------


def compare_outputs(
    names: Sequence[str],
    references: Sequence[Sequence[npt.NDArray[np.float32]]],
    candidates: Sequence[Sequence[npt.NDArray[np.float32]]],
) -> tuple[OutputMetrics, ...]:
    """Per-output metrics over all samples (``references[sample][output]``)."""
    metrics = []
    for index, name in enumerate(names):
        ref = np.stack([r[index] for r in references])
        out = np.stack([c[index] for c in candidates])
        metrics.append(
            OutputMetrics(
                name=name,
                shape=tuple(int(d) for d in ref.shape[1:]),
                sqnr_db=sqnr_db(ref, out),
                cosine=cosine_similarity(ref, out),
                max_abs_error=max_abs_error(ref, out),
                reference_range=float(np.max(ref) - np.min(ref)) if ref.size else 0.0,
            )
        )
    return tuple(metrics)


def detection_metrics(
    name: str,
    references: Sequence[npt.NDArray[np.float32]],
    candidates: Sequence[npt.NDArray[np.float32]],
) -> DetectionMetrics:
    """Detection match and box/score SQNR of one YOLOv8-style output over all samples."""
    from edgeops.converters import detection as det

    main = det.match_rate(references, candidates, conf_threshold=det.CONF_THRESHOLD)
    lower = tuple(
        (t, r.reference_detections, r.matched)
        for t in LOW_THRESHOLDS
        for r in [det.match_rate(references, candidates, conf_threshold=t)]
    )
    # Outputs are [1, 4 + classes, anchors]: join the samples along the batch axis.
    ref = np.concatenate(references)
    out = np.concatenate(candidates)
    return DetectionMetrics(
        output=name,
        conf_threshold=det.CONF_THRESHOLD,
        iou_threshold=det.MATCH_IOU,
        reference_detections=main.reference_detections,
        matched=main.matched,
        candidate_detections=main.candidate_detections,
        box_sqnr_db=sqnr_db(det.box_channels(ref), det.box_channels(out)),
        score_sqnr_db=sqnr_db(det.score_channels(ref), det.score_channels(out)),
        by_threshold=lower,
    )


def _image_hw(shape: Sequence[int]) -> tuple[int, int] | None:
    if len(shape) == 4 and shape[1] in (1, 3):
        return int(shape[2]), int(shape[3])
    if len(shape) == 4 and shape[3] in (1, 3):
        return int(shape[1]), int(shape[2])
    return None


def make_report(
    *,
    onnx_model: bytes | None,
    tflite: bytes,
    samples: Sequence[Mapping[str, npt.NDArray[Any]]],
    input_shapes: Mapping[str, Sequence[int]],
    mode: str,
    source_size: int,
    float_tflite_size: int | None = None,
    calibration_samples: int = 0,
    evaluation: str | None = None,
    latency_runs: int = 5,
    threads: Sequence[int] = (1, 2),
    float_ops: Mapping[str, int] | None = None,
    notes: Sequence[str] = (),
) -> ConversionReport:
    """Validate ``tflite`` against ``onnx_model`` on ``samples`` (random ones when empty)."""
    from edgeops.converters.calibration import random_samples
    from edgeops.converters.detection import is_yolov8_output
    from edgeops.converters.tflite_read import inspect_tflite
    from edgeops.converters.validate import OnnxRunner, TfliteRunner, latencies

    samples = list(samples)[:MAX_EVAL_SAMPLES]
    if not samples:
        samples = random_samples(input_shapes, RANDOM_SAMPLES)
        evaluation = "random inputs: uniform [0, 1), no held-out data was given"
    elif evaluation is None:
        evaluation = f"held-out samples ({len(samples)}), none used for calibration"
    info = inspect_tflite(tflite)
    outputs: tuple[OutputMetrics, ...] = ()
    detection = None
    if onnx_model is not None:
        reference = OnnxRunner(onnx_model)
        candidate = TfliteRunner(tflite)
        refs = [reference.run(s) for s in samples]
        shapes = [tuple(int(d) for d in r.shape) for r in refs[0]]
        outs = [candidate.run(s, shapes) for s in samples]
        outputs = compare_outputs(reference.output_names, refs, outs)
        image_inputs = [_image_hw(shape) for shape in input_shapes.values()]
        input_hw = image_inputs[0] if len(image_inputs) == 1 else None
        if len(shapes) == 1 and is_yolov8_output(shapes[0], input_hw):
            detection = detection_metrics(
                reference.output_names[0], [r[0] for r in refs], [o[0] for o in outs]
            )
    latency = latencies(onnx_model, tflite, samples[0], threads=threads, runs=latency_runs)
    return ConversionReport(
        mode=mode,
        source_size=source_size,
        output_size=len(tflite),
        float_tflite_size=float_tflite_size,
        op_histogram=dict(info.ops),
        evaluation=evaluation,
        evaluated_samples=len(samples),
        calibration_samples=calibration_samples,
        outputs=outputs,
        detection=detection,
        latency_ms=latency,
        float_ops=dict(float_ops or {}),
        notes=tuple(notes),
    )


def report_for(
    result: Any,
    *,
    source: Path | bytes,
    latency_runs: int = 5,
    threads: Sequence[int] = (1, 2),
) -> ConversionReport:
    """The report of a :class:`~edgeops.converters.pipeline.ConversionResult`."""
    from edgeops.converters.writer import serialize

    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    onnx_model = None if result.source_format == "tflite" else data
    float_size = None
    if result.float_graph is not None and result.mode != "float32":
        float_size = len(serialize(result.float_graph))
    quant = result.quantize_result
    notes: list[str] = list(getattr(quant, "notes", []) or [])
    concats = getattr(quant, "float_concats", []) or []
    if concats:
        notes.append(
            "mixed-range concatenations done in float (one int8 scale would crush the "
            f"smaller-range inputs): {', '.join(concats)}"
        )
    if onnx_model is None:
        notes.append("a .tflite was passed through: no ONNX reference to compare against")
    return make_report(
        onnx_model=onnx_model,
        tflite=result.tflite,
        samples=result.holdout,
        input_shapes=result.input_shapes,
        mode=result.mode,
        source_size=len(data),
        float_tflite_size=float_size,
        calibration_samples=result.calibration_count,
        latency_runs=latency_runs,
        threads=threads,
        float_ops=getattr(quant, "float_ops", None),
        notes=notes,
    )


def build_report(result: Any, *, source: Path, options: Any = None) -> dict[str, Any]:
    """``edgeops convert``'s hook: the report of ``result`` as a JSON-ready dict."""
    return report_for(result, source=source).to_dict()


def print_report(report: Mapping[str, Any]) -> None:
    """Render a report dict (from :meth:`ConversionReport.to_dict`) as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"validation: {report['evaluation']}")
    table = Table("output", "shape", "SQNR dB", "cosine", "max abs err", "of range")
    for out in report["outputs"]:
        table.add_row(
            out["name"],
            "x".join(str(d) for d in out["shape"]),
            _fmt(out["sqnr_db"], ".1f"),
            _fmt(out["cosine"], ".6f"),
            _fmt(out["max_abs_error"], ".4g"),
            _fmt(out["relative_max_error"], ".2e"),
        )
    console.print(table)
    detection = report.get("detection")
    if detection:
        rate = detection["match_rate"]
        console.print(
            f"detections (conf ≥ {detection['conf_threshold']}, same class, IoU ≥ "
            f"{detection['iou_threshold']}): {detection['matched']}/"
            f"{detection['reference_detections']} float detections found"
            + (f" ({rate:.1%})" if rate is not None else "")
            + f"; box SQNR {_fmt(detection['box_sqnr_db'], '.1f')} dB, score SQNR "
            f"{_fmt(detection['score_sqnr_db'], '.1f')} dB"
        )
        for row in detection["by_threshold"]:
            console.print(
                f"  at conf ≥ {row['conf_threshold']}: {row['matched']}/"
                f"{row['reference_detections']}"
            )
    latency = report.get("latency_ms", {})
    if latency.get("litert"):
        lat = Table("runtime", *[f"{t} thread(s) ms" for t in latency["litert"]])
        for runtime, values in latency.items():
            if values:
                lat.add_row(runtime, *[f"{v:.2f}" for v in values.values()])
        console.print(lat)
    ratio = report.get("size_ratio_vs_float_tflite")
    console.print(
        f"size {report['source_size']:,} → {report['output_size']:,} bytes"
        + (f" ({ratio:.3f}x the float32 TFLite)" if ratio else "")
    )
    for note in report.get("notes", []):
        console.print(f"note: {note}")


def _fmt(value: Any, spec: str) -> str:
    return value if isinstance(value, str) else format(value, spec)


__all__ = [
    "ConversionReport",
    "DetectionMetrics",
    "OutputMetrics",
    "build_report",
    "compare_outputs",
    "cosine_similarity",
    "detection_metrics",
    "make_report",
    "max_abs_error",
    "print_report",
    "report_for",
    "sqnr_db",
]
