"""The fleet registry: devices, groups, bundles, rollouts, health history.

Callers use the :class:`RegistryStore` interface; :func:`open_registry` opens the default
store of a fleet folder (SQLite, ``registry.sqlite``). See
docs/decisions/0004-registry-store.md for the shape and the way to PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

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
from edgeops.fleet.registry.sql import SqliteStore, SqlStore
from edgeops.fleet.registry.store import ROLLOUT_ACTIONS, RegistryStore

REGISTRY_FILE = "registry.sqlite"


def registry_path(fleet_dir: Path) -> Path:
    """Where a fleet folder keeps its SQLite registry."""
    return Path(fleet_dir) / REGISTRY_FILE


def open_registry(fleet_dir: Path) -> SqlStore:
    """Open (creating and migrating) the registry of ``fleet_dir``.

    SQLite in ``DIR/registry.sqlite`` unless edgeops.toml names a PostgreSQL database::

        [registry]
        url = "postgresql://fleet@db.example/edgeops"   # any libpq connection string
        schema = "plant7"                               # optional
    """
    import tomllib

    from edgeops.errors import ConfigError

    config = Path(fleet_dir) / "edgeops.toml"
    section: dict[str, object] = {}
    try:
        with config.open("rb") as handle:
            section = tomllib.load(handle).get("registry", {})
    except FileNotFoundError:
        pass
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {config}: {exc}") from exc
    url = section.get("url")
    if url is None:
        return SqliteStore(registry_path(fleet_dir))
    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://", "host=")):
        raise ConfigError(f"{config}: registry.url must be a PostgreSQL URL, got {url!r}")
    schema = section.get("schema")
    if schema is not None and not isinstance(schema, str):
        raise ConfigError(f"{config}: registry.schema must be a string")
    from edgeops.fleet.registry.postgres import PostgresStore

    return PostgresStore(url, schema=schema)


__all__ = [
    "REGISTRY_FILE",
    "ROLLOUT_ACTIONS",
    "BundleRecord",
    "CertificateRecord",
    "DeviceRecord",
    "EventRecord",
    "IngestCounts",
    "RegistryStore",
    "RolloutRecord",
    "RolloutRequest",
    "SqlStore",
    "SqliteStore",
    "StateUpdate",
    "TelemetryRow",
    "WaveRecord",
    "open_registry",
    "registry_path",
]
