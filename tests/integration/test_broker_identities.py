"""``fleet serve``, ``push`` and other fleet-manager processes on one real Mosquitto at once.

The broker runs from the generated config (client id = certificate CN). Checked: the
service and two CLI links connect with different identities and none is disconnected while
messages flow; one certificate used twice does evict (what the identities prevent); a
device can neither publish a directive nor take a CLI identity's session; a CLI identity
held by a killed process is free again; a fleet made before the CLI pool gets it on first
use and the running broker reloads its ACL.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgeops.broker import free_port
from edgeops.errors import TransportError
from edgeops.fleet.broker_config import BrokerFiles, enroll_device, render_acl, write_broker_config
from edgeops.fleet.ca import issue_certificate
from edgeops.fleet.fleetdir import MANAGER_COMMON_NAME, FleetDir, cli_common_names, init_fleet
from edgeops.fleet.push import manager_link
from edgeops.fleet.service import FleetService, ServiceConfig
from edgeops.mqtt import Link, Message, MqttSettings, PahoLink
from edgeops.mqtt.settings import TlsSettings
from edgeops.protocol import state_topic
from edgeops.protocol.topics import group_directive_topic

from .test_broker_acl_rollout import Broker as Mosquitto
from .test_fleet_serve_broker import wait_for

pytestmark = pytest.mark.integration

FLEET = "plant"
BASE = f"edgeops/v1/{FLEET}"


class Broker:
    """A fleet folder with one enrolled device and ``mosquitto -c DIR/mosquitto.conf``."""

    def __init__(self, root: Path, *, before_start: Callable[[FleetDir], None] | None = None):
        self.port = free_port()
        self.fleet = init_fleet(root, name=FLEET, broker_url=f"mqtts://127.0.0.1:{self.port}")
        write_broker_config(self.fleet.path)
        key, cert = issue_certificate(self.fleet.path, "cam-a", kind="device")
        enroll_device(self.fleet.path, "cam-a", group="line1", board="rpi4", cert_pem=cert)
        (root / "tls" / "cam-a.key").write_bytes(key)
        (root / "tls" / "cam-a.crt").write_bytes(cert)
        if before_start is not None:
            before_start(self.fleet)
        self.links: list[Link] = []
        self.mosquitto = Mosquitto(
            BrokerFiles.of(root).config, self.port, root.parent / "broker.log"
        )
        self.mosquitto.start()

    def keep(self, link: Link) -> Link:
        self.links.append(link)
        return link

    def device(self, client_id: str = "cam-a") -> PahoLink:
        """cam-a's certificate, asking for ``client_id`` (the broker uses the CN instead)."""
        tls = TlsSettings(
            cafile=self.fleet.ca_cert,
            certfile=self.fleet.path / "tls" / "cam-a.crt",
            keyfile=self.fleet.path / "tls" / "cam-a.key",
        )
        link = PahoLink(
            MqttSettings(host="127.0.0.1", port=self.port, client_id=client_id, tls=tls)
        )
        self.keep(link)
        link.connect(timeout=10)
        return link

    def stop(self) -> None:
        for link in self.links:
            link.close()
        self.mosquitto.stop()


@pytest.fixture
def broker(tmp_path) -> Iterator[Broker]:
    b = Broker(tmp_path / "fleet")
    try:
        yield b
    finally:
        b.stop()


class Watch:
    """A link's disconnects and the messages it receives on one filter."""

    def __init__(self, link: Link, topic_filter: str | None = None) -> None:
        self.disconnects: list[str] = []
        self.messages: queue.Queue[Message] = queue.Queue()
        link.on_disconnect(self.disconnects.append)
        if topic_filter is not None:
            link.subscribe(topic_filter, self.messages.put).wait(10)

    def until(self, topic: str, payload: bytes, timeout: float = 10.0) -> list[Message]:
        """Messages up to and including ``payload`` on ``topic`` (a control message)."""
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = self.messages.get(timeout=0.1)
            except queue.Empty:
                continue
            out.append(message)
            if message.topic == topic and message.payload == payload:
                return out
        raise AssertionError(f"{payload!r} on {topic} never came; got {out}")


def serve(fleet: FleetDir) -> FleetService:
    service = FleetService(
        ServiceConfig(
            fleet_dir=fleet.path,
            http_port=0,
            run_rollouts=False,
            tick_interval_s=0.1,
            max_delay_s=0.05,
        )
    )
    service.start()
    return service


