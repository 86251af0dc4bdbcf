"""The cache key of the model that benchmarks/agent_rss.py measures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "agent_rss.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_agent_rss", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_key_changes_with_the_converter_the_options_and_the_source(
    bench: ModuleType, tmp_path: Path
) -> None:
    converter = tmp_path / "converters"
    (converter / "passes").mkdir(parents=True)
    (converter / "pipeline.py").write_text("STEM = True\n")
    (converter / "passes" / "fold.py").write_text("def fold(): ...\n")
    (converter / "notes.txt").write_text("not code")
    source = tmp_path / "model.onnx"
    source.write_bytes(b"onnx-1")

    def key(options: object = ("int8", 16)) -> str:
        return str(bench.converter_fingerprint(options, source, converter_dir=converter))

    first = key()
    assert key() == first
    assert len(first) == 64
    (converter / "notes.txt").write_text("only .py files count")
    assert key() == first
    (converter / "passes" / "fold.py").write_text("def fold(): return 1\n")
    changed_pass = key()
    assert changed_pass != first
    (converter / "passes" / "fold.py").rename(converter / "passes" / "unfold.py")
    assert key() not in (first, changed_pass)
    assert key(("int8", 17)) != key()
    before_source = key()
    source.write_bytes(b"onnx-2")
    assert key() != before_source


def test_the_key_covers_the_installed_converter(bench: ModuleType, tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"onnx")
    installed = bench.converter_fingerprint("options", source)
    assert installed == bench.converter_fingerprint("options", source)
    assert installed != bench.converter_fingerprint("other options", source)


def test_cached_models_are_named_after_their_key(bench: ModuleType, tmp_path: Path) -> None:
    path = bench.cached_model_path(tmp_path, "yolov8n_int8", "0123456789abcdef" * 4)
    assert path == tmp_path / "yolov8n_int8-0123456789abcdef.tflite"
