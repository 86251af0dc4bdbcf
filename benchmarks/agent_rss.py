"""Footprint of a running agent: RSS and idle CPU of the ``edgeops-agent`` process.

Prints one JSON object. The agent runs as its own process (``python -m
edgeops.agent.daemon --config agent.toml``) connected to a local Mosquitto, with the
inference API up, after it installed and committed a signed bundle through the normal update
path; then it is left idle and measured from ``/proc/<pid>``: RSS (VmRSS, and VmHWM, the
peak) and CPU time over ``--idle-s`` seconds (100 % = one core).

The model is YOLOv8n int8 converted by ``edgeops.converters``, or ``--model FILE.tflite``;
``--tiny`` uses a one-op model to show the agent's own share. The converted model is cached
in the edgeops cache under a name keyed on what produced it (the converter's source, the
edgeops version, the options and the ONNX file; :func:`converter_fingerprint`), so a changed
converter is never measured through a stale file.

Targets (issue 4): RSS ≤ 64 MB with YOLOv8n int8 loaded; idle CPU ≤ 1 %.

The agent gets the systemd unit's ``Environment=`` (``hardware/assets/edgeops-agent.service``:
``PYTHONOPTIMIZE=2``, ``MALLOC_ARENA_MAX=2``), as on a board; ``--plain-python`` leaves it
out.

``--mappings N`` adds the N largest contributors to RSS from ``/proc/<pid>/smaps``, grouped
by file (anonymous memory, mostly the Python and native heaps, as ``[anon]``).
``--requests N`` sends N inference requests (random input, binary tensors) to the agent's API
after the install and before the idle period, and reports their client-side latency: the
memory of an agent that has served, not only of one that has loaded its model.

    python benchmarks/agent_rss.py [--idle-s 10] [--model FILE | --tiny] [--mappings 12]
                                   [--requests 50]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgeops.broker import MosquittoBroker
from edgeops.bundle import create_bundle
from edgeops.hardware import unit_environment
from edgeops.mqtt import MqttSettings, PahoLink, publish_bundle
from edgeops.protocol import device_directive_topic
from edgeops.trust import BundleRef, RolloutPolicy
from edgeops.trust.testing import MemoryFleet

FLEET = "bench"
DEVICE = "bench-rss"
YOLO_SHAPE = (1, 3, 320, 320)


def converter_fingerprint(
    options: object, source: Path, *, converter_dir: Path | None = None
) -> str:
    """SHA-256 over what a converted model depends on: the edgeops version, every ``.py``
    file of the converter package (path and bytes), ``repr(options)`` and the source model."""
    from edgeops import __version__

    if converter_dir is None:
        spec = importlib.util.find_spec("edgeops.converters")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("edgeops.converters is not installed")
        converter_dir = Path(next(iter(spec.submodule_search_locations)))
    digest = hashlib.sha256()
    for part in (b"edgeops", __version__.encode(), repr(options).encode()):
        digest.update(len(part).to_bytes(8, "big") + part)
    for file in sorted(converter_dir.rglob("*.py")):
        for part in (file.relative_to(converter_dir).as_posix().encode(), file.read_bytes()):
            digest.update(len(part).to_bytes(8, "big") + part)
    digest.update(hashlib.sha256(source.read_bytes()).digest())
    return digest.hexdigest()


def cached_model_path(folder: Path, stem: str, fingerprint: str) -> Path:
    """Where the model of ``fingerprint`` is cached: ``<stem>-<first 16 hex digits>.tflite``."""
    return folder / f"{stem}-{fingerprint[:16]}.tflite"


def yolov8n_int8() -> Path:
    """YOLOv8n converted to full int8 by our converter, cached across runs while the
    converter, the options and the source stay the same; older conversions are removed."""
    from edgeops import assets
    from edgeops.converters.pipeline import ConvertOptions, convert

    photos = assets.photos()
    source = assets.yolov8n_onnx()
    options = ConvertOptions(
        quantize="int8",
        input_shapes={"images": YOLO_SHAPE},
        calibration=photos[0].parent,
        preset="yolov8",
        calibration_count=16,
    )
    folder = assets.cache_dir() / "benchmarks"
    cached = cached_model_path(folder, "yolov8n_int8", converter_fingerprint(options, source))
    if cached.exists():
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("yolov8n_int8*.tflite"):
        stale.unlink()
    convert(source, cached, options)
    return cached


def tiny_model(folder: Path) -> Path:
    from edgeops.agent.runtimes.testing import tflite_add_model

    path = folder / "add.tflite"
    path.write_bytes(tflite_add_model())
    return path


def api_url(log: Path, timeout: float = 30.0) -> str:
    """The ``http://host:port`` the agent logged when its inference API started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if "inference API listening on http://" in line:
                return line.rsplit(" ", 1)[1]
        time.sleep(0.1)
    raise SystemExit(f"the agent did not log its API address; log:\n{log.read_text()}")


