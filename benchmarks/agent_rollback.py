"""Rollback after a failed trial: time from the failing measurement to the old model serving.

Prints one JSON object. A real agent (in this process) on a local Mosquitto installs a first
bundle (real LiteRT model ``y = x + 1``), then receives ``--rounds`` bundles whose trial
policy no real model can meet (p95 ≤ 1 ns), while a client thread sends requests without
pause. For each round two figures:

* ``agent_s``: from the trial measurement that failed to the instant the holder serves the
  old model again (``Agent.rollback_timings``, same monotonic clock);
* ``client_s``: from that measurement to the first response computed by the old model that
  the client receives (what an app sees).

Target (issue 4): ≤ 1 s. ``failed_requests`` must be 0 (zero downtime during the swaps).

    python benchmarks/agent_rollback.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeops.agent.config import AgentConfig
from edgeops.agent.daemon import Agent
from edgeops.agent.runtimes.testing import tflite_add_model
from edgeops.agent.updater import Phase
from edgeops.broker import MosquittoBroker
from edgeops.bundle import create_bundle
from edgeops.mqtt import MqttSettings, PahoLink, publish_bundle
from edgeops.protocol import device_directive_topic
from edgeops.trust import BundleRef, RolloutPolicy
from edgeops.trust.testing import MemoryFleet

FLEET = "bench"
DEVICE = "bench-1"
X = np.ones((1, 4), dtype=np.float32)


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgeops-bench-rollback-"))
    fleet = MemoryFleet(FLEET)
    state_dir = work / "state"
    state_dir.mkdir()
    (state_dir / "root.json").write_bytes(fleet.root_bytes)
    inputs = work / "inputs.npz"
    np.savez(inputs, x=np.stack([X, X * 2]))

    with MosquittoBroker(workdir=work / "broker") as broker:
        manager = PahoLink(MqttSettings(host=broker.host, port=broker.port, client_id="manager"))
        manager.connect(timeout=10)
        config = AgentConfig(
            device_id=DEVICE,
            fleet=FLEET,
            broker_url=f"mqtt://{broker.host}:{broker.port}",
            state_dir=state_dir,
            board="generic-x86_64",
            api_enabled=False,
            telemetry_interval_s=3600.0,
            min_requests=5,
            trial_check_interval_s=0.05,
        )
        agent = Agent(config)
        agent.start()
        sequence = 0

        def push(release: int, constant: float, **policy: Any) -> str:
            nonlocal sequence
            model = work / f"add{constant}.tflite"
            model.write_bytes(tflite_add_model(constant=constant))
            bundle = work / f"b{release}.bundle"
            create_bundle(
                model,
                name="adder",
                version=str(release),
                release=release,
                signing_keys=fleet.keys["release"],
                output=bundle,
                test_inputs=inputs,
            )
            meta = publish_bundle(manager, FLEET, bundle)
            sequence += 1
            directive = fleet.directive(
                device=DEVICE,
                sequence=sequence,
                issued=fleet.now,
                bundle=BundleRef(
                    sha256=meta.digest, size=meta.total_size, name="adder", version="1", release=1
                ),
                rollout=RolloutPolicy(**policy),
            )
            manager.publish(
                device_directive_topic(FLEET, DEVICE), fleet.sign(directive), retain=True
            ).wait(5)
            return meta.digest

        first = push(1, 1.0, trial_window_s=0.2)
        wait_for(
            lambda: agent.state.committed is not None and agent.state.committed.digest == first
        )

        responses: list[tuple[float, float]] = []
        failures: list[str] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                try:
                    y = float(agent.infer({"x": X})["y"][0, 0])
                except Exception as exc:
                    failures.append(repr(exc))
                    continue
                responses.append((time.monotonic(), y))

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        rounds = []
        for index in range(args.rounds):
            before = len(agent.rollback_timings)
            push(2 + index, 10.0, trial_window_s=30.0, max_p95_latency_ms=1e-6)
            wait_for(lambda b=before: len(agent.rollback_timings) > b)
            wait_for(lambda: agent.phase is Phase.ROLLED_BACK)
            timing = agent.rollback_timings[-1]
            seen = next(t for t, y in list(responses) if t >= timing.measured_at and y == 2.0)
            rounds.append(
                {
                    "agent_s": round(timing.seconds, 6),
                    "client_s": round(seen - timing.measured_at, 6),
                }
            )
        stop.set()
        thread.join(5)
        agent.stop()
        manager.close()

    agent_times = [r["agent_s"] for r in rounds]
    client_times = [r["client_s"] for r in rounds]
    print(
        json.dumps(
            {
                "benchmark": "agent_rollback",
                "rounds": len(rounds),
                "agent_s_p50": statistics.median(agent_times),
                "agent_s_max": max(agent_times),
                "client_s_p50": statistics.median(client_times),
                "client_s_max": max(client_times),
                "target_s": 1.0,
                "within_target": max(client_times) <= 1.0,
                "requests": len(responses),
                "failed_requests": len(failures),
                "trial_check_interval_s": config.trial_check_interval_s,
                "per_round": rounds,
                "min_requests": config.min_requests,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
