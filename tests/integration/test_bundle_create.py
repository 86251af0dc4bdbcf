"""Bundles made from real models with real runtimes, and the CLI end to end."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edgeops.agent.runtimes import load_model
from edgeops.agent.runtimes.testing import onnx_add_model, tflite_image_mean_model
from edgeops.bundle import create_bundle, load_test_vectors, unpack_bundle, verify_bundle
from edgeops.cli import main
from edgeops.errors import ConfigError
from edgeops.fleet.fleetdir import init_fleet

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(tmp_path):
    return init_fleet(tmp_path / "fleet", name="demo")


def _run(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["edgeops", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)


def test_onnx_bundle_with_test_vectors(tmp_path, fleet):
    model = tmp_path / "add.onnx"
    model.write_bytes(onnx_add_model(shape=(1, 4), constant=2.0))
    inputs = np.random.default_rng(0).random((3, 1, 4), dtype=np.float32)
    np.savez(tmp_path / "t.npz", x=inputs)
    manifest = create_bundle(
        model,
        name="adder",
        version="1.0.0",
        release=1,
        signing_keys=fleet.signing_keys("release"),
        output=tmp_path / "a.bundle",
        test_inputs=tmp_path / "t.npz",
        boards=("rpi4", "rpi5"),
        extra_files={"labels.txt": _labels(tmp_path)},
    )
    assert manifest.runtime == "onnxruntime"
    assert manifest.inputs[0].shape == (1, 4)
    assert manifest.lineage.source_sha256 == manifest.file("model.onnx").sha256
    verified = verify_bundle(tmp_path / "a.bundle", fleet.trusted(), board="rpi5")
    assert verified.manifest == manifest
    files = unpack_bundle(tmp_path / "a.bundle", tmp_path / "out", verified.manifest)
    vectors = load_test_vectors(files["test_vectors.npz"], manifest)
    assert len(vectors) == 3
    for i, vector in enumerate(vectors):
        np.testing.assert_array_equal(vector["inputs"]["x"], inputs[i])
        np.testing.assert_allclose(vector["expected"]["y"], inputs[i] + 2.0, rtol=1e-6)
    stats = json.loads(files["reference_stats.json"].read_text())
    x_stats = stats["inputs"]["x"]
    assert x_stats["count"] == 12
    assert x_stats["mean"] == pytest.approx(float(inputs.mean()), rel=1e-6)
    # The stored vectors pass on a fresh load of the unpacked model (as the health check does).
    runtime = load_model(files["model.onnx"], threads=1)
    try:
        out = runtime.run(vectors[0]["inputs"])["y"]
    finally:
        runtime.close()
    np.testing.assert_allclose(out, vectors[0]["expected"]["y"], atol=vectors[0]["atol"])


def _labels(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("a\nb\n")
    return path


def test_tflite_bundle_reads_quantization(tmp_path, fleet):
    model = tmp_path / "mean.tflite"
    model.write_bytes(tflite_image_mean_model(height=8, width=8))
    image = np.random.default_rng(1).integers(0, 256, (1, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "t.npz", image)  # arr_0 for a one-input model
    manifest = create_bundle(
        model,
        name="mean",
        version="0.1",
        release=4,
        signing_keys=fleet.signing_keys("release"),
        output=tmp_path / "m.bundle",
        test_inputs=tmp_path / "t.npz",
    )
    (spec,) = manifest.inputs
    assert (spec.dtype, spec.shape) == ("uint8", (1, 8, 8, 3))
    assert spec.scale == pytest.approx(1 / 255)
    assert spec.zero_point == 0
    assert manifest.runtime == "litert"
    verified = verify_bundle(tmp_path / "m.bundle", fleet.trusted(), last_release_counter=3)
    files = unpack_bundle(tmp_path / "m.bundle", tmp_path / "out", verified.manifest)
    (vector,) = load_test_vectors(files["test_vectors.npz"], manifest)
    expected = image.astype(np.float64).mean(axis=(1, 2)) / 255
    np.testing.assert_allclose(vector["expected"]["mean"], expected, atol=1e-5)


def test_test_inputs_must_match_the_model(tmp_path, fleet):
    model = tmp_path / "add.onnx"
    model.write_bytes(onnx_add_model())
    np.savez(tmp_path / "t.npz", wrong=np.zeros((1, 4), np.float32))
    with pytest.raises(ConfigError, match="expected arrays named x, missing x"):
        create_bundle(
            model,
            name="a",
            version="1",
            release=1,
            signing_keys=fleet.signing_keys("release"),
            output=tmp_path / "a.bundle",
            test_inputs=tmp_path / "t.npz",
        )
    np.savez(tmp_path / "t.npz", x=np.zeros((1, 4), np.float64))
    with pytest.raises(ConfigError, match="expected 'x' as float32, got float64"):
        create_bundle(
            model,
            name="a",
            version="1",
            release=1,
            signing_keys=fleet.signing_keys("release"),
            output=tmp_path / "a.bundle",
            test_inputs=tmp_path / "t.npz",
        )
    assert not (tmp_path / "a.bundle").exists()


def test_cli_create_inspect_verify(tmp_path, fleet, monkeypatch, capsys):
    model = tmp_path / "add.onnx"
    model.write_bytes(onnx_add_model())
    np.savez(tmp_path / "t.npz", x=np.ones((1, 4), np.float32))
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"key_figures": {"min_sqnr_db": 41.5, "mode": "float32"}}))
    out = tmp_path / "a.bundle"
    code = _run(
        monkeypatch,
        "bundle", "create", str(model), "--name", "adder", "--version", "1.0",
        "--fleet", str(fleet.path), "--test-inputs", str(tmp_path / "t.npz"),
        "--board", "rpi4", "--report", str(report), "--p95-ms", "12.5", "-o", str(out), "--json",
    )  # fmt: skip
    assert code == 0
    created = json.loads(capsys.readouterr().out)
    assert created["release"] == 1
    assert created["lineage"]["report"] == {"min_sqnr_db": 41.5, "mode": "float32"}
    assert created["budgets"]["p95_latency_ms"] == 12.5

    # The next bundle takes the next release counter from the fleet folder.
    out2 = tmp_path / "b.bundle"
    args = ["bundle", "create", str(model), "--name", "adder", "--version", "1.1"]
    assert _run(monkeypatch, *args, "--fleet", str(fleet.path), "-o", str(out2), "--json") == 0
    assert json.loads(capsys.readouterr().out)["release"] == 2
    assert _run(monkeypatch, *args, "--fleet", str(fleet.path), "--release", "2", "-o", "x") == 1
    assert (
        "expected release counter > 2 (the last one this fleet signed), got 2"
        in capsys.readouterr().err
    )

    assert _run(monkeypatch, "bundle", "inspect", str(out), "--json") == 0
    assert json.loads(capsys.readouterr().out)["manifest"]["name"] == "adder"

    root = str(fleet.root_path)
    assert _run(monkeypatch, "bundle", "verify", str(out), "--root", root, "--json") == 0
    assert json.loads(capsys.readouterr().out)["verified"] is True
    assert _run(monkeypatch, "bundle", "verify", str(out), "--root", root) == 0
    assert "OK" in capsys.readouterr().out
    assert _run(monkeypatch, "bundle", "verify", str(out), "--root", root, "--board", "x") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: expected a bundle for board 'x'")
    assert err.count("\n") == 1

    data = bytearray(out.read_bytes())
    at = data.find(model.read_bytes())
    assert at > 0
    data[at + 10] ^= 0xFF
    out.write_bytes(bytes(data))
    assert _run(monkeypatch, "bundle", "verify", str(out), "--root", root) == 1
    assert "expected 'model.onnx' to hash to" in capsys.readouterr().err


def test_cli_help(monkeypatch, capsys):
    for command in ("create", "inspect", "verify"):
        assert _run(monkeypatch, "bundle", command, "--help") == 0
        assert "Usage" in capsys.readouterr().out
