"""What a board imports stays small: no host-only modules from the agent, trust or bundle.

Runs a fresh interpreter (a subprocess), because this process has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HOST_ONLY = ("onnx", "onnxruntime", "typer", "rich")


def _loaded_after(module: str) -> list[str]:
    code = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    return json.loads(out.stdout)


def test_agent_import_leaves_host_modules_out():
    loaded = set(_loaded_after("edgeops.agent"))
    assert "edgeops" in loaded
    assert loaded.isdisjoint(HOST_ONLY), sorted(loaded & set(HOST_ONLY))


@pytest.mark.parametrize("module", ["edgeops.trust", "edgeops.bundle"])
def test_verification_layers_are_light(module):
    loaded = set(_loaded_after(module))
    assert "edgeops" in loaded  # the check is real: the module did load
    # numpy and the runtimes load only when a bundle is created or a model is run;
    # cryptography only where private keys are handled (decision 0006).
    assert loaded.isdisjoint(
        {*HOST_ONLY, "numpy", "ai_edge_litert", "tflite_runtime", "cryptography"}
    )
