"""The registry schema as ordered migrations.

Each migration is a list of statements in the SQL both SQLite and PostgreSQL accept: no
``AUTOINCREMENT``, no SQLite type affinity tricks, JSON kept in ``TEXT``, times as
``DOUBLE PRECISION`` seconds since the epoch, 160-bit certificate serials as hex ``TEXT``.
A store applies, in one transaction each, every migration above the version recorded in
``schema_version``. Never edit a released migration: append a new one.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE groups (
                name TEXT PRIMARY KEY,
                created DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE devices (
                id TEXT PRIMARY KEY,
                group_name TEXT NOT NULL REFERENCES groups(name),
                board TEXT,
                enrolled DOUBLE PRECISION NOT NULL,
                revoked DOUBLE PRECISION,
                last_seen DOUBLE PRECISION,
                online BOOLEAN NOT NULL DEFAULT FALSE,
                bundle TEXT,
                previous_bundle TEXT,
                agent_version TEXT,
                state_seq BIGINT,
                p95_ms DOUBLE PRECISION,
                error_rate DOUBLE PRECISION,
                drift DOUBLE PRECISION,
                temp_c DOUBLE PRECISION,
                health_seq BIGINT,
                health_ts DOUBLE PRECISION
            )""",
            "CREATE INDEX devices_group ON devices(group_name)",
            """CREATE TABLE certificates (
                serial TEXT PRIMARY KEY,
                subject TEXT NOT NULL,
                kind TEXT NOT NULL,
                issued DOUBLE PRECISION NOT NULL,
                not_after DOUBLE PRECISION,
                revoked DOUBLE PRECISION
            )""",
            "CREATE INDEX certificates_subject ON certificates(subject)",
            """CREATE TABLE bundles (
                digest TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                version TEXT NOT NULL,
                release BIGINT NOT NULL,
                size BIGINT NOT NULL,
                manifest TEXT NOT NULL,
                added DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE directive_sequences (
                target TEXT PRIMARY KEY,
                seq BIGINT NOT NULL
            )""",
            """CREATE TABLE telemetry (
                device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
                seq BIGINT NOT NULL,
                idx INTEGER NOT NULL,
                ts DOUBLE PRECISION NOT NULL,
                window_s DOUBLE PRECISION,
                requests BIGINT,
                errors BIGINT,
                bundle TEXT,
                p50_ms DOUBLE PRECISION,
                p95_ms DOUBLE PRECISION,
                p99_ms DOUBLE PRECISION,
                error_rate DOUBLE PRECISION,
                drift DOUBLE PRECISION,
                temp_c DOUBLE PRECISION,
                cpu_percent DOUBLE PRECISION,
                rss_mb DOUBLE PRECISION,
                PRIMARY KEY (device_id, seq, idx)
            )""",
            "CREATE INDEX telemetry_device_ts ON telemetry(device_id, ts)",
            """CREATE TABLE events (
                device_id TEXT NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
                seq BIGINT NOT NULL,
                ts DOUBLE PRECISION NOT NULL,
                kind TEXT NOT NULL,
                state TEXT,
                bundle TEXT,
                directive_seq BIGINT,
                reason TEXT NOT NULL,
                figures TEXT NOT NULL,
                PRIMARY KEY (device_id, seq)
            )""",
            "CREATE INDEX events_device_ts ON events(device_id, ts)",
            """CREATE TABLE rollouts (
                id TEXT PRIMARY KEY,
                group_name TEXT NOT NULL REFERENCES groups(name),
                bundle TEXT NOT NULL,
                previous_bundle TEXT,
                status TEXT NOT NULL,
                created DOUBLE PRECISION NOT NULL,
                updated DOUBLE PRECISION NOT NULL,
                reason TEXT NOT NULL,
                policy TEXT NOT NULL,
                state TEXT NOT NULL
            )""",
            "CREATE INDEX rollouts_status ON rollouts(status)",
            """CREATE TABLE rollout_waves (
                rollout_id TEXT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
                idx INTEGER NOT NULL,
                canary BOOLEAN NOT NULL,
                stage TEXT NOT NULL,
                devices TEXT NOT NULL,
                counts TEXT NOT NULL,
                started DOUBLE PRECISION,
                ended DOUBLE PRECISION,
                reason TEXT NOT NULL,
                PRIMARY KEY (rollout_id, idx)
            )""",
            """CREATE TABLE rollout_devices (
                rollout_id TEXT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
                device_id TEXT NOT NULL,
                wave INTEGER NOT NULL,
                phase TEXT NOT NULL,
                PRIMARY KEY (rollout_id, device_id)
            )""",
            """CREATE TABLE rollout_requests (
                id TEXT PRIMARY KEY,
                rollout_id TEXT NOT NULL REFERENCES rollouts(id) ON DELETE CASCADE,
                action TEXT NOT NULL,
                reason TEXT NOT NULL,
                created DOUBLE PRECISION NOT NULL,
                handled DOUBLE PRECISION
            )""",
            "CREATE INDEX rollout_requests_pending ON rollout_requests(rollout_id, handled)",
        ),
    ),
    (
        2,
        (
            # Who drives a rollout: one process at a time (fleet serve instances, push),
            # for a lease it renews while it runs (claim_rollout).
            """CREATE TABLE rollout_leases (
                rollout_id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                expires DOUBLE PRECISION NOT NULL
            )""",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1][0]

__all__ = ["LATEST_VERSION", "MIGRATIONS"]
