"""The registry store's contract, on SQLite in memory (the real SQL, no file)."""

from __future__ import annotations

from typing import Any

import pytest

from edgeops.errors import ConfigError
from edgeops.fleet.registry import (
    BundleRecord,
    CertificateRecord,
    EventRecord,
    RolloutRecord,
    SqliteStore,
    StateUpdate,
    TelemetryRow,
    WaveRecord,
)
from edgeops.fleet.registry.migrations import LATEST_VERSION


@pytest.fixture
def store():
    s = SqliteStore(":memory:")
    yield s
    s.close()


def sample(device: str, seq: int, **kw) -> TelemetryRow:
    values: dict[str, Any] = {
        "ts": 1000.0 + seq,
        "bundle": "sha256:a",
        "p95_ms": 10.0,
        "error_rate": 0.0,
    }
    values.update(kw)
    return TelemetryRow(device_id=device, seq=seq, **values)


def test_schema_is_migrated_to_the_latest_version(store):
    assert store.schema_version() == LATEST_VERSION


def test_enroll_list_and_move_devices(store):
    store.add_device("d1", group="lab", board="rpi4", now=1.0)
    store.add_device("d2", group="field", board=None, now=2.0)
    assert store.list_groups() == ["field", "lab"]
    assert [d.device_id for d in store.list_devices()] == ["d1", "d2"]
    assert [d.device_id for d in store.list_devices(group="lab")] == ["d1"]
    moved = store.add_device("d1", group="field", board=None, now=3.0)
    assert moved.group == "field"
    assert moved.board == "rpi4"  # kept when the new enrollment does not say
    assert store.get_device("nobody") is None


def test_revoking_a_device_revokes_its_certificates(store):
    store.add_device("d1", group="lab", board=None, now=1.0)
    store.add_certificate(CertificateRecord(serial="ABC1", subject="d1", kind="device", issued=1.0))
    store.add_certificate(CertificateRecord(serial="abc2", subject="d1", kind="device", issued=2.0))
    store.add_certificate(
        CertificateRecord(serial="ff", subject="fleet-manager", kind="manager", issued=1.0)
    )
    assert store.revoke_device("d1", now=5.0) == ["abc1", "abc2"]
    assert [c.serial for c in store.revoked_certificates()] == ["abc1", "abc2"]
    assert store.revoke_device("d1", now=6.0) == []  # already done
    assert store.get_device("d1").revoked == 5.0
    assert store.list_devices() == []
    assert [d.device_id for d in store.list_devices(include_revoked=True)] == ["d1"]
    with pytest.raises(ConfigError, match="no device 'd9'"):
        store.revoke_device("d9", now=1.0)


def test_directive_sequences_are_per_target_and_monotonic(store):
    assert [store.next_directive_sequence("dev/d1") for _ in range(3)] == [1, 2, 3]
    assert store.next_directive_sequence("group/lab") == 1
    assert store.next_directive_sequence("dev/d1") == 4


def test_bundles_round_trip(store):
    bundle = BundleRecord(
        digest="sha256:a",
        name="mobilenet",
        version="1.2",
        release=7,
        size=3_000_000,
        manifest={"runtime": "litert"},
        added=9.0,
    )
    store.add_bundle(bundle)
    store.add_bundle(bundle)
    assert store.get_bundle("sha256:a") == bundle
    assert store.get_bundle("sha256:b") is None


def test_telemetry_duplicates_by_device_and_seq_are_dropped(store):
    store.add_device("d1", group="lab", board=None, now=1.0)
    store.add_device("d2", group="lab", board=None, now=1.0)
    first = store.ingest(telemetry=[sample("d1", 1), sample("d1", 2), sample("d2", 1)])
    assert (first.written, first.duplicates) == (3, 0)
    again = store.ingest(
        telemetry=[sample("d1", 2), sample("d1", 3), sample("d1", 3), sample("ghost", 1)]
    )
    assert (again.written, again.duplicates, again.unknown) == (1, 2, 1)
    assert [s.seq for s in store.telemetry_for("d1")] == [3, 2, 1]


def test_latest_health_is_the_highest_seq_even_when_it_arrives_first(store):
    store.add_device("d1", group="lab", board=None, now=1.0)
    store.ingest(telemetry=[sample("d1", 5, p95_ms=50.0, temp_c=61.0)])
    store.ingest(telemetry=[sample("d1", 4, p95_ms=40.0)])  # replayed from the device's buffer
    device = store.get_device("d1")
    assert device.p95_ms == 50.0
    assert device.temp_c == 61.0
    assert device.health_ts == 1005.0


def test_state_updates_apply_in_seq_order_and_keep_unsaid_fields(store):
    store.add_device("d1", group="lab", board=None, now=1.0)
    counts = store.ingest(
        states=[
            StateUpdate(
                device_id="d1",
                seq=3,
                ts=10.0,
                online=True,
                bundle="sha256:b",
                previous_bundle="sha256:a",
                agent_version="0.1",
                board="rpi5",
            )
        ]
    )
    assert counts.written == 1
    stale = store.ingest(states=[StateUpdate(device_id="d1", seq=2, ts=11.0, online=False)])
    assert stale.stale == 1
    assert store.get_device("d1").online
    # The last will carries the seq of the state it was registered with.
    store.ingest(states=[StateUpdate(device_id="d1", seq=3, ts=12.0, online=False)])
    device = store.get_device("d1")
    assert not device.online
    assert device.bundle == "sha256:b"
    assert device.agent_version == "0.1"
    assert device.board == "rpi5"
    assert device.last_seen == 12.0


