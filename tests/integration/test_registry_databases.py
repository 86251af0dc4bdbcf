"""The registry contract (tests/unit/test_registry.py) on real databases: a SQLite file in
WAL mode and PostgreSQL, plus what only a file shows: reopening, migrations recorded once,
two connections sharing one registry.

PostgreSQL comes from ``EDGEOPS_TEST_POSTGRES`` (a libpq DSN), by default the local server
at 127.0.0.1:5432, database ``test``; each test gets its own schema, dropped afterwards.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import uuid

import pytest
from test_registry import *  # noqa: F403 - the contract tests, run here on every store

from edgeops.fleet.registry import SqliteStore, TelemetryRow, open_registry
from edgeops.fleet.registry.migrations import LATEST_VERSION, MIGRATIONS

pytestmark = pytest.mark.integration

POSTGRES_DSN = os.environ.get(
    "EDGEOPS_TEST_POSTGRES", "host=127.0.0.1 port=5432 dbname=test user=postgres"
)


def _postgres_store():
    psycopg = pytest.importorskip("psycopg")
    from edgeops.fleet.registry.postgres import PostgresStore

    try:
        psycopg.connect(POSTGRES_DSN, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {POSTGRES_DSN!r}: {exc}")
    return PostgresStore(POSTGRES_DSN, schema=f"edgeops_test_{uuid.uuid4().hex[:12]}")


# Replaces the in-memory ``store`` fixture that came with the star import: same name, so
# every imported contract test runs once per database below.
@pytest.fixture(params=["sqlite-file", "postgres"])  # type: ignore[no-redef, unused-ignore]
def store(request, tmp_path):
    if request.param == "sqlite-file":
        s = SqliteStore(tmp_path / "registry.sqlite")
        yield s
        s.close()
    else:
        s = _postgres_store()
        try:
            yield s
        finally:
            s.drop_schema()
            s.close()


def test_sqlite_registry_is_in_wal_mode_with_foreign_keys(tmp_path):
    store = open_registry(tmp_path)
    store.close()
    conn = sqlite3.connect(tmp_path / "registry.sqlite")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        versions = conn.execute("SELECT version FROM schema_version").fetchall()
        assert versions == [(version,) for version, _ in MIGRATIONS]
        assert versions[-1] == (LATEST_VERSION,)
    finally:
        conn.close()


def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path):
    first = open_registry(tmp_path)
    first.add_device("d1", group="lab", board=None, now=1.0)
    first.close()
    again = open_registry(tmp_path)
    try:
        assert again.schema_version() == LATEST_VERSION
        assert again.get_device("d1") is not None
    finally:
        again.close()


def test_a_newer_schema_is_refused(tmp_path):
    from edgeops.errors import StorageError

    open_registry(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "registry.sqlite")
    conn.execute("INSERT INTO schema_version (version, applied) VALUES (999, 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="schema version 999"):
        open_registry(tmp_path)


def test_foreign_keys_hold_on_the_file(tmp_path):
    store = open_registry(tmp_path)
    try:
        store.add_device("d1", group="lab", board=None, now=1.0)
        conn = sqlite3.connect(tmp_path / "registry.sqlite")
        conn.execute("PRAGMA foreign_keys = ON")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO telemetry (device_id, seq, idx, ts) VALUES ('ghost', 1, 0, 1.0)"
            )
        conn.close()
    finally:
        store.close()


def test_two_connections_share_directive_sequences_and_ingest(tmp_path):
    a = open_registry(tmp_path)
    b = open_registry(tmp_path)
    try:
        a.add_device("d1", group="lab", board=None, now=1.0)
        seqs: list[int] = []
        lock = threading.Lock()

        def take(store: SqliteStore) -> None:
            for _ in range(50):
                value = store.next_directive_sequence("dev/d1")
                with lock:
                    seqs.append(value)

        threads = [threading.Thread(target=take, args=(s,)) for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(seqs) == list(range(1, 101))
        rows = [TelemetryRow(device_id="d1", seq=i, ts=float(i)) for i in range(100)]
        first = a.ingest(telemetry=rows[:60])
        second = b.ingest(telemetry=rows[40:])
        assert (first.written, second.written, second.duplicates) == (60, 40, 20)
    finally:
        a.close()
        b.close()


def test_a_fleet_folder_can_point_its_registry_at_postgresql(tmp_path):
    from typer.testing import CliRunner

    from edgeops.cli import app
    from edgeops.cli import commands as _commands  # noqa: F401 - registers the commands
    from edgeops.fleet.registry.postgres import PostgresStore

    probe = _postgres_store()  # skips when there is no server
    schema = probe.schema
    probe.close()
    (tmp_path / "edgeops.toml").write_text(
        f'[fleet]\nname = "demo"\n[registry]\nurl = "{POSTGRES_DSN}"\nschema = "{schema}"\n'
    )
    store = open_registry(tmp_path)
    try:
        assert isinstance(store, PostgresStore)
        store.add_device("cam-1", group="lab", board="rpi5", now=1.0)
        result = CliRunner().invoke(app, ["status", "--fleet", str(tmp_path), "--json"])
        assert result.exit_code == 0, result.output
        assert '"device_id": "cam-1"' in result.output
        assert not (tmp_path / "registry.sqlite").exists()
    finally:
        assert isinstance(store, PostgresStore)
        store.drop_schema()
        store.close()


def test_postgres_stores_opened_at_once_migrate_once():
    from concurrent.futures import ThreadPoolExecutor

    from edgeops.fleet.registry.postgres import PostgresStore

    first = _postgres_store()
    schema = first.schema
    first.drop_schema()
    first.close()

    def open_one(_: int) -> PostgresStore:
        return PostgresStore(POSTGRES_DSN, schema=schema)

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(open_one, range(4)))
    try:
        assert {s.schema_version() for s in stores} == {LATEST_VERSION}
        stores[0].add_device("d1", group="lab", board=None, now=1.0)
        assert stores[3].get_device("d1") is not None
    finally:
        stores[0].drop_schema()
        for s in stores:
            s.close()
