"""Health of a candidate bundle: the check before activation and the trial after it.

Before activation (:func:`check_candidate`) the new model is loaded beside the serving one and
must reproduce the bundle's test vectors within their tolerance, and meet the manifest's
budgets: p95 latency over ``runs`` inferences and the memory its loading added.

After activation the updater feeds live figures (:class:`TrialWindow`) to :func:`judge_trial`,
which compares them with the directive's :class:`TrialPolicy`. The judging functions are pure;
only :func:`check_candidate` runs the model, and it reads time and memory through the callables
it is given, so tests can run it on fakes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from edgeops.errors import ConfigError

#: Runs of the latency budget check when the manifest does not say.
DEFAULT_LATENCY_RUNS = 20


# --------------------------------------------------------------------------- trial


@dataclass(frozen=True, kw_only=True)
class TrialPolicy:
    """How a new bundle must behave live before it is committed.

    The trial fails early once ``min_requests`` requests were served and a threshold is
    crossed; at the end of ``window_s`` it is judged on whatever was served. A device that
    served nothing during the window commits: the health check passed and nothing live
    contradicts it.
    """

    window_s: float = 60.0
    max_error_rate: float = 0.05
    max_p95_ms: float | None = None
    min_requests: int = 20

    def __post_init__(self) -> None:
        if not (self.window_s >= 0 and math.isfinite(self.window_s)):
            raise ConfigError(f"expected trial window_s >= 0, got {self.window_s}")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ConfigError(f"expected max_error_rate in [0, 1], got {self.max_error_rate}")
        if self.max_p95_ms is not None and self.max_p95_ms <= 0:
            raise ConfigError(f"expected max_p95_ms > 0, got {self.max_p95_ms}")
        if self.min_requests < 0:
            raise ConfigError(f"expected min_requests >= 0, got {self.min_requests}")

    def to_json(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "max_error_rate": self.max_error_rate,
            "max_p95_ms": self.max_p95_ms,
            "min_requests": self.min_requests,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialPolicy:
        default = cls()
        p95 = data.get("max_p95_ms", default.max_p95_ms)
        try:
            return cls(
                window_s=float(data.get("window_s", default.window_s)),
                max_error_rate=float(data.get("max_error_rate", default.max_error_rate)),
                max_p95_ms=None if p95 is None else float(p95),
                min_requests=int(data.get("min_requests", default.min_requests)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"malformed trial policy {dict(data)!r}: {exc}") from exc

    def violations(self, window: TrialWindow) -> list[str]:
        """The thresholds ``window`` crosses, each as "what was allowed, what came"."""
        found: list[str] = []
        if window.requests and window.error_rate > self.max_error_rate:
            found.append(
                f"error rate {window.error_rate:.3f} > {self.max_error_rate:.3f} "
                f"({window.errors}/{window.requests} requests)"
            )
        if (
            self.max_p95_ms is not None
            and window.p95_ms is not None
            and window.p95_ms > self.max_p95_ms
        ):
            found.append(f"p95 latency {window.p95_ms:.1f} ms > {self.max_p95_ms:.1f} ms")
        return found

    def explain(self, window: TrialWindow) -> str:
        return "; ".join(self.violations(window)) or "no threshold crossed"


@dataclass(frozen=True, kw_only=True)
class TrialWindow:
    """Live figures of the candidate since it was activated."""

    elapsed_s: float
    requests: int
    errors: int
    p95_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def figures(self) -> dict[str, float]:
        out = {
            "elapsed_s": round(self.elapsed_s, 3),
            "requests": float(self.requests),
            "errors": float(self.errors),
            "error_rate": round(self.error_rate, 4),
        }
        if self.p95_ms is not None:
            out["p95_ms"] = round(self.p95_ms, 3)
        return out


class TrialVerdict(StrEnum):
    CONTINUE = "continue"
    PASS = "pass"
    FAIL = "fail"


def judge_trial(policy: TrialPolicy, window: TrialWindow) -> TrialVerdict:
    """Fail early on enough evidence, pass at the end of the window, else keep watching."""
    violations = policy.violations(window)
    if violations and window.requests >= max(policy.min_requests, 1):
        return TrialVerdict.FAIL
    if window.elapsed_s >= policy.window_s:
        return TrialVerdict.FAIL if violations else TrialVerdict.PASS
    return TrialVerdict.CONTINUE


# --------------------------------------------------------------------------- pre-activation


class RunnableModel(Protocol):
    """What the health check needs from a loaded model (``edgeops.agent.runtimes``)."""

    def run(self, inputs: Mapping[str, Any]) -> Mapping[str, Any]: ...


@dataclass(frozen=True, kw_only=True)
class TestVector:
    """One input set and the outputs the bundle's author recorded for it."""

    __test__ = False  # not a pytest class, despite the name

    inputs: Mapping[str, Any]
    expected: Mapping[str, Any]
    atol: float = 1e-3
    rtol: float = 1e-3


