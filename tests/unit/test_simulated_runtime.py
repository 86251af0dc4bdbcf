"""SimulatedRuntime: the faults the simulator injects into a device's model."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edgeops.agent.runtimes.testing import tflite_add_model
from edgeops.errors import ModelError
from edgeops.fleet import simulate
from edgeops.fleet.simulate import SimulatedRuntime


@pytest.fixture
def runtime(tmp_path):
    from edgeops.agent.runtimes import load_model

    path = tmp_path / "add.tflite"
    path.write_bytes(tflite_add_model())
    model = load_model(path, threads=1)
    yield model
    model.close()


def inputs_for(model) -> dict[str, np.ndarray]:
    return {s.name: np.ones(s.shape, dtype=s.dtype) for s in model.inputs}


def test_fail_live_passes_the_agents_own_runs_and_fails_live_requests(runtime):
    model = SimulatedRuntime(runtime, corrupt=False, delay_s=0.0, fail_live=True)
    expected = runtime.run(inputs_for(runtime))
    # The health check runs on the agent's thread: not live traffic.
    got = model.run(inputs_for(runtime))
    assert got.keys() == expected.keys()
    assert all(np.array_equal(got[k], expected[k]) for k in expected)

    failures: list[BaseException] = []

    def live() -> None:
        simulate._live.request = True
        try:
            model.run(inputs_for(runtime))
        except ModelError as exc:
            failures.append(exc)

    thread = threading.Thread(target=live)
    thread.start()
    thread.join()
    assert len(failures) == 1
    assert "live inputs" in str(failures[0])


def test_corrupt_shifts_every_output_by_one(runtime):
    model = SimulatedRuntime(runtime, corrupt=True, delay_s=0.0)
    expected = runtime.run(inputs_for(runtime))
    got = model.run(inputs_for(runtime))
    assert all(np.array_equal(got[k], expected[k] + 1) for k in expected)
