"""The registry on PostgreSQL, for fleets that outgrow one machine's SQLite file.

Same queries as :class:`~edgeops.fleet.registry.sql.SqliteStore` (they live in
:class:`~edgeops.fleet.registry.sql.SqlStore`), same migrations; only the connection, the
placeholder style and the transaction differ. Needs ``psycopg`` 3 (``pip install
"edgeops[postgres]"``). ``schema`` puts the tables in their own PostgreSQL schema, which is
how the tests isolate themselves and how one database can hold several fleets.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from edgeops.errors import ConfigError, StorageError
from edgeops.fleet.registry.sql import SqlStore

_MIGRATION_LOCK = 0x6564_6765_6F70  # "edgeop": one key for every edgeops registry
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresStore(SqlStore):
    """The registry in a PostgreSQL database given by a libpq ``dsn``."""

    placeholder = "%s"

    def __init__(self, dsn: str, *, schema: str | None = None) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError(
                'the PostgreSQL registry needs psycopg: pip install "edgeops[postgres]"'
            ) from exc
        self._psycopg_error: type[Exception] = psycopg.Error
        if schema is not None and not _SCHEMA.match(schema):
            raise ConfigError(f"expected a lowercase PostgreSQL schema name, got {schema!r}")
        self.schema = schema
        try:
            self._conn: Any = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StorageError(f"cannot open the PostgreSQL registry: {exc}") from exc
        try:
            # Held across schema creation and migration: two instances starting together
            # would otherwise race on CREATE SCHEMA IF NOT EXISTS (a unique violation).
            self._conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                if schema is not None:
                    # The name was checked against _SCHEMA above: safe in the statement.
                    self._conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                    self._conn.execute(f"SET search_path TO {schema}")
                self._migrate()
            finally:
                self._conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
        except psycopg.Error as exc:
            self._conn.close()
            raise StorageError(f"cannot open the PostgreSQL registry: {exc}") from exc
        except BaseException:
            self._conn.close()
            raise

    def _is_driver_error(self, exc: Exception) -> bool:
        return isinstance(exc, self._psycopg_error)

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        with self._conn.transaction(), self._conn.cursor() as cur:
            yield cur

    def drop_schema(self) -> None:
        """Drop this store's schema and everything in it (tests clean up with this)."""
        if self.schema is None:
            raise ConfigError("this store uses the default schema; refusing to drop it")
        with self._lock:
            self._conn.execute(f"DROP SCHEMA {self.schema} CASCADE")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


__all__ = ["PostgresStore"]
