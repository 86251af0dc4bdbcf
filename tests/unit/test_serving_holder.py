"""ModelHolder: atomic swap, draining, metrics and drift bookkeeping (fake runtimes)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgeops.agent.runtimes.testing import fake_add_runtime
from edgeops.agent.serving import ModelHolder, ModelInfo
from edgeops.agent.telemetry import DriftMonitor, reference_stats
from edgeops.errors import InferenceInputError, ModelError, StateError

X = np.zeros((1, 4), np.float32)


def info(version: str) -> ModelInfo:
    return ModelInfo(name="adder", version=version)


def test_no_model_yet_is_a_state_error() -> None:
    holder = ModelHolder()
    assert not holder.ready
    with pytest.raises(StateError, match="no model is loaded"):
        holder.infer({"x": X})


def test_model_info_refuses_names_that_break_urls() -> None:
    with pytest.raises(ValueError, match="without '/'"):
        ModelInfo(name="a/b")
    with pytest.raises(ValueError, match="without '/'"):
        ModelInfo(name="a", version="")


def test_swap_switches_at_once_and_closes_old_after_its_requests() -> None:
    holder = ModelHolder()
    slow = fake_add_runtime(constant=1.0, delay=0.3)
    holder.swap(slow, info("1"))
    results: list[float] = []
    started = threading.Event()

    def long_request() -> None:
        with holder.use() as model:
            started.set()
            results.append(float(model.run({"x": X})["y"][0, 0]))

    thread = threading.Thread(target=long_request)
    thread.start()
    started.wait()
    fast = fake_add_runtime(constant=2.0)
    swapper = threading.Thread(target=holder.swap, args=(fast, info("2")))
    swapper.start()
    time.sleep(0.05)
    # the new model answers while the old one still has a request in flight
    assert holder.infer({"x": X})["y"][0, 0] == 2.0
    closed_while_in_flight = slow.closed
    thread.join()
    swapper.join()
    assert not closed_while_in_flight
    assert results == [1.0]  # the in-flight request finished on the old model
    assert slow.closed
    assert not fast.closed
    assert holder.active is not None
    assert holder.active.info.version == "2"


def test_hammering_during_repeated_swaps_loses_no_request() -> None:
    holder = ModelHolder()
    runtimes = [fake_add_runtime(constant=float(i), delay=0.001) for i in range(40)]
    holder.swap(runtimes[0], info("0"))
    failures: list[BaseException] = []
    answers: list[float] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                answers.append(float(holder.infer({"x": X})["y"][0, 0]))
            except BaseException as exc:
                failures.append(exc)

    clients = [threading.Thread(target=client) for _ in range(8)]
    for thread in clients:
        thread.start()
    for i, runtime in enumerate(runtimes[1:], start=1):
        time.sleep(0.005)
        old = holder.swap(runtime, info(str(i)))
        assert old is not None
        assert old.runtime.closed  # type: ignore[attr-defined]
        assert old.inflight == 0
    stop.set()
    for thread in clients:
        thread.join()
    assert failures == []
    assert len(answers) > 100
    assert set(answers) <= {float(i) for i in range(40)}
    assert all(r.closed for r in runtimes[:-1])
    assert holder.metrics.snapshot().requests == len(answers)


def test_close_old_false_keeps_previous_loaded_for_fast_rollback() -> None:
    holder = ModelHolder()
    first, second = fake_add_runtime(constant=1.0), fake_add_runtime(constant=2.0)
    holder.swap(first, info("1"))
    previous = holder.swap(second, info("2"), close_old=False)
    assert previous is not None
    assert not first.closed
    # rollback: the kept model comes back; the failed one is drained and closed
    back = holder.restore(previous)
    assert back is not None
    assert back.runtime is second
    assert second.closed
    assert holder.infer({"x": X})["y"][0, 0] == 1.0
    assert holder.active is not None
    assert holder.active.info == previous.info
    with pytest.raises(StateError, match="cannot retire the active model"):
        holder.retire(holder.active)
    with pytest.raises(StateError, match="cannot retire the active model"):
        holder.retire(previous)  # same runtime as the active model
    assert not first.closed


def test_retire_closes_even_when_drain_times_out() -> None:
    holder = ModelHolder()
    stuck = fake_add_runtime(delay=0.5)
    holder.swap(stuck, info("1"))
    outcome: list[BaseException] = []

    def request() -> None:
        try:
            holder.infer({"x": X})
        except StateError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(0.05)
    old = holder.swap(fake_add_runtime(), info("2"), close_old=False)
    assert old is not None
    assert holder.retire(old, drain_timeout=0.05) is False
    assert stuck.closed
    thread.join()
    # the fake, unlike the TFLite runtimes, does not make close wait for a run under way
    assert len(outcome) == 1


def test_close_unloads() -> None:
    holder = ModelHolder()
    runtime = fake_add_runtime()
    holder.swap(runtime, info("1"))
    holder.close()
    assert runtime.closed
    assert not holder.ready
    with pytest.raises(ValueError, match="needs its ModelInfo"):
        holder.swap(fake_add_runtime())


def test_metrics_split_errors_from_rejected_inputs() -> None:
    holder = ModelHolder()
    holder.swap(fake_add_runtime(), info("1"))
    holder.infer({"x": X})
    with pytest.raises(InferenceInputError):
        holder.infer({"x": np.zeros((1, 5), np.float32)})
    holder.swap(fake_add_runtime(fail_with="delegate lost"), info("2"))
    with pytest.raises(ModelError, match="delegate lost"):
        holder.infer({"x": X})
    snap = holder.metrics.snapshot()
    assert (snap.requests, snap.errors, snap.rejected) == (2, 1, 1)
    assert holder.active is not None
    per_model = holder.active.metrics.snapshot()
    assert (per_model.requests, per_model.errors, per_model.rejected) == (1, 1, 0)


def test_drift_monitor_sees_inputs_and_outputs() -> None:
    holder = ModelHolder()
    monitor = DriftMonitor(reference_stats({"x": np.linspace(0, 1, 100)}), sample_every=1)
    holder.swap(fake_add_runtime(), info("1"), drift=monitor)
    for _ in range(3):
        holder.infer({"x": np.full((1, 4), 0.5, np.float32)})
    report = monitor.score()
    assert report["requests"] == 3
    assert report["inputs"]["x"]["mean"] == pytest.approx(0.5)
    assert report["outputs"]["y"]["mean"] == pytest.approx(1.5)
