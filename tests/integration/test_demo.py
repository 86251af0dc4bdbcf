"""``edgeops demo`` end to end, as a user runs it: a subprocess, real Mosquitto, real agents,
the real YOLOv8n. Small (4 devices) and without serving (``--no-wait``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeops.broker import find_mosquitto

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]


def run_demo(workdir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "edgeops",
        "demo",
        "--no-wait",
        "--devices",
        "4",
        "--workdir",
        str(workdir),
        "--http",
        "127.0.0.1:0",
        *extra,
    ]
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=240, env=env, check=False
    )


def test_demo_tells_the_whole_story(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo")
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
    for line in (
        "validation: held-out samples",
        "✓ rollout succeeded",
        "✓ committed on all devices: 4/4 devices run",
        "✓ broken bundle aborted",
        "p95 latency regressed",
        "✓ canary rolled back: rollback directive sent to dev-000",
        "✓ no other device got it: 3/3 other devices",
        "✓ dashboard serving: http://127.0.0.1:",
        "✓ the fleet's view agrees: 4/4 devices online on 1.0",
        "demo complete",
    ):
        assert line in out, f"{line!r} missing from:\n{out[-4000:]}"
    assert "✗" not in out
    # What the demo leaves behind is the real thing: a fleet folder, signed bundles, the
    # devices' own state and the broker's log.
    workdir = tmp_path / "demo"
    assert (workdir / "fleet" / "root.json").is_file()
    assert sorted(p.name for p in (workdir / "bundles").iterdir()) == [
        "yolov8n-1.0.bundle",
        "yolov8n-1.1.bundle",
    ]
    assert (workdir / "devices" / "dev-000" / "state.json").is_file()
    assert "dev-003" in (workdir / "fleet" / "broker" / "mosquitto.log").read_text()


def test_demo_json_reports_every_check(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", "--json")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert [c["name"] for c in data["checks"] if c["ok"]] == [
        "rollout succeeded",
        "committed on all devices",
        "broken bundle aborted",
        "canary rolled back",
        "no other device got it",
        "dashboard serving",
        "the fleet's view agrees",
    ]
    assert data["pushes"]["good"]["status"] == "succeeded"
    broken = data["pushes"]["broken"]
    assert broken["status"] == "aborted"
    assert broken["rolled_back"] == ["dev-000"]
    assert [w["stage"] for w in broken["waves"]] == ["failed", "not_started", "not_started"]
    figures = data["conversion"]["key_figures"]
    assert figures["mode"] == "int8"
    assert figures["min_sqnr_db"] > 25
