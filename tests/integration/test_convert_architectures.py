"""Whole-model conversions of classic CNN architectures from the ``onnx`` package's test data.

The ``light`` models (ResNet-50, DenseNet-121, Inception v1/v2, ShuffleNet, SqueezeNet) ship
with their weights replaced by constants. After the import passes have folded them, every
conv and fully-connected weight gets random He-scaled values, so the comparison with
onnxruntime exercises real arithmetic through each architecture's structure (concat-heavy
dense blocks, channel shuffles, LRN, inception branches, residual adds).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeops.converters.onnx_import import load_onnx
from edgeops.converters.passes import import_passes
from edgeops.converters.pipeline import convert_model, run_tflite

pytestmark = pytest.mark.integration

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
MODELS = {
    "light_resnet50": 0,
    "light_densenet121": 0,
    "light_inception_v1": 0,
    "light_inception_v2": 0,
    "light_shufflenet": 16,  # one per channel shuffle
    "light_squeezenet": 0,
}


def _randomized(path: Path) -> tuple[bytes, dict[str, np.ndarray]]:
    graph = import_passes(load_onnx(path))
    rng = np.random.default_rng(0)
    weights = {n.inputs[1] for n in graph.nodes if n.op_type in ("Conv", "Gemm", "MatMul")}
    for name in weights:
        value = graph.constants.get(name)
        if value is None or value.dtype != np.float32 or value.ndim < 2:
            continue
        fan_in = int(np.prod(value.shape[1:])) if value.ndim > 2 else value.shape[0]
        graph.constants[name] = (rng.normal(size=value.shape) * np.sqrt(2 / fan_in)).astype(
            np.float32
        )
    feeds = {
        name: rng.uniform(0, 1, graph.static_shape(name) or ()).astype(np.float32)
        for name in graph.inputs
    }
    return graph.to_proto().SerializeToString(), feeds


@pytest.mark.parametrize(("name", "transposes"), sorted(MODELS.items()))
def test_architecture_matches_onnxruntime(name: str, transposes: int) -> None:
    import onnxruntime as ort

    model, feeds = _randomized(LIGHT / f"{name}.onnx")
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    result = convert_model(model)
    actual = run_tflite(result.tflite, feeds)
    for want, got in zip(expected, actual, strict=True):
        assert got.shape == want.shape
        scale = max(float(np.ptp(want)), float(np.max(np.abs(want))))
        assert np.max(np.abs(got - want)) <= 1e-4 * scale
    assert result.op_histogram().get("TRANSPOSE", 0) == transposes
