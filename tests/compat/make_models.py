"""Writes the models and expected outputs the tflite-runtime compatibility tests run.

Runs in the main venv (LiteRT's schema module, the converter, onnxruntime), because the
tflite-runtime venv has none of them, like a Raspberry Pi OS 32-bit board:

    .venv/bin/python tests/compat/make_models.py OUT_DIR

For each model it writes ``NAME.tflite`` and ``NAME.npz`` holding ``input:<name>`` arrays,
the reference ``expected:<name>`` outputs (onnxruntime for converted models, numpy for the
hand-written ones), the outputs LiteRT gives (``litert:<name>``) and the tolerance ``atol``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np


def _save(out: Path, name: str, tflite: bytes, inputs, expected, atol: float) -> None:
    from edgeops.agent.runtimes import load_model

    path = out / f"{name}.tflite"
    path.write_bytes(tflite)
    litert = load_model(path, runtime="ai_edge_litert").run(inputs)
    arrays = {f"input:{k}": v for k, v in inputs.items()}
    arrays.update({f"expected:{k}": v for k, v in expected.items()})
    arrays.update({f"litert:{k}": v for k, v in litert.items()})
    np.savez(out / f"{name}.npz", atol=np.float64(atol), **arrays)


def _small_cnn_onnx() -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(0, 0.3, (5, 8)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, (5,)).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["p1"]),
        helper.make_node("Flatten", ["p1"], ["f1"]),
        helper.make_node("Gemm", ["f1", "w2", "b2"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["scores"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "small_cnn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 5])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


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


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_models.py OUT_DIR")
    main(Path(sys.argv[1]))
