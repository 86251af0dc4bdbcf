"""``edgeops fleet serve`` in-process: real HTTP on loopback, real SQLite, a fake broker.

The registry is filled through the Ingestor with real protocol messages
(:func:`edgeops.fleet.service.testing.populate`); the rollout is recorded in the registry as
``edgeops push --detach`` leaves it, and the service must pick it up, sign its directives
with the fleet's deploy key, follow the devices' reports, and obey pause / resume / abort
sent to its HTTP API. Device reports travel the same way as in production: published on the
device's topics, ingested into the registry, and fed to the runner from there.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from edgeops.fleet.fleetdir import MANAGER_COMMON_NAME, FleetDir, init_fleet
from edgeops.fleet.registry import open_registry
from edgeops.fleet.rollout import RolloutPolicy
from edgeops.fleet.rollout.runner import RolloutRunner
from edgeops.fleet.service import FleetService, ServiceConfig
from edgeops.fleet.service.testing import NEW_DIGEST, OLD_DIGEST, RecordingSink, populate
from edgeops.mqtt.fake import FakeBroker
from edgeops.protocol import (
    EventMessage,
    TelemetryMessage,
    TelemetrySample,
    device_directive_topic,
    events_topic,
    telemetry_topic,
)
from edgeops.trust import TrustedState

pytestmark = pytest.mark.integration

FLEET = "svc"
POLICY = RolloutPolicy(canary_count=1, waves=(100.0,), soak_s=0.3, wave_timeout_s=30.0)


class Setup:
    def __init__(self, root: Path) -> None:
        self.fleet = init_fleet(root / "fleet", name=FLEET)
        store = open_registry(self.fleet.path)
        self.demo = populate(store, fleet=FLEET, now=time.time(), devices=3, offline=0)
        # What `edgeops push --detach` leaves behind: the rollout recorded, nobody driving it.
        RolloutRunner.start(
            store, RecordingSink(), rollout_id="r1", group="lab", bundle=NEW_DIGEST, policy=POLICY
        )
        store.close()
        self.broker = FakeBroker()
        self.services: list[FleetService] = []
        self.device_seq = 100

    def service(self, manager: str = MANAGER_COMMON_NAME) -> FleetService:
        service = FleetService(
            ServiceConfig(
                fleet_dir=self.fleet.path,
                http_port=0,
                tick_interval_s=0.05,
                max_delay_s=0.02,
                adopt_after_s=0.2,
            ),
            link=self.broker.link(manager),
        )
        service.start()
        self.services.append(service)
        return service

    def directives(self, device_id: str) -> list[tuple[str, str]]:
        """(action, bundle) of every directive the device got, verified with the root."""
        trusted = TrustedState(FleetDir.open(self.fleet.path).root_bytes(), now=datetime.now(UTC))
        out: list[tuple[str, str]] = []
        for message in self.broker.publishes_to(device_directive_topic(FLEET, device_id)):
            directive = trusted.verify_directive(message.payload, device_id=device_id)
            out.append((directive.action, directive.bundle.sha256))
        return out

    def report(
        self, device_id: str, state: str, bundle: str, *, kind: str = "update_result"
    ) -> None:
        link = self.broker.link(device_id)
        link.connect()
        self.device_seq += 1
        event = EventMessage(
            seq=self.device_seq, kind=kind, ts=time.time(), bundle_digest=bundle, state=state
        )
        link.publish(events_topic(FLEET, device_id), event.to_bytes()).wait(5)
        link.close()

    def health(self, device_id: str, bundle: str) -> None:
        """A telemetry window on ``bundle`` as healthy as the old one (the gates need it)."""
        link = self.broker.link(device_id)
        link.connect()
        self.device_seq += 1
        sample = TelemetrySample(
            ts=time.time(),
            window_s=1.0,
            requests=100,
            errors=0,
            latency_p95_ms=20.0,
            bundle_digest=bundle,
            drift=0.01,
        )
        message = TelemetryMessage(seq=self.device_seq, samples=(sample,))
        link.publish(telemetry_topic(FLEET, device_id), message.to_bytes()).wait(5)
        link.close()

    def commit(self, device_id: str) -> None:
        self.report(device_id, "committed", NEW_DIGEST)
        self.health(device_id, NEW_DIGEST)

    def close(self) -> None:
        for service in self.services:
            service.stop()


@pytest.fixture
def setup(tmp_path) -> Iterator[Setup]:
    s = Setup(tmp_path)
    try:
        yield s
    finally:
        s.close()


def call(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
            kind = response.headers["Content-Type"]
            return response.status, json.loads(raw) if "json" in kind else raw.decode()
    except urllib.error.HTTPError as exc:
        error = exc
    # Errors are JSON too, whatever the endpoint.
    with error:
        assert error.headers["Content-Type"] == "application/json"
        return error.code, json.loads(error.read())


def wait_for(what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def rollout(service: FleetService) -> dict[str, Any]:
    status, view = call(service.url + "/api/rollouts/r1")
    assert status == 200
    return view


def canary(service: FleetService) -> str:
    view = rollout(service)
    return next(d for d, phase in view["devices"].items() if phase != "pending")


def test_detached_rollout_is_driven_and_obeys_pause_resume_abort_over_http(setup) -> None:
    service = setup.service()
    wait_for("the canary's directive", lambda: rollout(service)["waves"][0]["counts"]["waiting"])
    first = canary(service)
    assert setup.directives(first) == [("install", NEW_DIGEST)]
    assert service.info()["rollouts_driven"] == ["r1"]

    status, body = call(service.url + "/api/rollouts/r1/pause", "POST", {"reason": "lunch"})
    assert (status, body["request"]) == (202, "pause")
    wait_for("paused", lambda: rollout(service)["status"] == "paused")
    # Paused: the canary still reports and is still watched, but no further wave starts.
    setup.commit(first)
    wait_for("canary committed", lambda: rollout(service)["devices"][first] == "committed")
    time.sleep(POLICY.soak_s + 0.5)
    view = rollout(service)
    assert view["status"] == "paused"
    assert all(phase == "pending" for d, phase in view["devices"].items() if d != first)

    status, _ = call(service.url + "/api/rollouts/r1/resume", "POST")
    assert status == 202
    wait_for(
        "the next wave's directives",
        lambda: all(setup.directives(d) for d in setup.demo.devices),
    )
    status, body = call(service.url + "/api/rollouts/r1/abort", "POST", {"reason": "test"})
    assert status == 202
    wait_for("aborted", lambda: rollout(service)["status"] == "aborted")
    assert rollout(service)["reason"].endswith("test")
    # Every device that was sent the install gets a signed rollback to the old bundle.
    for device_id in setup.demo.devices:
        assert setup.directives(device_id)[-1] == ("rollback", OLD_DIGEST), device_id
    wait_for("the runner let go", lambda: service.info()["rollouts_driven"] == [])

    status, body = call(service.url + "/api/rollouts/r1/pause", "POST")
    assert status == 409
    assert "finished" in body["error"]

    status, text = call(service.url + "/metrics")
    assert status == 200
    assert 'edgeops_rollout_status{status="aborted",rollout="r1",group="lab"} 1' in text
    assert "edgeops_devices 3" in text


def test_a_restarted_service_resumes_the_rollout(setup) -> None:
    first_service = setup.service()
    wait_for("canary directive", lambda: rollout(first_service)["waves"][0]["counts"]["waiting"])
    first = canary(first_service)
    first_service.stop()
    # Reported while no service ran: the registry has it only once a service ingests it, so
    # the device's report goes out now and the new service must pick the rollout up.
    second = setup.service()
    wait_for("resumed", lambda: second.info()["rollouts_driven"] == ["r1"])
    setup.commit(first)
    wait_for("succeeded after the canary", lambda: rollout(second)["devices"][first] == "committed")
    for device_id in setup.demo.devices:
        if device_id != first:
            wait_for(f"{device_id} sent", partial(setup.directives, device_id))
            setup.commit(device_id)
    wait_for("succeeded", lambda: rollout(second)["status"] == "succeeded", timeout=20)
    # The canary got its install once: the new service did not send it again.
    assert setup.directives(first) == [("install", NEW_DIGEST)]


def test_of_two_services_one_drives_and_the_other_takes_over_when_it_stops(setup) -> None:
    first = setup.service()
    wait_for("the first drives", lambda: first.info()["rollouts_driven"] == ["r1"])
    second = setup.service(manager="edgeops-fleet-manager-2")
    time.sleep(1.0)  # many ticks of both
    assert second.info()["rollouts_driven"] == []
    assert first.info()["rollouts_driven"] == ["r1"]
    first_canary = canary(second)
    assert len(setup.directives(first_canary)) == 1
    first.stop()
    wait_for("the second took over", lambda: second.info()["rollouts_driven"] == ["r1"])
    setup.commit(first_canary)
    wait_for("canary committed", lambda: rollout(second)["devices"][first_canary] == "committed")
    # One install for the canary in all: neither service sent it twice.
    assert setup.directives(first_canary) == [("install", NEW_DIGEST)]


def test_http_errors_and_service_figures(setup) -> None:
    service = setup.service()
    status, body = call(service.url + "/api/devices/nobody")
    assert status == 404
    status, body = call(service.url + "/api/fleet", "POST", {})
    assert status == 405
    status, body = call(service.url + "/api/devices/cam-00/health?since=soon")
    assert status == 400
    request = urllib.request.Request(
        service.url + "/api/rollouts/r1/pause", data=b"x" * 70_000, method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 413
    caught.value.close()
    status, body = call(service.url + "/api/fleet")
    assert status == 200
    assert body["summary"]["devices"] == 3
    assert body["service"]["fleet"] == FLEET
    assert body["service"]["connected"] is True
    status, health = call(service.url + "/api/devices/cam-02/health?since=0")
    assert len(health["samples"]) == len(setup.demo.samples["cam-02"])