def test_last_seen_only_moves_forward(store):
    store.add_device("d1", group="lab", board=None, now=1.0)
    store.ingest(seen={"d1": 50.0})
    store.ingest(seen={"d1": 40.0})
    assert store.get_device("d1").last_seen == 50.0


def test_events_are_kept_newest_first_without_duplicates(store):
    store.add_device("d1", group="lab", board=None, now=1.0)
    events = [
        EventRecord(
            device_id="d1",
            seq=1,
            ts=1.0,
            kind="update",
            state="downloading",
            bundle="sha256:b",
            directive_seq=4,
        ),
        EventRecord(
            device_id="d1",
            seq=2,
            ts=2.0,
            kind="update",
            state="rolled_back",
            bundle="sha256:b",
            directive_seq=4,
            reason="p95 over budget",
            figures={"p95_ms": 41.2},
        ),
    ]
    assert store.ingest(events=events).written == 2
    assert store.ingest(events=events).duplicates == 2
    history = store.events_for("d1")
    assert [e.state for e in history] == ["rolled_back", "downloading"]
    assert history[0].reason == "p95 over budget"
    assert history[0].figures == {"p95_ms": 41.2}


def test_mean_p95_per_device_for_a_bundle(store):
    for d in ("d1", "d2"):
        store.add_device(d, group="lab", board=None, now=1.0)
    store.ingest(
        telemetry=[
            sample("d1", 1, p95_ms=10.0),
            sample("d1", 2, p95_ms=20.0),
            sample("d1", 3, p95_ms=99.0, bundle="sha256:other"),
            sample("d2", 1, p95_ms=7.0),
        ]
    )
    assert store.mean_p95(["d1", "d2", "d3"], bundle="sha256:a") == {"d1": 15.0, "d2": 7.0}


def rollout(status: str = "running", **kw) -> RolloutRecord:
    values: dict[str, Any] = {
        "rollout_id": "r1",
        "group": "lab",
        "bundle": "sha256:b",
        "previous_bundle": "sha256:a",
        "status": status,
        "created": 1.0,
        "updated": 2.0,
        "policy": {"waves": [100.0]},
        "state": {"version": 1, "current": 0},
        "waves": (
            WaveRecord(
                index=0,
                canary=True,
                stage="installing",
                devices=("d1",),
                counts={"committed": 1},
                started=1.0,
            ),
            WaveRecord(
                index=1,
                canary=False,
                stage="not_started",
                devices=("d2", "d3"),
                counts={"pending": 2},
            ),
        ),
        "device_phases": {"d1": "committed", "d2": "pending", "d3": "pending"},
    }
    values.update(kw)
    return RolloutRecord(**values)


def test_rollouts_round_trip_and_update(store):
    store.save_rollout(rollout())
    assert store.get_rollout("r1") == rollout()
    store.save_rollout(
        rollout(
            status="aborted",
            reason="p95",
            updated=3.0,
            device_phases={"d1": "rolled_back", "d2": "pending", "d3": "pending"},
        )
    )
    saved = store.get_rollout("r1")
    assert saved.status == "aborted"
    assert saved.device_phases["d1"] == "rolled_back"
    assert [r.rollout_id for r in store.list_rollouts()] == ["r1"]
    assert store.list_rollouts(active_only=True) == []


def test_rollout_requests_queue_until_handled(store):
    store.save_rollout(rollout())
    pause = store.add_rollout_request("r1", "pause", reason="lunch", now=5.0)
    store.add_rollout_request("r1", "resume", reason="", now=6.0)
    assert [r.action for r in store.pending_requests("r1")] == ["pause", "resume"]
    store.mark_request_handled(pause.request_id, now=7.0)
    assert [r.action for r in store.pending_requests("r1")] == ["resume"]
    with pytest.raises(ConfigError, match="expected one of pause, resume, abort"):
        store.add_rollout_request("r1", "explode", reason="", now=1.0)
    with pytest.raises(ConfigError, match="no rollout"):
        store.add_rollout_request("r9", "pause", reason="", now=1.0)
    store.save_rollout(rollout(status="succeeded"))
    with pytest.raises(ConfigError, match="already finished"):
        store.add_rollout_request("r1", "abort", reason="", now=1.0)


def test_a_replayed_multi_sample_message_is_dropped_whole(store):
    store.add_device("d1", group="lab", board=None, now=1.0)
    message = [sample("d1", 7, idx=i, ts=100.0 + i, p95_ms=float(i)) for i in range(3)]
    assert store.ingest(telemetry=message).written == 3
    replay = store.ingest(telemetry=message)
    assert (replay.written, replay.duplicates) == (0, 3)
    assert store.get_device("d1").p95_ms == 2.0  # the message's last sample
    assert [(s.seq, s.idx) for s in store.telemetry_for("d1")] == [(7, 2), (7, 1), (7, 0)]


def test_prune_drops_old_history_but_keeps_the_latest_health(store):
    store.add_device("d1", group="lab", board=None, now=1.0)
    store.ingest(
        telemetry=[sample("d1", i, ts=float(i), p95_ms=float(i)) for i in range(1, 11)],
        events=[EventRecord(device_id="d1", seq=1, ts=2.0, kind="update_result")],
    )
    assert store.prune(before=8.0) == 7 + 1
    assert [s.seq for s in store.telemetry_for("d1")] == [10, 9, 8]
    assert store.events_for("d1") == []
    assert store.get_device("d1").p95_ms == 10.0
