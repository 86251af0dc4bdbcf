"""CPU time one agent spends per update on the bytes of a bundle: fetch, then verify+unpack.

    python benchmarks/agent_update_cpu.py [--bundle-mb 3] [--chunk-kib 256] [--updates 20]
                                          [--tmp /dev/shm]

Prints one JSON object. The bundle is the one ``benchmarks/fleet_rollout.py`` rolls out (a
tiny LiteRT model, test vectors and ``--bundle-mb`` of incompressible extra data), signed
under a fleet from ``init_fleet``. Each figure is the median over ``--updates`` repetitions
of this process's CPU seconds (``time.process_time``, every thread), so a busy shared machine
changes it less than wall time:

* ``fetch_cpu_ms`` — a :class:`~edgeops.mqtt.BundleFetcher` on an in-memory
  :class:`~edgeops.mqtt.fake.FakeBroker` that holds the retained chunks, writing the bundle
  to a file under ``--tmp`` as the agent does (chunk and whole-file SHA-256, writes, the
  progress callback). No broker, TLS or socket: the fetcher's own work;
* ``stage_cpu_ms`` — :class:`agent.daemon.LibraryStager` ``stage()`` of the fetched file into
  an empty folder, told (as the agent tells it after its own fetch) that the fetcher checked
  the whole file's digest: what the agent's verifying phase costs (manifest signature,
  member digests, writing and syncing the members, keeping the manifest);
* ``stage_rehash_cpu_ms`` — the same stage hashing the whole file again, as for a file the
  process did not fetch itself (and as every stage did before the stager could be told);
* ``update_cpu_ms`` — fetch plus stage; ``stage_wall_ms`` — the stage's wall time, fsyncs
  included.
"""

from __future__ import annotations

import argparse
import inspect
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fleet_rollout import build_bundle

from edgeops.agent.daemon import LibraryStager
from edgeops.fleet.fleetdir import init_fleet
from edgeops.mqtt import BundleFetcher, publish_bundle
from edgeops.mqtt.fake import FakeBroker, FakeLink
from edgeops.trust import TrustedState, utcnow


def fetch_once(broker: FakeBroker, fleet: str, digest: str, size: int, path: Path) -> float:
    link = FakeLink(broker, "device")
    link.connect()
    progress: list[int] = []
    started = time.process_time()
    with path.open("w+b") as sink:
        fetcher = BundleFetcher(
            link,
            fleet,
            digest=digest,
            size=size,
            sink=sink,
            on_progress=lambda received, total: progress.append(received),
        )
        fetcher.start()
        fetcher.wait(30)
    spent = time.process_time() - started
    link.close()
    return spent


def stage_once(
    bundle: Path, dest: Path, digest: str, size: int, root: bytes, *, digest_checked: bool
) -> tuple[float, float]:
    trusted = TrustedState(root, now=utcnow())
    # A stager from before ``digest_checked`` existed always hashed the whole file again.
    told = {"digest_checked": True} if digest_checked else {}
    started, wall = time.process_time(), time.perf_counter()
    LibraryStager().stage(
        bundle,
        dest / "files",
        digest=digest,
        size=size,
        trusted=trusted,
        board=None,
        last_release_counter=None,
        max_unpacked=1024**3,
        latency_runs=5,
        **told,
    )
    return time.process_time() - started, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bundle-mb", type=float, default=3.0)
    parser.add_argument("--chunk-kib", type=int, default=256)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--tmp", default=None, help="folder for the files (e.g. /dev/shm)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="edgeops-bench-update-", dir=args.tmp) as work:
        folder = Path(work)
        fleet = init_fleet(folder / "fleet", name="bench")
        source = build_bundle(fleet, folder, args.bundle_mb)
        root = fleet.root_path.read_bytes()
        broker = FakeBroker()
        publisher = FakeLink(broker, "fleet")
        publisher.connect()
        meta = publish_bundle(publisher, "bench", source, chunk_size=args.chunk_kib * 1024)
        can_skip = "digest_checked" in inspect.signature(LibraryStager.stage).parameters
        fetch: list[float] = []
        stage: list[float] = []
        rehash: list[float] = []
        stage_wall: list[float] = []
        for index in range(args.updates):
            download = folder / f"download-{index}.part"
            fetch.append(fetch_once(broker, "bench", meta.digest, meta.total_size, download))
            if download.read_bytes() != source.read_bytes():
                raise RuntimeError("the fetched bundle differs from the published one")
            for checked in (True, False):
                dest = folder / f"staging-{index}-{checked}"
                cpu, wall = stage_once(
                    download,
                    dest,
                    meta.digest,
                    meta.total_size,
                    root,
                    digest_checked=checked and can_skip,
                )
                if checked:
                    stage.append(cpu)
                    stage_wall.append(wall)
                else:
                    rehash.append(cpu)
                shutil.rmtree(dest)
            download.unlink()
    result: dict[str, Any] = {
        "benchmark": "agent_update_cpu",
        "bundle_bytes": meta.total_size,
        "chunks": meta.chunk_count,
        "updates": args.updates,
        "fetch_cpu_ms": round(statistics.median(fetch) * 1000, 2),
        "stage_cpu_ms": round(statistics.median(stage) * 1000, 2),
        "stage_rehash_cpu_ms": round(statistics.median(rehash) * 1000, 2),
        "stager_told_digest_checked": can_skip,
        "update_cpu_ms": round((statistics.median(fetch) + statistics.median(stage)) * 1000, 2),
        "stage_wall_ms": round(statistics.median(stage_wall) * 1000, 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
