"""YOLOv8n (nudenet 320n.onnx, 1x3x320x320) to float32 and int8: accuracy, size, speed, cost.

Prints one JSON object. Calibration uses 16 of the scikit-image photos, chosen by the seeded
split of ``edgeops.converters.calibration.split_holdout``; accuracy is measured on the other
7 (never on a calibration photo) and, because a nudity detector finds little in ordinary
photos, also on 5 views of each held-out photo (full, mirrored, centre crop, two corner
crops) and at lower confidence thresholds. The same 5 views of the 16 calibration photos
(``calibration_views``) are the set the quantization settings were chosen on; they are
printed for comparison and are not a held-out figure. ``int8_no_stem`` is the int8 model
without the float stem (``QuantizeOptions(float_stem=False)``). Latencies are medians of
interleaved runs in this one process, so their ratios compare like with like.

    python benchmarks/convert_yolov8n.py [--runs 30] [--install-size]

Targets (issue 3): int8 size ≤ 0.27× float32 TFLite; detection match ≥ 0.90; int8 latency at
1 thread ≤ 0.35× our float32 TFLite and ≤ 0.5× onnxruntime float32; YOLOv8n → int8 with
calibration on 16 images ≤ 20 s and ≤ 1 GB peak RSS; float32 max abs error ≤ 1e-3 of the
output range.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SHAPE = (1, 3, 320, 320)
CALIBRATION_COUNT = 16


def _views(pixels: np.ndarray) -> list[np.ndarray]:
    h, w = pixels.shape[:2]
    return [
        pixels,
        pixels[:, ::-1],
        pixels[h // 6 : h - h // 6, w // 6 : w - w // 6],
        pixels[: h * 2 // 3, : w * 2 // 3],
        pixels[h // 3 :, w // 3 :],
    ]


def _child(folder: str, output: str) -> None:
    """The measured conversion: YOLOv8n to int8, calibrated on every image in ``folder``."""
    from edgeops import assets
    from edgeops.converters.pipeline import ConvertOptions, convert

    images = sorted(Path(folder).iterdir())
    options = ConvertOptions(
        quantize="int8",
        input_shapes={"images": SHAPE},
        calibration=Path(folder),
        preset="yolov8",
        calibration_count=len(images),
    )
    convert(assets.yolov8n_onnx(), output, options)
    # VmHWM, not the parent's ru_maxrss of its children: Linux carries ru_maxrss over from
    # the parent across exec, so a large parent would report its own peak.
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]
    print(json.dumps({"peak_rss_kib": int(status)}))


def _convert_cost(calibration_photos: list[Path]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "calibration"
        folder.mkdir()
        for photo in calibration_photos:
            shutil.copy(photo, folder / photo.name)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(folder), str(Path(tmp) / "m.tflite")],
            check=True,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        size = (Path(tmp) / "m.tflite").stat().st_size
    peak_kib = json.loads(done.stdout.strip().splitlines()[-1])["peak_rss_kib"]
    return {
        "int8_convert_wall_s": round(wall, 2),
        "int8_convert_peak_rss_mb": round(peak_kib / 1024, 1),
        "int8_convert_output_bytes": size,
        "calibration_images": len(calibration_photos),
    }


def _install_size() -> dict[str, Any]:
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, "--disable-pip-version-check", f"{root}[convert]"], check=True)
        site = next((venv / "lib").glob("python*/site-packages"))
        total = sum(p.stat().st_size for p in site.rglob("*") if p.is_file())
    return {"install_size_convert_mb": round(total / 1e6, 1)}


def _median_interleaved(calls: dict[str, Any], runs: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()  # warm-up
    for _ in range(runs):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - started) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def _num(value: float) -> float | str:
    return "inf" if math.isinf(value) else round(value, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--install-size", action="store_true")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    from edgeops import assets
    from edgeops.converters import calibration as cal
    from edgeops.converters import detection as det
    from edgeops.converters.pipeline import ConvertOptions, convert_model
    from edgeops.converters.quantize import QuantizeOptions, quantize_graph
    from edgeops.converters.report import sqnr_db
    from edgeops.converters.validate import OnnxRunner, TfliteRunner
    from edgeops.converters.writer import serialize

    model_path = assets.yolov8n_onnx()
    onnx_bytes = model_path.read_bytes()
    photos = assets.photos()
    pixels = [cal.read_image(p) for p in photos]
    samples = [{"images": cal.preprocess_image(px, cal.YOLOV8, SHAPE)} for px in pixels]
    split = cal.split_holdout(samples, calibration_count=CALIBRATION_COUNT)
    held_views = [
        {"images": cal.preprocess_image(np.ascontiguousarray(v), cal.YOLOV8, SHAPE)}
        for i in split.evaluation_indices
        for v in _views(pixels[i])
    ]
    calibration_views = [
        {"images": cal.preprocess_image(np.ascontiguousarray(v), cal.YOLOV8, SHAPE)}
        for i in split.calibration_indices
        for v in _views(pixels[i])
    ]

    float_result = convert_model(onnx_bytes, ConvertOptions(input_shapes={"images": SHAPE}))
    int8_result = convert_model(
        onnx_bytes,
        ConvertOptions(
            quantize="int8",
            input_shapes={"images": SHAPE},
            calibration_samples=samples,
            calibration_count=CALIBRATION_COUNT,
        ),
    )
    assert int8_result.float_graph is not None
    # The trap, for comparison: one int8 scale for boxes and scores in the final concat.
    trap = serialize(
        quantize_graph(
            int8_result.float_graph,
            "int8",
            split.calibration,
            options=QuantizeOptions(float_tail=False, mixed_range_ratio=math.inf),
            progress=False,
        )
    )

    no_stem = serialize(
        quantize_graph(
            int8_result.float_graph,
            "int8",
            split.calibration,
            options=QuantizeOptions(float_stem=False),
            progress=False,
        )
    )

    reference = OnnxRunner(onnx_bytes)
    models = {
        "float32": float_result.tflite,
        "int8": int8_result.tflite,
        "int8_no_stem": no_stem,
        "int8_trap": trap,
    }
    runners = {name: TfliteRunner(data) for name, data in models.items()}
    out_shape = [(1, 22, 2100)]
    sets = {
        "held_out": split.evaluation,
        "held_out_views": held_views,
        "calibration_views": calibration_views,
    }
    accuracy: dict[str, Any] = {}
    for set_name, items in sets.items():
        refs = [reference.run(s)[0] for s in items]
        ref_all = np.concatenate(refs)
        out_range = float(ref_all.max() - ref_all.min())
        for model_name, runner in runners.items():
            outs = [runner.run(s, out_shape)[0] for s in items]
            got = np.concatenate(outs)
            entry: dict[str, Any] = {
                "images": len(items),
                "sqnr_db": _num(sqnr_db(ref_all, got)),
                "box_sqnr_db": _num(sqnr_db(ref_all[:, :4], got[:, :4])),
                "score_sqnr_db": _num(sqnr_db(ref_all[:, 4:], got[:, 4:])),
                "max_abs_error": float(np.abs(ref_all - got).max()),
                "max_abs_error_of_range": float(np.abs(ref_all - got).max()) / out_range,
            }
            for threshold in (det.CONF_THRESHOLD, 0.1, 0.05):
                match = det.match_rate(refs, outs, conf_threshold=threshold)
                entry[f"match@{threshold}"] = {
                    "float_detections": match.reference_detections,
                    "matched": match.matched,
                    "converted_detections": match.candidate_detections,
                    "rate": match.rate,
                }
            accuracy[f"{model_name}/{set_name}"] = entry

    sample = split.evaluation[0]
    for runner in runners.values():
        runner.set_inputs(sample)
    one_thread = {name: TfliteRunner(data, threads=1) for name, data in models.items()}
    for runner in one_thread.values():
        runner.set_inputs(sample)
    ort_one = OnnxRunner(onnx_bytes, threads=1)
    latency = _median_interleaved(
        {
            "float32_tflite": one_thread["float32"].invoke,
            "int8_tflite": one_thread["int8"].invoke,
            "int8_no_stem_tflite": one_thread["int8_no_stem"].invoke,
            "int8_trap_tflite": one_thread["int8_trap"].invoke,
            "onnxruntime_float32": lambda: ort_one.run(sample),
        },
        args.runs,
    )

    float_size = len(float_result.tflite)
    result: dict[str, Any] = {
        "model": "nudenet 320n.onnx (YOLOv8n, 1x3x320x320, 18 classes)",
        "calibration": f"{CALIBRATION_COUNT} photos, auto ranges; {len(split.evaluation)} held out",
        "sets": {
            "held_out": "the held-out photos (never calibrated or chosen on)",
            "held_out_views": "5 views of each held-out photo (never calibrated or chosen on)",
            "calibration_views": "5 views of each calibration photo (settings chosen on these)",
        },
        "held_out_photos": [photos[i].name for i in split.evaluation_indices],
        "onnx_bytes": len(onnx_bytes),
        "float32_tflite_bytes": float_size,
        "int8_tflite_bytes": len(int8_result.tflite),
        "int8_size_ratio": round(len(int8_result.tflite) / float_size, 4),
        "int8_float_ops": int8_result.quantize_result.float_ops,
        "int8_ops": int8_result.op_histogram(),
        "accuracy": accuracy,
        "latency_ms_1_thread": {k: round(v, 3) for k, v in latency.items()},
        "int8_latency_ratio_vs_float32_tflite": round(
            latency["int8_tflite"] / latency["float32_tflite"], 4
        ),
        "int8_latency_ratio_vs_onnxruntime": round(
            latency["int8_tflite"] / latency["onnxruntime_float32"], 4
        ),
    }
    result.update(_convert_cost([photos[i] for i in split.calibration_indices]))
    if args.install_size:
        result.update(_install_size())
    held = accuracy["int8/held_out"]["match@0.25"]
    result["targets"] = {
        "int8_size_ratio<=0.27": result["int8_size_ratio"] <= 0.27,
        "int8_match@0.25>=0.90 (held-out photos)": (held["rate"] or 0.0) >= 0.90,
        "int8_latency<=0.35x_float32_tflite": result["int8_latency_ratio_vs_float32_tflite"]
        <= 0.35,
        "int8_latency<=0.5x_onnxruntime": result["int8_latency_ratio_vs_onnxruntime"] <= 0.5,
        "int8_convert<=20s": result["int8_convert_wall_s"] <= 20,
        "int8_convert<=1GB": result["int8_convert_peak_rss_mb"] <= 1024,
        "float32_max_abs_error<=1e-3_of_range": accuracy["float32/held_out"][
            "max_abs_error_of_range"
        ]
        <= 1e-3,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
