"""Status and rollout views from the registry, and the CLI commands that print them."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgeops.cli import app
from edgeops.cli import commands as _commands  # noqa: F401 - registers the commands
from edgeops.fleet.registry import (
    BundleRecord,
    SqliteStore,
    SqlStore,
    StateUpdate,
    TelemetryRow,
    open_registry,
)
from edgeops.fleet.rollout import (
    DeviceCandidate,
    RolloutController,
    RolloutPolicy,
    plan_waves,
)
from edgeops.fleet.rollout.persist import to_record
from edgeops.fleet.status import ago, fleet_status, rollout_status, summary_line

NEW = "a" * 64


def seed(store: SqlStore, now: float = 1000.0) -> None:
    store.add_bundle(BundleRecord(digest=NEW, name="mobilenet", version="2.1", release=3, size=10))
    for i in range(4):
        store.add_device(f"cam-{i}", group="lab" if i < 3 else "field", board="rpi4", now=1.0)
    store.ingest(
        states=[
            StateUpdate(
                device_id=f"cam-{i}",
                seq=None,
                ts=now - 10 * i,
                online=i != 3,
                bundle=NEW if i < 2 else None,
            )
            for i in range(4)
        ],
        telemetry=[
            TelemetryRow(
                device_id=f"cam-{i}",
                seq=1,
                ts=now,
                p95_ms=10.0 + i,
                error_rate=0.01 * i,
                drift=0.1,
                temp_c=50.0,
            )
            for i in range(3)
        ],
    )


def controller() -> RolloutController:
    policy = RolloutPolicy(canary_count=1, waves=(100.0,))
    devices = [DeviceCandidate(device_id=f"cam-{i}") for i in range(3)]
    return RolloutController(
        rollout_id="r-1",
        bundle=NEW,
        previous_bundle=None,
        policy=policy,
        waves=plan_waves(devices, policy),
        created=900.0,
    )


def test_fleet_status_rows_and_summary():
    store = SqliteStore(":memory:")
    seed(store)
    status = fleet_status(store, now=1000.0)
    assert [d.device_id for d in status.devices] == ["cam-0", "cam-1", "cam-2", "cam-3"]
    cam0 = status.devices[0]
    assert (cam0.online, cam0.bundle_name, cam0.bundle_version, cam0.p95_ms) == (
        True,
        "mobilenet",
        "2.1",
        10.0,
    )
    s = status.summary
    assert (s.devices, s.online, s.groups) == (4, 3, 2)
    assert s.bundles == {"mobilenet 2.1": 2, "none": 2}
    assert s.mean_p95_ms == pytest.approx(11.0)
    line = summary_line(status)
    assert line.startswith("4 devices · 3 online · 1 offline · 2 groups")
    assert "mobilenet 2.1 ×2" in line
    only_field = fleet_status(store, group="field", now=1000.0)
    assert [d.device_id for d in only_field.devices] == ["cam-3"]


def test_ago_is_short_and_human():
    assert ago(None, 10.0) == "never"
    assert ago(95.0, 100.0) == "5s ago"
    assert ago(0.0, 7300.0) == "2h ago"


def test_rollout_status_defaults_to_the_newest_active_rollout():
    store = SqliteStore(":memory:")
    seed(store)
    assert rollout_status(store) is None
    ctl = controller()
    ctl.step(now=950.0)
    store.save_rollout(to_record(ctl, group="lab", now=950.0))
    view = rollout_status(store)
    assert view is not None
    assert view.rollout_id == "r-1"
    assert view.waves[0]["counts"]["waiting"] == 1
    assert view.devices == {"cam-0": "sent", "cam-1": "pending", "cam-2": "pending"}


@pytest.fixture
def fleet_dir(tmp_path):
    store = open_registry(tmp_path)
    seed(store)
    ctl = controller()
    ctl.step(now=950.0)
    store.save_rollout(to_record(ctl, group="lab", now=950.0))
    store.close()
    return tmp_path


def test_status_command_prints_the_summary_and_a_row_per_device(fleet_dir):
    result = CliRunner().invoke(app, ["status", "--fleet", str(fleet_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("4 devices · 3 online")
    assert lines[1].split()[:4] == ["device", "group", "online", "bundle"]
    assert lines[2].split()[:5] == ["cam-0", "lab", "yes", "mobilenet", "2.1"]
    assert len(lines) == 6


def test_status_command_json_for_one_group(fleet_dir):
    result = CliRunner().invoke(
        app, ["status", "--fleet", str(fleet_dir), "--group", "lab", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["summary"]["devices"] == 3
    assert [d["device_id"] for d in data["devices"]] == ["cam-0", "cam-1", "cam-2"]


def test_rollout_commands_list_show_and_queue_requests(fleet_dir):
    runner = CliRunner()
    listed = runner.invoke(app, ["rollout", "list", "--fleet", str(fleet_dir), "--json"])
    assert listed.exit_code == 0, listed.output
    assert [r["rollout_id"] for r in json.loads(listed.output)] == ["r-1"]
    shown = runner.invoke(app, ["rollout", "status", "--fleet", str(fleet_dir)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("rollout r-1 · group lab · running")
    paused = runner.invoke(app, ["rollout", "pause", "r-1", "--fleet", str(fleet_dir)])
    assert paused.exit_code == 0, paused.output
    shown = runner.invoke(app, ["rollout", "status", "r-1", "--fleet", str(fleet_dir), "--json"])
    assert json.loads(shown.output)["pending_requests"] == ["pause"]


def test_rollout_request_for_an_unknown_rollout_fails_clearly(fleet_dir):
    from edgeops.errors import ConfigError

    result = CliRunner().invoke(app, ["rollout", "abort", "r-9", "--fleet", str(fleet_dir)])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "no rollout 'r-9'" in str(result.exception)


def test_device_show_prints_update_history_with_reasons_and_recent_health(fleet_dir):
    from edgeops.fleet.registry import EventRecord

    store = open_registry(fleet_dir)
    store.ingest(
        events=[
            EventRecord(
                device_id="cam-1",
                seq=1,
                ts=990.0,
                kind="update_result",
                state="rolled_back",
                bundle=NEW,
                directive_seq=3,
                reason="p95 41 ms over the 30 ms budget",
            )
        ]
    )
    store.close()
    runner = CliRunner()
    shown = runner.invoke(app, ["device", "show", "cam-1", "--fleet", str(fleet_dir)])
    assert shown.exit_code == 0, shown.output
    assert "p95 41 ms over the 30 ms budget" in shown.output
    assert "rolled_back" in shown.output
    data = json.loads(
        runner.invoke(app, ["device", "show", "cam-1", "--fleet", str(fleet_dir), "--json"]).output
    )
    assert data["device"]["device_id"] == "cam-1"
    assert [e["state"] for e in data["events"]] == ["rolled_back"]
    assert data["health"][0]["p95_ms"] == 11.0
    missing = runner.invoke(app, ["device", "show", "nope", "--fleet", str(fleet_dir)])
    assert missing.exit_code != 0


def test_watch_refreshes_status_and_shows_active_rollouts(fleet_dir):
    result = CliRunner().invoke(
        app, ["watch", "--fleet", str(fleet_dir), "--count", "2", "--interval", "0.2"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("4 devices · 3 online") == 2
    assert result.output.count("rollout r-1 (lab) running · canary: installing") == 2
