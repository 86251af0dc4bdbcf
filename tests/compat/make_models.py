"""Writes the models and expected outputs the tflite-runtime compatibility tests run.

Runs in the main venv (LiteRT's schema module, the converter, onnxruntime), because the
tflite-runtime venv has none of them, like a Raspberry Pi OS 32-bit board:

    .venv/bin/python tests/compat/make_models.py OUT_DIR

For each model it writes ``NAME.tflite`` and ``NAME.npz`` holding ``input:<name>`` arrays in
the TFLite layout (NHWC images), the reference ``expected:<name>`` outputs (onnxruntime
float32 for converted models, numpy for the hand-written ones), the outputs LiteRT gives
(``litert:<name>``) and the tolerances tflite-runtime 2.14 is held to: ``atol`` against the
reference, ``litert_atol`` against LiteRT, ``min_sqnr_db`` against the reference.

Converted models: one small graph per op family of the conformance suite
(``tests/unit/test_convert_<family>.py``), each in float32, int8 and, when it has weights
that ``dynamic`` quantizes, dynamic; and the real YOLOv8n in int8, calibrated on 16 photos
and scored on the 7 others (``yolov8n_int8.npz`` holds one row per photo). ``cases.json``
lists every case written, with its family and mode.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Float32: the conformance tolerance, max abs error ≤ 1e-4 of the reference output range.
FLOAT_REL_TOL = 1e-4
#: Dynamic (int8 weights, float activations): SQNR floor against onnxruntime. The hybrid
#: kernels quantize each input at run time, so 2.14 and LiteRT may differ by an input
#: quantization step: at most this share of the output range apart.
DYNAMIC_MIN_SQNR_DB = 30.0
DYNAMIC_LITERT_REL_TOL = 0.02
#: Int8: an SQNR floor per family (below) and 2.14 within this share of the output range of
#: LiteRT; 2.14's reference kernels round a few intermediate values differently.
INT8_LITERT_REL_TOL = 0.03
#: Calibration and evaluation inputs of the family graphs (independent seeds).
CALIBRATION_SAMPLES = 32
YOLO_SHAPE = (1, 3, 320, 320)
YOLO_CALIBRATION_COUNT = 16


def _save(
    out: Path,
    name: str,
    tflite: bytes,
    inputs: Mapping[str, np.ndarray],
    expected: Mapping[str, np.ndarray],
    atol: float,
    *,
    relative: bool = False,
    litert_atol: float | None = None,
    min_sqnr_db: float = -math.inf,
) -> None:
    """Writes one case. With ``relative``, ``atol`` and ``litert_atol`` are shares of each
    reference output's range; the npz holds the absolute tolerance of every output."""
    from edgeops.agent.runtimes import load_model

    path = out / f"{name}.tflite"
    path.write_bytes(tflite)
    litert = load_model(path, runtime="ai_edge_litert").run(dict(inputs))
    arrays: dict[str, Any] = {f"input:{k}": v for k, v in inputs.items()}
    for key, reference in expected.items():
        scale = max(float(np.ptp(reference)), 1e-6) if relative else 1.0
        arrays[f"expected:{key}"] = reference
        arrays[f"litert:{key}"] = litert[key]
        arrays[f"atol:{key}"] = np.float64(atol * scale)
        near = min(atol, 0.008) if litert_atol is None else litert_atol * scale
        arrays[f"litert_atol:{key}"] = np.float64(near)
        arrays[f"min_sqnr_db:{key}"] = np.float64(min_sqnr_db)
    np.savez(out / f"{name}.npz", **arrays)  # type: ignore[arg-type]


# -- ONNX graphs, one per op family ----------------------------------------------------------


