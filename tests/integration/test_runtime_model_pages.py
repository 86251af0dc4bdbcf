"""LiteRT with XNNPACK hands the model file's pages back after loading, and still runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from edgeops.agent.runtimes import load_model
from edgeops.agent.runtimes.pages import mappings_of
from edgeops.agent.runtimes.testing import tflite_add_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc"),
]


def resident_kb(path: Path) -> int | None:
    """Rss of this process's mappings of ``path``; None when nothing maps it."""
    inode = str(os.stat(path).st_ino)
    total, found, current = 0, False, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if not fields[0].endswith(":"):
            current = len(fields) > 4 and fields[4] == inode
            found = found or current
        elif current and fields[0] == "Rss:":
            total += int(fields[1])
    return total if found else None


def kernel_has_pageout() -> bool:
    found = re.match(r"(\d+)\.(\d+)", os.uname().release)
    return found is not None and (int(found[1]), int(found[2])) >= (5, 4)


def test_the_model_file_is_paged_out_after_loading_and_the_model_still_runs(
    tmp_path: Path,
) -> None:
    path = tmp_path / "add.tflite"
    with path.open("wb") as out:
        out.write(tflite_add_model(constant=2.0))
        out.flush()
        os.fsync(out.fileno())  # as the agent's unpacked bundles are
    model = load_model(path, threads=2)
    assert len(mappings_of(path, Path("/proc/self/maps").read_text())) == 1
    # The model is one page; the interpreter has read it. MADV_PAGEOUT came in Linux 5.4.
    page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
    assert resident_kb(path) == (0 if kernel_has_pageout() else page_kb)
    x = np.array([[1.0, -1.0, 0.5, 3.0]], np.float32)
    for _ in range(2):
        np.testing.assert_allclose(model.run({"x": x})["y"], x + 2.0)
    model.close()
