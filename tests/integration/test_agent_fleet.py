"""The agent against a real Mosquitto run from a fleet folder: TLS with the device's
certificate from ``edgeops device enroll``, the generated ACL, real signed directives.

The fleet folder comes from ``edgeops fleet init``; the device is enrolled with
``edgeops device enroll`` and installed from its bootstrap archive, as on a board.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgeops.agent.config import AgentConfig
from edgeops.agent.daemon import Agent
from edgeops.agent.enroll import install_bootstrap, read_bootstrap
from edgeops.broker import find_mosquitto, free_port, wait_for_port
from edgeops.cli import app
from edgeops.cli import commands as _commands  # noqa: F401 - registers the commands
from edgeops.fleet.broker_config import BrokerFiles
from edgeops.fleet.fleetdir import MANAGER_COMMON_NAME, FleetDir
from edgeops.mqtt import Message, MqttSettings, PahoLink, TlsSettings
from edgeops.protocol import (
    EventMessage,
    StateMessage,
    device_directive_topic,
    state_topic,
)
from edgeops.trust import BundleRef, SigningKey, create_directive, sign_metadata, utcnow

pytestmark = pytest.mark.integration

FLEET = "demo"


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class FleetRig:
    """A fleet folder, its Mosquitto, the fleet manager's link and a record of device
    reports (state and events) as the manager receives them."""

    def __init__(self, root: Path) -> None:
        self.root = root / "fleet"
        self.port = free_port()
        self.cli(
            "fleet",
            "init",
            str(self.root),
            "--name",
            FLEET,
            "--broker-url",
            f"mqtts://127.0.0.1:{self.port}",
        )
        self.dir = FleetDir.open(self.root)
        self.files = BrokerFiles.of(self.root)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / "broker.log"
        self.link: PahoLink | None = None
        self.received: list[Message] = []
        self._lock = threading.Lock()
        self.sequence = 0

    @staticmethod
    def cli(*args: str) -> str:
        result = CliRunner().invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    def start(self) -> None:
        binary = find_mosquitto()
        assert binary, "mosquitto is not installed"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, "-c", str(self.files.config)], stdout=log, stderr=subprocess.STDOUT
            )
        assert wait_for_port("127.0.0.1", self.port, 10), self.log.read_text()
        settings = MqttSettings(
            host="127.0.0.1",
            port=self.port,
            client_id=MANAGER_COMMON_NAME,
            tls=TlsSettings(
                cafile=self.dir.ca_cert,
                certfile=self.dir.manager_cert,
                keyfile=self.dir.manager_key,
            ),
        )
        self.link = PahoLink(settings)
        self.link.connect(timeout=10)
        self.link.subscribe(f"edgeops/v1/{FLEET}/dev/+/state", self._record).wait(5)
        self.link.subscribe(f"edgeops/v1/{FLEET}/dev/+/events", self._record).wait(5)

    def stop(self) -> None:
        if self.link is not None:
            self.link.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def _record(self, message: Message) -> None:
        with self._lock:
            self.received.append(message)

    def enroll(self, device_id: str, tmp: Path, *, board: str = "generic-x86_64") -> Path:
        archive = tmp / f"{device_id}.tgz"
        self.cli(
            "device",
            "enroll",
            device_id,
            "--fleet",
            str(self.root),
            "--group",
            "cams",
            "--board",
            board,
            "-o",
            str(archive),
        )
        return archive

    def events(self, device_id: str) -> list[EventMessage]:
        with self._lock:
            messages = list(self.received)
        return [
            EventMessage.from_bytes(m.payload)
            for m in messages
            if m.topic == f"edgeops/v1/{FLEET}/dev/{device_id}/events"
        ]

    def state(self, device_id: str) -> StateMessage | None:
        with self._lock:
            found = [m for m in self.received if m.topic == state_topic(FLEET, device_id)]
        return StateMessage.from_bytes(found[-1].payload) if found else None

    def deploy_key(self) -> SigningKey:
        return SigningKey.load(self.dir.key_path("deploy"))

    def directive(
        self, device_id: str, *, keys: list[SigningKey] | None = None, **fields: Any
    ) -> bytes:
        self.sequence += 1
        values: dict[str, Any] = {
            "fleet": FLEET,
            "device": device_id,
            "sequence": self.sequence,
            "bundle": BundleRef(sha256="ab" * 32, size=4096, name="m", version="1", release=1),
        }
        values.update(fields)
        return sign_metadata(create_directive(**values), keys or [self.deploy_key()])

    def publish_directive(self, device_id: str, payload: bytes) -> None:
        assert self.link is not None
        self.link.publish(
            device_directive_topic(FLEET, device_id), payload, qos=1, retain=True
        ).wait(5)


@pytest.fixture
def rig(tmp_path) -> Iterator[FleetRig]:
    rig = FleetRig(tmp_path)
    rig.start()
    yield rig
    rig.stop()


def installed_agent(rig: FleetRig, tmp_path: Path, device_id: str = "dev-1") -> Agent:
    archive = rig.enroll(device_id, tmp_path)
    config_path = install_bootstrap(archive, tmp_path / device_id)
    config = AgentConfig.load(config_path)
    # Tests run several agents on one machine: any free API port.
    return Agent(dataclasses.replace(config, api_port=0, telemetry_interval_s=3600.0))


def wait_event(rig: FleetRig, device_id: str, kind: str) -> EventMessage:
    found: list[EventMessage] = []

    def seen() -> bool:
        found[:] = [e for e in rig.events(device_id) if e.kind == kind]
        return bool(found)

    wait_for(seen, what=f"{kind} event from {device_id}")
    return found[-1]


def test_enrollment_writes_a_complete_archive_that_installs_once(rig, tmp_path):
    archive = rig.enroll("dev-1", tmp_path)
    assert archive.stat().st_mode & 0o777 == 0o600
    members = read_bootstrap(archive.read_bytes())
    assert members["root.json"] == rig.dir.root_bytes()
    assert b"BEGIN CERTIFICATE" in members["tls/device.crt"]
    state = tmp_path / "state"
    config_path = install_bootstrap(archive, state)
    assert (state / "tls" / "device.key").stat().st_mode & 0o777 == 0o600
    config = AgentConfig.load(config_path)
    assert (config.device_id, config.fleet, config.groups) == ("dev-1", FLEET, ("cams",))
    assert config.tls_cert == state / "tls" / "device.crt"
    # A second install keeps the folder as it is (the root may have rotated since).
    (state / "root.json").write_bytes(b"rotated")
    install_bootstrap(archive, state)
    assert (state / "root.json").read_bytes() == b"rotated"


def test_the_agent_connects_with_its_certificate_and_goes_offline_on_stop(rig, tmp_path):
    agent = installed_agent(rig, tmp_path)
    agent.start()
    try:
        wait_for(lambda: (s := rig.state("dev-1")) is not None and s.online, what="online")
        state = rig.state("dev-1")
        assert state is not None
        assert state.board == "generic-x86_64"
        assert state.update == "idle"
    finally:
        agent.stop()
    wait_for(lambda: (s := rig.state("dev-1")) is not None and not s.online, what="offline")


@pytest.mark.parametrize("attack", ["tampered", "expired", "foreign", "unknown_key"])
def test_bad_directives_are_rejected_with_the_reason_and_change_nothing(rig, tmp_path, attack):
    agent = installed_agent(rig, tmp_path)
    agent.start()
    try:
        wait_for(lambda: (s := rig.state("dev-1")) is not None and s.online, what="online")
        before = agent.state
        if attack == "tampered":
            payload = rig.directive("dev-1")
            envelope = json.loads(payload)
            envelope["signed"]["sequence"] = 99
            payload = json.dumps(envelope).encode()
            expected = "SignatureError"
        elif attack == "expired":
            issued = utcnow() - timedelta(days=10)
            payload = rig.directive("dev-1", issued=issued, expires=issued + timedelta(days=1))
            expected = "ExpiredError"
        elif attack == "foreign":
            # Signed for dev-2, replayed onto dev-1's topic by someone who can publish there.
            payload = rig.directive("dev-2")
            expected = "WrongTargetError"
        else:
            payload = rig.directive("dev-1", keys=[SigningKey.generate()])
            expected = "Error"
        rig.publish_directive("dev-1", payload)
        event = wait_event(rig, "dev-1", "rejected")
        assert expected in event.reason
        assert agent.state == before
        assert agent.phase.value == "idle"
        assert not any(agent.store.bundles_dir.iterdir())
    finally:
        agent.stop()


def test_the_console_script_installs_a_bootstrap_and_stops_cleanly_on_sigterm(rig, tmp_path):
    archive = rig.enroll("dev-9", tmp_path)
    state_dir = tmp_path / "dev-9"
    install_bootstrap(archive, state_dir)
    config = state_dir / "agent.toml"
    config.write_text(config.read_text().replace("port = 8321", "port = 0"))
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "edgeops.agent.daemon", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: (s := rig.state("dev-9")) is not None and s.online, what="online")
        process.terminate()
        assert process.wait(15) == 0
        wait_for(lambda: (s := rig.state("dev-9")) is not None and not s.online, what="offline")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    output = log.read_text()
    assert "agent dev-9 stopped" in output, output
