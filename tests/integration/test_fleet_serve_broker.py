"""``edgeops fleet serve`` on the fleet's own TLS Mosquitto (generated config, ACL, CRL).

Devices are paho clients with their own certificates; the service connects with a manager
certificate. Checked: the CLI process ingests what devices publish, answers its API and
stops cleanly on SIGTERM; two instances in an MQTT 5 share group split the stream so that
every message is ingested exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeops.broker import find_mosquitto, free_port, wait_for_port
from edgeops.fleet.broker_config import BrokerFiles, enroll_device, write_broker_config
from edgeops.fleet.ca import issue_certificate
from edgeops.fleet.fleetdir import MANAGER_COMMON_NAME, init_fleet
from edgeops.fleet.registry import open_registry
from edgeops.fleet.service import FleetService, ServiceConfig
from edgeops.mqtt import MqttSettings, PahoLink
from edgeops.mqtt.settings import TlsSettings
from edgeops.protocol import (
    BundleRef,
    StateMessage,
    TelemetryMessage,
    TelemetrySample,
    state_topic,
    telemetry_topic,
)

pytestmark = pytest.mark.integration

FLEET = "plant"
SECOND_MANAGER = "edgeops-fleet-manager-2"
DEVICES = ("cam-a", "cam-b", "cam-c")


class Fleet:
    """A fleet folder, a second manager identity, enrolled devices, the broker running
    ``mosquitto -c DIR/mosquitto.conf``."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.fleet = init_fleet(root, name=FLEET, broker_url=f"mqtts://127.0.0.1:{self.port}")
        self.path = self.fleet.path
        # A second fleet-manager process needs its own CN, listed in [broker] managers.
        key, cert = issue_certificate(self.path, SECOND_MANAGER, kind="manager")
        (self.path / "tls" / "manager-2.key").write_bytes(key)
        (self.path / "tls" / "manager-2.crt").write_bytes(cert)
        config = self.fleet.config_path
        config.write_text(
            config.read_text().replace(
                "[broker]\n",
                f'[broker]\nmanagers = ["{MANAGER_COMMON_NAME}", "{SECOND_MANAGER}"]\n',
            )
        )
        write_broker_config(self.path)
        for device_id in DEVICES:
            key, cert = issue_certificate(self.path, device_id, kind="device")
            enroll_device(self.path, device_id, group="line1", board="rpi4", cert_pem=cert)
            (self.path / "tls" / f"{device_id}.key").write_bytes(key)
            (self.path / "tls" / f"{device_id}.crt").write_bytes(cert)
        binary = find_mosquitto()
        assert binary, "mosquitto is not installed"
        self.log = root.parent / "broker.log"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [binary, "-c", str(BrokerFiles.of(self.path).config)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if not wait_for_port("127.0.0.1", self.port, 10):
            self.stop()
            raise AssertionError(self.log.read_text())
        self.links: list[PahoLink] = []

    def device(self, device_id: str) -> PahoLink:
        link = PahoLink(
            MqttSettings(
                host="127.0.0.1",
                port=self.port,
                client_id=device_id,
                tls=TlsSettings(
                    cafile=self.fleet.ca_cert,
                    certfile=self.path / "tls" / f"{device_id}.crt",
                    keyfile=self.path / "tls" / f"{device_id}.key",
                ),
            )
        )
        link.connect(timeout=10)
        self.links.append(link)
        return link

    def stop(self) -> None:
        for link in self.links:
            link.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def fleet(tmp_path) -> Iterator[Fleet]:
    f = Fleet(tmp_path / "fleet")
    try:
        yield f
    finally:
        f.stop()


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def telemetry(seq: int, p95: float) -> bytes:
    sample = TelemetrySample(
        ts=time.time(),
        window_s=1.0,
        requests=50,
        errors=1,
        latency_p95_ms=p95,
        temperature_c=55.0,
        drift=0.05,
    )
    return TelemetryMessage(seq=seq, samples=(sample,)).to_bytes()


def test_cli_serves_what_devices_publish_and_stops_on_sigterm(fleet) -> None:
    http_port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from edgeops.cli import main; main()",
            "fleet",
            "serve",
            "--fleet",
            str(fleet.path),
            "--http",
            f"127.0.0.1:{http_port}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{http_port}"
        wait_for("the service", lambda: get(url + "/healthz")["ok"])
        wait_for("the broker link", lambda: get(url + "/api/fleet")["service"]["connected"])
        link = fleet.device("cam-a")
        ref = BundleRef(name="detector", version="3", digest="c" * 64, release=3)
        state = StateMessage(online=True, ts=time.time(), bundle=ref, board="rpi4")
        link.publish(state_topic(FLEET, "cam-a"), state.to_bytes(), retain=True).wait(5)
        for seq in range(1, 6):
            link.publish(telemetry_topic(FLEET, "cam-a"), telemetry(seq, 10.0 + seq)).wait(5)
        health = wait_for(
            "five samples",
            lambda: len(s := get(url + "/api/devices/cam-a/health")["samples"]) == 5 and s,
        )
        assert [s["p95_ms"] for s in health] == [11.0, 12.0, 13.0, 14.0, 15.0]
        devices = {d["device_id"]: d for d in get(url + "/api/fleet")["devices"]}
        assert devices["cam-a"]["online"] is True
        assert devices["cam-a"]["bundle_version"] == "3"
        assert devices["cam-b"]["online"] is False
        with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
            text = response.read().decode()
        assert 'edgeops_device_latency_p95_seconds{device="cam-a",group="line1"} 0.015' in text
        assert "edgeops_ingest_received_total 6" in text
        assert "edgeops_devices_online 1" in text
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output.decode()
    assert b"stopped" in output
    assert b"Traceback" not in output


def test_two_instances_in_a_share_group_ingest_each_message_once(fleet) -> None:
    services = []
    for cert, key in (("manager.crt", "manager.key"), ("manager-2.crt", "manager-2.key")):
        service = FleetService(
            ServiceConfig(
                fleet_dir=fleet.path,
                http_port=0,
                share_group="ingest",
                run_rollouts=False,
                manager_cert=fleet.path / "tls" / cert,
                manager_key=fleet.path / "tls" / key,
                tick_interval_s=0.1,
                max_delay_s=0.05,
            )
        )
        services.append(service)
        service.start()
    try:
        assert [s.identity for s in services] == [MANAGER_COMMON_NAME, SECOND_MANAGER]
        per_device = 40
        links = {device_id: fleet.device(device_id) for device_id in DEVICES}
        acks = [
            link.publish(telemetry_topic(FLEET, device_id), telemetry(seq, 20.0))
            for seq in range(1, per_device + 1)
            for device_id, link in links.items()
        ]
        for ack in acks:
            ack.wait(10)
        total = per_device * len(DEVICES)

        def written() -> int:
            return sum(s.ingestor.stats.written for s in services if s.ingestor)

        wait_for("every sample written", lambda: written() >= total)
        time.sleep(0.5)  # anything delivered twice would arrive by now
        stats = [s.ingestor.stats for s in services if s.ingestor]
        assert sum(s.received for s in stats) == total
        assert sum(s.written for s in stats) == total
        assert sum(s.duplicates for s in stats) == 0
        # The broker shared the stream: both instances took part.
        assert all(s.received > 0 for s in stats), [s.received for s in stats]
        store = open_registry(fleet.path)
        try:
            for device_id in DEVICES:
                rows = store.telemetry_for(device_id, limit=1000)
                assert sorted(r.seq for r in rows) == list(range(1, per_device + 1))
        finally:
            store.close()
    finally:
        for service in services:
            service.stop()
