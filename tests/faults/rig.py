"""The fault suite's rig: a fleet folder from ``edgeops fleet init`` with its generated
Mosquitto config (TLS client certificates, ACL, persistence), signed releases of a real
model (``y = x + release``), and a recorder that listens to every device's events and
telemetry for the whole test.

The recorder is a second fleet-manager identity (``[broker] managers``) with a persistent
session, so it stays subscribed across broker restarts while the manager's own identity is
free for ``edgeops push``; what it receives is the evidence for "nothing lost". It also
publishes what a test sends by hand (chunks, directives): it has the manager's rights.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgeops.agent.config import AgentConfig
from edgeops.agent.daemon import Agent
from edgeops.agent.runtimes.testing import tflite_add_model
from edgeops.broker import find_mosquitto, free_port, wait_for_port
from edgeops.bundle import create_bundle, verify_bundle
from edgeops.fleet.broker_config import BrokerFiles, write_broker_config
from edgeops.fleet.ca import issue_certificate
from edgeops.fleet.fleetdir import FleetDir, init_fleet
from edgeops.fleet.ingest import Ingestor
from edgeops.fleet.push import Push, PushResult
from edgeops.fleet.registry import RegistryStore, open_registry
from edgeops.fleet.rollout import RolloutPolicy
from edgeops.fleet.simulate import Simulator
from edgeops.mqtt import Message, MqttSettings, PahoLink, TlsSettings, publish_bundle
from edgeops.protocol import (
    EventMessage,
    TelemetryMessage,
    device_directive_topic,
    events_topic,
    parse_topic,
)
from edgeops.trust import BundleRef, SigningKey, create_directive, sign_metadata
from edgeops.trust import RolloutPolicy as DirectivePolicy

FLEET = "demo"
RECORDER = "fault-recorder"
# Several chunks per bundle (a bundle of the tiny model is about 10 KiB).
CHUNK_SIZE = 2048
X = np.ones((1, 4), dtype=np.float32)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    if not predicate():
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class FaultRig:
    """A fleet folder, its Mosquitto (run from the fleet's own config), the recorder's
    link (``link``) and signed releases."""

    def __init__(self, root: Path) -> None:
        self.root = root / "fleet"
        self.port = free_port()
        init_fleet(self.root, name=FLEET, broker_url=f"mqtts://127.0.0.1:{self.port}")
        self.dir = FleetDir.open(self.root)
        self.files = BrokerFiles.of(self.root)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "broker.log"
        self.link: PahoLink | None = None
        self.received: list[Message] = []
        self._lock = threading.Lock()
        self.sequence = 0
        toml = self.root / "edgeops.toml"
        text = toml.read_text()
        assert "[broker]\n" in text
        toml.write_text(
            text.replace(
                "[broker]\n", f'[broker]\nmanagers = ["edgeops-fleet-manager", "{RECORDER}"]\n', 1
            )
        )
        write_broker_config(self.root)
        key_pem, cert_pem = issue_certificate(self.root, RECORDER, kind="manager")
        (self.root / f"{RECORDER}.key").write_bytes(key_pem)
        (self.root / f"{RECORDER}.crt").write_bytes(cert_pem)
        self.telemetry: dict[str, list[int]] = {}
        self.dropped: dict[str, int] = {}
        """The largest running total of dropped entries each device reported."""
        self.store: RegistryStore | None = None
        self.ingestor: Ingestor | None = None
        self._telemetry_lock = threading.Lock()
        self.release_key = SigningKey.load(self.dir.key_path("release"))
        self.bundle_dir = root / "bundles"
        self.bundle_dir.mkdir()
        self.inputs = self.bundle_dir / "inputs.npz"
        np.savez(self.inputs, x=np.stack([X, X * 2, X * 3]))
        self._bundles: dict[int, tuple[Path, str]] = {}

    # ------------------------------------------------------------------ broker

    def _tls(self, name: str) -> TlsSettings:
        return TlsSettings(
            cafile=self.dir.ca_cert,
            certfile=self.root / f"{name}.crt",
            keyfile=self.root / f"{name}.key",
        )

    def _start_broker(self) -> None:
        binary = find_mosquitto()
        assert binary, "mosquitto is not installed"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, "-c", str(self.files.config)], stdout=log, stderr=subprocess.STDOUT
            )
        assert wait_for_port("127.0.0.1", self.port, 10), self.log.read_text()

    def start(self) -> None:
        self._start_broker()
        self.store = open_registry(self.root)
        self.ingestor = Ingestor(self.store, fleet=FLEET)
        self.link = PahoLink(
            MqttSettings(
                host="127.0.0.1",
                port=self.port,
                client_id=RECORDER,
                clean_session=False,
                tls=self._tls(RECORDER),
            )
        )
        self.link.connect(timeout=10)
        self.link.subscribe(f"edgeops/v1/{FLEET}/dev/+/events", self._on_event).wait(5)
        self.link.subscribe(f"edgeops/v1/{FLEET}/dev/+/telemetry", self._on_telemetry).wait(5)

    def stop(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        if self.store is not None:
            self.ingestor = None
            self.store.close()
            self.store = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def restart_broker(self, down_s: float = 1.0) -> None:
        """Stop Mosquitto (SIGTERM: it saves its persistence file), wait, start it again
        on the same port; every client reconnects on its own."""
        assert self.process is not None
        self.process.terminate()
        self.process.wait(10)
        time.sleep(down_s)
        self._start_broker()

    # ------------------------------------------------------------------ telemetry

    def _on_telemetry(self, message: Message) -> None:
        topic = parse_topic(message.topic)
        telemetry = TelemetryMessage.from_bytes(message.payload)
        with self._telemetry_lock:
            self.telemetry.setdefault(topic.device_id, []).append(telemetry.seq)
            self.dropped[topic.device_id] = max(
                self.dropped.get(topic.device_id, 0), telemetry.dropped
            )
        if self.ingestor is not None:
            self.ingestor.submit(message.topic, message.payload)

    def _on_event(self, message: Message) -> None:
        with self._lock:
            self.received.append(message)

    def events(self, device_id: str) -> list[EventMessage]:
        """The update events the device sent while the manager link was up."""
        topic = events_topic(FLEET, device_id)
        with self._lock:
            messages = [m for m in self.received if m.topic == topic]
        return [EventMessage.from_bytes(m.payload) for m in messages]

    def received_seqs(self, device_id: str) -> list[int]:
        with self._telemetry_lock:
            return list(self.telemetry.get(device_id, []))

    def assert_telemetry_complete(self, device_id: str) -> None:
        """Nothing lost, nothing counted twice: every sequence number from 1 to the last one
        received reached the recorder (call it once the device's queue is empty), and the
        registry — fed by the recorder and by any ``edgeops push`` that ran, so a message
        reaches it up to twice plus QoS 1 redeliveries — holds each (seq, sample) once."""
        seqs = self.received_seqs(device_id)
        assert seqs, f"{device_id}: no telemetry at all"
        seen = set(seqs)
        missing = [s for s in range(1, max(seqs) + 1) if s not in seen]
        assert not missing, f"{device_id}: telemetry seqs {missing} never arrived"
        assert self.ingestor is not None
        assert self.store is not None
        self.ingestor.flush()
        rows = self.store.telemetry_for(device_id, limit=1_000_000)
        counted = Counter((r.seq, r.idx) for r in rows)
        twice = [key for key, n in counted.items() if n > 1]
        assert not twice, f"{device_id}: telemetry rows counted twice: {twice}"
        assert seen <= {r.seq for r in rows}, f"{device_id}: received seqs missing in the registry"

    # ------------------------------------------------------------------ bundles

    def bundle(self, release: int) -> tuple[Path, str]:
        """The signed bundle of ``release`` (``y = x + release``) and its digest."""
        if release not in self._bundles:
            model = self.bundle_dir / f"add{release}.tflite"
            model.write_bytes(tflite_add_model(constant=float(release)))
            output = self.bundle_dir / f"adder-{release}.bundle"
            create_bundle(
                model,
                name="adder",
                version=f"{release}.0",
                release=release,
                signing_keys=[self.release_key],
                output=output,
                test_inputs=self.inputs,
            )
            digest = verify_bundle(output, self.dir.trusted()).sha256
            self._bundles[release] = (output, digest)
        return self._bundles[release]


def is_root() -> bool:
    return os.geteuid() == 0


GROUP = "sim"


def simulator(rig: FaultRig, devices: int, **options: object) -> Simulator:
    """``devices`` real agents (``sim-000``…) of the rig's fleet, enrolled, not started."""
    return Simulator(
        rig.root,
        devices=devices,
        group=GROUP,
        board="generic-x86_64",
        telemetry_interval_s=0.5,
        trial_window_s=1.0,
        workdir=rig.root.parent / "devices",
        **options,  # type: ignore[arg-type]
    )


def policy(**changes: Any) -> RolloutPolicy:
    """A rollout policy for these scenarios: error-rate gate on, p95 gate off (its own
    test is ``test_push``; with several in-process agents on two shared cores the p95 of
    a millisecond model moves by tens of percent, and latency is not what these scenarios
    break)."""
    values: dict[str, Any] = {
        "canary_count": 1,
        "waves": (100.0,),
        "soak_s": 1.0,
        "wave_timeout_s": 40.0,
        "max_error_rate_percent": 5.0,
        "max_p95_regression_percent": None,
    }
    values.update(changes)
    return RolloutPolicy(**values)


def push(rig: FaultRig, release: int, policy: RolloutPolicy) -> PushResult:
    """``edgeops push`` of ``release`` to the group, in the foreground."""
    bundle, _ = rig.bundle(release)
    with Push(rig.root, bundle, group=GROUP, policy=policy) as job:
        return job.run()


def assert_serving(agent: Agent, release: int) -> None:
    """The agent's in-process inference API answers ``y = x + release``."""
    outputs = agent.infer({"x": X})
    assert outputs, agent.device_id
    for value in outputs.values():
        assert np.allclose(value, X + release), (agent.device_id, value)


class Devices:
    """Devices enrolled one by one (``edgeops device enroll`` + bootstrap install), for
    scenarios that run an agent with its own clock, link or state folder."""

    def __init__(self, rig: FaultRig, folder: Path) -> None:
        self.rig = rig
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.deploy_key = SigningKey.load(rig.dir.key_path("deploy"))
        self.sequences: dict[str, int] = {}
        self.marks: dict[str, int] = {}

    def install(self, device_id: str, state_dir: Path | None = None) -> Path:
        """Enroll the device and install its bootstrap archive; returns agent.toml."""
        from edgeops.agent.enroll import install_bootstrap
        from edgeops.fleet.enroll import enroll

        archive = self.folder / f"{device_id}.tgz"
        enroll(self.rig.root, device_id, output=archive, group="solo", board="generic-x86_64")
        return install_bootstrap(archive, state_dir or self.folder / device_id)

    def agent(
        self, config_path: Path, *, telemetry_interval_s: float = 3600.0, **agent_options: Any
    ) -> Agent:
        """An in-process agent of that config (API off, fast trial checks), not started."""
        config = AgentConfig.load(config_path)
        config = dataclasses.replace(
            config,
            api_enabled=False,
            telemetry_interval_s=telemetry_interval_s,
            min_requests=5,
            trial_check_interval_s=0.05,
        )
        return Agent(config, **agent_options)

    def send(
        self,
        device_id: str,
        release: int,
        *,
        issued: datetime | None = None,
        expires: datetime | None = None,
        window_s: float = 0.3,
        publish: bool = True,
    ) -> str:
        """Publish ``release``'s chunks (unless ``publish`` is false: they are on the broker
        already) and a signed install directive for the device (its next sequence number);
        returns the bundle digest."""
        link = self.rig.link
        assert link is not None
        path, digest = self.rig.bundle(release)
        if publish:
            publish_bundle(link, FLEET, path, chunk_size=CHUNK_SIZE)
        self.marks[device_id] = len(self.rig.events(device_id))
        sequence = self.sequences.get(device_id, 0) + 1
        self.sequences[device_id] = sequence
        directive = create_directive(
            fleet=FLEET,
            device=device_id,
            sequence=sequence,
            bundle=BundleRef(
                sha256=digest,
                size=path.stat().st_size,
                name="adder",
                version=f"{release}.0",
                release=release,
            ),
            issued=issued,
            expires=expires,
            rollout=DirectivePolicy(trial_window_s=window_s),
        )
        payload = sign_metadata(directive, [self.deploy_key])
        link.publish(device_directive_topic(FLEET, device_id), payload, qos=1, retain=True).wait(5)
        return digest

    def outcome(self, device_id: str, digest: str) -> EventMessage | None:
        """The device's first update_result / rolled_back / loop_guard event for ``digest``
        since the last :meth:`send`, or a rejection (which names no bundle: the directive
        that named it was not trusted)."""
        for event in self.rig.events(device_id)[self.marks.get(device_id, 0) :]:
            if event.kind == "rejected" or (
                event.bundle_digest == digest
                and event.kind in ("update_result", "rolled_back", "loop_guard")
            ):
                return event
        return None

    def wait_outcome(self, device_id: str, digest: str, timeout: float = 30.0) -> EventMessage:
        wait_for(
            lambda: self.outcome(device_id, digest) is not None,
            timeout,
            f"the outcome of {digest[:12]} on {device_id}",
        )
        event = self.outcome(device_id, digest)
        assert event is not None
        return event