def test_fleet_serve_and_two_pushes_stay_connected_while_messages_flow(broker):
    service = serve(broker.fleet)
    try:
        assert service._link is not None
        served = Watch(service._link)
        pushes = [broker.keep(manager_link(broker.fleet)) for _ in range(2)]
        for link in pushes:
            link.connect(timeout=10)
        assert [service.identity, *(link.client_id for link in pushes)] == [
            MANAGER_COMMON_NAME,
            "edgeops-fleet-cli-1",
            "edgeops-fleet-cli-2",
        ]
        watches = [Watch(link, f"{BASE}/dev/+/state") for link in pushes]
        device = broker.device()
        directives = Watch(device, group_directive_topic(FLEET, "line1"))
        rounds = 30
        for i in range(rounds):
            device.publish(state_topic(FLEET, "cam-a"), b"state %d" % i).wait(10)
            # Both CLI links also write, as a push does (chunks, directives).
            for k, link in enumerate(pushes):
                link.publish(group_directive_topic(FLEET, "line1"), b"d%d-%d" % (k, i)).wait(10)
        last = b"state %d" % (rounds - 1)
        for watch in watches:
            got = watch.until(state_topic(FLEET, "cam-a"), last)
            assert [m.payload for m in got] == [b"state %d" % i for i in range(rounds)]
        got = directives.until(group_directive_topic(FLEET, "line1"), b"d1-%d" % (rounds - 1))
        assert len(got) == 2 * rounds
        assert service.ingestor is not None
        wait_for(
            "the service ingested every state", lambda: service.ingestor.stats.received >= rounds
        )
        assert served.disconnects == []
        assert [w.disconnects for w in watches] == [[], []]
        assert service._link.connected
        assert all(link.connected for link in pushes)
    finally:
        service.stop()


def test_two_processes_on_one_certificate_evict_each_other(broker):
    # What the identities are for: the broker keeps one session per client id (= CN).
    service = serve(broker.fleet)
    try:
        assert service._link is not None
        served = Watch(service._link)
        tls = TlsSettings(
            cafile=broker.fleet.ca_cert,
            certfile=broker.fleet.manager_cert,
            keyfile=broker.fleet.manager_key,
        )
        settings = MqttSettings(
            host="127.0.0.1", port=broker.port, client_id=MANAGER_COMMON_NAME, tls=tls
        )
        broker.keep(PahoLink(settings)).connect(timeout=10)
        wait_for("the service's session to be taken over", lambda: served.disconnects)
    finally:
        service.stop()


def test_a_device_cannot_publish_a_directive_or_take_a_cli_session(broker):
    push = broker.keep(manager_link(broker.fleet))
    push.connect(timeout=10)
    watch = Watch(push, f"{BASE}/#")
    # Asking for the CLI identity's client id gets the device its own CN instead.
    device = broker.device(client_id=push.client_id)
    with pytest.raises(TransportError, match="Not authorized"):
        device.publish(group_directive_topic(FLEET, "line1"), b"forged").wait(10)
    device.publish(state_topic(FLEET, "cam-a"), b"control").wait(10)
    got = watch.until(state_topic(FLEET, "cam-a"), b"control")
    assert all(m.payload != b"forged" for m in got)
    assert watch.disconnects == []
    assert push.connected


def test_a_cli_identity_held_by_a_killed_process_is_free_again(broker):
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from edgeops.fleet.fleetdir import FleetDir
        from edgeops.fleet.push import manager_link
        link = manager_link(FleetDir.open(Path({str(broker.fleet.path)!r})))
        link.connect(timeout=10)
        print(link.client_id, flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "edgeops-fleet-cli-1"
        second = broker.keep(manager_link(broker.fleet))
        assert second.client_id == "edgeops-fleet-cli-2"
        second.close()
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    third = broker.keep(manager_link(broker.fleet))
    assert third.client_id == "edgeops-fleet-cli-1"
    third.connect(timeout=10)
    assert third.connected


def make_old_fleet(fleet: FleetDir) -> None:
    """A fleet folder from before the CLI pool: no CLI certificates, one manager in the ACL."""
    for name in cli_common_names():
        for path in fleet.identity_files(name):
            path.unlink()
    files = BrokerFiles.of(fleet.path)
    files.acl.write_text(render_acl(FLEET, [("cam-a", "line1")], [MANAGER_COMMON_NAME]))


def test_an_older_fleet_gets_cli_identities_and_the_running_broker_reloads(tmp_path):
    broker = Broker(tmp_path / "fleet", before_start=make_old_fleet)
    try:
        service = serve(broker.fleet)
        try:
            assert service._link is not None
            served = Watch(service._link)
            push = broker.keep(manager_link(broker.fleet))
            assert push.client_id == "edgeops-fleet-cli-1"
            push.connect(timeout=10)
            watch = Watch(push, f"{BASE}/dev/+/state")
            device = broker.device()
            device.publish(state_topic(FLEET, "cam-a"), b"after reload").wait(10)
            # Received only if the broker reloaded the ACL that lists the new identity.
            watch.until(state_topic(FLEET, "cam-a"), b"after reload")
            assert served.disconnects == []
        finally:
            service.stop()
    finally:
        broker.stop()
