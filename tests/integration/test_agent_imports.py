"""The daemon's own modules stay light: importing them (what ``edgeops-agent`` does before
it reads its config) loads no host-only library, and numpy, paho and the runtimes only once
an agent starts. Fresh interpreters, since this process has imported everything."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

HOST_ONLY = {"onnx", "onnxruntime", "typer", "rich", "PIL"}
LAZY = {"numpy", "paho", "ai_edge_litert", "tflite_runtime"}


def loaded_after(module: str) -> set[str]:
    code = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize(
    "module",
    [
        "edgeops.agent.daemon",
        "edgeops.agent.updater",
        "edgeops.agent.health",
        "edgeops.agent.store",
        "edgeops.agent.config",
        "edgeops.agent.enroll",
    ],
)
def test_agent_modules_import_nothing_heavy(module):
    loaded = loaded_after(module)
    assert "edgeops" in loaded
    assert loaded.isdisjoint(HOST_ONLY | LAZY), sorted(loaded & (HOST_ONLY | LAZY))
