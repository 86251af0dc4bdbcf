"""Wall time and peak RSS of verifying a 1 MB and a 50 MB bundle, each in a fresh process.

    python benchmarks/bundle_verify.py [--runs 3]

Prints one JSON object. Both bundles hold a real ONNX model (``y = x + c`` with a constant
of the size asked) made by ``create_bundle`` under a fleet from ``init_fleet``. Each
verification runs in its own interpreter, as ``edgeops bundle verify`` and the agent do,
and reports its own peak RSS (``VmHWM``); ``cli_*`` figures run ``edgeops bundle verify
--json`` the same way. The target: the 50 MB bundle's peak RSS stays
within 20 MB of the 1 MB bundle's (verification streams in fixed blocks).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, sys, time
from pathlib import Path
start = time.perf_counter()
from edgeops.bundle import verify_bundle
from edgeops.trust import TrustedState, utcnow
trusted = TrustedState(Path(sys.argv[2]).read_bytes(), now=utcnow())
imported = time.perf_counter()
verified = verify_bundle(Path(sys.argv[1]), trusted)
done = time.perf_counter()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({
    "verify_s": done - imported,
    "total_s": done - start,
    "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024,
    "size": verified.size,
}))
"""


# The same check through the command line (typer, output formatting included).
CLI_CHILD = """
import json, sys, time
start = time.perf_counter()
from edgeops.cli import main
sys.argv = ["edgeops", "bundle", "verify", sys.argv[1], "--root", sys.argv[2], "--json"]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
done = time.perf_counter()
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"exit": code, "total_s": done - start,
                  "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024}), file=sys.stderr)
"""


def onnx_model(values: int) -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    constant = np.random.default_rng(0).random(values, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "c"], ["y"])],
        "add",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [values])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [values])],
        [numpy_helper.from_array(constant, "c")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def measure(bundle: Path, root: Path, runs: int) -> dict[str, float]:
    results = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(bundle), str(root)],
            check=True,
            capture_output=True,
            text=True,
        )
        results.append(json.loads(out.stdout))
    cli = []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", CLI_CHILD, str(bundle), str(root)],
            check=True,
            capture_output=True,
            text=True,
        )
        cli.append(json.loads(out.stderr.strip().splitlines()[-1]))
        assert cli[-1]["exit"] in (0, None), out.stderr
    return {
        "bundle_mb": round(results[0]["size"] / 1e6, 2),
        "cli_s_median": round(statistics.median(r["total_s"] for r in cli), 4),
        "cli_peak_rss_mb_max": round(max(r["peak_rss_mb"] for r in cli), 1),
        "verify_s_median": round(statistics.median(r["verify_s"] for r in results), 4),
        "process_s_median": round(statistics.median(r["total_s"] for r in results), 4),
        "peak_rss_mb_max": round(max(r["peak_rss_mb"] for r in results), 1),
        "throughput_mb_s": round(
            results[0]["size"] / 1e6 / statistics.median(r["verify_s"] for r in results), 1
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from edgeops.bundle import create_bundle
    from edgeops.fleet.fleetdir import init_fleet

    with tempfile.TemporaryDirectory(prefix="edgeops-bench-") as work:
        folder = Path(work)
        fleet = init_fleet(folder / "fleet", name="bench")
        keys = fleet.signing_keys("release")
        bundles = {}
        for label, megabytes in (("1MB", 1), ("50MB", 50)):
            model = folder / f"m{megabytes}.onnx"
            model.write_bytes(onnx_model(megabytes * 1_000_000 // 4))
            bundles[label] = folder / f"b{megabytes}.bundle"
            create_bundle(
                model,
                name=f"bench{megabytes}",
                version="1",
                release=megabytes,
                signing_keys=keys,
                output=bundles[label],
            )
        figures = {
            label: measure(path, fleet.root_path, args.runs) for label, path in bundles.items()
        }
    delta = figures["50MB"]["peak_rss_mb_max"] - figures["1MB"]["peak_rss_mb_max"]
    print(
        json.dumps(
            {
                "benchmark": "bundle_verify",
                "runs": args.runs,
                **figures,
                "peak_rss_delta_mb": round(delta, 1),
                "cli_peak_rss_delta_mb": round(
                    figures["50MB"]["cli_peak_rss_mb_max"] - figures["1MB"]["cli_peak_rss_mb_max"],
                    1,
                ),
                "target": "peak RSS of 50MB within 20 MB of 1MB",
                "target_met": delta <= 20,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