def serve_requests(url: str, model: Path, count: int) -> list[float]:
    """Send ``count`` inference requests for the bundle's model; their latencies in ms."""
    import http.client
    import urllib.parse

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from agent_api_overhead import random_inputs

    from edgeops.agent.runtimes import load_model
    from edgeops.agent.serving import HEADER_LENGTH, decode_response, encode_request

    inputs = random_inputs(load_model(model).inputs)
    address = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)
    latencies: list[float] = []
    for _ in range(count):
        start = time.perf_counter()
        body, headers = encode_request(inputs)
        conn.request("POST", "/v2/models/model/infer", body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200:
            raise SystemExit(f"inference failed ({response.status}): {payload[:300]!r}")
        length = response.getheader(HEADER_LENGTH)
        decode_response(payload, int(length) if length else None)
        latencies.append((time.perf_counter() - start) * 1000.0)
    conn.close()
    return latencies


def proc_status(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def rss_by_mapping(pid: int) -> dict[str, int]:
    """RSS in bytes per mapped file from ``/proc/<pid>/smaps``; anonymous maps as ``[anon]``."""
    totals: dict[str, int] = {}
    name = "[anon]"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if not fields:
            continue
        if not fields[0].endswith(":"):  # a mapping header: address perms offset dev inode [path]
            name = fields[5] if len(fields) > 5 and not fields[5].startswith("[stack") else "[anon]"
            if name.startswith("[") and name not in ("[heap]", "[anon]"):
                name = "[anon]"
        elif fields[0] == "Rss:":
            totals[name] = totals.get(name, 0) + int(fields[1]) * 1024
    return totals


def smaps_rollup(pid: int) -> dict[str, int]:
    """Totals from ``/proc/<pid>/smaps_rollup`` in bytes: how much of RSS is file-backed and
    clean (reclaimable under pressure) and how much is private, dirty or anonymous."""
    keep = ("Rss", "Pss", "Shared_Clean", "Private_Clean", "Private_Dirty", "Anonymous")
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if key in keep:
            values[key] = int(rest.split()[0]) * 1024
    return values


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-s", type=float, default=10.0)
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--model", type=Path)
    choice.add_argument("--tiny", action="store_true")
    parser.add_argument("--mappings", type=int, default=0, metavar="N")
    parser.add_argument(
        "--plain-python",
        action="store_true",
        help="Run the agent without the systemd unit's environment (PYTHONOPTIMIZE=2 and "
        "the rest), to see what it saves.",
    )
    parser.add_argument("--requests", type=int, default=0, metavar="N")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgeops-bench-rss-"))
    if args.model:
        model, label = args.model, args.model.name
    elif args.tiny:
        model, label = tiny_model(work), "tiny add model"
    else:
        model, label = yolov8n_int8(), "YOLOv8n int8 (edgeops.converters)"

    fleet = MemoryFleet(FLEET)
    state_dir = work / "state"
    state_dir.mkdir()
    (state_dir / "root.json").write_bytes(fleet.root_bytes)
    bundle = work / "model.bundle"
    create_bundle(
        model,
        name="model",
        version="1",
        release=1,
        signing_keys=fleet.keys["release"],
        output=bundle,
    )

    with MosquittoBroker(workdir=work / "broker") as broker:
        (state_dir / "agent.toml").write_text(
            "\n".join(
                [
                    "[device]",
                    f'id = "{DEVICE}"',
                    f'fleet = "{FLEET}"',
                    'board = "auto"',
                    "[broker]",
                    f'url = "mqtt://{broker.host}:{broker.port}"',
                    "[agent]",
                    "telemetry_interval_s = 30",
                    "[api]",
                    "port = 0",
                    "[update]",
                    "trial_window_s = 0.5",
                    "",
                ]
            )
        )
        log = (work / "agent.log").open("wb")
        # As systemd starts it on a board (the unit's Environment=), unless --plain-python.
        unit_env = {} if args.plain_python else unit_environment()
        agent_env = {**os.environ, **unit_env}
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edgeops.agent.daemon",
                "--config",
                str(state_dir / "agent.toml"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=agent_env,
        )
        try:
            manager = PahoLink(
                MqttSettings(host=broker.host, port=broker.port, client_id="manager")
            )
            manager.connect(timeout=10)
            meta = publish_bundle(manager, FLEET, bundle)
            directive = fleet.directive(
                device=DEVICE,
                sequence=1,
                bundle=BundleRef(
                    sha256=meta.digest, size=meta.total_size, name="model", version="1", release=1
                ),
                rollout=RolloutPolicy(trial_window_s=0.5),
            )
            manager.publish(
                device_directive_topic(FLEET, DEVICE), fleet.sign(directive), retain=True
            ).wait(5)
            deadline = time.monotonic() + 120
            while True:
                state = (
                    json.loads((state_dir / "state.json").read_bytes() or b"{}")
                    if (state_dir / "state.json").exists()
                    else {}
                )
                if (state.get("committed") or {}).get("digest") == meta.digest:
                    break
                if time.monotonic() > deadline or agent.poll() is not None:
                    raise SystemExit(
                        f"bundle not committed; log:\n{(work / 'agent.log').read_text()}"
                    )
                time.sleep(0.1)
            manager.close()
            latencies = (
                serve_requests(api_url(work / "agent.log"), model, args.requests)
                if args.requests
                else []
            )
            time.sleep(2.0)  # let start-up work (loading, first sample) settle
            cpu_start, wall_start = cpu_seconds(agent.pid), time.monotonic()
            time.sleep(args.idle_s)
            cpu_end, wall_end = cpu_seconds(agent.pid), time.monotonic()
            memory = proc_status(agent.pid)
            mappings = rss_by_mapping(agent.pid) if args.mappings else {}
            rollup = smaps_rollup(agent.pid) if args.mappings else {}
        finally:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
            log.close()

    rss_mb = memory["VmRSS"] / 2**20
    cpu_percent = 100.0 * (cpu_end - cpu_start) / (wall_end - wall_start)
    top = sorted(mappings.items(), key=lambda item: item[1], reverse=True)[: args.mappings]
    extra = (
        {
            "smaps_rollup_mb": {k: round(v / 2**20, 1) for k, v in rollup.items()},
            "rss_mb_by_mapping": {k: round(v / 2**20, 2) for k, v in top},
        }
        if top
        else {}
    )
    print(
        json.dumps(
            {
                "benchmark": "agent_rss",
                "model": label,
                "model_bytes": model.stat().st_size,
                "agent_environment": unit_env,
                "requests": args.requests,
                **(
                    {
                        "request_p50_ms": round(sorted(latencies)[len(latencies) // 2], 2),
                        "first_request_ms": round(latencies[0], 2),
                    }
                    if latencies
                    else {}
                ),
                "rss_mb": round(rss_mb, 1),
                "peak_rss_mb": round(memory["VmHWM"] / 2**20, 1),
                "idle_cpu_percent": round(cpu_percent, 3),
                "idle_s": args.idle_s,
                "rss_target_mb": 64,
                "cpu_target_percent": 1.0,
                "rss_within_target": rss_mb <= 64,
                "cpu_within_target": cpu_percent <= 1.0,
                "clean_exit": agent.returncode == 0,
                **extra,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
