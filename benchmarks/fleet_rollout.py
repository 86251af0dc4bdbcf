"""A rollout of a 3 MB bundle to simulated devices, against plain fan-out of the same bytes.

    python benchmarks/fleet_rollout.py [--devices 200] [--bundle-mb 3] [--chunk-kib 256]

Prints one JSON object. In one run:

* a fleet from ``init_fleet`` and its generated Mosquitto config (TLS, client certificates,
  ACL) on a loopback port; ``--devices`` real agents in ``edgeops simulate`` (one process, or
  ``--processes K``), apart from this process, which runs only the fleet manager, as a fleet
  runs apart from its manager (:class:`~edgeops.fleet.simulate.Simulator`: each agent with
  its own certificate, verifying, health-checking and trialling a real LiteRT model);
* ``rollout_s`` — :class:`~edgeops.fleet.push.Push` of a bundle of ``--bundle-mb`` (a tiny
  model plus an incompressible extra file) in one wave without health gates, from the first
  chunk published until every device reported it committed: publishing, the broker's
  fan-out, each device's fetch, verification, unpacking, health check and its trial window
  (``trial_window_s``, a fixed wait on every device that plain delivery does not have);
* ``plain_paho_s`` — the baseline the target is a ratio of: "the same broker" delivering
  "the same bytes" to as many plain subscribers. After the agents stopped, one plain paho
  client per enrolled device connects to the fleet's own Mosquitto (same TLS listener, same
  ACL) with that device's certificate and client id, and all subscribe at once to the
  rollout's retained chunks; the time until every client has every chunk (bytes counted,
  nothing written, hashed or verified). The subscribers run in as many processes as the
  agents (``--processes``), apart from this one;
* ``plain_paho_plaintext_s`` — the same fan-out from an anonymous plaintext Mosquitto of the
  same binary (``benchmarks/mqtt_fanout.py``'s ``plain_paho_fanout``): what TLS costs the
  baseline;
* ``rollout_vs_plain`` and ``rollout_minus_trial_vs_plain``: the ratios to ``plain_paho_s``;
  ``rollout_vs_plaintext``: to ``plain_paho_plaintext_s``;
* ``manager_publishes`` — what the fleet manager sent: chunks + meta (independent of the
  fleet size) and one directive per device;
* ``median_s_to_phase`` — per update phase, the median over devices of the seconds from
  the push's start to the device entering it (``verifying``: its download is complete);
* ``cpu_s`` — CPU seconds during the rollout of this process (``manager``) and of the
  simulating processes (``devices``: every agent's TLS, hashing, verifying, unpacking, model
  loading, telemetry and simulated requests; ``devices_per_wall_s`` near the number of
  processes means their interpreter locks set the pace), and of the baseline's subscriber
  processes during the baseline (``plain_subscribers``);
* ``broker_cpu_s`` — CPU seconds Mosquitto used during the rollout and during the TLS
  baseline: near the wall time means the broker, not the clients, sets the pace;
* ``devices_rss_mb`` — resident memory of the simulating processes once every agent serves
  the new model (``devices_rss_mb_per_device``: divided by ``--devices``; the libraries each
  process loads once are in it; ``benchmarks/agent_rss.py`` measures one real agent).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_rss import cpu_seconds
from mqtt_fanout import ChunkCounts, _broker_config, plain_paho_fanout

from edgeops.agent.runtimes.testing import tflite_add_model
from edgeops.broker import MosquittoBroker, find_mosquitto, free_port, wait_for_port
from edgeops.bundle import create_bundle
from edgeops.fleet.broker_config import BrokerFiles, write_broker_config
from edgeops.fleet.fleetdir import FleetDir, init_fleet
from edgeops.fleet.push import Push
from edgeops.fleet.rollout import RolloutPolicy
from edgeops.fleet.simulate import Simulator
from edgeops.mqtt import MqttSettings, PahoLink, publish_bundle
from edgeops.trust import SigningKey

FANOUT_FLEET = "bench"  # the fleet name plain_paho_fanout subscribes under


def build_bundle(fleet: FleetDir, folder: Path, megabytes: float) -> Path:
    key = SigningKey.load(fleet.key_path("release"))
    model = folder / "add.tflite"
    model.write_bytes(tflite_add_model())
    inputs = folder / "inputs.npz"
    x = np.ones((1, 4), dtype=np.float32)
    np.savez(inputs, x=np.stack([x, x * 2]))
    padding = folder / "weights.bin"
    padding.write_bytes(random.Random(1).randbytes(int(megabytes * 1024 * 1024)))
    output = folder / "bench.bundle"
    create_bundle(
        model,
        name="bench",
        version="1.0",
        release=1,
        signing_keys=[key],
        output=output,
        test_inputs=inputs,
        extra_files={"weights.bin": padding},
    )
    return output


def phase_medians(fleet_dir: Path, devices: list[str], *, since: float) -> dict[str, float]:
    """Median seconds from the push's start to each device's update events (the agents'
    own timestamps, as the registry ingested them): where the rollout's time goes."""
    from edgeops.fleet.registry import open_registry

    firsts: dict[str, list[float]] = {}
    store = open_registry(fleet_dir)
    try:
        for device_id in devices:
            seen: dict[str, float] = {}
            for event in store.events_for(device_id, limit=100):
                if event.state and event.kind in ("update_progress", "update_result"):
                    ts = event.ts - since
                    seen[event.state] = min(ts, seen.get(event.state, ts))
            for state, ts in seen.items():
                firsts.setdefault(state, []).append(ts)
    finally:
        store.close()
    return {state: round(statistics.median(v), 2) for state, v in sorted(firsts.items())}


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``edgeops simulate --processes K`` runs K children)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """:func:`cpu_seconds` summed over :func:`process_tree`."""
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):  # ended meanwhile
            total += cpu_seconds(member)
    return total


