"""Rollouts through the secured broker: the fleet side for real, the devices simulated.

The fleet folder comes from ``edgeops fleet init``; the broker runs from its generated
config (TLS client certificates, ACL, CRL). The fleet manager is the real thing: a PahoLink
with the manager certificate, the :class:`Ingestor` writing the registry, the
:class:`RolloutRunner` and :class:`SignedDirectiveSink` signing with the fleet's deploy key.
Each device is a small responder on its own certificate that verifies every directive with
the fleet's root (``TrustedState``), then reports update events and telemetry as an agent
does; its health is set by the test. What each device *received* is recorded on the device
side, through the broker's ACL, so "no device outside the canary ever got the bundle" is
observed where it matters.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeops.broker import find_mosquitto, free_port, wait_for_port
from edgeops.cli import app
from edgeops.cli import commands as _commands  # noqa: F401 - registers the commands
from edgeops.fleet.broker_config import BrokerFiles, enroll_device
from edgeops.fleet.ca import issue_certificate
from edgeops.fleet.fleetdir import MANAGER_COMMON_NAME, FleetDir
from edgeops.fleet.ingest import Ingestor
from edgeops.fleet.registry import SqlStore, open_registry
from edgeops.fleet.rollout import RolloutPolicy, RolloutStatus
from edgeops.fleet.rollout.runner import RolloutRunner, SignedDirectiveSink
from edgeops.mqtt import MqttSettings, PahoLink
from edgeops.mqtt.link import Message
from edgeops.mqtt.settings import TlsSettings
from edgeops.protocol import (
    BundleRef as WireBundleRef,
)
from edgeops.protocol import (
    EventMessage,
    StateMessage,
    TelemetryMessage,
    TelemetrySample,
    device_directive_topic,
    events_topic,
    fleet_ingest_filters,
    state_topic,
    telemetry_topic,
)
from edgeops.trust import TrustedState
from edgeops.trust.metadata import BundleRef

pytestmark = pytest.mark.integration

FLEET = "demo"
GROUP = "lab"
OLD = "a" * 64
NEW = "b" * 64
DEVICES = [f"cam-{i}" for i in range(5)]
POLICY = RolloutPolicy(
    canary_count=1,
    waves=(50.0, 100.0),
    soak_s=0.5,
    wave_timeout_s=15.0,
    max_error_rate_percent=5.0,
    max_p95_regression_percent=25.0,
)


class Broker:
    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = find_mosquitto()
        assert binary, "mosquitto is not installed"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [binary, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        if not wait_for_port("127.0.0.1", self.port, 10):
            self.stop()
            raise AssertionError(self.log.read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def tls_link(fleet: Path, port: int, name: str, cert: Path, key: Path) -> PahoLink:
    link = PahoLink(
        MqttSettings(
            host="127.0.0.1",
            port=port,
            client_id=name,
            tls=TlsSettings(cafile=fleet / "ca" / "ca.crt", certfile=cert, keyfile=key),
        )
    )
    link.connect(timeout=10)
    return link


class Device:
    """Verifies directives with the fleet root and answers like an agent would."""

    def __init__(self, fleet: Path, port: int, device_id: str, *, p95_new: float, errors_new: int):
        key, cert = issue_certificate(fleet, device_id, kind="device")
        enroll_device(fleet, device_id, group=GROUP, board="rpi4", cert_pem=cert)
        folder = fleet / "devices" / device_id
        folder.mkdir(parents=True)
        (folder / "device.key").write_bytes(key)
        (folder / "device.crt").write_bytes(cert)
        self.folder = folder
        self.fleet_dir, self.port, self.device_id = fleet, port, device_id
        self.root = FleetDir.open(fleet).root_bytes()
        self.p95_new, self.errors_new = p95_new, errors_new
        self.running = OLD
        self.last_sequence: int | None = None
        self.received: list[tuple[str, str, int]] = []  # (action, bundle, sequence)
        self.seq = 0
        self.lock = threading.Lock()
        self.link: PahoLink | None = None
        self.stopped = threading.Event()

    def start(self) -> None:
        self.link = tls_link(
            self.fleet_dir,
            self.port,
            self.device_id,
            self.folder / "device.crt",
            self.folder / "device.key",
        )
        self.link.subscribe(device_directive_topic(FLEET, self.device_id), self.on_directive).wait(
            10
        )
        self.publish_state()
        self.publish_health(OLD, p95=20.0, errors=0)
        # Like an agent, report health every window, whatever the fleet manager is doing.
        self.reporter = threading.Thread(target=self.report_health, daemon=True)
        self.reporter.start()

    def report_health(self) -> None:
        while not self.stopped.wait(0.3):
            with self.lock:
                if self.running == NEW:
                    self.publish_health(NEW, p95=self.p95_new, errors=self.errors_new)
                else:
                    self.publish_health(self.running, p95=20.0, errors=0)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def publish_state(self) -> None:
        assert self.link is not None
        ref = WireBundleRef(name="detector", version="1", digest=self.running, release=1)
        state = StateMessage(online=True, ts=time.time(), bundle=ref, board="rpi4")
        self.link.publish(state_topic(FLEET, self.device_id), state.to_bytes(), retain=True)

    def publish_event(self, state: str, bundle: str, directive_seq: int, reason: str = "") -> None:
        assert self.link is not None
        kind = "rolled_back" if state == "rolled_back" else "update_result"
        event = EventMessage(
            seq=self.next_seq(),
            kind=kind if state in ("committed", "rolled_back") else "update_progress",
            ts=time.time(),
            directive_seq=directive_seq,
            bundle_digest=bundle,
            state=state,
            reason=reason,
        )
        self.link.publish(events_topic(FLEET, self.device_id), event.to_bytes())

    def publish_health(self, bundle: str, *, p95: float, errors: int) -> None:
        assert self.link is not None
        sample = TelemetrySample(
            ts=time.time(),
            window_s=1.0,
            requests=100,
            errors=errors,
            latency_p95_ms=p95,
            bundle_digest=bundle,
        )
        message = TelemetryMessage(seq=self.next_seq(), samples=(sample,))
        self.link.publish(telemetry_topic(FLEET, self.device_id), message.to_bytes())

    def on_directive(self, message: Message) -> None:
        with self.lock:
            trusted = TrustedState(self.root, now=datetime.now(UTC))
            directive = trusted.verify_directive(
                message.payload, device_id=self.device_id, last_sequence=self.last_sequence
            )
            self.last_sequence = directive.sequence
            digest = directive.bundle.sha256
            self.received.append((directive.action, digest, directive.sequence))
            if directive.action == "rollback":
                self.running = digest
                self.publish_event("rolled_back", digest, directive.sequence, "fleet rollback")
                self.publish_state()
                return
            self.publish_event("downloading", digest, directive.sequence)
            self.publish_event("trial", digest, directive.sequence)
            self.running = digest
            self.publish_event("committed", digest, directive.sequence)
            self.publish_state()
            self.publish_health(digest, p95=self.p95_new, errors=self.errors_new)

    def stop(self) -> None:
        self.stopped.set()
        if self.link is not None:
            self.link.close()


class Scenario:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        result = CliRunner().invoke(
            app,
            [
                "fleet",
                "init",
                str(root),
                "--name",
                FLEET,
                "--broker-url",
                f"mqtts://127.0.0.1:{self.port}",
            ],
        )
        assert result.exit_code == 0, result.output
        self.broker = Broker(BrokerFiles.of(root).config, self.port, root / "broker.log")
        self.devices: dict[str, Device] = {}
        self.manager: PahoLink | None = None

    def add_devices(self, health: dict[str, tuple[float, int]]) -> None:
        for device_id in DEVICES:
            p95, errors = health.get(device_id, (21.0, 0))
            self.devices[device_id] = Device(
                self.root, self.port, device_id, p95_new=p95, errors_new=errors
            )

    def start(self) -> None:
        """Broker, then the manager's link, then the devices, and wait until the registry
        has every device's retained state and its p95 on the old bundle (the baseline)."""
        self.broker.start()
        self.manager = tls_link(
            self.root,
            self.port,
            MANAGER_COMMON_NAME,
            self.root / "tls" / "manager.crt",
            self.root / "tls" / "manager.key",
        )
        store = open_registry(self.root)
        ingest = Ingestor(store, fleet=FLEET, batch_size=1)
        for ack in ingest.attach(self.manager):
            ack.wait(10)
        for device in self.devices.values():
            device.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            devices = store.list_devices(group=GROUP)
            if all(d.bundle == OLD and d.p95_ms is not None for d in devices):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"baseline not ingested: {store.list_devices(group=GROUP)}")
        for topic_filter in fleet_ingest_filters(FLEET):
            self.manager.unsubscribe(topic_filter)
        store.close()

    def runner(self, *, resume: str | None = None) -> tuple[RolloutRunner, Ingestor, SqlStore]:
        assert self.manager is not None
        store = open_registry(self.root)
        keys = FleetDir.open(self.root).signing_keys("deploy")
        bundles = {
            OLD: BundleRef(sha256=OLD, size=1000, name="detector", version="1", release=1),
            NEW: BundleRef(sha256=NEW, size=2000, name="detector", version="2", release=2),
        }
        sink = SignedDirectiveSink(
            self.manager, store, fleet=FLEET, deploy_keys=keys, bundles=bundles
        )
        if resume:
            runner = RolloutRunner.resume(store, sink, resume)
        else:
            runner = RolloutRunner.start(
                store, sink, rollout_id="r1", group=GROUP, bundle=NEW, policy=POLICY
            )
        ingest = Ingestor(
            store,
            fleet=FLEET,
            batch_size=1,
            on_state=runner.on_state,
            on_event=runner.on_event,
            on_telemetry=runner.on_telemetry,
        )
        return runner, ingest, store

    def stop(self) -> None:
        for device in self.devices.values():
            device.stop()
        if self.manager is not None:
            self.manager.close()
        self.broker.stop()


