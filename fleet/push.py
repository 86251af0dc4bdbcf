"""``edgeops push``: one bundle to one group, in the foreground, through the rollout runner.

:class:`Push` does the steps in the order that keeps a half-done push harmless:

1. verify the bundle file against the fleet's root (a bundle the devices would refuse is
   refused here, before anything is published);
2. record it in the registry (digest, size, release: what a directive names);
3. connect as a fleet manager (the first free CLI identity, ``edgeops-fleet-cli-K``, so
   that a ``fleet serve`` or another push keeps its session) and publish the chunks once,
   retained (:func:`edgeops.mqtt.publish_bundle`): the broker fans them out, so this costs
   the same for one device or a thousand;
4. start the ingestor (device state, events, telemetry into the registry and into the
   runner) and plan the rollout with :class:`~edgeops.fleet.rollout.runner.RolloutRunner`,
   or pick up an unfinished rollout of the same bundle and group where it stopped (a push
   killed half way is finished by running it again);
5. tick the runner until the rollout ends, holding the registry's lease on driving it
   (:meth:`~edgeops.fleet.registry.RegistryStore.claim_rollout`, renewed as it goes) so
   that ``edgeops fleet serve`` does not drive the same rollout at the same time; a lease
   left by a killed push expires after ``lease_s``. Every decision — waves, gates, abort, rollback
   directives — is the runner's; this module only feeds it and reports.

``detach=True`` stops after step 4 with the rollout recorded, for ``edgeops fleet serve``
to run. :meth:`Push.interrupt` (Ctrl-C) queues a pause through the registry and applies it
with one more tick, so the rollout is left paused, not half-abandoned.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from edgeops.errors import ConfigError, StateError

if TYPE_CHECKING:
    from edgeops.bundle import VerifiedBundle
    from edgeops.fleet.fleetdir import FleetDir
    from edgeops.fleet.ingest import Ingestor
    from edgeops.fleet.registry import RegistryStore
    from edgeops.fleet.rollout import PublishDirectives, RolloutPolicy, WaveProgress
    from edgeops.fleet.rollout.runner import RolloutRunner, SignedDirectiveSink
    from edgeops.mqtt import Link

log = logging.getLogger(__name__)

_R = TypeVar("_R")  # a device report: a state or an event message

DEFAULT_TICK_S = 0.25
#: After a device report wakes the loop, how long it waits for more reports (several devices
#: failing together) to go into the same tick.
REPORT_BATCH_S = 0.02
DEFAULT_LEASE_S = 6.0


@dataclass
class PushResult:
    """How a push ended (also what ``--json`` prints)."""

    rollout_id: str
    group: str
    bundle: str
    previous_bundle: str | None
    status: str
    reason: str
    resumed: bool
    detached: bool
    elapsed_s: float
    chunk_publishes: int
    directive_publishes: int
    waves: list[dict[str, Any]] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    no_previous: list[str] = field(default_factory=list)
    """Devices an abort could not send back: the rollout was the group's first bundle."""

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def to_json(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "group": self.group,
            "bundle": self.bundle,
            "previous_bundle": self.previous_bundle,
            "status": self.status,
            "reason": self.reason,
            "resumed": self.resumed,
            "detached": self.detached,
            "elapsed_s": round(self.elapsed_s, 3),
            "publishes": {
                "chunks": self.chunk_publishes,
                "directives": self.directive_publishes,
            },
            "waves": self.waves,
            "rolled_back": self.rolled_back,
            "no_previous_bundle": self.no_previous,
        }


class _CountingSink:
    """The signed sink, counting the directives it published (one publish per device)."""

    def __init__(self, sink: SignedDirectiveSink) -> None:
        self.sink = sink
        self.published = 0
        self.unrollable: list[str] = []

    def publish(self, action: PublishDirectives, *, rollout_id: str, policy: RolloutPolicy) -> None:
        if action.action == "rollback" and action.bundle is None:
            # The group's first bundle: the devices keep no earlier one to go back to, and
            # an agent refuses a rollback without one. Say so instead of failing the push.
            self.unrollable.extend(action.device_ids)
            log.warning(
                "rollout %s: no previous bundle to roll %d devices back to",
                rollout_id,
                len(action.device_ids),
            )
            return
        self.sink.publish(action, rollout_id=rollout_id, policy=policy)
        self.published += len(action.device_ids)


