"""Durable writes of the agent's telemetry queue and event counter: fsyncs and CPU per operation.

Prints one JSON object. For each telemetry sample a connected agent appends it to its
:class:`~edgeops.agent.telemetry.DiskQueue` and, on the broker's PUBACK, acknowledges it;
each update step persists the updater state (``Store.save_state``) and numbers the event
it reports (``Store.next_event_seq``). This script runs those operations ``--samples`` /
``--steps`` times on a fresh folder and reports, per operation, the number of ``os.fsync``
calls (counted by a wrapper around ``os.fsync`` in this process), the thread CPU time and
the wall time in µs.

The same run measures the code of ``--baseline`` (a git revision; default: the commit before
block-reserved event numbers and rename-on-ack) side by side with the working tree: the
baseline's ``queue.py``, ``store.py`` and ``fsutil.py`` are loaded from ``git show`` as
separate modules. Rounds alternate between the two; each figure is the median over rounds.

    python benchmarks/agent_telemetry_io.py [--samples 2000] [--steps 500] [--rounds 3]
        [--tmp /dev/shm] [--baseline REV | --no-baseline]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Figures = dict[str, dict[str, float]]
"""Per operation: fsyncs, cpu_us and wall_us per call."""

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "27dc109"
"""The last commit before the change these figures are about."""

# One telemetry sample as the agent stores it (json of a TelemetrySample): about 400 bytes.
SAMPLE = json.dumps(
    {
        "ts": "2026-11-23T12:00:00Z",
        "requests": 120,
        "errors": 0,
        "p50_ms": 11.5,
        "p95_ms": 14.25,
        "p99_ms": 18.0,
        "cpu_percent": 23.5,
        "rss_bytes": 52_000_000,
        "temperature_c": 51.2,
        "disk_free_bytes": 12_000_000_000,
        "bundle": "a" * 64,
        "drift": 0.02,
        "outputs": {"y.mean": 1.5, "y.class.person": 0.25},
    }
).encode()

FSYNCS = [0]
_real_fsync = os.fsync


def _counting_fsync(fd: Any) -> None:
    FSYNCS[0] += 1
    _real_fsync(fd)


@contextmanager
def fsyncs_counted() -> Iterator[None]:
    os.fsync = _counting_fsync
    try:
        yield
    finally:
        os.fsync = _real_fsync


class Meter:
    """Accumulates fsyncs, thread CPU and wall time of one kind of operation."""

    def __init__(self) -> None:
        self.count = 0
        self.fsyncs = 0
        self.cpu_ns = 0
        self.wall_ns = 0

    def run(self, op: Callable[[], Any]) -> Any:
        fsyncs, cpu, wall = FSYNCS[0], time.thread_time_ns(), time.perf_counter_ns()
        result = op()
        self.wall_ns += time.perf_counter_ns() - wall
        self.cpu_ns += time.thread_time_ns() - cpu
        self.fsyncs += FSYNCS[0] - fsyncs
        self.count += 1
        return result

    def per_op(self) -> dict[str, float]:
        n = max(self.count, 1)
        return {
            "fsyncs": round(self.fsyncs / n, 3),
            "cpu_us": round(self.cpu_ns / n / 1000, 1),
            "wall_us": round(self.wall_ns / n / 1000, 1),
        }


def load_baseline(rev: str) -> dict[str, types.ModuleType]:
    """The baseline's queue and store modules, importing the baseline's fsutil."""

    def source(path: str) -> str:
        return subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout

    def load(name: str, path: str) -> types.ModuleType:
        spec = importlib.util.spec_from_loader(name, loader=None)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        module.__file__ = f"{rev}:{path}"
        sys.modules[name] = module  # dataclasses look their module up while exec runs
        exec(compile(source(path), module.__file__, "exec"), module.__dict__)
        return module

    import edgeops.agent.updater  # noqa: F401  (the baseline store imports it)

    fsutil = load("baseline_fsutil", "edgeops/fsutil.py")
    current = sys.modules["edgeops.fsutil"]
    sys.modules["edgeops.fsutil"] = fsutil  # the baseline modules bind the baseline's helpers
    try:
        queue = load("baseline_queue", "agent/telemetry/queue.py")
        store = load("baseline_store", "agent/store.py")
    finally:
        sys.modules["edgeops.fsutil"] = current
    return {"queue": queue, "store": store}


def current_modules() -> dict[str, types.ModuleType]:
    from edgeops.agent import store
    from edgeops.agent.telemetry import queue

    return {"queue": queue, "store": store}


def measure(
    modules: dict[str, types.ModuleType], folder: Path, samples: int, steps: int
) -> Figures:
    from edgeops.agent.updater import BundleRef, Phase, UpdaterState

    queue = modules["queue"].DiskQueue(folder / "telemetry")
    append, ack = Meter(), Meter()
    for _ in range(samples):
        seq = append.run(functools.partial(queue.append, SAMPLE))
        assert ack.run(functools.partial(queue.ack, seq))
    # Offline, then a replay after reconnect: acks of entries appended while away.
    backlog = [queue.append(SAMPLE) for _ in range(samples)]
    replay_ack = Meter()
    for seq in backlog:
        assert replay_ack.run(functools.partial(queue.ack, seq))

    store = modules["store"].Store(folder / "state")
    store.ensure()
    event, save = Meter(), Meter()
    for i in range(steps):
        state = UpdaterState(
            phase=Phase.COMMITTED, committed=BundleRef(digest="b" * 64, release_counter=i + 1)
        )
        save.run(functools.partial(store.save_state, state))
        event.run(store.next_event_seq)
    figures: Figures = {
        "append": append.per_op(),
        "ack": ack.per_op(),
        "ack_replay": replay_ack.per_op(),
        "save_state": save.per_op(),
        "next_event_seq": event.per_op(),
    }
    figures["sample"] = {
        key: round(figures["append"][key] + figures["ack"][key], 3) for key in figures["ack"]
    }
    figures["update_step"] = {
        key: round(figures["save_state"][key] + figures["next_event_seq"][key], 3)
        for key in figures["save_state"]
    }
    return figures


def median_figures(runs: list[Figures]) -> Figures:
    return {
        op: {key: statistics.median(run[op][key] for run in runs) for key in runs[0][op]}
        for op in runs[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=500, help="update steps (state + event)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the state (a disk)")
    parser.add_argument("--baseline", default=BASELINE, help="git revision to compare with")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()

    variants = {"current": current_modules()}
    if not args.no_baseline:
        variants = {"baseline": load_baseline(args.baseline), **variants}
    runs: dict[str, list[Figures]] = {name: [] for name in variants}
    with fsyncs_counted():
        for _ in range(args.rounds):
            for name, modules in variants.items():
                with tempfile.TemporaryDirectory(dir=args.tmp, prefix="edgeops-io-") as tmp:
                    runs[name].append(measure(modules, Path(tmp), args.samples, args.steps))
    result: dict[str, Any] = {
        "samples": args.samples,
        "steps": args.steps,
        "rounds": args.rounds,
        "tmp": str(args.tmp or tempfile.gettempdir()),
        "baseline_rev": None if args.no_baseline else args.baseline,
    }
    medians = {name: median_figures(found) for name, found in runs.items()}
    result.update(medians)
    if "baseline" in medians:
        result["current_over_baseline"] = {
            op: {
                key: round(medians["current"][op][key] / medians["baseline"][op][key], 3)
                if medians["baseline"][op][key]
                else None
                for key in ("fsyncs", "cpu_us", "wall_us")
            }
            for op in ("sample", "ack", "update_step", "next_event_seq")
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
