"""The long fuzz run: every target under atheris for ``--seconds`` each; prints one JSON object.

    python benchmarks/fuzz.py [--seconds 60] [--memory-mb 4096] [--target NAME ...]

Each target runs in a subprocess with an address-space limit (``RLIMIT_AS``), libFuzzer's
``-rss_limit_mb`` and ``-timeout`` (per input), and a wall-clock bound on the whole process.
libFuzzer stops at the first crash, so a crashed target is restarted on the same corpus
folder until its time is spent, and crashes are counted by distinct signature (exception
and innermost edgeops frame). Pass = no crash, no hang, no input over the memory limit:
only the project's own errors.

Per target: executions, exec/s, crashes (with their signatures and saved inputs), restarts,
peak RSS of the fuzzing process (libFuzzer's ``peak_rss_mb``, the largest over restarts).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FUZZ = Path(__file__).resolve().parents[1] / "tests" / "fuzz"
sys.path.insert(0, str(FUZZ))

MAX_RESTARTS = 50


def _signature(log: str) -> str:
    """The exception line and the innermost frame in edgeops code, or libFuzzer's verdict."""
    if "ERROR: libFuzzer: timeout" in log:
        return "timeout (libFuzzer -timeout)"
    if "out-of-memory" in log:
        return "out of memory (-rss_limit_mb)"
    frames = re.findall(r'File "([^"]*/(?:edgeops|converters|agent|fleet)/[^"]+)", line (\d+)', log)
    errors = re.findall(r"^(\w+(?:Error|Exception|Input)\b.*)$", log, flags=re.MULTILINE)
    where = f" at {Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else ""
    # Numbers vary between inputs that hit the same bug ("integer 8589934592 out of bounds").
    what = re.sub(r"\d+", "N", errors[-1])[:160] if errors else "exit without a Python traceback"
    return f"{what}{where}"


def _stat(log: str, key: str) -> int:
    values = re.findall(rf"stat::{key}:\s+(\d+)", log)
    return int(values[-1]) if values else 0


def run_target(name: str, *, seconds: float, memory_mb: int, time_limit_s: float) -> dict[str, Any]:
    limit_bytes = memory_mb * 1024 * 1024

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    workdir = Path(tempfile.mkdtemp(prefix=f"edgeops-fuzz-{name}-"))
    corpus, artifacts = workdir / "corpus", workdir / "artifacts"
    corpus.mkdir()
    artifacts.mkdir()
    from fuzz_targets import TARGETS

    for index, seed in enumerate(TARGETS[name].seeds()):
        (corpus / f"seed-{index}").write_bytes(seed)

    executions = 0
    restarts = 0
    peak_rss_mb = 0
    crashes: dict[str, list[str]] = {}
    hung = False
    started = time.monotonic()
    while restarts <= MAX_RESTARTS:
        remaining = seconds - (time.monotonic() - started)
        if remaining < 1:
            break
        before = set(artifacts.iterdir())
        command = [
            sys.executable,
            str(FUZZ / "fuzz_run.py"),
            name,
            f"-max_total_time={max(1, int(remaining))}",
            f"-timeout={max(1, int(time_limit_s * 2))}",
            f"-rss_limit_mb={memory_mb}",
            "-print_final_stats=1",
            f"-artifact_prefix={artifacts}/",
            str(corpus),
        ]
        # atheris prints the uncaught exception on stdout, libFuzzer its report on stderr.
        process = subprocess.Popen(
            command,
            # libFuzzer ends the child with exit(), past Python's clean-up: its temporary
            # fleet goes under the target's folder.
            env={**os.environ, "TMPDIR": str(workdir)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=limit_memory,  # noqa: PLW1509 - this process starts no threads
        )
        try:
            log, _ = process.communicate(timeout=remaining + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            log, _ = process.communicate()
            hung = True
        peak_rss_mb = max(peak_rss_mb, _stat(log, "peak_rss_mb"))
        executions += _stat(log, "number_of_executed_units")
        if hung:
            crashes.setdefault("hang: the fuzzing process outlived its time bound", [])
            break
        if process.returncode == 0:
            break
        saved = sorted(str(p) for p in set(artifacts.iterdir()) - before)
        crashes.setdefault(_signature(log), []).extend(saved)
        restarts += 1
    elapsed = time.monotonic() - started
    corpus_size = len(list(corpus.iterdir()))
    if not crashes:  # keep the folder only when it holds inputs to look at
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "executions": executions,
        "exec_per_s": round(executions / elapsed, 1) if elapsed else 0.0,
        "seconds": round(elapsed, 1),
        "crashes": sum(len(v) or 1 for v in crashes.values()),
        "distinct_crashes": len(crashes),
        "crash_signatures": {k: v[:3] for k, v in crashes.items()},
        "restarts": restarts,
        "peak_rss_mb": peak_rss_mb,
        "corpus_size": corpus_size,
        "workdir": str(workdir) if crashes else None,
    }


def main() -> None:
    from fuzz_targets import TARGETS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per target")
    parser.add_argument("--memory-mb", type=int, default=4096, help="RLIMIT_AS and rss limit")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS), default=None)
    args = parser.parse_args()
    names = args.target or sorted(TARGETS)
    results = {}
    for name in names:
        results[name] = run_target(
            name,
            seconds=args.seconds,
            memory_mb=args.memory_mb,
            time_limit_s=TARGETS[name].time_limit_s,
        )
        print(f"{name}: {results[name]['executions']} runs", file=sys.stderr, flush=True)
    report = {
        "benchmark": "fuzz",
        "seconds_per_target": args.seconds,
        "memory_limit_mb": args.memory_mb,
        "cpu_count": os.cpu_count(),
        "targets": results,
        "pass": all(r["distinct_crashes"] == 0 for r in results.values()),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
