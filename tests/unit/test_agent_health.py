"""Health checks before activation and trial judging, on fake models and a fake clock."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgeops.agent.health import (
    Budgets,
    TestVector,
    TrialPolicy,
    TrialVerdict,
    TrialWindow,
    check_candidate,
    judge_trial,
    percentile,
)
from edgeops.agent.runtimes.testing import fake_add_runtime
from edgeops.errors import ConfigError

X = np.ones((1, 4), dtype=np.float32)


def vector(expected_constant: float, **tolerance: float) -> TestVector:
    return TestVector(inputs={"x": X}, expected={"y": X + expected_constant}, **tolerance)


def ticking(step_s: float):
    """A clock that advances ``step_s`` at every reading, so each timed run takes step_s."""
    counter = itertools.count()
    return lambda: next(counter) * step_s


def test_matching_vectors_pass_with_their_error_figures():
    result = check_candidate(fake_add_runtime(1.0), [vector(1.0)], Budgets())
    assert result.ok
    assert result.figures["max_abs_error.y"] == 0.0
    assert result.figures["vectors"] == 1.0


def test_values_beyond_tolerance_fail_naming_the_output():
    result = check_candidate(fake_add_runtime(1.0), [vector(1.01, atol=1e-3, rtol=0.0)], Budgets())
    assert not result.ok
    assert "test vector 0: output 'y': max abs error 0.00999" in result.reason
    assert result.figures["max_abs_error.y"] == pytest.approx(0.01, abs=1e-6)


def test_rtol_scales_with_the_expected_value():
    assert check_candidate(fake_add_runtime(1.0), [vector(1.01, atol=0.0, rtol=0.01)], Budgets()).ok


def test_a_missing_output_or_wrong_shape_fails():
    missing = TestVector(inputs={"x": X}, expected={"z": X})
    assert "output 'z' missing" in check_candidate(fake_add_runtime(), [missing], Budgets()).reason
    shaped = TestVector(inputs={"x": X}, expected={"y": np.ones((2, 4))})
    assert (
        "expected shape (2, 4)" in check_candidate(fake_add_runtime(), [shaped], Budgets()).reason
    )


def test_a_model_that_raises_fails_instead_of_crashing_the_agent():
    model = fake_add_runtime(1.0, fail_with="kernel fault")
    result = check_candidate(model, [vector(1.0)], Budgets())
    assert not result.ok
    assert "the model raised ModelError: kernel fault" in result.reason


def test_latency_budget_uses_p95_over_the_configured_runs():
    # Every clock reading advances 5 ms: each run measures 5 ms.
    result = check_candidate(
        fake_add_runtime(1.0),
        [vector(1.0)],
        Budgets(p95_latency_ms=4.0, latency_runs=10),
        clock=ticking(0.005),
    )
    assert not result.ok
    assert "p95 latency 5.00 ms over 10 runs > budget 4.00 ms" in result.reason
    assert result.figures["p95_ms"] == pytest.approx(5.0)
    ok = check_candidate(
        fake_add_runtime(1.0), [vector(1.0)], Budgets(p95_latency_ms=6.0), clock=ticking(0.005)
    )
    assert ok.ok


def test_memory_budget_compares_what_loading_added():
    result = check_candidate(
        fake_add_runtime(1.0), [vector(1.0)], Budgets(memory_mb=10.0), memory_added_mb=12.5
    )
    assert not result.ok
    assert "loading added 12.5 MB > budget 10.0 MB" in result.reason


def test_a_latency_budget_without_vectors_cannot_be_checked():
    result = check_candidate(fake_add_runtime(), [], Budgets(p95_latency_ms=5.0))
    assert not result.ok
    assert "no test vector" in result.reason


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 21)]
    assert percentile(values, 95) == 19.0
    assert percentile(values, 50) == 10.0
    assert percentile([3.0], 95) == 3.0


POLICY = TrialPolicy(window_s=10.0, max_error_rate=0.1, max_p95_ms=50.0, min_requests=10)


@pytest.mark.parametrize(
    ("window", "verdict"),
    [
        (TrialWindow(elapsed_s=1, requests=5, errors=5), TrialVerdict.CONTINUE),
        (TrialWindow(elapsed_s=1, requests=10, errors=2), TrialVerdict.FAIL),
        (TrialWindow(elapsed_s=1, requests=10, errors=1, p95_ms=60.0), TrialVerdict.FAIL),
        (TrialWindow(elapsed_s=1, requests=10, errors=1, p95_ms=40.0), TrialVerdict.CONTINUE),
        (TrialWindow(elapsed_s=10, requests=3, errors=1), TrialVerdict.FAIL),
        (TrialWindow(elapsed_s=10, requests=30, errors=3, p95_ms=50.0), TrialVerdict.PASS),
        (TrialWindow(elapsed_s=10, requests=0, errors=0), TrialVerdict.PASS),
    ],
)
def test_trial_verdicts(window, verdict):
    assert judge_trial(POLICY, window) is verdict


def test_policy_is_validated_and_round_trips():
    assert TrialPolicy.from_json(POLICY.to_json()) == POLICY
    with pytest.raises(ConfigError):
        TrialPolicy(max_error_rate=1.5)
    with pytest.raises(ConfigError):
        TrialPolicy.from_json({"window_s": "soon"})