def _model(
    nodes: Sequence[Any],
    inputs: Mapping[str, Sequence[int]],
    outputs: Sequence[str],
    constants: Mapping[str, np.ndarray],
    *,
    opset: int = 17,
) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        list(nodes),
        "compat",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def _w(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return rng.normal(0, scale, shape).astype(np.float32)


def _head(
    nodes: list[Any],
    constants: dict[str, np.ndarray],
    rng: np.random.Generator,
    source: str,
    output: str,
    channels: tuple[int, int],
    *,
    conv: bool = True,
) -> None:
    """Ends a family graph in a 1x1 Conv (or a MatMul by a constant) from ``source``.

    Operators after the last weighted one stay float in ``int8`` mode (the float tail), so
    without it a family graph would not run its int8 kernels.
    """
    from onnx import helper

    weight = f"{output}_w"
    if conv:
        constants[weight] = _w(rng, channels[1], channels[0], 1, 1, scale=0.4)
        nodes.append(helper.make_node("Conv", [source, weight], [output]))
    else:
        constants[weight] = _w(rng, *channels, scale=0.4)
        nodes.append(helper.make_node("MatMul", [source, weight], [output]))


def _conv() -> tuple[bytes, dict[str, tuple[int, ...]]]:
    from onnx import helper

    rng = np.random.default_rng(10)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        # depthwise, stride 2, asymmetric pads (explicit PAD + VALID)
        helper.make_node(
            "Conv", ["r1", "w2", "b2"], ["c2"], group=32, strides=[2, 2], pads=[0, 0, 1, 1]
        ),
        helper.make_node("Conv", ["c2", "w3", "b3"], ["c3"], group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("ConvTranspose", ["r3", "w4", "b4"], ["y"], strides=[2, 2]),
    ]
    constants: dict[str, np.ndarray] = {
        "w1": _w(rng, 32, 8, 3, 3),
        "b1": _w(rng, 32, scale=0.1),
        "w2": _w(rng, 32, 1, 6, 6),
        "b2": _w(rng, 32, scale=0.1),
        "w3": _w(rng, 32, 8, 3, 3, scale=0.2),
        "b3": _w(rng, 32, scale=0.1),
        "w4": _w(rng, 32, 8, 2, 2, scale=0.2),
        "b4": _w(rng, 8, scale=0.1),
    }
    return _model(nodes, {"x": (1, 8, 16, 16)}, ["y"], constants), {"x": (1, 8, 16, 16)}


def _pool() -> tuple[bytes, dict[str, tuple[int, ...]]]:
    from onnx import helper

    nodes = [
        helper.make_node("MaxPool", ["x"], ["m"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
        helper.make_node(
            "AveragePool",
            ["m"],
            ["a"],
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            count_include_pad=0,
        ),
        helper.make_node("GlobalAveragePool", ["a"], ["g"]),
        helper.make_node("GlobalMaxPool", ["x"], ["gm"]),
        helper.make_node("Sub", ["a", "g"], ["d"]),
        helper.make_node("Add", ["g", "gm"], ["s"]),
    ]
    rng = np.random.default_rng(15)
    constants: dict[str, np.ndarray] = {}
    _head(nodes, constants, rng, "d", "y0", (8, 8))
    _head(nodes, constants, rng, "s", "y1", (8, 8))
    return _model(nodes, {"x": (1, 8, 15, 15)}, ["y0", "y1"], constants), {"x": (1, 8, 15, 15)}


def _elementwise() -> tuple[bytes, dict[str, tuple[int, ...]]]:
    from onnx import helper

    rng = np.random.default_rng(11)
    nodes = [
        helper.make_node("Add", ["a", "b"], ["s"]),  # broadcast [1,6,5,5] + [1,1,5,5]
        helper.make_node("Mul", ["s", "k"], ["p"]),  # per-channel constant
        helper.make_node("Sub", ["p", "a"], ["d"]),
        helper.make_node("Div", ["d", "two"], ["q"]),
        helper.make_node("Max", ["q", "a"], ["hi"]),
        helper.make_node("Min", ["hi", "k"], ["lo"]),
        helper.make_node("Mul", ["lo", "lo"], ["sq"]),
        helper.make_node("Abs", ["d"], ["ab"]),
        helper.make_node("Sqrt", ["ab"], ["rt"]),
        helper.make_node("Add", ["sq", "rt"], ["z"]),
    ]
    constants: dict[str, np.ndarray] = {
        "k": rng.uniform(0.5, 2.0, (1, 6, 1, 1)).astype(np.float32),
        "two": np.array(2.0, np.float32),
    }
    _head(nodes, constants, rng, "z", "y", (6, 6))
    inputs: dict[str, tuple[int, ...]] = {"a": (1, 6, 5, 5), "b": (1, 1, 5, 5)}
    return _model(nodes, inputs, ["y"], constants), inputs


def _activation() -> tuple[bytes, dict[str, tuple[int, ...]]]:
    from onnx import helper

    rng = np.random.default_rng(12)
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["a0"]),
        helper.make_node("Tanh", ["x"], ["a1"]),
        helper.make_node("LeakyRelu", ["x"], ["a2"], alpha=0.1),
        helper.make_node("PRelu", ["x", "slope"], ["a3"]),
        helper.make_node("HardSwish", ["x"], ["a4"]),
        helper.make_node("HardSigmoid", ["x"], ["a5"], alpha=0.2, beta=0.5),
        helper.make_node("Clip", ["x", "lo", "hi"], ["a6"]),
        helper.make_node("Elu", ["x"], ["a7"]),
        helper.make_node("Softplus", ["x"], ["a8"]),
        helper.make_node("Concat", [f"a{i}" for i in range(9)], ["cat"], axis=1),
    ]
    constants: dict[str, np.ndarray] = {
        "slope": rng.uniform(0.0, 0.5, (4, 1, 1)).astype(np.float32),
        "lo": np.array(-1.0, np.float32),
        "hi": np.array(1.5, np.float32),
    }
    _head(nodes, constants, rng, "cat", "y", (36, 8))
    return _model(nodes, {"x": (1, 4, 6, 6)}, ["y"], constants), {"x": (1, 4, 6, 6)}


def _matmul() -> tuple[bytes, dict[str, tuple[int, ...]]]:
    from onnx import helper

    rng = np.random.default_rng(13)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y0"], alpha=0.5, beta=2.0),
        helper.make_node("MatMul", ["s", "w3"], ["y1"]),  # 3-D: FULLY_CONNECTED keepNumDims
        helper.make_node("MatMul", ["s", "t"], ["bm"]),  # both at run time: BATCH_MATMUL
    ]
    constants: dict[str, np.ndarray] = {
        "w1": _w(rng, 48, 64, scale=0.2),
        "b1": _w(rng, 48, scale=0.1),
        "w2": _w(rng, 48, 32, scale=0.2),
        "b2": _w(rng, 32, scale=0.1),
        "w3": _w(rng, 64, 40, scale=0.2),
    }
    _head(nodes, constants, rng, "bm", "y2", (3, 4), conv=False)
    inputs: dict[str, tuple[int, ...]] = {"x": (2, 64), "s": (1, 5, 64), "t": (1, 64, 3)}
    return _model(nodes, inputs, ["y0", "y1", "y2"], constants), inputs