@pytest.fixture
def scenario(tmp_path) -> Iterator[Scenario]:
    s = Scenario(tmp_path / "fleet")
    try:
        yield s
    finally:
        s.stop()


def drive(runner: RolloutRunner, timeout: float = 40.0, stop_after_wave: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not runner.finished and time.monotonic() < deadline:
        runner.tick()
        if stop_after_wave is not None and runner.controller.current >= stop_after_wave:
            return
        time.sleep(0.05)


def installs(device: Device) -> list[tuple[str, str, int]]:
    return [r for r in device.received if r[0] == "install"]


def test_canary_then_waves_commit_every_device(scenario):
    scenario.add_devices({})
    scenario.start()
    runner, ingest, store = scenario.runner()
    for ack in ingest.attach(scenario.manager):
        ack.wait(10)
    drive(runner)
    assert runner.status is RolloutStatus.SUCCEEDED, runner.controller.reason
    for device in scenario.devices.values():
        assert [r[1] for r in installs(device)] == [NEW], device.device_id
    statuses = {d.device_id: d.bundle for d in store.list_devices(group=GROUP)}
    assert statuses == dict.fromkeys(DEVICES, NEW)
    assert store.get_rollout("r1").status == "succeeded"


def test_unhealthy_canary_aborts_and_nobody_else_ever_receives_the_directive(scenario):
    scenario.add_devices({"cam-0": (21.0, 30)})  # 30 % errors on the new bundle
    scenario.start()
    runner, ingest, _ = scenario.runner()
    for ack in ingest.attach(scenario.manager):
        ack.wait(10)
    drive(runner)
    assert runner.status is RolloutStatus.ABORTED
    assert "error rate" in runner.controller.reason
    canary = scenario.devices["cam-0"]
    deadline = time.monotonic() + 10
    while len(canary.received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(a, b) for a, b, _ in canary.received] == [("install", NEW), ("rollback", OLD)]
    assert canary.running == OLD
    time.sleep(0.5)
    for device_id in DEVICES[1:]:
        assert scenario.devices[device_id].received == [], device_id


def test_p95_regression_in_a_wave_rolls_back_every_updated_device(scenario):
    # The canary is fine; two devices of the next wave are 60 % slower than on the old bundle.
    scenario.add_devices({"cam-1": (32.0, 0), "cam-2": (32.0, 0)})
    scenario.start()
    runner, ingest, _ = scenario.runner()
    for ack in ingest.attach(scenario.manager):
        ack.wait(10)
    drive(runner)
    assert runner.status is RolloutStatus.ABORTED
    assert "p95 latency regressed" in runner.controller.reason
    updated = [d for d in scenario.devices.values() if installs(d)]
    assert sorted(d.device_id for d in updated) == ["cam-0", "cam-1", "cam-2"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(d.running == OLD for d in updated):
        time.sleep(0.05)
    assert all(d.running == OLD for d in updated)
    assert all(not d.received for d in scenario.devices.values() if d not in updated)


def test_the_manager_restarts_mid_rollout_and_finishes_it(scenario):
    scenario.add_devices({})
    scenario.start()
    first, ingest, store = scenario.runner()
    acks = ingest.attach(scenario.manager)
    for ack in acks:
        ack.wait(10)
    drive(first, stop_after_wave=1)
    assert first.controller.current == 1
    # The manager process dies: its link and its in-memory runner are gone.
    scenario.manager.close()
    store.close()
    scenario.manager = tls_link(
        scenario.root,
        scenario.port,
        MANAGER_COMMON_NAME,
        scenario.root / "tls" / "manager.crt",
        scenario.root / "tls" / "manager.key",
    )
    second, ingest2, _ = scenario.runner(resume="r1")
    for ack in ingest2.attach(scenario.manager):
        ack.wait(10)
    drive(second)
    assert second.status is RolloutStatus.SUCCEEDED, second.controller.reason
    for device in scenario.devices.values():
        assert [r[1] for r in installs(device)] == [NEW], device.device_id