def tree_rss_mb(pid: int) -> float:
    """Resident memory of :func:`process_tree`, in MB (``VmRSS`` summed)."""
    from edgeops.agent.telemetry.system import read_rss_bytes

    return sum(read_rss_bytes(pid=str(member)) or 0 for member in process_tree(pid)) / 2**20


def _tls_subscribers(
    broker_url: str,
    fleet_name: str,
    device_dirs: list[Path],
    digest: str,
    chunks: int,
    barrier: Any,
    results: Any,
    timeout: float,
) -> None:
    """One process's share of :func:`tls_paho_fanout`: connect a plain paho client per
    device, wait at ``barrier`` for every process, subscribe, and put the monotonic time at
    which the last of them had every chunk, and the CPU seconds used meanwhile, on
    ``results``."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edgeops.agent.config import AgentConfig
    from edgeops.mqtt import MqttSettings
    from edgeops.protocol import bundle_chunk_filter

    settings = MqttSettings.from_url(broker_url, client_id="-")
    counts = ChunkCounts(len(device_dirs), chunks)
    clients: list[mqtt.Client] = []

    try:
        for index, folder in enumerate(device_dirs):
            config = AgentConfig.load(folder / "agent.toml")
            if config.tls_ca is None or config.tls_cert is None or config.tls_key is None:
                raise SystemExit(f"{folder}: the device has no TLS files")
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=config.device_id, protocol=mqtt.MQTTv5
            )
            client.tls_set(
                ca_certs=str(config.tls_ca),
                certfile=str(config.tls_cert),
                keyfile=str(config.tls_key),
            )
            ready = threading.Event()
            client.on_connect = lambda c, u, f, rc, p, ready=ready: ready.set()
            client.on_message = counts.on_message_for(index)
            client.connect(settings.host, settings.port, keepalive=60)
            client.loop_start()
            clients.append(client)
            if not ready.wait(10):
                raise SystemExit(f"plain subscriber {config.device_id} did not connect")
        barrier.wait(timeout)
        cpu_before = os.times()
        for client in clients:
            client.subscribe(bundle_chunk_filter(fleet_name, digest), qos=1)
        counts.wait_all(timeout, "TLS fan-out")
        cpu_after = os.times()
        cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        results.put((time.monotonic(), cpu))
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()


def tls_paho_fanout(
    fleet: FleetDir,
    device_dirs: list[Path],
    digest: str,
    chunks: int,
    *,
    processes: int = 1,
    timeout: float = 300,
) -> tuple[float, float]:
    """Seconds until one plain paho client per device (its own certificate and client id,
    through the fleet broker's TLS listener and ACL) has every retained chunk of ``digest``,
    and the CPU seconds the subscribing processes used meanwhile.

    The clients are spread over ``processes`` processes, as the agents are, so that the
    baseline is not held back by one interpreter's lock where the agents are not.
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # this process has threads: no fork
    barrier = context.Barrier(processes + 1)
    results = context.Queue()
    workers = [
        context.Process(
            target=_tls_subscribers,
            args=(
                fleet.broker_url,
                fleet.name,
                device_dirs[index::processes],
                digest,
                chunks,
                barrier,
                results,
                timeout,
            ),
        )
        for index in range(processes)
    ]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(timeout)
        started = time.monotonic()
        finished = [results.get(timeout=timeout) for _ in workers]
    finally:
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
    return float(max(end for end, _ in finished) - started), sum(cpu for _, cpu in finished)


def wait_online(fleet: FleetDir, count: int, *, timeout: float) -> None:
    """Until ``count`` devices have a retained online state on the broker."""
    from edgeops.fleet.push import manager_link
    from edgeops.protocol import StateMessage

    online: dict[str, bool] = {}
    link = manager_link(fleet)
    link.connect(timeout=10)
    try:
        link.subscribe(
            f"edgeops/v1/{fleet.name}/dev/+/state",
            lambda m: online.__setitem__(
                m.topic.split("/")[4], bool(m.payload) and StateMessage.from_bytes(m.payload).online
            ),
        ).wait(10)
        deadline = time.monotonic() + timeout
        while sum(online.values()) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {sum(online.values())} of {count} devices came online")
            time.sleep(0.2)
    finally:
        link.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--bundle-mb", type=float, default=3.0)
    parser.add_argument("--chunk-kib", type=int, default=256)
    parser.add_argument("--trial-window-s", type=float, default=1.0)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="Run the devices in this many edgeops simulate processes (not this one); "
        "RSS per agent is then not measured.",
    )
    parser.add_argument(
        "--tmp",
        type=Path,
        default=None,
        help="Where the fleet and the devices' state folders go (e.g. /dev/shm: the agents "
        "fsync every state change, and N simulated devices share one disk where real ones "
        "have one each).",
    )
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="edgeops-bench-rollout-", dir=args.tmp))
    broker: subprocess.Popen[bytes] | None = None
    children: subprocess.Popen[bytes] | None = None
    try:
        port = free_port()
        fleet = init_fleet(
            folder / "fleet", name="bench-fleet", broker_url=f"mqtts://127.0.0.1:{port}"
        )
        write_broker_config(fleet.path)
        binary = find_mosquitto()
        if binary is None:
            raise SystemExit("mosquitto is not installed")
        with (folder / "broker.log").open("wb") as log:
            broker = subprocess.Popen(
                [binary, "-c", str(BrokerFiles.of(fleet.path).config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_for_port("127.0.0.1", port, 10):
            raise SystemExit((folder / "broker.log").read_text())
        bundle = build_bundle(fleet, folder, args.bundle_mb)

        started = time.perf_counter()
        sim = Simulator(  # enrolls here; edgeops simulate runs the enrolled devices
            fleet.path,
            devices=args.devices,
            board="generic-x86_64",
            telemetry_interval_s=5.0,
            trial_window_s=args.trial_window_s,
            request_interval_s=0.5,
        )
        sim.enroll()
        enroll_s = time.perf_counter() - started
        ids = list(sim.devices)
        # The devices run in their own processes (edgeops simulate), as the baseline's plain
        # subscribers do and as a fleet runs apart from its manager: this one only runs the
        # fleet manager, so neither side's threads queue for the other's interpreter lock.
        children = subprocess.Popen(
            [
                *(sys.executable, "-m", "edgeops", "simulate", "--fleet", str(fleet.path)),
                *("--devices", str(args.devices), "--processes", str(args.processes)),
                *("--board", "generic-x86_64", "--telemetry-interval", "5"),
                *("--trial-window", str(args.trial_window_s), "--request-interval", "0.5"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_online(fleet, args.devices, timeout=180)
        start_s = time.perf_counter() - started - enroll_s

        policy = RolloutPolicy(
            waves=(100.0,),
            soak_s=0.0,
            max_error_rate_percent=None,
            max_p95_regression_percent=None,
            wave_timeout_s=600.0,
        )
        with Push(
            fleet.path, bundle, group="sim", policy=policy, chunk_size=args.chunk_kib * 1024
        ) as push:
            digest = push.verify().sha256
            broker_cpu_before = cpu_seconds(broker.pid)
            devices_cpu_before = tree_cpu_seconds(children.pid)
            began = time.perf_counter()
            began_wall = time.time()
            cpu_before = os.times()
            push.prepare()
            prepared = time.perf_counter() - began
            result = push.run()
            rollout_s = time.perf_counter() - began
            broker_rollout_cpu_s = cpu_seconds(broker.pid) - broker_cpu_before
            devices_cpu_s = tree_cpu_seconds(children.pid) - devices_cpu_before
            cpu_after = os.times()
        cpu_s = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        if not result.succeeded:
            raise SystemExit(f"rollout did not succeed: {result.reason}")
        committed = result.waves[0]["counts"]["committed"]
        phases = phase_medians(fleet.path, ids, since=began_wall)
        time.sleep(2.0)  # a few inference requests and a telemetry sample on the new model
        rss_mb = tree_rss_mb(children.pid)
        children.send_signal(signal.SIGTERM)
        children.wait(120)
        children = None
        device_dirs = [fleet.path / "simulator" / device_id for device_id in ids]
        broker_cpu_before = cpu_seconds(broker.pid)
        plain_s, plain_cpu_s = tls_paho_fanout(
            fleet,
            device_dirs,
            digest,
            result.chunk_publishes - 1,
            processes=args.processes,
        )
        broker_plain_cpu_s = cpu_seconds(broker.pid) - broker_cpu_before
        broker.terminate()
        broker.wait(10)
        broker = None

        data = bundle.read_bytes()
        with MosquittoBroker(_broker_config(), workdir=folder / "plain-broker") as plain:
            publisher = PahoLink(MqttSettings(host=plain.host, port=plain.port, client_id="fleet"))
            publisher.connect(timeout=10)
            meta = publish_bundle(publisher, FANOUT_FLEET, data, chunk_size=args.chunk_kib * 1024)
            publisher.close()
            plaintext_s = plain_paho_fanout(plain, meta.digest, meta.chunk_count, args.devices)
    finally:
        if children is not None:
            children.send_signal(signal.SIGTERM)
            children.wait(120)
        if broker is not None:
            broker.terminate()
            broker.wait(10)
        shutil.rmtree(folder, ignore_errors=True)

    print(
        json.dumps(
            {
                "devices": args.devices,
                "state_on": str(args.tmp or tempfile.gettempdir()),
                "bundle_bytes": len(data),
                "chunk_size": meta.chunk_size,
                "chunks": meta.chunk_count,
                "enroll_s": round(enroll_s, 2),
                "agents_start_s": round(start_s, 2),
                "processes": args.processes,
                "devices_rss_mb": round(rss_mb, 1),
                "devices_rss_mb_per_device": round(rss_mb / args.devices, 2),
                "push_prepare_s": round(prepared, 3),
                "rollout_s": round(rollout_s, 3),
                "committed": committed,
                "trial_window_s": args.trial_window_s,
                "median_s_to_phase": phases,
                "cpu_s": {
                    "manager": round(cpu_s, 2),
                    "devices": round(devices_cpu_s, 2),
                    "devices_per_wall_s": round(devices_cpu_s / rollout_s, 2),
                    "plain_subscribers": round(plain_cpu_s, 2),
                },
                "broker_cpu_s": {
                    "rollout": round(broker_rollout_cpu_s, 2),
                    "plain": round(broker_plain_cpu_s, 2),
                },
                "plain_paho_s": round(plain_s, 3),
                "plain_paho_plaintext_s": round(plaintext_s, 3),
                "rollout_vs_plain": round(rollout_s / plain_s, 2),
                "rollout_minus_trial_vs_plain": round(
                    (rollout_s - args.trial_window_s) / plain_s, 2
                ),
                "rollout_vs_plaintext": round(rollout_s / plaintext_s, 2),
                "manager_publishes": {
                    "bundle": result.chunk_publishes,
                    "directives": result.directive_publishes,
                },
                "target_ratio": 1.5,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
