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


def open_registry(fleet_dir: Path) -> SqliteStore:
    """Open (creating and migrating) the registry of ``fleet_dir``."""
    return SqliteStore(registry_path(fleet_dir))


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
