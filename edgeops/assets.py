"""Real models and photos taken from wheels on PyPI, downloaded once into a cache.

The demo and the tests need a real detector and real photos, and this project ships
neither: the ``nudenet`` wheel carries a YOLOv8n detector and the ``scikit-image`` wheel
carries photos. :func:`wheel_member` downloads such a wheel with pip (no dependencies, no
install), extracts the files asked for, and reuses them on later calls.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from edgeops.errors import TransportError

#: The YOLOv8n detector (1x3x320x320 input) that the demo and the converter targets use.
YOLOV8N_WHEEL = "nudenet==3.4.2"
YOLOV8N_MEMBER = "nudenet/320n.onnx"
#: Real photographs for calibration and evaluation.
PHOTOS_WHEEL = "scikit-image==0.26.0"
PHOTOS_PATTERN = "skimage/data/*.png"


def cache_dir() -> Path:
    """``$EDGEOPS_CACHE``, else ``$XDG_CACHE_HOME/edgeops``, else ``~/.cache/edgeops``."""
    if explicit := os.environ.get("EDGEOPS_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgeops"


def _safe_folder_name(requirement: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in requirement)


def wheel_members(requirement: str, pattern: str, *, cache: Path | None = None) -> list[Path]:
    """Files matching ``pattern`` inside the wheel of ``requirement``, extracted to the cache.

    ``requirement`` pins a version (``"nudenet==3.4.2"``) so that the cache stays valid.
    Raises :class:`TransportError` when pip cannot download the wheel.
    """
    target = (cache or cache_dir()) / "wheels" / _safe_folder_name(requirement)
    done_marker = target / ".complete"
    if not done_marker.exists():
        _download_and_extract(requirement, target)
    found = sorted(
        path
        for path in target.rglob("*")
        if path.is_file() and fnmatch.fnmatch(path.relative_to(target).as_posix(), pattern)
    )
    if not found:
        raise TransportError(f"the wheel of {requirement} has no file matching {pattern!r}")
    return found


def wheel_member(requirement: str, member: str, *, cache: Path | None = None) -> Path:
    """The one file ``member`` of the wheel of ``requirement`` (see :func:`wheel_members`)."""
    return wheel_members(requirement, member, cache=cache)[0]


def _download_and_extract(requirement: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            tmp,
            requirement,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise TransportError(
                f"could not download {requirement} from the package index: "
                f"{result.stderr.strip().splitlines()[-1] if result.stderr.strip() else 'no wheel'}"
            )
        staging = Path(tmp) / "extract"
        with zipfile.ZipFile(wheels[0]) as archive:
            for info in archive.infolist():
                name = Path(info.filename)
                if info.is_dir() or name.is_absolute() or ".." in name.parts:
                    continue
                archive.extract(info, staging)
        (staging / ".complete").write_text(wheels[0].name, encoding="utf-8")
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)


def yolov8n_onnx(*, cache: Path | None = None) -> Path:
    """The YOLOv8n detector from the ``nudenet`` wheel (input ``images``, 1x3x320x320)."""
    return wheel_member(YOLOV8N_WHEEL, YOLOV8N_MEMBER, cache=cache)


def photos(*, cache: Path | None = None) -> list[Path]:
    """The real photographs shipped in the ``scikit-image`` wheel, as PNG paths."""
    return wheel_members(PHOTOS_WHEEL, PHOTOS_PATTERN, cache=cache)


__all__ = ["cache_dir", "photos", "wheel_member", "wheel_members", "yolov8n_onnx"]
