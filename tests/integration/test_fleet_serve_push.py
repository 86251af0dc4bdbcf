"""``edgeops push --detach`` then ``edgeops fleet serve`` with real agents.

The rig of ``test_push.py``: the fleet's generated TLS broker, a :class:`Simulator` of real
agents (signed directives verified, chunks fetched, real LiteRT models health-checked on the
bundle's test vectors, telemetry reported). The push only publishes and records the rollout;
the service must adopt it, drive it to the end through the same RolloutRunner, and obey an
abort sent to its HTTP API by rolling the devices back.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgeops.fleet.service import FleetService, ServiceConfig

from .test_push import IDS, Rig

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def rig(tmp_path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    try:
        yield made
    finally:
        made.stop()


def call(url: str, method: str = "GET") -> Any:
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def serve(setup: Rig) -> FleetService:
    service = FleetService(
        ServiceConfig(fleet_dir=setup.root, http_port=0, tick_interval_s=0.2, adopt_after_s=0.0)
    )
    service.start()
    return service


def test_service_drives_a_detached_push_until_every_device_committed(rig) -> None:
    sim = rig.simulator()
    try:
        rig.baseline(sim)
        code, result = rig.push("--detach")
        assert code == 0, result
        assert result["detached"] is True
        rollout_id = result["rollout_id"]
        # Detached: nobody drives it yet, no device was sent release 2.
        time.sleep(1.0)
        assert all(sim.running_bundle(d) == rig.v1 for d in IDS)
        service = serve(rig)
        try:
            url = f"{service.url}/api/rollouts/{rollout_id}"
            view = wait_for(
                "the rollout to end", lambda: call(url)["status"] != "running" and call(url)
            )
            assert view["status"] == "succeeded", view
            assert [w["stage"] for w in view["waves"]] == ["passed"] * 3
            assert all(sim.running_bundle(d) == rig.v2 for d in IDS)
            fleet = call(f"{service.url}/api/fleet")
            assert {d["bundle"] for d in fleet["devices"]} == {rig.v2}
            with urllib.request.urlopen(f"{service.url}/metrics", timeout=10) as response:
                text = response.read().decode()
            assert (
                f'edgeops_rollout_status{{status="succeeded",rollout="{rollout_id}",group="sim"}} 1'
                in text
            )
        finally:
            service.stop()
    finally:
        sim.stop()


def test_abort_through_the_api_rolls_the_devices_back(rig) -> None:
    sim = rig.simulator()
    try:
        rig.baseline(sim)
        code, result = rig.push("--detach")
        assert code == 0, result
        rollout_id = result["rollout_id"]
        service = serve(rig)
        try:
            url = f"{service.url}/api/rollouts/{rollout_id}"
            wait_for("the canary on release 2", lambda: sim.running_bundle(IDS[0]) == rig.v2)
            answer = call(url + "/abort", "POST")
            assert answer["request"] == "abort"
            view = wait_for("aborted", lambda: call(url)["status"] == "aborted" and call(url))
            assert "aborted from the fleet service API" in view["reason"]
            wait_for(
                "every device back on release 1",
                lambda: all(sim.running_bundle(d) == rig.v1 for d in IDS),
            )
        finally:
            service.stop()
    finally:
        sim.stop()
