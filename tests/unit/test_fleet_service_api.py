"""The fleet service's routing (FleetApi) on a real in-memory registry, without sockets."""

from __future__ import annotations

import itertools
import json
from http import HTTPStatus
from typing import Any

import pytest

from edgeops.fleet.registry import SqliteStore, StateUpdate, TelemetryRow
from edgeops.fleet.rollout import RolloutPolicy
from edgeops.fleet.rollout.runner import RolloutRunner
from edgeops.fleet.service.api import MAX_HEALTH_SAMPLES, FleetApi
from edgeops.fleet.service.testing import NEW_DIGEST, RecordingSink, populate

FLEET = "unit"
NOW = 1_800_000_000.0


@pytest.fixture
def store():
    store = SqliteStore(":memory:")
    yield store
    store.close()


@pytest.fixture
def api(store):
    populate(store, fleet=FLEET, now=NOW, devices=3, samples=10, interval_s=60.0)
    # Each request a moment later, so queued requests keep their order.
    ticks = itertools.count()
    return FleetApi(
        store,
        metrics=lambda: "m 1\n",
        info=lambda: {"fleet": FLEET},
        clock=lambda: NOW + next(ticks),
    )


def get(api: FleetApi, target: str) -> tuple[HTTPStatus, Any]:
    response = api.handle("GET", target)
    assert response.content_type == "application/json"
    return response.status, json.loads(response.body)


def test_fleet_summary_and_devices(api) -> None:
    status, body = get(api, "/api/fleet")
    assert status == HTTPStatus.OK
    assert body["summary"]["devices"] == 3
    assert body["summary"]["online"] == 2  # the last device ended offline
    assert [d["device_id"] for d in body["devices"]] == ["cam-00", "cam-01", "cam-02"]
    assert body["service"] == {"fleet": FLEET}
    status, body = get(api, "/api/fleet?group=nowhere")
    assert body["summary"]["devices"] == 0


def test_device_detail_has_history_and_health(api) -> None:
    status, body = get(api, "/api/devices/cam-01")
    assert status == HTTPStatus.OK
    assert body["device"]["device_id"] == "cam-01"
    assert [e["reason"] for e in body["events"]] == ["trial passed"]
    assert len(body["health"]) == 10


def test_health_since_is_oldest_first_and_bounded(api) -> None:
    status, body = get(api, "/api/devices/cam-00/health")
    assert status == HTTPStatus.OK
    ts = [s["ts"] for s in body["samples"]]
    assert len(ts) == 10
    assert ts == sorted(ts)
    since = ts[6]
    status, body = get(api, f"/api/devices/cam-00/health?since={since}")
    assert [s["ts"] for s in body["samples"]] == ts[6:]
    status, body = get(api, "/api/devices/cam-00/health?limit=2")
    assert [s["ts"] for s in body["samples"]] == ts[-2:]
    assert body["samples"][-1]["p95_ms"] is not None


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/api/devices/ghost", HTTPStatus.NOT_FOUND),
        ("/api/devices/ghost/health", HTTPStatus.NOT_FOUND),
        ("/api/devices/cam-00/health?since=yesterday", HTTPStatus.BAD_REQUEST),
        ("/api/devices/cam-00/health?since=nan", HTTPStatus.BAD_REQUEST),
        (f"/api/devices/cam-00/health?limit={MAX_HEALTH_SAMPLES + 1}", HTTPStatus.BAD_REQUEST),
        ("/api/rollouts/none", HTTPStatus.NOT_FOUND),
        ("/api/whatever", HTTPStatus.NOT_FOUND),
    ],
)
def test_errors_are_json_with_status(api, target, status) -> None:
    got, body = get(api, target)
    assert got == status
    assert isinstance(body["error"], str)
    assert body["error"]