def manager_link(fleet: FleetDir) -> Link:
    """A link to the fleet's broker as a free CLI identity (not connected); closing it frees
    the identity. See :mod:`edgeops.fleet.identity`."""
    from edgeops.fleet.identity import manager_link as leased_link

    return leased_link(fleet)


def wave_views(progress: list[WaveProgress]) -> list[dict[str, Any]]:
    """Per-wave counts as JSON-ready dicts (the live table and the summary)."""
    return [
        {
            "index": p.index,
            "canary": p.canary,
            "stage": p.stage.value,
            "devices": p.devices,
            "counts": dict(p.counts),
        }
        for p in progress
    ]


class Push:
    """Push ``bundle_path`` to ``group`` of the fleet in ``fleet_dir`` under ``policy``.

    ``link`` defaults to :func:`manager_link`; ``on_tick`` is called with the runner after
    every tick (the CLI's live table). Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        fleet_dir: Path,
        bundle_path: Path,
        *,
        group: str,
        policy: RolloutPolicy,
        rollout_id: str | None = None,
        link: Link | None = None,
        chunk_size: int | None = None,
        tick_s: float = DEFAULT_TICK_S,
        connect_timeout_s: float = 15.0,
        lease_s: float = DEFAULT_LEASE_S,
        on_tick: Callable[[RolloutRunner], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from edgeops.fleet.fleetdir import FleetDir

        self.fleet = FleetDir.open(fleet_dir)
        self.bundle_path = Path(bundle_path)
        self.group = group
        self.policy = policy
        self.rollout_id = rollout_id
        self.chunk_size = chunk_size
        self.tick_s = tick_s
        self.connect_timeout_s = connect_timeout_s
        self.lease_s = lease_s
        self.owner = f"push@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._leased_at = 0.0
        self.on_tick = on_tick
        self.clock = clock
        self._link = link
        self._own_link = link is None
        self.store: RegistryStore | None = None
        self.ingest: Ingestor | None = None
        self.runner: RolloutRunner | None = None
        self.verified: VerifiedBundle | None = None
        self.resumed = False
        self.chunk_publishes = 0
        self._sink: _CountingSink | None = None
        self._started = 0.0
        self._reported = threading.Event()

    # ------------------------------------------------------------------ steps

    def verify(self) -> VerifiedBundle:
        """Step 1: the bundle against the fleet root, as a device will check it."""
        from edgeops.bundle import verify_bundle

        if not self.bundle_path.is_file():
            raise ConfigError(f"no bundle file at {self.bundle_path}")
        self.verified = verify_bundle(self.bundle_path, self.fleet.trusted())
        return self.verified

    def prepare(self) -> RolloutRunner:
        """Steps 1–4: verify, register, publish the chunks, plan or resume the rollout."""
        from edgeops.fleet.ingest import Ingestor
        from edgeops.fleet.registry import BundleRecord, open_registry
        from edgeops.fleet.rollout.runner import RolloutRunner
        from edgeops.mqtt import publish_bundle
        from edgeops.protocol.chunks import DEFAULT_CHUNK_SIZE

        self._started = time.monotonic()
        verified = self.verified or self.verify()
        manifest = verified.manifest
        self.store = store = open_registry(self.fleet.path)
        store.add_bundle(
            BundleRecord(
                digest=verified.sha256,
                name=manifest.name,
                version=manifest.version,
                release=manifest.release,
                size=verified.size,
                manifest={"name": manifest.name, "version": manifest.version},
                added=self.clock(),
            )
        )
        existing = self._unfinished(store, verified.sha256)
        if existing is None and not store.list_devices(group=self.group):
            raise ConfigError(f"group {self.group!r} has no enrolled devices")

        if self._link is None:
            self._link = manager_link(self.fleet)
        link = self._link
        link.connect(timeout=self.connect_timeout_s)
        meta = publish_bundle(
            link, self.fleet.name, self.bundle_path, self.chunk_size or DEFAULT_CHUNK_SIZE
        )
        self.chunk_publishes = meta.chunk_count + 1  # the chunks, then the meta

        # Listen before planning: the retained states arrive at once and tell the planner
        # which devices are online and what they run.
        self.ingest = ingest = Ingestor(store, fleet=self.fleet.name, batch_size=200)
        for ack in ingest.attach(link):
            ack.wait(self.connect_timeout_s)
        self._settle_states(store)

        if existing is not None:
            self._claim(existing.rollout_id, wait_s=self.lease_s + 1.0)
            sink = self._make_sink(store, verified, existing.previous_bundle)
            runner = RolloutRunner.resume(store, sink, existing.rollout_id, clock=self.clock)
            self.resumed = True
        else:
            devices = store.list_devices(group=self.group)
            running = [d.bundle for d in devices if d.bundle and d.bundle != verified.sha256]
            previous = max(set(running), key=running.count) if running else None
            sink = self._make_sink(store, verified, previous)
            runner = RolloutRunner.start(
                store,
                sink,
                rollout_id=self.rollout_id or self._new_id(verified),
                group=self.group,
                bundle=verified.sha256,
                policy=self.policy,
                previous_bundle=previous,
                clock=self.clock,
            )
        self.rollout_id = runner.controller.rollout_id
        if existing is None:
            self._claim(self.rollout_id, wait_s=0.0)
        ingest.on_state = self._waking(runner, runner.on_state)
        ingest.on_event = self._waking(runner, runner.on_event)
        ingest.on_telemetry = runner.on_telemetry
        self.runner = runner
        self._replay_states(store, runner, verified)
        return runner

    def run(self, stop: threading.Event | None = None) -> PushResult:
        """Step 5: tick until the rollout ends (or ``stop`` is set); returns the outcome."""
        runner = self.runner or self.prepare()
        assert self.ingest is not None
        while not runner.finished:
            if stop is not None and stop.is_set():
                break
            if time.monotonic() - self._leased_at > self.lease_s / 3:
                self._claim(runner.controller.rollout_id, wait_s=0.0)
            runner.tick()
            self.ingest.flush_due()
            if self.on_tick is not None:
                self.on_tick(runner)
            if runner.status.finished:  # not runner.finished: the loop's test narrows it
                break
            # A device's failure, or the last commit of a wave, ends the wait: acted on at once,
            # not at the next tick. Telemetry does not; the gates read it at their own time.
            if self._reported.wait(self.tick_s):
                time.sleep(REPORT_BATCH_S)
            self._reported.clear()
        self.ingest.flush()
        return self.result()

    def interrupt(self, reason: str = "interrupted (Ctrl-C)") -> PushResult:
        """Leave the rollout paused in the registry: the pause goes through the runner's
        own request path and is applied and saved by one more tick."""
        if self.runner is None or self.store is None:
            raise StateError("nothing to interrupt: the rollout was not started")
        if not self.runner.finished:
            self.store.add_rollout_request(
                self.runner.controller.rollout_id, "pause", reason=reason, now=self.clock()
            )
            self.runner.tick()
        return self.result()

    def result(self, *, detached: bool = False) -> PushResult:
        if self.runner is None:
            raise StateError("the rollout was not started")
        controller = self.runner.controller
        return PushResult(
            rollout_id=controller.rollout_id,
            group=self.group,
            bundle=controller.bundle,
            previous_bundle=controller.previous_bundle,
            status=controller.status.value,
            reason=controller.reason,
            resumed=self.resumed,
            detached=detached,
            elapsed_s=time.monotonic() - self._started,
            chunk_publishes=self.chunk_publishes,
            directive_publishes=self._sink.published if self._sink else 0,
            waves=wave_views(controller.progress(now=self.clock())),
            rolled_back=sorted(controller.rolled_back_by_fleet() - set(self._unrollable())),
            no_previous=sorted(self._unrollable()),
        )

    def _unrollable(self) -> list[str]:
        return self._sink.unrollable if self._sink is not None else []

    def close(self) -> None:
        if self.store is not None and self._leased_at and self.rollout_id is not None:
            with contextlib.suppress(Exception):
                self.store.release_rollout(self.rollout_id, self.owner)
        if self.ingest is not None:
            # The registry going away must not hide the push's outcome.
            with contextlib.suppress(Exception):
                self.ingest.flush()
        if self._link is not None and self._own_link:
            self._link.close()
        if self.store is not None:
            self.store.close()
            self.store = None

    def __enter__(self) -> Push:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _unfinished(self, store: RegistryStore, digest: str) -> Any:
        if self.rollout_id is not None:
            record = store.get_rollout(self.rollout_id)
            if record is None:
                return None
            if record.bundle != digest or record.group != self.group:
                raise ConfigError(
                    f"rollout {self.rollout_id!r} is of another bundle or group; pick a new id"
                )
            if record.status in ("succeeded", "aborted"):
                raise ConfigError(f"rollout {self.rollout_id!r} already {record.status}")
            return record
        for record in store.list_rollouts(active_only=True):
            if record.bundle == digest and record.group == self.group:
                return record
        return None

    def _claim(self, rollout_id: str, *, wait_s: float) -> None:
        """Hold the lease on driving ``rollout_id``; a holder that stops renewing (a killed
        push) loses it after its lease, so wait up to ``wait_s`` for that."""
        assert self.store is not None
        deadline = time.monotonic() + wait_s
        while True:
            holder = self.store.claim_rollout(
                rollout_id, self.owner, now=self.clock(), ttl_s=self.lease_s
            )
            if holder == self.owner:
                self._leased_at = time.monotonic()
                return
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"rollout {rollout_id} is being driven by {holder}; follow it with "
                    f"`edgeops rollout status {rollout_id}`"
                )
            time.sleep(0.5)

    def _waking(
        self, runner: RolloutRunner, callback: Callable[[str, _R], None]
    ) -> Callable[[str, _R], None]:
        def call(device_id: str, message: _R) -> None:
            callback(device_id, message)
            # Only a report that can move the rollout on ends the wait: with one tick per
            # report, 200 devices' progress reports cost the manager seconds of CPU.
            if runner.step_due(device_id):
                self._reported.set()

        return call

    def _replay_states(
        self, store: RegistryStore, runner: RolloutRunner, verified: VerifiedBundle
    ) -> None:
        # The retained states arrived before the runner existed and went only to the
        # registry. A resumed rollout needs them: a device that committed while no push was
        # running (the one before was killed) says so only in its retained state.
        from edgeops.protocol import BundleRef as WireBundleRef
        from edgeops.protocol import StateMessage

        assert self.ingest is not None
        self.ingest.flush()
        manifest = verified.manifest
        running = WireBundleRef(
            name=manifest.name,
            version=manifest.version,
            digest=verified.sha256,
            release=manifest.release,
        )
        for device in store.list_devices(group=self.group):
            if device.bundle == verified.sha256:
                runner.on_state(
                    device.device_id,
                    StateMessage(online=device.online, ts=device.last_seen or 0.0, bundle=running),
                )

    def _settle_states(self, store: RegistryStore) -> None:
        # The broker sends the retained states right after the subscription's SUBACK; a
        # short wait for the stream to go quiet lets the plan see who is online.
        assert self.ingest is not None
        received = -1
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and self.ingest.stats.received != received:
            received = self.ingest.stats.received
            time.sleep(0.2)
        self.ingest.flush()

    def _make_sink(
        self, store: RegistryStore, verified: VerifiedBundle, previous: str | None
    ) -> _CountingSink:
        from edgeops.fleet.rollout.runner import SignedDirectiveSink
        from edgeops.trust import BundleRef

        assert self._link is not None
        bundles = {verified.sha256: verified.ref()}
        if previous is not None:
            record = store.get_bundle(previous)
            if record is not None and record.size > 0:
                bundles[previous] = BundleRef(
                    sha256=record.digest,
                    size=record.size,
                    name=record.name,
                    version=record.version,
                    release=record.release,
                )
        sink = SignedDirectiveSink(
            self._link,
            store,
            fleet=self.fleet.name,
            deploy_keys=self.fleet.signing_keys("deploy"),
            bundles=bundles,
        )
        self._sink = _CountingSink(sink)
        return self._sink

    @staticmethod
    def _new_id(verified: VerifiedBundle) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        return f"{verified.manifest.name}-{verified.manifest.version}-{stamp}"


__all__ = ["DEFAULT_TICK_S", "Push", "PushResult", "manager_link", "wave_views"]
