"""The short fuzz run CI makes (marker ``fuzz``, about 30 s on two cores).

Three layers per target: the seed corpus replayed; seeds mutated by hypothesis
(derandomized, so a failure here is reproducible); and a coverage-guided atheris run of a
few seconds in a subprocess with a fixed libFuzzer seed. The long run is
``benchmarks/fuzz.py``. Every input must end in the target's allowed edgeops errors within
its time bound (:mod:`fuzz_harness`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fuzz_harness import build_one_input
from fuzz_targets import TARGETS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.fuzz

SLOW = {"onnx_bytes", "onnx_edits"}


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seed_corpus_replays_cleanly(name):
    target = TARGETS[name]
    one_input = build_one_input(target, alarm=True)
    seeds = target.seeds()
    assert seeds
    for seed in seeds:
        one_input(seed)


def _mutated(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """A seed with a few byte-level edits: what a fuzzer's first generation looks like."""

    @st.composite
    def strategy(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(1, 4))):
            edit = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice"]))
            at = draw(st.integers(0, max(len(data) - 1, 0)))
            if edit == "flip" and data:
                data[at] ^= draw(st.integers(1, 255))
            elif edit == "insert":
                data[at:at] = draw(st.binary(min_size=1, max_size=16))
            elif edit == "delete":
                del data[at : at + draw(st.integers(1, 64))]
            elif edit == "truncate":
                del data[at:]
            else:
                other = draw(st.sampled_from(seeds))
                start = draw(st.integers(0, len(other)))
                data[at:] = other[start:]
        return bytes(data)

    return strategy()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutated_seeds_raise_only_edgeops_errors(name):
    target = TARGETS[name]
    one_input = build_one_input(target, alarm=True)

    @settings(
        max_examples=25 if name in SLOW else 150,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(_mutated(target.seeds()) | st.binary(max_size=512))
    def run(data: bytes) -> None:
        one_input(data)

    run()


def _atheris(name: str, tmp_path: Path) -> tuple[str, int, str]:
    artifacts = tmp_path / name
    artifacts.mkdir()
    # The converter runs at tens of inputs a second and still has open crashes deeper in
    # its lowerings (benchmarks/fuzz.py finds them; docs/security.md lists the state), so
    # CI gives it a fixed budget with a fixed seed: deterministic, a gate on regressions.
    runs, seconds = (300, 20) if name in SLOW else (20000, 3)
    command = [
        sys.executable,
        str(Path(__file__).with_name("fuzz_run.py")),
        name,
        "-seed=1",
        f"-runs={runs}",
        f"-max_total_time={seconds}",
        "-rss_limit_mb=1024",
        f"-artifact_prefix={artifacts}/",
    ]
    # libFuzzer ends the process with exit(), past Python's clean-up: the temporary fleet
    # and corpus folders go under tmp_path.
    env = {**os.environ, "TMPDIR": str(artifacts)}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=90, check=False, env=env
    )
    return name, result.returncode, result.stderr[-4000:]


def test_coverage_guided_run_finds_nothing(tmp_path):
    """Every target under atheris for a few seconds, two at a time (two cores)."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda name: _atheris(name, tmp_path), sorted(TARGETS)))
    failures = [f"--- {name} (exit {code})\n{log}" for name, code, log in results if code != 0]
    assert not failures, "\n".join(failures)
    for name, _, log in results:
        assert "Done " in log, f"{name}: libFuzzer did not finish its run\n{log}"


def test_harness_passes_edgeops_errors_and_fails_everything_else():
    import time

    from fuzz_harness import SlowInput, Target

    from edgeops.errors import ProtocolError

    def build():
        def body(data: bytes) -> None:
            if data == b"edgeops":
                raise ProtocolError("expected a message")
            if data == b"other":
                raise ValueError("escaped")
            if data == b"hang":
                while True:
                    time.sleep(0.01)

        return body

    one_input = build_one_input(
        Target(name="t", doc="", build=build, seeds=list, time_limit_s=0.2), alarm=True
    )
    one_input(b"edgeops")
    with pytest.raises(ValueError, match="escaped"):
        one_input(b"other")
    with pytest.raises(SlowInput, match=r"ran longer than 0\.2 s"):
        one_input(b"hang")


CRASHES = Path(__file__).with_name("crashes")


@pytest.mark.parametrize("name", sorted(p.name for p in CRASHES.iterdir()))
def test_inputs_that_once_crashed_pass_now(name):
    """Every input a fuzz run saved as a crash and that was since fixed, replayed through
    its target (``crashes/<target>/<sha1 prefix>``); the reduced cases with their stories
    are in test_fuzz_regressions.py."""
    one_input = build_one_input(TARGETS[name], alarm=True)
    inputs = sorted((CRASHES / name).iterdir())
    assert inputs
    for path in inputs:
        one_input(path.read_bytes())