@dataclass(frozen=True, kw_only=True)
class Budgets:
    """Resource budgets from the manifest; None means the manifest sets none."""

    p95_latency_ms: float | None = None
    memory_mb: float | None = None
    latency_runs: int = DEFAULT_LATENCY_RUNS

    def __post_init__(self) -> None:
        if self.latency_runs < 1:
            raise ConfigError(f"expected latency_runs >= 1, got {self.latency_runs}")


@dataclass(frozen=True, kw_only=True)
class HealthResult:
    ok: bool
    reason: str = ""
    figures: Mapping[str, float] = field(default_factory=dict)


def compare_outputs(
    got: Mapping[str, Any], vector: TestVector
) -> tuple[list[str], dict[str, float]]:
    """Problems (missing output, shape, values out of tolerance) and the max abs error."""
    import numpy as np

    problems: list[str] = []
    errors: dict[str, float] = {}
    for name, expected_value in vector.expected.items():
        if name not in got:
            problems.append(f"output {name!r} missing (got {sorted(got)})")
            continue
        expected = np.asarray(expected_value)
        actual = np.asarray(got[name])
        if actual.shape != expected.shape:
            problems.append(f"output {name!r}: expected shape {expected.shape}, got {actual.shape}")
            continue
        exp64 = expected.astype(np.float64)
        act64 = actual.astype(np.float64)
        diff = np.abs(act64 - exp64)
        max_err = float(diff.max()) if diff.size else 0.0
        errors[name] = max_err
        allowed = vector.atol + vector.rtol * np.abs(exp64)
        if not bool(np.all(diff <= allowed)) or not bool(np.all(np.isfinite(act64))):
            problems.append(
                f"output {name!r}: max abs error {max_err:.6g} beyond "
                f"atol={vector.atol:g}, rtol={vector.rtol:g}"
            )
    return problems, errors


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: a budget is checked on a real run)."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def check_candidate(
    model: RunnableModel,
    vectors: Sequence[TestVector],
    budgets: Budgets,
    *,
    memory_added_mb: float | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> HealthResult:
    """Run the test vectors and the budgets on a loaded candidate; never raises on a bad
    model (its exceptions become the reason), so a broken bundle cannot stop the agent."""
    figures: dict[str, float] = {"vectors": float(len(vectors))}
    problems: list[str] = []
    for index, vector in enumerate(vectors):
        try:
            got = model.run(vector.inputs)
        except Exception as exc:  # the candidate is untrusted code paths in a runtime
            return HealthResult(
                ok=False,
                reason=f"test vector {index}: the model raised {type(exc).__name__}: {exc}",
                figures=figures,
            )
        vector_problems, errors = compare_outputs(got, vector)
        for name, err in errors.items():
            key = f"max_abs_error.{name}"
            figures[key] = max(figures.get(key, 0.0), err)
        problems += [f"test vector {index}: {p}" for p in vector_problems]
    if problems:
        return HealthResult(ok=False, reason="; ".join(problems[:5]), figures=figures)

    if budgets.p95_latency_ms is not None:
        if not vectors:
            return HealthResult(
                ok=False,
                reason="the manifest sets a latency budget but the bundle has no test vector",
                figures=figures,
            )
        timings: list[float] = []
        for run in range(budgets.latency_runs):
            inputs = vectors[run % len(vectors)].inputs
            start = clock()
            try:
                model.run(inputs)
            except Exception as exc:
                return HealthResult(
                    ok=False,
                    reason=f"latency run {run}: the model raised {type(exc).__name__}: {exc}",
                    figures=figures,
                )
            timings.append((clock() - start) * 1000.0)
        p95 = percentile(timings, 95)
        figures["p95_ms"] = round(p95, 3)
        figures["p50_ms"] = round(percentile(timings, 50), 3)
        if p95 > budgets.p95_latency_ms:
            problems.append(
                f"p95 latency {p95:.2f} ms over {budgets.latency_runs} runs > budget "
                f"{budgets.p95_latency_ms:.2f} ms"
            )
    if memory_added_mb is not None:
        figures["memory_mb"] = round(memory_added_mb, 2)
        if budgets.memory_mb is not None and memory_added_mb > budgets.memory_mb:
            problems.append(
                f"loading added {memory_added_mb:.1f} MB > budget {budgets.memory_mb:.1f} MB"
            )
    if problems:
        return HealthResult(ok=False, reason="; ".join(problems), figures=figures)
    return HealthResult(ok=True, figures=figures)


def rss_mb() -> float:
    """Resident memory of this process in MB, from ``/proc/self/statm`` (Linux)."""
    import os

    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)


__all__ = [
    "Budgets",
    "HealthResult",
    "RunnableModel",
    "TestVector",
    "TrialPolicy",
    "TrialVerdict",
    "TrialWindow",
    "check_candidate",
    "compare_outputs",
    "judge_trial",
    "percentile",
    "rss_mb",
]