def _normalization() -> tuple[bytes, dict[str, tuple[int, ...]]]:
    from onnx import helper

    rng = np.random.default_rng(14)
    c = 8
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("BatchNormalization", ["r", "g", "b", "mean", "var"], ["bn"]),
        helper.make_node("InstanceNormalization", ["bn", "g", "b"], ["inorm"]),
        helper.make_node("LayerNormalization", ["x", "lg", "lb"], ["ln"], axis=-1),
        helper.make_node("LRN", ["x"], ["lrn"], size=3, alpha=1e-3, beta=0.75, bias=1.0),
        helper.make_node("Add", ["inorm", "ln"], ["s"]),
        helper.make_node("Add", ["s", "lrn"], ["z"]),
    ]
    constants: dict[str, np.ndarray] = {
        "g": rng.uniform(0.5, 1.5, c).astype(np.float32),
        "b": _w(rng, c, scale=0.1),
        "mean": _w(rng, c, scale=0.1),
        "var": rng.uniform(0.5, 1.5, c).astype(np.float32),
        "lg": rng.uniform(0.5, 1.5, 6).astype(np.float32),
        "lb": _w(rng, 6, scale=0.1),
    }
    _head(nodes, constants, rng, "z", "y", (c, c))
    return _model(nodes, {"x": (1, c, 6, 6)}, ["y"], constants), {"x": (1, c, 6, 6)}


