"""The generated broker set-up on a real Mosquitto: TLS client certificates, ACL, CRL.

The fleet folder comes from ``edgeops fleet init`` (broker URL on a free loopback port), the
devices' certificates from ``issue_certificate`` and :func:`enroll_device`, and the broker
runs exactly as a user runs it: ``mosquitto -c DIR/mosquitto.conf``.
"""

from __future__ import annotations

import json
import queue
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from edgeops.broker import find_mosquitto, free_port, wait_for_port
from edgeops.cli import app
from edgeops.cli import commands as _commands  # noqa: F401 - registers the commands
from edgeops.fleet.broker_config import BrokerFiles, enroll_device
from edgeops.fleet.ca import issue_certificate
from edgeops.fleet.fleetdir import MANAGER_COMMON_NAME

pytestmark = pytest.mark.integration

FLEET = "demo"
BASE = f"edgeops/v1/{FLEET}"
MANAGER = MANAGER_COMMON_NAME
QUIET = 0.7  # how long "nothing arrives" is watched, after an in-order control message


class Fleet:
    """A fleet folder made by ``edgeops fleet init`` (the CLI), its broker on a free
    loopback port, and the client identities the tests connect with."""

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
        self.files = BrokerFiles.of(root)
        self.identities: dict[str, tuple[Path, Path]] = {
            MANAGER: (root / "tls" / "manager.crt", root / "tls" / "manager.key")
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.opened: list[Client] = []
        self.log = root / "broker.log"

    def identity(self, name: str, cert_pem: bytes, key_pem: bytes) -> None:
        folder = self.root / "clients"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.crt").write_bytes(cert_pem)
        (folder / f"{name}.key").write_bytes(key_pem)
        self.identities[name] = (folder / f"{name}.crt", folder / f"{name}.key")

    def enroll(self, device_id: str, group: str) -> None:
        key, cert = issue_certificate(self.root, device_id, kind="device")
        enroll_device(self.root, device_id, group=group, board="rpi4", cert_pem=cert)
        self.identity(device_id, cert, key)

    def start(self) -> None:
        binary = find_mosquitto()
        assert binary, "mosquitto is not installed"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [binary, "-c", str(self.files.config)], stdout=log, stderr=subprocess.STDOUT
            )
        if not wait_for_port("127.0.0.1", self.port, 10):
            self.stop()
            raise AssertionError(self.log.read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None

    def client(self, identity: str, client_id: str | None = None) -> Client:
        cert, key = self.identities[identity]
        return Client(self, cert, key, client_id or identity)


class Client:
    """A paho client with a certificate that records what it receives."""

    def __init__(self, fleet: Fleet, cert: Path, key: Path, client_id: str) -> None:
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.disconnects: list[str] = []
        self.connected = queue.Queue[str]()
        self.mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.mqtt.tls_set(ca_certs=str(fleet.files.ca_cert), certfile=str(cert), keyfile=str(key))
        self.mqtt.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
        self.mqtt.on_connect = lambda c, u, f, rc, p: self.connected.put(str(rc))
        self.mqtt.on_disconnect = lambda c, u, f, rc, p: self.disconnects.append(str(rc))
        self.fleet = fleet

    def connect(self) -> Client:
        self.mqtt.connect("127.0.0.1", self.fleet.port, keepalive=30)
        self.mqtt.loop_start()
        assert self.connected.get(timeout=5) == "Success"
        return self

    def subscribe(self, *topics: str) -> None:
        for topic in topics:
            self.mqtt.subscribe(topic, qos=1)
        # A round trip through the broker: once our own publish to a topic we may use
        # comes back, the subscriptions before it are in place.
        time.sleep(0.2)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.mqtt.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def received(self, until: str, timeout: float = 5.0) -> list[tuple[str, bytes]]:
        """Messages up to and including the first on ``until`` (a control message)."""
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            out.append(item)
            if item[0] == until:
                return out
        raise AssertionError(f"control message on {until} never came; got {out}")

    def quiet(self, seconds: float = QUIET) -> list[tuple[str, bytes]]:
        time.sleep(seconds)
        out = []
        while not self.messages.empty():
            out.append(self.messages.get_nowait())
        return out

    def close(self) -> None:
        self.mqtt.disconnect()
        self.mqtt.loop_stop()


@pytest.fixture
def fleet(tmp_path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path / "fleet")
    fleet.enroll("dev-a", "lab")
    fleet.enroll("dev-b", "lab")
    fleet.enroll("dev-c", "field")
    fleet.start()
    try:
        yield fleet
    finally:
        for client in fleet.opened:
            client.close()
        fleet.stop()


def connect(fleet: Fleet, identity: str, client_id: str | None = None) -> Client:
    client = fleet.client(identity, client_id).connect()
    fleet.opened.append(client)
    return client


def can_connect(fleet: Fleet, identity: str) -> bool:
    """Whether the broker answers CONNECT with success. With TLS 1.3 the server checks the
    client certificate after the client's side of the handshake is done, so a refusal shows
    as a dropped connection without CONNACK rather than as an error from connect()."""
    client = fleet.client(identity)
    try:
        client.mqtt.connect("127.0.0.1", fleet.port, keepalive=30)
    except OSError:
        return False
    client.mqtt.loop_start()
    try:
        return client.connected.get(timeout=3) == "Success"
    except queue.Empty:
        return False
    finally:
        client.mqtt.disconnect()
        client.mqtt.loop_stop()


def test_generated_config_runs_as_is(fleet):
    text = fleet.files.config.read_text()
    assert f"listener {fleet.port} 127.0.0.1" in text
    manager = connect(fleet, MANAGER)
    manager.subscribe(f"{BASE}/#")
    device = connect(fleet, "dev-a")
    device.publish(f"{BASE}/dev/dev-a/telemetry", b"t1")
    assert manager.received(f"{BASE}/dev/dev-a/telemetry") == [
        (f"{BASE}/dev/dev-a/telemetry", b"t1")
    ]


def test_a_device_cannot_publish_under_another_devices_topics(fleet):
    manager = connect(fleet, MANAGER)
    manager.subscribe(f"{BASE}/#")
    intruder = connect(fleet, "dev-b")
    for kind in ("state", "events", "telemetry"):
        intruder.publish(f"{BASE}/dev/dev-a/{kind}", b"forged")
    intruder.publish(f"{BASE}/dev/dev-b/telemetry", b"own")
    got = manager.received(f"{BASE}/dev/dev-b/telemetry")
    assert got == [(f"{BASE}/dev/dev-b/telemetry", b"own")]


def test_a_device_cannot_read_another_devices_telemetry_or_directives(fleet):
    manager = connect(fleet, MANAGER)
    victim = connect(fleet, "dev-a")
    snoop = connect(fleet, "dev-b")
    snoop.subscribe(
        f"{BASE}/dev/dev-a/telemetry",
        f"{BASE}/dev/dev-a/directive",
        f"{BASE}/dev/+/telemetry",
        f"{BASE}/#",
        "#",
    )
    manager.publish(f"{BASE}/dev/dev-a/directive", b"for a only", retain=True)
    victim.publish(f"{BASE}/dev/dev-a/telemetry", b"a's numbers")
    manager.publish(f"{BASE}/dev/dev-b/directive", b"for b", retain=True)
    got = snoop.received(f"{BASE}/dev/dev-b/directive")
    assert [t for t, _ in got] == [f"{BASE}/dev/dev-b/directive"] * len(got)
    assert snoop.quiet() == []
    # A fresh subscription does not hand out another device's retained directive either.
    late = connect(fleet, "dev-c")
    late.subscribe(f"{BASE}/dev/dev-a/directive", f"{BASE}/dev/dev-c/directive")
    manager.publish(f"{BASE}/dev/dev-c/directive", b"for c", retain=True)
    assert late.received(f"{BASE}/dev/dev-c/directive") == [
        (f"{BASE}/dev/dev-c/directive", b"for c")
    ]


def test_a_device_cannot_publish_a_directive_or_a_bundle(fleet):
    manager = connect(fleet, MANAGER)
    manager.subscribe(f"{BASE}/#")
    rogue = connect(fleet, "dev-a")
    for topic in (
        f"{BASE}/dev/dev-a/directive",
        f"{BASE}/dev/dev-b/directive",
        f"{BASE}/group/lab/directive",
        f"{BASE}/bundle/sha256-x/meta",
    ):
        rogue.publish(topic, b"rogue", retain=True)
    rogue.publish(f"{BASE}/dev/dev-a/events", b"control")
    assert manager.received(f"{BASE}/dev/dev-a/events") == [
        (f"{BASE}/dev/dev-a/events", b"control")
    ]


def test_devices_read_their_groups_directive_and_the_bundle_topics_only(fleet):
    manager = connect(fleet, MANAGER)
    lab = connect(fleet, "dev-a")
    field = connect(fleet, "dev-c")
    for device in (lab, field):
        device.subscribe(f"{BASE}/group/+/directive", f"{BASE}/bundle/#")
    manager.publish(f"{BASE}/bundle/abc/chunk/0", b"chunk", retain=True)
    manager.publish(f"{BASE}/group/lab/directive", b"lab directive", retain=True)
    manager.publish(f"{BASE}/group/field/directive", b"field directive", retain=True)
    lab_got = lab.received(f"{BASE}/group/lab/directive") + lab.quiet()
    field_got = field.received(f"{BASE}/group/field/directive") + field.quiet()
    assert sorted(lab_got) == [
        (f"{BASE}/bundle/abc/chunk/0", b"chunk"),
        (f"{BASE}/group/lab/directive", b"lab directive"),
    ]
    assert sorted(field_got) == [
        (f"{BASE}/bundle/abc/chunk/0", b"chunk"),
        (f"{BASE}/group/field/directive", b"field directive"),
    ]


def test_reusing_another_devices_client_id_does_not_disconnect_it(fleet):
    manager = connect(fleet, MANAGER)
    manager.subscribe(f"{BASE}/#")
    victim = connect(fleet, "dev-a")
    impostor = connect(fleet, "dev-b", client_id="dev-a")
    time.sleep(QUIET)
    assert victim.disconnects == []
    assert victim.mqtt.is_connected()
    # The broker took the impostor's certificate CN as its client id and username: it is
    # still dev-b, bound by dev-b's ACL.
    impostor.publish(f"{BASE}/dev/dev-a/telemetry", b"forged")
    victim.publish(f"{BASE}/dev/dev-a/telemetry", b"genuine")
    assert manager.received(f"{BASE}/dev/dev-a/telemetry") == [
        (f"{BASE}/dev/dev-a/telemetry", b"genuine")
    ]
    assert "as dev-b" in fleet.log.read_text()


def test_a_revoked_device_cannot_connect(fleet):
    assert can_connect(fleet, "dev-c")
    result = CliRunner().invoke(
        app, ["device", "revoke", "dev-c", "--fleet", str(fleet.root), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert len(report["revoked_serials"]) == 1
    assert report["broker_reloaded"], "the broker's pid file should let revoke send SIGHUP"
    deadline = time.monotonic() + 5
    while "Reloading config" not in fleet.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not can_connect(fleet, "dev-c")
    assert "certificate verify failed" in fleet.log.read_text()
    assert can_connect(fleet, "dev-a")  # everyone else still gets in


def test_retained_messages_survive_a_broker_restart(fleet):
    manager = connect(fleet, MANAGER)
    manager.publish(f"{BASE}/bundle/abc/chunk/0", b"kept", retain=True)
    manager.close()
    fleet.opened.remove(manager)
    fleet.stop()
    fleet.start()
    device = connect(fleet, "dev-a")
    device.subscribe(f"{BASE}/bundle/#")
    assert device.received(f"{BASE}/bundle/abc/chunk/0") == [
        (f"{BASE}/bundle/abc/chunk/0", b"kept")
    ]


@pytest.mark.parametrize("share_group", [None, "managers"])
def test_the_manager_ingests_device_reports_through_the_acl(fleet, share_group):
    """The fleet manager's own path on the secured broker: a TLS PahoLink with its
    certificate, subscribed by Ingestor.attach (plain, or as an MQTT 5 shared subscription,
    which the ACL must allow too), writing what devices publish into the registry."""
    from edgeops.fleet.ingest import Ingestor
    from edgeops.fleet.registry import open_registry
    from edgeops.mqtt import MqttSettings, PahoLink
    from edgeops.mqtt.settings import TlsSettings
    from edgeops.protocol import StateMessage, TelemetryMessage, TelemetrySample

    cert, key = fleet.identities[MANAGER]
    link = PahoLink(
        MqttSettings(
            host="127.0.0.1",
            port=fleet.port,
            client_id=MANAGER,
            tls=TlsSettings(cafile=fleet.files.ca_cert, certfile=cert, keyfile=key),
        )
    )
    store = open_registry(fleet.root)
    ingest = Ingestor(store, fleet=FLEET, batch_size=1)
    try:
        link.connect(timeout=10)
        for ack in ingest.attach(link, share_group=share_group):
            ack.wait(10)
        device = connect(fleet, "dev-a")
        device.publish(
            f"{BASE}/dev/dev-a/state", StateMessage(online=True, ts=time.time()).to_bytes()
        )
        sample = TelemetrySample(
            ts=time.time(), window_s=10.0, requests=50, errors=1, latency_p95_ms=14.0
        )
        device.publish(
            f"{BASE}/dev/dev-a/telemetry",
            TelemetryMessage(seq=1, samples=(sample,)).to_bytes(),
        )
        deadline = time.monotonic() + 10
        while ingest.stats.written < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ingest.stats.written == 2, (ingest.stats, fleet.log.read_text()[-2000:])
        record = store.get_device("dev-a")
        assert record.online
        assert record.p95_ms == 14.0
        assert record.error_rate == 0.02
    finally:
        link.close()
        store.close()
