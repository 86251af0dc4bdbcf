"""Import time and RSS of ``import edgeops.agent`` (and the trust and bundle layers the agent
verifies with), each in a fresh interpreter.

    python benchmarks/agent_import.py [--runs 5]

Prints one JSON object: per module the median wall time of the import, the RSS added over
a bare interpreter, the slowest entries of ``python -X importtime``, and whether the
host-only modules (onnx, onnxruntime, typer, rich) stayed out of ``sys.modules``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from typing import Any

HEAVY = ("onnx", "onnxruntime", "typer", "rich")

CHILD = """
import json, sys, time
def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
before = rss_kb()
start = time.perf_counter()
if sys.argv[1] != "-":
    __import__(sys.argv[1])
elapsed = time.perf_counter() - start
heavy = sorted(m for m in sys.argv[2].split(",") if m in sys.modules)
print(json.dumps({"import_s": elapsed, "rss_kb": rss_kb(), "rss_before_kb": before,
                  "heavy": heavy, "numpy": "numpy" in sys.modules, "modules": len(sys.modules)}))
"""


def run(module: str, runs: int) -> dict[str, Any]:
    samples = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, module, ",".join(HEAVY)],
            check=True,
            capture_output=True,
            text=True,
        )
        samples.append(json.loads(out.stdout))
    return {
        "import_ms_median": round(1000 * statistics.median(s["import_s"] for s in samples), 2),
        "rss_mb_median": round(statistics.median(s["rss_kb"] for s in samples) / 1024, 1),
        "heavy_modules_loaded": samples[0]["heavy"],
        "numpy_loaded": samples[0]["numpy"],
        "modules": samples[0]["modules"],
    }


def importtime_top(module: str, count: int = 5) -> list[dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        check=True,
        capture_output=True,
        text=True,
    )
    rows = []
    for line in out.stderr.splitlines()[1:]:
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[1].isdigit():
            rows.append({"module": parts[2].strip(), "cumulative_ms": int(parts[1]) / 1000})
    rows.sort(key=lambda r: float(r["cumulative_ms"]), reverse=True)  # type: ignore[arg-type]
    return rows[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    baseline = run("-", args.runs)
    modules = {}
    for module in ("edgeops.agent", "edgeops.trust", "edgeops.bundle"):
        figures = run(module, args.runs)
        figures["rss_added_mb"] = round(figures["rss_mb_median"] - baseline["rss_mb_median"], 1)
        figures["importtime_top"] = importtime_top(module)
        modules[module] = figures
    print(
        json.dumps(
            {
                "benchmark": "agent_import",
                "runs": args.runs,
                "bare_interpreter_rss_mb": baseline["rss_mb_median"],
                "modules": modules,
                "agent_free_of_host_modules": not modules["edgeops.agent"]["heavy_modules_loaded"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
