"""``edgeops push`` pieces that need no broker: option parsing into a policy, the result,
the directive count, and the refusals before anything is published."""

from __future__ import annotations

import pytest

from edgeops.cli.push import _policy
from edgeops.errors import ConfigError
from edgeops.fleet.push import Push, PushResult, _CountingSink
from edgeops.fleet.rollout import PublishDirectives, RolloutPolicy

NONE: dict[str, object] = {
    "canary": None,
    "waves": None,
    "soak": None,
    "max_failures": None,
    "max_error_rate": None,
    "max_p95_regression": None,
    "max_drift": None,
    "wave_timeout": None,
}


def policy(**given: object) -> RolloutPolicy:
    return _policy(**{**NONE, **given})  # type: ignore[arg-type]


def test_options_become_a_policy():
    p = policy(
        canary="2",
        waves="10%,50%,100%",
        soak="30s",
        wave_timeout="2m",
        max_failures="10%",
        max_error_rate="2%",
        max_p95_regression="20",
        max_drift=0.3,
    )
    assert p.canary_count == 2
    assert p.canary_percent is None
    assert p.waves == (10.0, 50.0, 100.0)
    assert (p.soak_s, p.wave_timeout_s) == (30.0, 120.0)
    assert (p.max_failures_percent, p.max_error_rate_percent) == (10.0, 2.0)
    assert (p.max_p95_regression_percent, p.max_drift) == (20.0, 0.3)


def test_a_canary_share_and_the_defaults():
    p = policy(canary="5%")
    assert (p.canary_count, p.canary_percent) == (None, 5.0)
    assert policy() == RolloutPolicy()


@pytest.mark.parametrize(
    ("option", "value"),
    [("canary", "two"), ("waves", "ten"), ("soak", "5 minutes"), ("max_failures", "x%")],
)
def test_malformed_options_are_refused(option, value):
    with pytest.raises(ConfigError):
        policy(**{option: value})


class RecordingSink:
    def __init__(self) -> None:
        self.actions: list[PublishDirectives] = []

    def publish(self, action: PublishDirectives, *, rollout_id: str, policy: RolloutPolicy) -> None:
        self.actions.append(action)


def test_the_sink_counts_one_publish_per_device():
    inner = RecordingSink()
    sink = _CountingSink(inner)  # type: ignore[arg-type]
    sink.publish(
        PublishDirectives("install", ("a", "b", "c"), "d" * 64, 0),
        rollout_id="r",
        policy=RolloutPolicy(),
    )
    sink.publish(
        PublishDirectives("rollback", ("a",), "e" * 64, 0), rollout_id="r", policy=RolloutPolicy()
    )
    assert sink.published == 4
    assert [a.action for a in inner.actions] == ["install", "rollback"]


def test_the_result_as_json():
    result = PushResult(
        rollout_id="r1",
        group="g",
        bundle="b" * 64,
        previous_bundle=None,
        status="aborted",
        reason="canary: 1 failed",
        resumed=False,
        detached=False,
        elapsed_s=1.23456,
        chunk_publishes=14,
        directive_publishes=2,
        rolled_back=["a"],
    )
    data = result.to_json()
    assert not result.succeeded
    assert data["publishes"] == {"chunks": 14, "directives": 2}
    assert data["elapsed_s"] == 1.235
    assert data["rolled_back"] == ["a"]


def test_a_missing_bundle_is_refused_before_anything_is_published(tmp_path):
    from edgeops.fleet.fleetdir import init_fleet

    fleet = init_fleet(tmp_path / "fleet", name="unit")
    push = Push(fleet.path, tmp_path / "nope.bundle", group="g", policy=RolloutPolicy())
    with pytest.raises(ConfigError, match="no bundle file"):
        push.prepare()
    push.close()


def test_interrupt_before_start_is_a_state_error(tmp_path):
    from edgeops.errors import StateError
    from edgeops.fleet.fleetdir import init_fleet

    fleet = init_fleet(tmp_path / "fleet", name="unit")
    push = Push(fleet.path, tmp_path / "x.bundle", group="g", policy=RolloutPolicy())
    with pytest.raises(StateError):
        push.interrupt()


def test_the_simulated_runtime_delays_and_corrupts_what_the_real_one_computes():
    import time

    import numpy as np

    from edgeops.agent.runtimes import TensorSpec
    from edgeops.agent.runtimes.testing import FakeRuntime
    from edgeops.fleet.simulate import SimulatedRuntime

    spec = TensorSpec(name="x", shape=(1, 2), dtype="float32")
    out = TensorSpec(name="y", shape=(1, 2), dtype="float32")
    inner = FakeRuntime(inputs=[spec], outputs=[out], fn=lambda i: {"y": i["x"] * 2})
    x = {"x": np.array([[1.0, 2.0]], dtype=np.float32)}
    honest = SimulatedRuntime(inner, corrupt=False, delay_s=0.02)
    started = time.perf_counter()
    assert honest.run(x)["y"].tolist() == [[2.0, 4.0]]
    assert time.perf_counter() - started >= 0.02
    broken = SimulatedRuntime(inner, corrupt=True, delay_s=0.0)
    y = broken.run(x)["y"]
    assert y.dtype == np.float32
    assert y.tolist() == [[3.0, 5.0]]
    assert (broken.inputs, broken.outputs, broken.name) == ((spec,), (out,), "fake")
    broken.close()
    assert inner.closed


def test_an_abort_of_the_groups_first_bundle_has_nothing_to_roll_back_to():
    inner = RecordingSink()
    sink = _CountingSink(inner)  # type: ignore[arg-type]
    sink.publish(
        PublishDirectives("rollback", ("a", "b"), None, 0), rollout_id="r", policy=RolloutPolicy()
    )
    assert inner.actions == []
    assert sink.published == 0
    assert sink.unrollable == ["a", "b"]