def _reduce() -> tuple[bytes, dict[str, tuple[int, ...]]]:
    from onnx import helper

    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=1),
        helper.make_node("Sub", ["x", "m"], ["c"]),
        helper.make_node("ReduceMax", ["c"], ["mx"], axes=[1], keepdims=0),
        helper.make_node("ReduceSum", ["x", "axes"], ["rs"], keepdims=0),
        helper.make_node("Softmax", ["c"], ["sm"], axis=1),
        helper.make_node("LogSoftmax", ["x"], ["ls"], axis=3),
        helper.make_node("Add", ["mx", "one"], ["mx1"]),
        helper.make_node("ReduceMean", ["sm"], ["rm"], axes=[3], keepdims=0),
    ]
    rng = np.random.default_rng(16)
    constants: dict[str, np.ndarray] = {
        "axes": np.array([1, 2], np.int64),
        "one": np.array(1.0, np.float32),
    }
    _head(nodes, constants, rng, "mx1", "y0", (7, 4), conv=False)
    _head(nodes, constants, rng, "rs", "y1", (7, 4), conv=False)
    _head(nodes, constants, rng, "ls", "y2", (6, 6))
    _head(nodes, constants, rng, "rm", "y3", (5, 3), conv=False)
    return _model(nodes, {"x": (1, 6, 5, 7)}, ["y0", "y1", "y2", "y3"], constants, opset=13), {
        "x": (1, 6, 5, 7)
    }


