"""The registry on SQL: one implementation of the queries, a thin class per database.

:class:`SqlStore` holds every query, written once in the SQL SQLite (3.35+) and PostgreSQL
share: ``INSERT ... ON CONFLICT ... DO NOTHING / DO UPDATE``, ``RETURNING``, no
``AUTOINCREMENT``, ``?`` placeholders rewritten to the driver's style. A subclass supplies
the connection and the transaction; :class:`SqliteStore` is the default, in WAL mode with
foreign keys on.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from edgeops.errors import ConfigError, StorageError
from edgeops.fleet.registry.migrations import LATEST_VERSION, MIGRATIONS
from edgeops.fleet.registry.records import (
    BundleRecord,
    CertificateRecord,
    DeviceRecord,
    EventRecord,
    IngestCounts,
    RolloutRecord,
    RolloutRequest,
    StateUpdate,
    TelemetryRow,
    WaveRecord,
)
from edgeops.fleet.registry.store import ROLLOUT_ACTIONS

Row = Sequence[Any]

_DEVICE_COLUMNS = (
    "id, group_name, board, enrolled, revoked, last_seen, online, bundle, previous_bundle, "
    "agent_version, p95_ms, error_rate, drift, temp_c, health_ts"
)
_TELEMETRY_COLUMNS = (
    "device_id, seq, idx, ts, window_s, requests, errors, bundle, p50_ms, p95_ms, p99_ms, "
    "error_rate, drift, temp_c, cpu_percent, rss_mb"
)
_EVENT_COLUMNS = "device_id, seq, ts, kind, state, bundle, directive_seq, reason, figures"
_ROLLOUT_COLUMNS = (
    "id, group_name, bundle, previous_bundle, status, created, updated, reason, policy, state"
)


def _device(row: Row) -> DeviceRecord:
    return DeviceRecord(
        device_id=row[0],
        group=row[1],
        board=row[2],
        enrolled=row[3],
        revoked=row[4],
        last_seen=row[5],
        online=bool(row[6]),
        bundle=row[7],
        previous_bundle=row[8],
        agent_version=row[9],
        p95_ms=row[10],
        error_rate=row[11],
        drift=row[12],
        temp_c=row[13],
        health_ts=row[14],
    )


def _telemetry(row: Row) -> TelemetryRow:
    return TelemetryRow(
        device_id=row[0],
        seq=row[1],
        idx=row[2],
        ts=row[3],
        window_s=row[4],
        requests=row[5],
        errors=row[6],
        bundle=row[7],
        p50_ms=row[8],
        p95_ms=row[9],
        p99_ms=row[10],
        error_rate=row[11],
        drift=row[12],
        temp_c=row[13],
        cpu_percent=row[14],
        rss_mb=row[15],
    )


def _event(row: Row) -> EventRecord:
    return EventRecord(
        device_id=row[0],
        seq=row[1],
        ts=row[2],
        kind=row[3],
        state=row[4],
        bundle=row[5],
        directive_seq=row[6],
        reason=row[7],
        figures=json.loads(row[8]),
    )


def _rollout(row: Row, waves: tuple[WaveRecord, ...], phases: dict[str, str]) -> RolloutRecord:
    return RolloutRecord(
        rollout_id=row[0],
        group=row[1],
        bundle=row[2],
        previous_bundle=row[3],
        status=row[4],
        created=row[5],
        updated=row[6],
        reason=row[7],
        policy=json.loads(row[8]),
        state=json.loads(row[9]),
        waves=waves,
        device_phases=phases,
    )


class SqlStore:
    """Every registry query; subclasses provide the connection (see :class:`SqliteStore`).

    Thread-safe: one connection, one lock; the fleet service's ingest thread and its HTTP
    threads share the store.
    """

    #: the driver's placeholder; queries are written with ``?``
    placeholder = "?"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._known: set[str] = set()

    # -- what a subclass provides ---------------------------------------------------------

    def _transaction(self) -> AbstractContextManager[Any]:
        """A context manager that opens a transaction and yields a cursor."""
        raise NotImplementedError

    def _lock_for_migration(self, cur: Any) -> None:
        """Serialize migrations between processes starting at once. SQLite's ``BEGIN
        IMMEDIATE`` already does; PostgresStore holds an advisory lock around the whole
        start-up instead."""

    def _translate(self, exc: Exception) -> Exception:
        return StorageError(f"registry query failed: {exc}")

    def close(self) -> None:
        raise NotImplementedError

    # -- plumbing --------------------------------------------------------------------------

    def _sql(self, text: str) -> str:
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        with self._lock:
            try:
                with self._transaction() as cur:
                    return fn(cur)
            except (ConfigError, StorageError):
                raise
            except Exception as exc:
                if not self._is_driver_error(exc):
                    raise
                raise self._translate(exc) from exc

    def _is_driver_error(self, exc: Exception) -> bool:
        return isinstance(exc, sqlite3.Error)

    def _migrate(self) -> None:
        def apply(cur: Any) -> None:
            self._lock_for_migration(cur)
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, applied DOUBLE PRECISION NOT NULL)"
            )
            cur.execute("SELECT MAX(version) FROM schema_version")
            current = cur.fetchone()[0] or 0
            if current > LATEST_VERSION:
                raise StorageError(
                    f"the registry is at schema version {current}; this edgeops knows up to "
                    f"{LATEST_VERSION}: upgrade edgeops"
                )
            for version, statements in MIGRATIONS:
                if version <= current:
                    continue
                for statement in statements:
                    cur.execute(statement)
                cur.execute(
                    self._sql("INSERT INTO schema_version (version, applied) VALUES (?, ?)"),
                    (version, 0.0),
                )

        self._run(apply)

    def schema_version(self) -> int:
        def read(cur: Any) -> int:
            cur.execute("SELECT MAX(version) FROM schema_version")
            return int(cur.fetchone()[0] or 0)

        return int(self._run(read))

    # -- groups and devices ----------------------------------------------------------------

    def _ensure_group(self, cur: Any, name: str, now: float) -> None:
        cur.execute(
            self._sql("INSERT INTO groups (name, created) VALUES (?, ?) ON CONFLICT DO NOTHING"),
            (name, now),
        )

    def add_group(self, name: str, *, now: float) -> None:
        self._run(lambda cur: self._ensure_group(cur, name, now))

    def list_groups(self) -> list[str]:
        def read(cur: Any) -> list[str]:
            cur.execute("SELECT name FROM groups ORDER BY name")
            return [row[0] for row in cur.fetchall()]

        result: list[str] = self._run(read)
        return result

    def add_device(
        self, device_id: str, *, group: str, board: str | None, now: float
    ) -> DeviceRecord:
        def write(cur: Any) -> None:
            self._ensure_group(cur, group, now)
            cur.execute(
                self._sql(
                    "INSERT INTO devices (id, group_name, board, enrolled, online) "
                    "VALUES (?, ?, ?, ?, FALSE) "
                    "ON CONFLICT (id) DO UPDATE SET group_name = excluded.group_name, "
                    "board = COALESCE(excluded.board, devices.board), "
                    "enrolled = excluded.enrolled, revoked = NULL"
                ),
                (device_id, group, board, now),
            )

        self._run(write)
        self._known.add(device_id)
        record = self.get_device(device_id)
        assert record is not None
        return record

    def get_device(self, device_id: str) -> DeviceRecord | None:
        def read(cur: Any) -> DeviceRecord | None:
            cur.execute(
                self._sql(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE id = ?"), (device_id,)
            )
            row = cur.fetchone()
            return _device(row) if row else None

        result: DeviceRecord | None = self._run(read)
        return result

    def list_devices(
        self, *, group: str | None = None, include_revoked: bool = False
    ) -> list[DeviceRecord]:
        clauses, params = [], []
        if group is not None:
            clauses.append("group_name = ?")
            params.append(group)
        if not include_revoked:
            clauses.append("revoked IS NULL")
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""

        def read(cur: Any) -> list[DeviceRecord]:
            cur.execute(
                self._sql(f"SELECT {_DEVICE_COLUMNS} FROM devices{where} ORDER BY id"), params
            )
            return [_device(row) for row in cur.fetchall()]

        result: list[DeviceRecord] = self._run(read)
        return result

    def revoke_device(self, device_id: str, *, now: float) -> list[str]:
        def write(cur: Any) -> list[str]:
            cur.execute(self._sql("SELECT revoked FROM devices WHERE id = ?"), (device_id,))
            row = cur.fetchone()
            if row is None:
                raise ConfigError(f"no device {device_id!r} in the registry")
            cur.execute(
                self._sql("UPDATE devices SET revoked = ?, online = FALSE WHERE id = ?"),
                (row[0] if row[0] is not None else now, device_id),
            )
            cur.execute(
                self._sql(
                    "SELECT serial FROM certificates WHERE subject = ? AND kind = 'device' "
                    "AND revoked IS NULL ORDER BY serial"
                ),
                (device_id,),
            )
            serials = [r[0] for r in cur.fetchall()]
            cur.execute(
                self._sql(
                    "UPDATE certificates SET revoked = ? WHERE subject = ? AND kind = 'device' "
                    "AND revoked IS NULL"
                ),
                (now, device_id),
            )
            return serials

        result: list[str] = self._run(write)
        return result

    # -- certificates and bundles ----------------------------------------------------------

    def add_certificate(self, cert: CertificateRecord) -> None:
        self._run(
            lambda cur: cur.execute(
                self._sql(
                    "INSERT INTO certificates (serial, subject, kind, issued, not_after, revoked) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING"
                ),
                (
                    cert.serial.lower(),
                    cert.subject,
                    cert.kind,
                    cert.issued,
                    cert.not_after,
                    cert.revoked,
                ),
            )
        )

    def revoked_certificates(self) -> list[CertificateRecord]:
        def read(cur: Any) -> list[CertificateRecord]:
            cur.execute(
                "SELECT serial, subject, kind, issued, not_after, revoked FROM certificates "
                "WHERE revoked IS NOT NULL ORDER BY revoked, serial"
            )
            return [
                CertificateRecord(
                    serial=r[0], subject=r[1], kind=r[2], issued=r[3], not_after=r[4], revoked=r[5]
                )
                for r in cur.fetchall()
            ]

        result: list[CertificateRecord] = self._run(read)
        return result

    def add_bundle(self, bundle: BundleRecord) -> None:
        self._run(
            lambda cur: cur.execute(
                self._sql(
                    "INSERT INTO bundles (digest, name, version, release, size, manifest, added) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING"
                ),
                (
                    bundle.digest,
                    bundle.name,
                    bundle.version,
                    bundle.release,
                    bundle.size,
                    json.dumps(bundle.manifest, sort_keys=True),
                    bundle.added,
                ),
            )
        )

    def get_bundle(self, digest: str) -> BundleRecord | None:
        def read(cur: Any) -> BundleRecord | None:
            cur.execute(
                self._sql(
                    "SELECT digest, name, version, release, size, manifest, added FROM bundles "
                    "WHERE digest = ?"
                ),
                (digest,),
            )
            r = cur.fetchone()
            if r is None:
                return None
            return BundleRecord(
                digest=r[0],
                name=r[1],
                version=r[2],
                release=r[3],
                size=r[4],
                manifest=json.loads(r[5]),
                added=r[6],
            )

        result: BundleRecord | None = self._run(read)
        return result

    def next_directive_sequence(self, target: str) -> int:
        def write(cur: Any) -> int:
            cur.execute(
                self._sql(
                    "INSERT INTO directive_sequences (target, seq) VALUES (?, 1) "
                    "ON CONFLICT (target) DO UPDATE SET seq = directive_sequences.seq + 1 "
                    "RETURNING seq"
                ),
                (target,),
            )
            return int(cur.fetchone()[0])

        return int(self._run(write))

    # -- ingestion -------------------------------------------------------------------------

    def _refresh_known(self, cur: Any) -> None:
        cur.execute("SELECT id FROM devices")
        self._known = {row[0] for row in cur.fetchall()}

    def ingest(
        self,
        *,
        states: Iterable[StateUpdate] = (),
        events: Iterable[EventRecord] = (),
        telemetry: Iterable[TelemetryRow] = (),
        seen: Mapping[str, float] | None = None,
        bundles: Iterable[BundleRecord] = (),
    ) -> IngestCounts:
        state_list, event_list, sample_list = list(states), list(events), list(telemetry)
        bundle_list = list(bundles)
        seen_map = dict(seen or {})

        def write(cur: Any) -> IngestCounts:
            ids = {m.device_id for m in state_list}
            ids.update(m.device_id for m in event_list)
            ids.update(m.device_id for m in sample_list)
            ids.update(seen_map)
            if not ids <= self._known:
                self._refresh_known(cur)
            known = self._known
            if bundle_list:
                cur.executemany(
                    self._sql(
                        "INSERT INTO bundles (digest, name, version, release, size, manifest, "
                        "added) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (digest) DO NOTHING"
                    ),
                    [
                        (
                            b.digest,
                            b.name,
                            b.version,
                            b.release,
                            b.size,
                            json.dumps(b.manifest, sort_keys=True),
                            b.added,
                        )
                        for b in bundle_list
                    ],
                )
            unknown = 0
            written = duplicates = stale = 0

            samples = [s for s in sample_list if s.device_id in known]
            unknown += len(sample_list) - len(samples)
            if samples:
                cur.executemany(
                    self._sql(
                        f"INSERT INTO telemetry ({_TELEMETRY_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (device_id, seq, idx) DO NOTHING"
                    ),
                    [
                        (
                            s.device_id,
                            s.seq,
                            s.idx,
                            s.ts,
                            s.window_s,
                            s.requests,
                            s.errors,
                            s.bundle,
                            s.p50_ms,
                            s.p95_ms,
                            s.p99_ms,
                            s.error_rate,
                            s.drift,
                            s.temp_c,
                            s.cpu_percent,
                            s.rss_mb,
                        )
                        for s in samples
                    ],
                )
                inserted = max(cur.rowcount, 0)
                written += inserted
                duplicates += len(samples) - inserted
                latest: dict[str, TelemetryRow] = {}
                for s in samples:
                    best = latest.get(s.device_id)
                    if best is None or (s.seq, s.idx) > (best.seq, best.idx):
                        latest[s.device_id] = s
                # The guard on health_seq keeps a late, older sample from replacing a newer one.
                cur.executemany(
                    self._sql(
                        "UPDATE devices SET p95_ms = ?, error_rate = ?, drift = ?, temp_c = ?, "
                        "health_seq = ?, health_ts = ? "
                        "WHERE id = ? AND (health_seq IS NULL OR health_seq < ?)"
                    ),
                    [
                        (s.p95_ms, s.error_rate, s.drift, s.temp_c, s.seq, s.ts, s.device_id, s.seq)
                        for s in latest.values()
                    ],
                )

            kept_events = [e for e in event_list if e.device_id in known]
            unknown += len(event_list) - len(kept_events)
            if kept_events:
                cur.executemany(
                    self._sql(
                        f"INSERT INTO events ({_EVENT_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                        "ON CONFLICT (device_id, seq) DO NOTHING"
                    ),
                    [
                        (
                            e.device_id,
                            e.seq,
                            e.ts,
                            e.kind,
                            e.state,
                            e.bundle,
                            e.directive_seq,
                            e.reason,
                            json.dumps(e.figures, sort_keys=True),
                        )
                        for e in kept_events
                    ],
                )
                inserted = max(cur.rowcount, 0)
                written += inserted
                duplicates += len(kept_events) - inserted

            kept_states = [s for s in state_list if s.device_id in known]
            unknown += len(state_list) - len(kept_states)
            for st in kept_states:
                params: tuple[Any, ...] = (
                    st.online,
                    st.bundle,
                    st.previous_bundle,
                    st.agent_version,
                    st.board,
                    st.seq,
                    st.device_id,
                )
                update = (
                    "UPDATE devices SET online = ?, bundle = COALESCE(?, bundle), "
                    "previous_bundle = COALESCE(?, previous_bundle), "
                    "agent_version = COALESCE(?, agent_version), board = COALESCE(?, board), "
                    "state_seq = COALESCE(?, state_seq) WHERE id = ?"
                )
                if st.seq is not None:
                    # ">=": the LWT "offline" carries the seq of the state it was set with.
                    update += " AND (state_seq IS NULL OR state_seq <= ?)"
                    params = (*params, st.seq)
                cur.execute(self._sql(update), params)
                if cur.rowcount == 1:
                    written += 1
                else:
                    stale += 1

            for st in kept_states:
                seen_map[st.device_id] = max(seen_map.get(st.device_id, st.ts), st.ts)
            last = [(ts, d, ts) for d, ts in seen_map.items() if d in known]
            if last:
                cur.executemany(
                    self._sql(
                        "UPDATE devices SET last_seen = ? "
                        "WHERE id = ? AND (last_seen IS NULL OR last_seen < ?)"
                    ),
                    last,
                )
            return IngestCounts(
                written=written, duplicates=duplicates, unknown=unknown, stale=stale
            )

        result: IngestCounts = self._run(write)
        return result

    def telemetry_for(self, device_id: str, *, limit: int = 100) -> list[TelemetryRow]:
        def read(cur: Any) -> list[TelemetryRow]:
            cur.execute(
                self._sql(
                    f"SELECT {_TELEMETRY_COLUMNS} FROM telemetry WHERE device_id = ? "
                    "ORDER BY seq DESC, idx DESC LIMIT ?"
                ),
                (device_id, limit),
            )
            return [_telemetry(r) for r in cur.fetchall()]

        result: list[TelemetryRow] = self._run(read)
        return result

    def events_for(self, device_id: str, *, limit: int = 100) -> list[EventRecord]:
        def read(cur: Any) -> list[EventRecord]:
            cur.execute(
                self._sql(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE device_id = ? "
                    "ORDER BY seq DESC LIMIT ?"
                ),
                (device_id, limit),
            )
            return [_event(r) for r in cur.fetchall()]

        result: list[EventRecord] = self._run(read)
        return result

    def mean_p95(self, device_ids: Iterable[str], *, bundle: str) -> dict[str, float]:
        wanted = set(device_ids)

        def read(cur: Any) -> dict[str, float]:
            cur.execute(
                self._sql(
                    "SELECT device_id, AVG(p95_ms) FROM telemetry "
                    "WHERE bundle = ? AND p95_ms IS NOT NULL GROUP BY device_id"
                ),
                (bundle,),
            )
            return {r[0]: float(r[1]) for r in cur.fetchall() if r[0] in wanted}

        result: dict[str, float] = self._run(read)
        return result

    def prune(self, *, before: float) -> int:
        def write(cur: Any) -> int:
            cur.execute(self._sql("DELETE FROM telemetry WHERE ts < ?"), (before,))
            deleted: int = max(cur.rowcount, 0)
            cur.execute(self._sql("DELETE FROM events WHERE ts < ?"), (before,))
            return deleted + max(int(cur.rowcount), 0)

        return int(self._run(write))

    # -- rollouts --------------------------------------------------------------------------

    def save_rollout(self, record: RolloutRecord) -> None:
        def write(cur: Any) -> None:
            self._ensure_group(cur, record.group, record.created)
            cur.execute(
                self._sql(
                    f"INSERT INTO rollouts ({_ROLLOUT_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
                    "updated = excluded.updated, reason = excluded.reason, "
                    "policy = excluded.policy, state = excluded.state"
                ),
                (
                    record.rollout_id,
                    record.group,
                    record.bundle,
                    record.previous_bundle,
                    record.status,
                    record.created,
                    record.updated,
                    record.reason,
                    json.dumps(record.policy, sort_keys=True),
                    json.dumps(record.state, sort_keys=True),
                ),
            )
            cur.execute(
                self._sql("DELETE FROM rollout_waves WHERE rollout_id = ?"), (record.rollout_id,)
            )
            cur.executemany(
                self._sql(
                    "INSERT INTO rollout_waves (rollout_id, idx, canary, stage, devices, counts, "
                    "started, ended, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                [
                    (
                        record.rollout_id,
                        w.index,
                        w.canary,
                        w.stage,
                        json.dumps(list(w.devices)),
                        json.dumps(w.counts, sort_keys=True),
                        w.started,
                        w.ended,
                        w.reason,
                    )
                    for w in record.waves
                ],
            )
            wave_of = {d: w.index for w in record.waves for d in w.devices}
            cur.executemany(
                self._sql(
                    "INSERT INTO rollout_devices (rollout_id, device_id, wave, phase) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (rollout_id, device_id) "
                    "DO UPDATE SET wave = excluded.wave, phase = excluded.phase"
                ),
                [
                    (record.rollout_id, d, wave_of.get(d, -1), phase)
                    for d, phase in record.device_phases.items()
                ],
            )

        self._run(write)

    def _waves(self, cur: Any, rollout_id: str) -> tuple[WaveRecord, ...]:
        cur.execute(
            self._sql(
                "SELECT idx, canary, stage, devices, counts, started, ended, reason "
                "FROM rollout_waves WHERE rollout_id = ? ORDER BY idx"
            ),
            (rollout_id,),
        )
        return tuple(
            WaveRecord(
                index=r[0],
                canary=bool(r[1]),
                stage=r[2],
                devices=tuple(json.loads(r[3])),
                counts=json.loads(r[4]),
                started=r[5],
                ended=r[6],
                reason=r[7],
            )
            for r in cur.fetchall()
        )

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None:
        def read(cur: Any) -> RolloutRecord | None:
            cur.execute(
                self._sql(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?"), (rollout_id,)
            )
            row = cur.fetchone()
            if row is None:
                return None
            waves = self._waves(cur, rollout_id)
            cur.execute(
                self._sql(
                    "SELECT device_id, phase FROM rollout_devices WHERE rollout_id = ? "
                    "ORDER BY device_id"
                ),
                (rollout_id,),
            )
            phases = {r[0]: r[1] for r in cur.fetchall()}
            return _rollout(row, waves, phases)

        result: RolloutRecord | None = self._run(read)
        return result

    def list_rollouts(self, *, active_only: bool = False) -> list[RolloutRecord]:
        where = " WHERE status IN ('running', 'paused')" if active_only else ""

        def read(cur: Any) -> list[RolloutRecord]:
            cur.execute(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts{where} ORDER BY created DESC, id")
            rows = cur.fetchall()
            return [_rollout(row, self._waves(cur, row[0]), {}) for row in rows]

        result: list[RolloutRecord] = self._run(read)
        return result

    def add_rollout_request(
        self, rollout_id: str, action: str, *, reason: str, now: float
    ) -> RolloutRequest:
        if action not in ROLLOUT_ACTIONS:
            raise ConfigError(
                f"expected one of {', '.join(ROLLOUT_ACTIONS)} as a rollout request, got {action!r}"
            )
        request = RolloutRequest(
            request_id=uuid.uuid4().hex,
            rollout_id=rollout_id,
            action=action,
            created=now,
            reason=reason,
        )

        def write(cur: Any) -> None:
            cur.execute(self._sql("SELECT status FROM rollouts WHERE id = ?"), (rollout_id,))
            row = cur.fetchone()
            if row is None:
                raise ConfigError(f"no rollout {rollout_id!r} in the registry")
            if row[0] not in ("running", "paused"):
                raise ConfigError(f"rollout {rollout_id} has already finished ({row[0]})")
            cur.execute(
                self._sql(
                    "INSERT INTO rollout_requests (id, rollout_id, action, reason, created) "
                    "VALUES (?, ?, ?, ?, ?)"
                ),
                (request.request_id, rollout_id, action, reason, now),
            )

        self._run(write)
        return request

    def pending_requests(self, rollout_id: str) -> list[RolloutRequest]:
        def read(cur: Any) -> list[RolloutRequest]:
            cur.execute(
                self._sql(
                    "SELECT id, rollout_id, action, created, reason FROM rollout_requests "
                    "WHERE rollout_id = ? AND handled IS NULL ORDER BY created, id"
                ),
                (rollout_id,),
            )
            return [
                RolloutRequest(
                    request_id=r[0], rollout_id=r[1], action=r[2], created=r[3], reason=r[4]
                )
                for r in cur.fetchall()
            ]

        result: list[RolloutRequest] = self._run(read)
        return result

    def claim_rollout(self, rollout_id: str, owner: str, *, now: float, ttl_s: float) -> str:
        def write(cur: Any) -> str:
            # Insert when free, take over when expired, renew when ours; the WHERE clause is
            # re-checked by PostgreSQL after a concurrent update, and SQLite's BEGIN
            # IMMEDIATE serializes claims outright.
            cur.execute(
                self._sql(
                    "INSERT INTO rollout_leases (rollout_id, owner, expires) VALUES (?, ?, ?) "
                    "ON CONFLICT (rollout_id) DO UPDATE SET owner = excluded.owner, "
                    "expires = excluded.expires "
                    "WHERE rollout_leases.owner = excluded.owner OR rollout_leases.expires < ?"
                ),
                (rollout_id, owner, now + ttl_s, now),
            )
            cur.execute(
                self._sql("SELECT owner FROM rollout_leases WHERE rollout_id = ?"), (rollout_id,)
            )
            return str(cur.fetchone()[0])

        holder: str = self._run(write)
        return holder

    def release_rollout(self, rollout_id: str, owner: str) -> None:
        self._run(
            lambda cur: cur.execute(
                self._sql("DELETE FROM rollout_leases WHERE rollout_id = ? AND owner = ?"),
                (rollout_id, owner),
            )
        )

    def mark_request_handled(self, request_id: str, *, now: float) -> None:
        self._run(
            lambda cur: cur.execute(
                self._sql("UPDATE rollout_requests SET handled = ? WHERE id = ?"),
                (now, request_id),
            )
        )


class SqliteStore(SqlStore):
    """The registry in one SQLite file (WAL, foreign keys on), or ``:memory:`` for tests.

    ``synchronous=NORMAL`` in WAL mode never corrupts the database; a power cut may lose the
    last transactions, which the rollout runner tolerates because it saves state *after*
    acting (it repeats, never skips, a directive).
    """

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = str(path)
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA busy_timeout = 30000")
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the registry {self.path}: {exc}") from exc
        self._migrate()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        cur = self._conn.cursor()
        # IMMEDIATE takes the write lock up front, so two processes (fleet serve and a CLI
        # command) serialize instead of failing on a lock upgrade.
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            self._conn.rollback()
            raise
        else:
            cur.execute("COMMIT")
        finally:
            cur.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


__all__ = ["SqlStore", "SqliteStore"]
