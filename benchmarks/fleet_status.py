"""``edgeops status`` for a 1,000-device fleet: wall time of the real command.

Seeds a registry file with ``--devices`` devices (state, bundle, 20 telemetry samples each),
then runs ``edgeops status --fleet DIR`` (table) and ``--json`` as subprocesses, the way a
user runs them, best of ``--repeat``. Target: <= 1 s. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeops.fleet.registry import BundleRecord, StateUpdate, TelemetryRow, open_registry

DIGESTS = ("d" * 64, "e" * 64)


def seed(folder: Path, devices: int, samples: int) -> None:
    store = open_registry(folder)
    now = time.time()
    for i, digest in enumerate(DIGESTS):
        store.add_bundle(
            BundleRecord(digest=digest, name="detector", version=f"1.{i}", release=i, size=1)
        )
    for d in range(devices):
        store.add_device(f"dev-{d:05d}", group=f"group-{d % 10}", board="rpi4", now=now)
    states = [
        StateUpdate(
            device_id=f"dev-{d:05d}",
            seq=None,
            ts=now - d,
            online=d % 17 != 0,
            bundle=DIGESTS[d % 2],
            agent_version="0.1.0",
        )
        for d in range(devices)
    ]
    rows = [
        TelemetryRow(
            device_id=f"dev-{d:05d}",
            seq=s,
            ts=now - (samples - s) * 10,
            bundle=DIGESTS[d % 2],
            p95_ms=10.0 + (d % 13),
            error_rate=0.001 * (d % 5),
            drift=0.01 * (d % 7),
            temp_c=45.0 + d % 20,
        )
        for d in range(devices)
        for s in range(1, samples + 1)
    ]
    store.ingest(states=states, telemetry=rows)
    store.close()


def time_command(args: list[str], repeat: int) -> tuple[float, int]:
    best = float("inf")
    size = 0
    env = {**os.environ, "COLUMNS": "200"}
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(args, capture_output=True, check=True, env=env)
        best = min(best, time.perf_counter() - start)
        size = len(done.stdout.splitlines())
    return best, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    edgeops = shutil.which("edgeops") or str(Path(sys.executable).parent / "edgeops")
    with tempfile.TemporaryDirectory(prefix="edgeops-status-") as tmp:
        folder = Path(tmp)
        seed(folder, args.devices, args.samples)
        table_s, table_lines = time_command([edgeops, "status", "--fleet", tmp], args.repeat)
        json_s, _ = time_command([edgeops, "status", "--fleet", tmp, "--json"], args.repeat)
        help_s, _ = time_command([edgeops, "--version"], args.repeat)
    print(
        json.dumps(
            {
                "benchmark": "fleet_status",
                "devices": args.devices,
                "telemetry_rows": args.devices * args.samples,
                "status_table_s": table_s,
                "status_table_lines": table_lines,
                "status_json_s": json_s,
                "cli_startup_s": help_s,
                "target_s": 1.0,
                "meets_target": max(table_s, json_s) <= 1.0,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
