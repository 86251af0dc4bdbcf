"""``edgeops convert``: a summary on success; one line and exit 1 on failure, no file left."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from convert_helpers import make_model
from onnx import helper

from edgeops.cli import main


def _run(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setattr(sys, "argv", ["edgeops", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return int(exit_info.value.code or 0)


def _model(tmp_path: Path, op: str = "Relu") -> Path:
    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node(op, ["c"], ["y"])]
    path = tmp_path / "model.onnx"
    path.write_bytes(make_model(nodes, {"x": ["n", 3, 8, 8]}, ["y"], {"w": w}))
    return path


def test_convert_prints_json_summary_and_writes_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.tflite"
    report = tmp_path / "report.json"
    code = _run(
        monkeypatch,
        "convert",
        str(_model(tmp_path)),
        "-o",
        str(out),
        "--input-shape",
        "x=1,3,8,8",
        "--json",
        "--report",
        str(report),
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["ops"] == {"CONV_2D": 1, "TRANSPOSE": 1}
    assert printed["size"] == out.stat().st_size
    assert json.loads(report.read_text())["mode"] == "float32"


def test_convert_float16_human_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.tflite"
    code = _run(
        monkeypatch,
        "convert",
        str(_model(tmp_path)),
        "-o",
        str(out),
        "--input-shape",
        "x=1,3,8,8",
        "--quantize",
        "float16",
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "(float16)" in text
    assert "DEQUANTIZE" in text


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "dynamic shape"),
        (["--input-shape", "x=1,3,8,8", "--quantize", "int4"], "expected --quantize"),
        (["--input-shape", "x=1,3,eight,8"], "integer dimensions"),
    ],
)
def test_convert_errors_are_one_line_exit_1_no_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    out = tmp_path / "out.tflite"
    code = _run(monkeypatch, "convert", str(_model(tmp_path)), "-o", str(out), *extra)
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("error: ")
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_convert_unsupported_op_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.tflite"
    code = _run(
        monkeypatch,
        "convert",
        str(_model(tmp_path, "Hardmax")),
        "-o",
        str(out),
        "--input-shape",
        "x=1,3,8,8",
    )
    assert code == 1
    assert "unsupported op Hardmax" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_convert_rejects_bad_calibration_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.tflite"
    code = _run(
        monkeypatch,
        "convert",
        str(_model(tmp_path)),
        "-o",
        str(out),
        "--input-shape",
        "x=1,3,8,8",
        "--calibration-method",
        "median",
    )
    assert code == 1
    assert "--calibration-method" in capsys.readouterr().err
    code = _run(
        monkeypatch,
        "convert",
        str(_model(tmp_path)),
        "-o",
        str(out),
        "--input-shape",
        "x=1,3,8,8",
        "--calibration-count",
        "0",
    )
    assert code == 1
    assert "--calibration-count" in capsys.readouterr().err
    assert not out.exists()


def test_keep_input_layout_leaves_nchw_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.tflite"
    code = _run(
        monkeypatch,
        "convert",
        str(_model(tmp_path)),
        "-o",
        str(out),
        "--input-shape",
        "x=1,3,8,8",
        "--keep-input-layout",
        "--json",
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["inputs"][0]["shape"] == [1, 3, 8, 8]
    assert summary["ops"]["TRANSPOSE"] == 2  # into NHWC for the conv, back for the output


def test_result_names_the_nhwc_inputs() -> None:
    from edgeops.converters.pipeline import ConvertOptions, convert_model

    nodes = [helper.make_node("Add", ["img", "img"], ["a"]), helper.make_node("Relu", ["v"], ["b"])]
    model = make_model(nodes, {"img": [1, 3, 4, 4], "v": [2, 5]}, ["a", "b"])
    assert convert_model(model).nhwc_inputs == ["img"]
    assert convert_model(model, ConvertOptions(nhwc_inputs=False)).nhwc_inputs == []
