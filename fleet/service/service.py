"""``edgeops fleet serve``: ingestion, rollouts and the HTTP side in one long-running process.

Threads (named ``edgeops-fleet-*``): the MQTT link's network thread delivers device reports
to the :class:`~edgeops.fleet.ingest.Ingestor`; the service loop (:meth:`FleetService.step`,
every ``tick_interval_s``) writes due ingest batches, picks up rollouts to drive, feeds their
runners from the registry (:mod:`edgeops.fleet.service.feed`) and ticks them; the HTTP
server answers on its own threads from a separate registry connection, so a slow page
never holds up ingestion.

Which rollouts it drives: every running or paused rollout in the registry that nobody else
drives — one ``edgeops push --detach`` recorded, or one left unfinished by a process that
stopped (a restart resumes it through :meth:`RolloutRunner.resume`). "Nobody else" is a
lease in the registry (``claim_rollout``, renewed every tick, released on stop), so of
several instances exactly one drives each rollout and another takes over when it stops;
and a record saved within ``adopt_after_s`` is left alone, because ``edgeops push`` in the
foreground saves it every tick. Pause,
resume and abort reach the runner as registry requests (``edgeops rollout pause`` or
``POST /api/rollouts/{id}/pause``), applied at its next tick. With ``run_rollouts=False``
an instance only ingests and serves HTTP (several instances in a share group, one of them
running rollouts; see docs/decisions/0005-fleet-service.md).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeops.errors import ConfigError, EdgeopsError
from edgeops.fleet.fleetdir import FleetDir
from edgeops.fleet.identity import IdentityLease
from edgeops.fleet.ingest import DEFAULT_BATCH_SIZE, DEFAULT_MAX_DELAY_S, Ingestor
from edgeops.fleet.registry import RegistryStore, open_registry
from edgeops.fleet.rollout.runner import RolloutRunner, SignedDirectiveSink
from edgeops.fleet.service.api import FleetApi, HttpServer
from edgeops.fleet.service.feed import RegistryFeed
from edgeops.fleet.service.metrics import (
    fleet_families,
    ingest_families,
    render,
    rollout_families,
)
from edgeops.mqtt.link import Link
from edgeops.protocol import shared_filter

log = logging.getLogger(__name__)

#: finished rollouts /metrics still exports (the newest), beside every active one
METRICS_FINISHED_ROLLOUTS = 20


@dataclass(frozen=True, kw_only=True)
class ServiceConfig:
    """How ``edgeops fleet serve`` runs.

    ``lease_s``: how long a claim on driving a rollout lasts without renewal (renewed every
    tick); ``adopt_after_s``: how long a rollout record must have gone unsaved before this
    service takes it over, so a rollout ``edgeops push`` drives in the foreground (it saves
    every tick) is left alone, and one left by ``--detach`` or a stopped process is taken.
    ``manager_cert``/``manager_key`` default to the fleet folder's ``tls/manager.*``; a
    second instance needs its own identity (the broker takes the client id from the
    certificate's CN, so two processes on one certificate would evict each other): the
    service holds ``locks/<CN>.lock`` while it runs and refuses to start when another
    process on this machine holds it. CLI commands connect with names of their own
    (:mod:`edgeops.fleet.identity`).
    """

    fleet_dir: Path
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    share_group: str | None = None
    run_rollouts: bool = True
    manager_cert: Path | None = None
    manager_key: Path | None = None
    tick_interval_s: float = 1.0
    lease_s: float = 15.0
    adopt_after_s: float = 3.0
    batch_size: int = DEFAULT_BATCH_SIZE
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.http_port <= 65535:
            raise ConfigError(f"expected an HTTP port in 0..65535, got {self.http_port}")
        if self.tick_interval_s <= 0:
            raise ConfigError(f"expected tick_interval_s > 0, got {self.tick_interval_s}")
        if self.lease_s <= 2 * self.tick_interval_s:
            raise ConfigError(
                f"expected lease_s > 2 × tick_interval_s, got {self.lease_s} and "
                f"{self.tick_interval_s} (the lease must outlive a slow tick)"
            )
        if self.adopt_after_s < 0:
            raise ConfigError(f"expected adopt_after_s >= 0, got {self.adopt_after_s}")
        if (self.manager_cert is None) != (self.manager_key is None):
            raise ConfigError("a manager certificate needs both its cert and key files")
        if self.share_group is not None:
            shared_filter(self.share_group, "x")  # validates the name, raises ProtocolError


def parse_http_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) to ``(host, port)``."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"expected --http HOST:PORT, got {text!r}")
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"expected a port number in --http {text!r}") from None
    if not 0 <= number <= 65535:
        raise ConfigError(f"expected a port in 0..65535 in --http, got {number}")
    return host, number


def _common_name(cert: Path) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the manager certificate {cert}: {exc}") from exc
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ConfigError(f"{cert} has no common name")
    return str(names[0].value)


@dataclass
class _Driven:
    runner: RolloutRunner
    feed: RegistryFeed
    errors: int = 0
    last_error: str = ""


@dataclass
class ServiceStats:
    """The loop's own counters (``/api/fleet`` ``service``)."""

    started: float = 0.0
    steps: int = 0
    rollouts_finished: int = 0
    errors: dict[str, str] = field(default_factory=dict)


class FleetService:
    """One ``edgeops fleet serve`` process: :meth:`start`, then :meth:`stop` (or
    :meth:`serve_until` a stop event)."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        link: Link | None = None,
        store_factory: Callable[[], RegistryStore] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.fleet = FleetDir.open(config.fleet_dir)
        self.clock = clock
        self._link = link
        self._store_factory = store_factory or (lambda: open_registry(config.fleet_dir))
        self.stats = ServiceStats()
        self.driven: dict[str, _Driven] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stores: list[RegistryStore] = []
        self._deploy_keys: list[Any] | None = None
        self.ingestor: Ingestor | None = None
        self.http: HttpServer | None = None
        self.api: FleetApi | None = None
        self.identity = ""
        self._lease: IdentityLease | None = None
        import os
        import socket
        import uuid

        #: this process's name on rollout leases
        self.owner = f"fleet-serve@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Open the registry, connect and subscribe, start the loop and the HTTP server."""
        config = self.config
        try:
            # Separate connections: ingestion batches, rollouts, HTTP reads.
            self.ingest_store = self._open_store()
            self.control_store = self._open_store()
            self.http_store = self._open_store()
            self.ingestor = Ingestor(
                self.ingest_store,
                fleet=self.fleet.name,
                batch_size=config.batch_size,
                max_delay_s=config.max_delay_s,
                clock=self.clock,
            )
            self.api = FleetApi(
                self.http_store, metrics=self.metrics_text, info=self.info, clock=self.clock
            )
            self.http = HttpServer(self.api, host=config.http_host, port=config.http_port)
            self.http.start()
            link = self._link or self._make_link()
            self._link = link
            link.connect(timeout=config.connect_timeout_s)
            for ack in self.ingestor.attach(link, share_group=config.share_group):
                ack.wait(config.connect_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.stats.started = self.clock()
        self._thread = threading.Thread(target=self._loop, name="edgeops-fleet-loop", daemon=True)
        self._thread.start()
        log.info(
            "fleet %s: serving %s as %s%s",
            self.fleet.name,
            self.http.url,
            self.identity or "a given link",
            f" in share group {config.share_group}" if config.share_group else "",
        )

    def _open_store(self) -> RegistryStore:
        store = self._store_factory()
        self._stores.append(store)
        return store

    def _make_link(self) -> Link:
        from edgeops.fleet.identity import Identity, lock_identity
        from edgeops.mqtt import MqttSettings, PahoLink
        from edgeops.mqtt.settings import TlsSettings

        cert = self.config.manager_cert or self.fleet.manager_cert
        key = self.config.manager_key or self.fleet.manager_key
        self.identity = _common_name(cert)
        # Refuse to start rather than evict a running instance with the same CN (the
        # broker's client id); CLI commands take names of their own (edgeops.fleet.identity).
        self._lease = lock_identity(self.fleet, Identity(self.identity, cert, key))
        # A plain mqtt:// broker (a local test broker) takes no certificates at all.
        tls = None
        if self.fleet.broker_url.startswith("mqtts://"):
            tls = TlsSettings(cafile=self.fleet.ca_cert, certfile=cert, keyfile=key)
        settings = MqttSettings.from_url(
            self.fleet.broker_url,
            client_id=self.identity,
            tls=tls,
            # Shared subscriptions are MQTT 5; without a share group either protocol works.
            protocol="5" if self.config.share_group else "auto",
        )
        return PahoLink(settings)

    def stop(self) -> None:
        """Stop the loop, write what is pending, close HTTP, link and registry. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        if self.http is not None:
            self.http.stop()
        with self._lock:
            driven, self.driven = list(self.driven), {}
        for rollout_id in driven:
            # Another instance may take over at once instead of after the lease runs out.
            self._release(rollout_id)
        if self._link is not None:
            # Also when disconnected: the link's network thread may be reconnecting.
            self._link.close()
        if self._lease is not None:
            self._lease.release()
        if self.ingestor is not None:
            try:
                self.ingestor.flush()
            except EdgeopsError as exc:
                log.error("fleet service: last ingest batch not written: %s", exc)
        for store in self._stores:
            store.close()
        self._stores.clear()

    def serve_until(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set (the CLI sets it on SIGTERM / SIGINT), then stop."""
        try:
            while not stop.wait(0.5):
                if self._thread is not None and not self._thread.is_alive():
                    raise EdgeopsError("the fleet service loop died; see the log")
        finally:
            self.stop()

    @property
    def url(self) -> str:
        if self.http is None:
            raise EdgeopsError("the fleet service is not running")
        return self.http.url

    # -- the loop ------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.config.tick_interval_s):
            try:
                self.step()
            except Exception:
                # One bad step (a locked database, a broker hiccup) must not end the service.
                log.exception("fleet service: step failed")

    def step(self) -> None:
        """One turn of the loop: write due ingest batches, pick up rollouts, drive them."""
        assert self.ingestor is not None
        self.ingestor.flush_due()
        self.stats.steps += 1
        if not self.config.run_rollouts:
            return
        self._adopt_rollouts()
        for rollout_id, driven in list(self.driven.items()):
            try:
                holder = self.control_store.claim_rollout(
                    rollout_id, self.owner, now=self.clock(), ttl_s=self.config.lease_s
                )
                if holder != self.owner:
                    log.warning("rollout %s: lost the lease to %s; letting go", rollout_id, holder)
                    with self._lock:
                        del self.driven[rollout_id]
                    continue
                driven.feed.poll(self.control_store)
                driven.runner.tick()
            except EdgeopsError as exc:
                driven.errors += 1
                driven.last_error = str(exc)
                self.stats.errors[rollout_id] = str(exc)
                log.error("rollout %s: %s (retrying)", rollout_id, exc)
                continue
            self.stats.errors.pop(rollout_id, None)
            if driven.runner.finished:
                log.info(
                    "rollout %s finished: %s %s",
                    rollout_id,
                    driven.runner.status.value,
                    driven.runner.controller.reason,
                )
                with self._lock:
                    del self.driven[rollout_id]
                self._release(rollout_id)
                self.stats.rollouts_finished += 1

    def _release(self, rollout_id: str) -> None:
        try:
            self.control_store.release_rollout(rollout_id, self.owner)
        except EdgeopsError as exc:
            log.warning("rollout %s: lease not released (it expires): %s", rollout_id, exc)

    def _adopt_rollouts(self) -> None:
        store = self.control_store
        now = self.clock()
        for record in store.list_rollouts(active_only=True):
            if record.rollout_id in self.driven:
                continue
            if now - record.updated < self.config.adopt_after_s:
                continue  # saved moments ago: someone is driving it
            holder = store.claim_rollout(
                record.rollout_id, self.owner, now=now, ttl_s=self.config.lease_s
            )
            if holder != self.owner:
                continue  # another instance drives it
            try:
                sink = self._sink(record.bundle, record.previous_bundle)
                runner = RolloutRunner.resume(store, sink, record.rollout_id, clock=self.clock)
            except EdgeopsError as exc:
                if self.stats.errors.get(record.rollout_id) != str(exc):
                    log.error("cannot drive rollout %s: %s", record.rollout_id, exc)
                self.stats.errors[record.rollout_id] = str(exc)
                self._release(record.rollout_id)
                continue
            log.info("driving rollout %s (%s)", record.rollout_id, record.status)
            with self._lock:
                self.driven[record.rollout_id] = _Driven(runner=runner, feed=RegistryFeed(runner))

    def _sink(self, bundle: str, previous: str | None) -> SignedDirectiveSink:
        from edgeops.trust.metadata import BundleRef

        assert self._link is not None
        if self._deploy_keys is None:
            self._deploy_keys = list(self.fleet.signing_keys("deploy"))
        refs = {}
        for digest in (bundle, previous):
            if digest is None:
                continue
            record = self.control_store.get_bundle(digest)
            if record is None or record.size < 1:
                if digest == bundle:
                    raise ConfigError(
                        f"bundle {digest[:12]} is not recorded with its size in the registry "
                        "(edgeops push records it)"
                    )
                # Without the previous bundle's size no rollback directive can be signed;
                # the sink refuses it when an abort needs one, and says so.
                continue
            refs[digest] = BundleRef(
                sha256=record.digest,
                size=record.size,
                name=record.name,
                version=record.version,
                release=record.release,
            )
        return SignedDirectiveSink(
            self._link,
            self.control_store,
            fleet=self.fleet.name,
            deploy_keys=self._deploy_keys,
            bundles=refs,
        )

    # -- figures -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The service's own state for ``/api/fleet``."""
        stats = self.ingestor.stats if self.ingestor is not None else None
        with self._lock:
            driven = sorted(self.driven)
        return {
            "fleet": self.fleet.name,
            "identity": self.identity,
            "share_group": self.config.share_group,
            "run_rollouts": self.config.run_rollouts,
            "started": self.stats.started,
            "steps": self.stats.steps,
            "connected": bool(self._link is not None and self._link.connected),
            "rollouts_driven": driven,
            "errors": dict(self.stats.errors),
            "ingest": None
            if stats is None
            else {
                "received": stats.received,
                "written": stats.written,
                "duplicates": stats.duplicates,
                "malformed": stats.malformed,
                "unknown": stats.unknown,
                "lost": stats.lost,
            },
        }

    def metrics_text(self) -> str:
        """``/metrics``: the fleet from the registry, this instance's ingest counters."""
        store = self.http_store
        devices = store.list_devices()
        rollouts = store.list_rollouts()
        active = [r for r in rollouts if r.status in ("running", "paused")]
        finished = [r for r in rollouts if r.status not in ("running", "paused")]
        shown = active + finished[:METRICS_FINISHED_ROLLOUTS]
        assert self.ingestor is not None
        with self._lock:
            driven = len(self.driven)
        return render(
            [
                *fleet_families(devices),
                *ingest_families(self.ingestor.stats, self.ingestor.pending),
                *rollout_families(shown, driven=driven),
            ]
        )


__all__ = ["FleetService", "ServiceConfig", "ServiceStats", "parse_http_address"]
