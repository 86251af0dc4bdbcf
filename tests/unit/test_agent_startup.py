"""What the agent's process start-up changes before the agent runs (edgeops.agent.daemon)."""

from __future__ import annotations

import os

import pytest

from edgeops.agent.daemon import limit_blas_threads, release_free_memory

BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def test_openblas_gets_one_thread_unless_the_environment_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in BLAS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert limit_blas_threads() is True
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    for name in BLAS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv(name, "3")
        assert limit_blas_threads() is False
        assert os.environ[name] == "3"
        assert all(other not in os.environ for other in BLAS_VARIABLES if other != name)
        monkeypatch.delenv(name)


def test_release_free_memory_runs_no_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # ctypes.util.find_library would run `ldconfig -p`; the trim must not fork.
    import subprocess

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("release_free_memory started a process")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    release_free_memory()
    release_free_memory()
