"""XNNPACK on or off for TFLite models, from the board profile or the agent's config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeops.agent.config import AgentConfig
from edgeops.agent.daemon import Agent, StagedBundle
from edgeops.agent.runtimes import load_model
from edgeops.agent.runtimes.testing import tflite_add_model
from edgeops.agent.runtimes.tflite import TFLiteRuntime
from edgeops.hardware import BoardProfile, get_profile

pytestmark = pytest.mark.integration

DIGEST = "ab" * 32


def delegate_nodes(model: Any) -> int:
    assert isinstance(model, TFLiteRuntime)
    return sum(op["op_name"] == "DELEGATE" for op in model._interpreter._get_ops_details())


@pytest.mark.parametrize("xnnpack", [True, False])
def test_the_model_runs_with_and_without_xnnpack(tmp_path: Path, xnnpack: bool) -> None:
    path = tmp_path / "add.tflite"
    path.write_bytes(tflite_add_model(constant=2.0))
    model = load_model(path, threads=2, xnnpack=xnnpack)
    # XNNPACK replaces the ADD with one delegate node; the built-in kernels keep it.
    assert delegate_nodes(model) == (1 if xnnpack else 0)
    x = np.array([[1.0, -1.0, 0.5, 3.0]], np.float32)
    for _ in range(2):  # the second run reads what the first left, paged-out file included
        np.testing.assert_allclose(model.run({"x": x})["y"], x + 2.0)
    model.close()


def agent_loading(tmp_path: Path, board: BoardProfile, toml_extra: str = "") -> dict[str, Any]:
    """The keyword arguments the agent's default loader passes to ``load_model``."""
    config = AgentConfig.from_toml(
        '[device]\nid = "dev"\nfleet = "f"\n[broker]\nurl = "mqtt://127.0.0.1:1"\n'
        f"[agent]\n{toml_extra}\n",
        base_dir=tmp_path,
    )
    agent = Agent(config, board=board)
    files = agent.store.files_dir(DIGEST)
    files.mkdir(parents=True)
    (files / "add.tflite").write_bytes(tflite_add_model())
    staged = StagedBundle(digest=DIGEST, name="add", version="1", release=1, model="add.tflite")
    model = agent._load(staged)
    try:
        return {"delegate_nodes": delegate_nodes(model)}
    finally:
        model.close()


def test_the_agent_takes_xnnpack_from_the_profile_unless_its_config_says(tmp_path: Path) -> None:
    fast = get_profile("generic-x86_64")
    lean = BoardProfile.from_json({**fast.to_json(), "xnnpack": False})
    assert agent_loading(tmp_path / "a", fast) == {"delegate_nodes": 1}
    assert agent_loading(tmp_path / "b", lean) == {"delegate_nodes": 0}
    assert agent_loading(tmp_path / "c", fast, "xnnpack = false") == {"delegate_nodes": 0}
    assert agent_loading(tmp_path / "d", lean, "xnnpack = true") == {"delegate_nodes": 1}
