"""The built wheel holds only the ``edgeops`` top-level package and every subpackage imports
from it; ``import edgeops.agent`` stays free of host-only libraries."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = ("converters", "fleet", "agent", "hardware")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("edgeops-*.whl")
    return built


def test_wheel_has_only_the_edgeops_top_level_package(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top_levels = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert top_levels == {"edgeops"}
    for sub in SUBPACKAGES:
        assert f"edgeops/{sub}/__init__.py" in names
    assert "edgeops/py.typed" in names


def test_every_package_imports_from_the_installed_wheel(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    probe = (
        "import importlib, sys\n"
        f"names = ['edgeops'] + ['edgeops.' + s for s in {SUBPACKAGES!r}]\n"
        "for name in names:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(target)!r}), (name, module.__file__)\n"
        "print('ok')\n"
    )
    # -I keeps the checkout and the editable install off sys.path; only the wheel is seen.
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r})\n{probe}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_agent_extra_leaves_onnx_onnxruntime_and_cryptography_out(tmp_path):
    # pip resolves the extra against the package index without installing anything.
    report = tmp_path / "report.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--dry-run",
            "--ignore-installed",
            "--disable-pip-version-check",
            "--report",
            str(report),
            f"{ROOT}[agent]",
        ],
        check=True,
        capture_output=True,
    )
    names = {
        item["metadata"]["name"].lower().replace("_", "-")
        for item in json.loads(report.read_text())["install"]
    }
    assert {"paho-mqtt", "numpy"} <= names
    # Signatures are verified in pure Python; cryptography is for keys and the CA (fleet).
    assert "cryptography" not in names
    assert "onnx" not in names
    assert "onnxruntime" not in names