def _resize() -> tuple[bytes, dict[str, tuple[int, ...]]]:
    from onnx import helper

    nodes = [
        helper.make_node(
            "Resize",
            ["x", "", "scales"],
            ["n"],
            mode="nearest",
            coordinate_transformation_mode="asymmetric",
            nearest_mode="floor",
        ),
        helper.make_node(
            "Resize",
            ["n", "", "", "sizes"],
            ["r0"],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node(
            "Resize",
            ["x", "", "", "sizes2"],
            ["r1"],
            mode="linear",
            coordinate_transformation_mode="align_corners",
        ),
    ]
    constants: dict[str, np.ndarray] = {
        "scales": np.array([1, 1, 2, 2], np.float32),
        "sizes": np.array([1, 4, 11, 13], np.int64),
        "sizes2": np.array([1, 4, 9, 9], np.int64),
    }
    rng = np.random.default_rng(17)
    _head(nodes, constants, rng, "r0", "y0", (4, 4))
    _head(nodes, constants, rng, "r1", "y1", (4, 4))
    return _model(nodes, {"x": (1, 4, 6, 7)}, ["y0", "y1"], constants), {"x": (1, 4, 6, 7)}


def _tensor() -> tuple[bytes, dict[str, tuple[int, ...]]]:
    from onnx import helper

    nodes = [
        helper.make_node("Split", ["x", "split"], ["s0", "s1"], axis=1),
        helper.make_node("Slice", ["s0", "st", "en", "ax", "stp"], ["sl"]),
        helper.make_node("Pad", ["s1", "pads"], ["pd"], mode="reflect"),
        helper.make_node("Gather", ["pd", "idx"], ["ga"], axis=3),
        helper.make_node("DepthToSpace", ["x"], ["d2s"], blocksize=2, mode="DCR"),
        helper.make_node("SpaceToDepth", ["d2s"], ["s2d"], blocksize=2),
        helper.make_node("Concat", ["s2d", "x"], ["cat"], axis=1),
        helper.make_node("Transpose", ["cat"], ["tr"], perm=[0, 2, 3, 1]),
        helper.make_node("Reshape", ["tr", "shape"], ["rs"]),
        helper.make_node("Tile", ["sl", "reps"], ["ti"]),
        helper.make_node("Unsqueeze", ["ga", "uax"], ["un"]),
        helper.make_node("Squeeze", ["un", "uax"], ["sq"]),
    ]
    constants: dict[str, np.ndarray] = {
        "split": np.array([4, 4], np.int64),
        "st": np.array([0, 5], np.int64),
        "en": np.array([3, 0], np.int64),
        "ax": np.array([1, 3], np.int64),
        "stp": np.array([1, -2], np.int64),
        "pads": np.array([0, 0, 1, 2, 0, 0, 1, 2], np.int64),
        "idx": np.array([3, 0, 2, 9], np.int64),
        "shape": np.array([1, 36, 16], np.int64),
        "reps": np.array([1, 2, 1, 1], np.int64),
        "uax": np.array([0], np.int64),
    }
    rng = np.random.default_rng(18)
    _head(nodes, constants, rng, "rs", "y0", (16, 8), conv=False)
    _head(nodes, constants, rng, "ti", "y1", (6, 4))
    _head(nodes, constants, rng, "sq", "y2", (4, 4))
    return _model(nodes, {"x": (1, 8, 6, 6)}, ["y0", "y1", "y2"], constants), {"x": (1, 8, 6, 6)}


#: Op family → (graph builder, int8 SQNR floor in dB against onnxruntime, dynamic or not).
#: The floors sit 5 dB or more under the lowest output SQNR both runtimes gave (int8: conv
#: 32.5, pool 30.0, elementwise 36.9, activation 38.3, matmul 38.5, normalization 36.9,
#: reduce 29.5, resize 38.4, tensor 39.0; dynamic: conv 37.1, matmul 39.2 dB); 2.14 stayed
#: within 1.1 % of the output range of LiteRT. Dynamic only where there are weights.
FAMILIES: dict[str, tuple[Callable[[], tuple[bytes, dict[str, tuple[int, ...]]]], float, bool]] = {
    "conv": (_conv, 25.0, True),
    "pool": (_pool, 25.0, False),
    "elementwise": (_elementwise, 25.0, False),
    "activation": (_activation, 25.0, False),
    "matmul": (_matmul, 25.0, True),
    "normalization": (_normalization, 30.0, False),
    "reduce": (_reduce, 24.0, False),
    "resize": (_resize, 30.0, False),
    "tensor": (_tensor, 30.0, False),
}


def case_names() -> list[str]:
    """Every converted family case :func:`main` writes, ``<family>_<mode>``."""
    names = []
    for family, (_, _, dynamic) in FAMILIES.items():
        modes = ("float32", "int8", "dynamic") if dynamic else ("float32", "int8")
        names += [f"{family}_{mode}" for mode in modes]
    return names


def _sqnr(reference: np.ndarray, candidate: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


def _family_cases(out: Path, report: list[dict[str, Any]]) -> None:
    import onnxruntime as ort

    from edgeops.converters.pipeline import ConvertOptions, convert_model

    for family, (build, int8_floor, dynamic) in FAMILIES.items():
        onnx_bytes, shapes = build()
        rng = np.random.default_rng(sum(map(ord, family)))
        calibration = [
            {n: rng.uniform(-2, 2, s).astype(np.float32) for n, s in shapes.items()}
            for _ in range(CALIBRATION_SAMPLES)
        ]
        feeds = {n: rng.uniform(-2, 2, s).astype(np.float32) for n, s in shapes.items()}
        session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        reference = dict(zip(names, session.run(names, feeds), strict=True))
        modes = ("float32", "int8", "dynamic") if dynamic else ("float32", "int8")
        for mode in modes:
            result = convert_model(
                onnx_bytes,
                ConvertOptions(
                    quantize=mode,  # type: ignore[arg-type]
                    calibration_samples=calibration if mode == "int8" else None,
                ),
            )
            inputs = {
                n: np.ascontiguousarray(v.transpose(0, 2, 3, 1)) if n in result.nhwc_inputs else v
                for n, v in feeds.items()
            }
            name = f"{family}_{mode}"
            if mode == "float32":
                tolerances: dict[str, Any] = {"atol": FLOAT_REL_TOL}
            elif mode == "dynamic":
                tolerances = {
                    "atol": math.inf,
                    "litert_atol": DYNAMIC_LITERT_REL_TOL,
                    "min_sqnr_db": DYNAMIC_MIN_SQNR_DB,
                }
            else:
                tolerances = {
                    "atol": math.inf,
                    "litert_atol": INT8_LITERT_REL_TOL,
                    "min_sqnr_db": int8_floor,
                }
            _save(out, name, result.tflite, inputs, reference, relative=True, **tolerances)
            report.append({"name": name, "family": family, "mode": mode})


def _yolov8n_int8(out: Path, report: list[dict[str, Any]]) -> None:
    """YOLOv8n int8 (the benchmark's calibration: 16 photos), scored on the 7 held-out ones."""
    from edgeops import assets
    from edgeops.agent.runtimes import load_model
    from edgeops.converters import calibration as cal
    from edgeops.converters.pipeline import ConvertOptions, convert_model
    from edgeops.converters.validate import OnnxRunner

    onnx_bytes = assets.yolov8n_onnx().read_bytes()
    samples = cal.load_samples(assets.photos(), {"images": YOLO_SHAPE}, preprocess=cal.YOLOV8)
    result = convert_model(
        onnx_bytes,
        ConvertOptions(
            quantize="int8",
            input_shapes={"images": YOLO_SHAPE},
            calibration_samples=samples,
            calibration_count=YOLO_CALIBRATION_COUNT,
        ),
    )
    held_out = result.holdout
    reference = OnnxRunner(onnx_bytes)
    path = out / "yolov8n_int8.tflite"
    path.write_bytes(result.tflite)
    litert = load_model(path, runtime="ai_edge_litert")
    images = np.stack([s["images"].transpose(0, 2, 3, 1) for s in held_out])
    expected = np.stack([reference.run(s)[0] for s in held_out])
    outputs = np.stack([litert.run({"images": x})["output0"] for x in images])
    np.savez(out / "yolov8n_int8.npz", images=images, expected=expected, litert=outputs)
    report.append({"name": "yolov8n_int8", "family": "yolov8n", "mode": "int8"})


def _small_cnn_onnx() -> bytes:
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["p1"]),
        helper.make_node("Flatten", ["p1"], ["f1"]),
        helper.make_node("Gemm", ["f1", "w2", "b2"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
    ]
    constants: dict[str, np.ndarray] = {
        "w1": rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32),
        "b1": rng.normal(0, 0.1, (8,)).astype(np.float32),
        "w2": rng.normal(0, 0.3, (5, 8)).astype(np.float32),
        "b2": rng.normal(0, 0.1, (5,)).astype(np.float32),
    }
    return _model(nodes, {"images": (1, 3, 16, 16)}, ["scores"], constants, opset=13)


def main(out: Path) -> None:
    from edgeops.agent.runtimes.testing import tflite_add_model, tflite_image_mean_model

    out.mkdir(parents=True, exist_ok=True)
    x = np.array([[0.5, -1.0, 2.0, 3.25]], np.float32)
    _save(out, "add", tflite_add_model(constant=1.5), {"x": x}, {"y": x + 1.5}, 1e-6)

    image = np.random.default_rng(1).integers(0, 256, (1, 320, 320, 3), dtype=np.uint8)
    expected = {"mean": (image.reshape(-1, 3).mean(0) / 255).astype(np.float32)[None]}
    _save(out, "image_mean", tflite_image_mean_model(), {"image": image}, expected, 1e-5)

    import onnxruntime as ort

    from edgeops.converters.pipeline import ConvertOptions, convert_model

    onnx_bytes = _small_cnn_onnx()
    rng = np.random.default_rng(2)
    nchw = rng.random((1, 3, 16, 16), dtype=np.float32)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    reference = {"scores": session.run(["scores"], {"images": nchw})[0]}
    nhwc = {"images": np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))}
    converted = convert_model(onnx_bytes, ConvertOptions(quantize="float32"))
    _save(out, "converted_float32", converted.tflite, nhwc, reference, 1e-4)

    with tempfile.TemporaryDirectory() as tmp:
        calibration = Path(tmp) / "calibration.npy"
        np.save(calibration, rng.random((32, 3, 16, 16), dtype=np.float32))
        quantized = convert_model(
            onnx_bytes, ConvertOptions(quantize="int8", calibration=calibration)
        )
    # int8 scores against the float reference: within a few quantization steps
    _save(out, "converted_int8", quantized.tflite, nhwc, reference, 0.05)

    report: list[dict[str, Any]] = []
    _family_cases(out, report)
    _yolov8n_int8(out, report)
    (out / "cases.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_models.py OUT_DIR")
    main(Path(sys.argv[1]))
