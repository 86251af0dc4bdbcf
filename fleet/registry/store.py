"""The registry interface: what the fleet side needs from a database, nothing SQL-specific.

:class:`RegistryStore` is the one interface the rest of the fleet code sees. The default
implementation is :class:`~edgeops.fleet.registry.sql.SqliteStore` (one file in the fleet
folder); unit tests run it on ``:memory:``, which is fast and exercises the real SQL rather
than a hand-written fake. A PostgreSQL store shares the same SQL
(docs/decisions/0004-registry-store.md).

Every method is a short transaction; batches (:meth:`RegistryStore.ingest`) are one
transaction each. Times are seconds since the epoch (floats), given by the caller, so the
store reads no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

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
)

ROLLOUT_ACTIONS = ("pause", "resume", "abort")


class RegistryStore(Protocol):
    """Durable fleet state: devices, groups, certificates, bundles, directive sequences,
    state, health history, update events, rollouts and hand-made rollout requests."""

    def close(self) -> None:
        """Release the connection."""

    def schema_version(self) -> int:
        """The migration the database is at."""

    # -- groups and devices ----------------------------------------------------------------

    def add_group(self, name: str, *, now: float) -> None:
        """Create a group; a no-op when it exists."""

    def list_groups(self) -> list[str]:
        """Group names, sorted."""

    def add_device(
        self, device_id: str, *, group: str, board: str | None, now: float
    ) -> DeviceRecord:
        """Enroll a device (creating its group); enrolling again moves it and clears a
        revocation. Returns the stored record."""

    def get_device(self, device_id: str) -> DeviceRecord | None:
        """One device, or ``None``."""

    def list_devices(
        self, *, group: str | None = None, include_revoked: bool = False
    ) -> list[DeviceRecord]:
        """Devices sorted by id, optionally of one group."""

    def revoke_device(self, device_id: str, *, now: float) -> list[str]:
        """Mark a device and every certificate issued to it revoked; returns the serials
        newly revoked. Raises :class:`~edgeops.errors.ConfigError` for an unknown device."""

    # -- certificates and bundles ----------------------------------------------------------

    def add_certificate(self, cert: CertificateRecord) -> None:
        """Record a certificate the fleet CA issued."""

    def revoked_certificates(self) -> list[CertificateRecord]:
        """Every revoked certificate, for the CRL."""

    def add_bundle(self, bundle: BundleRecord) -> None:
        """Record a bundle; the same digest again is a no-op."""

    def get_bundle(self, digest: str) -> BundleRecord | None:
        """One bundle, or ``None``."""

    def next_directive_sequence(self, target: str) -> int:
        """The next directive sequence for ``target`` (a device or group topic id):
        1, 2, 3… atomically, never repeated, even across processes."""

    # -- ingestion -------------------------------------------------------------------------

    def ingest(
        self,
        *,
        states: Iterable[StateUpdate] = (),
        events: Iterable[EventRecord] = (),
        telemetry: Iterable[TelemetryRow] = (),
        seen: Mapping[str, float] | None = None,
        bundles: Iterable[BundleRecord] = (),
    ) -> IngestCounts:
        """Write one batch in one transaction. Duplicates by (device, seq) are dropped,
        stale states ignored, messages from devices the registry does not know dropped;
        ``seen`` moves each device's last-seen time forward; ``bundles`` named in state
        messages are recorded unless known."""

    def telemetry_for(self, device_id: str, *, limit: int = 100) -> list[TelemetryRow]:
        """A device's latest samples, newest first."""

    def events_for(self, device_id: str, *, limit: int = 100) -> list[EventRecord]:
        """A device's latest update events, newest first."""

    def mean_p95(self, device_ids: Iterable[str], *, bundle: str) -> dict[str, float]:
        """Each device's mean p95 latency while it ran ``bundle`` (the rollout baseline)."""

    def prune(self, *, before: float) -> int:
        """Delete telemetry and events older than ``before``; returns the rows deleted.
        The latest state and health on each device row are kept."""

    # -- rollouts --------------------------------------------------------------------------

    def save_rollout(self, record: RolloutRecord) -> None:
        """Insert or replace a rollout with its waves and device phases."""

    def get_rollout(self, rollout_id: str) -> RolloutRecord | None:
        """One rollout with its waves and device phases, or ``None``."""

    def list_rollouts(self, *, active_only: bool = False) -> list[RolloutRecord]:
        """Rollouts newest first, without device phases; ``active_only`` keeps the
        running and paused ones."""

    def add_rollout_request(
        self, rollout_id: str, action: str, *, reason: str, now: float
    ) -> RolloutRequest:
        """Queue ``pause``, ``resume`` or ``abort`` for the process running the rollout."""

    def pending_requests(self, rollout_id: str) -> list[RolloutRequest]:
        """Requests not yet handled, oldest first."""

    def mark_request_handled(self, request_id: str, *, now: float) -> None:
        """Record that the runner acted on a request."""

    def claim_rollout(self, rollout_id: str, owner: str, *, now: float, ttl_s: float) -> str:
        """Take the lease on driving ``rollout_id`` for ``ttl_s`` seconds when it is free,
        expired or already ``owner``'s (then renewed); returns the holder afterwards, so
        ``owner`` means the caller may drive it. Atomic across processes."""

    def release_rollout(self, rollout_id: str, owner: str) -> None:
        """Give the lease up (a no-op unless ``owner`` holds it)."""


__all__ = ["ROLLOUT_ACTIONS", "RegistryStore"]