def test_wrong_method_is_405(api) -> None:
    response = api.handle("POST", "/api/fleet", b"{}")
    assert response.status == HTTPStatus.METHOD_NOT_ALLOWED
    assert "use GET" in json.loads(response.body)["error"]
    response = api.handle("GET", "/api/rollouts/r1/pause")
    assert response.status == HTTPStatus.METHOD_NOT_ALLOWED


def test_not_finite_numbers_become_null(store, api) -> None:
    store.ingest(
        telemetry=[TelemetryRow(device_id="cam-00", seq=999, ts=NOW + 1, p95_ms=float("inf"))],
        states=[StateUpdate(device_id="cam-00", seq=None, ts=NOW + 1, online=True)],
    )
    status, body = get(api, "/api/devices/cam-00/health?limit=1")
    assert status == HTTPStatus.OK
    assert body["samples"][0]["p95_ms"] is None


def test_rollout_requests_are_queued_for_the_runner(store, api) -> None:
    RolloutRunner.start(
        store,
        RecordingSink(),
        rollout_id="r1",
        group="lab",
        bundle=NEW_DIGEST,
        policy=RolloutPolicy(canary_count=1),
        clock=lambda: NOW,
    )
    _, views = get(api, "/api/rollouts")
    assert [v["rollout_id"] for v in views] == ["r1"]
    _, view = get(api, "/api/rollouts/r1")
    assert view["status"] == "running"
    assert set(view["devices"]) == {"cam-00", "cam-01", "cam-02"}

    response = api.handle("POST", "/api/rollouts/r1/pause", b'{"reason": "night"}')
    assert response.status == HTTPStatus.ACCEPTED
    assert json.loads(response.body)["request"] == "pause"
    response = api.handle("POST", "/api/rollouts/r1/abort")
    assert response.status == HTTPStatus.ACCEPTED
    pending = store.pending_requests("r1")
    assert [(r.action, r.reason) for r in pending] == [
        ("pause", "night"),
        ("abort", "aborted from the fleet service API"),
    ]
    _, view = get(api, "/api/rollouts/r1")
    assert view["pending_requests"] == ["pause", "abort"]

    bad = api.handle("POST", "/api/rollouts/r1/resume", b"not json")
    assert bad.status == HTTPStatus.BAD_REQUEST
    bad = api.handle("POST", "/api/rollouts/r1/resume", b'{"reason": 5}')
    assert bad.status == HTTPStatus.BAD_REQUEST
    missing = api.handle("POST", "/api/rollouts/nope/pause")
    assert missing.status == HTTPStatus.NOT_FOUND


def test_dashboard_assets_and_metrics(api) -> None:
    page = api.handle("GET", "/")
    assert page.status == HTTPStatus.OK
    assert page.content_type.startswith("text/html")
    assert b'<script src="/dashboard.js">' in page.body
    script = api.handle("GET", "/dashboard.js")
    assert script.content_type.startswith("text/javascript")
    assert b"function drawChart" in script.body
    assert api.handle("GET", "/dashboard.css").content_type.startswith("text/css")
    metrics = api.handle("GET", "/metrics")
    assert metrics.content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert metrics.body == b"m 1\n"


def test_http_address_and_config_are_checked(tmp_path) -> None:
    from edgeops.errors import ConfigError, EdgeopsError
    from edgeops.fleet.service import ServiceConfig, parse_http_address

    assert parse_http_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_http_address("[::1]:0") == ("::1", 0)
    for bad in ("8080", ":8080", "host:port", "host:70000"):
        with pytest.raises(ConfigError):
            parse_http_address(bad)
    with pytest.raises(ConfigError, match="lease_s"):
        ServiceConfig(fleet_dir=tmp_path, tick_interval_s=5.0, lease_s=8.0)
    with pytest.raises(ConfigError, match="cert"):
        ServiceConfig(fleet_dir=tmp_path, manager_cert=tmp_path / "m.crt")
    with pytest.raises(EdgeopsError):
        ServiceConfig(fleet_dir=tmp_path, share_group="a/b")
