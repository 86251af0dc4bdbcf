"""Running a rollout: the controller wired to the registry, the device reports and a sink
that publishes directives.

:class:`RolloutRunner` is what ``edgeops push`` (foreground) and ``edgeops fleet serve``
(service) both drive. It owns no thread and reads the clock only through ``clock``: the
caller feeds it device messages (:meth:`~RolloutRunner.on_event`,
:meth:`~RolloutRunner.on_telemetry`, e.g. from :class:`~edgeops.fleet.ingest.Ingestor`'s
callbacks) and calls :meth:`~RolloutRunner.tick` every second or so. Each tick picks up the
pause / resume / abort requests queued in the registry, lets the controller decide, hands the
resulting directives to the :class:`DirectiveSink`, and only then saves the controller state,
so that after a crash the same directives are published again rather than never.

:class:`SignedDirectiveSink` is the real sink: one signed directive per device, with the
next per-target sequence from the registry, retained on the device's directive topic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from edgeops.errors import ConfigError, StateError
from edgeops.fleet.registry import RegistryStore
from edgeops.fleet.rollout.controller import (
    Action,
    DevicePhase,
    HealthSample,
    PublishDirectives,
    RolloutController,
    RolloutStatus,
)
from edgeops.fleet.rollout.persist import from_record, to_record
from edgeops.fleet.rollout.policy import DeviceCandidate, RolloutPolicy, plan_waves

if TYPE_CHECKING:
    from edgeops.mqtt.link import Link
    from edgeops.protocol import EventMessage, StateMessage, TelemetryMessage
    from edgeops.trust import SigningKey
    from edgeops.trust.metadata import BundleRef


class DirectiveSink(Protocol):
    """Where the runner's directives go; raises TransportError when they could not."""

    def publish(self, action: PublishDirectives, *, rollout_id: str, policy: RolloutPolicy) -> None:
        """Publish ``action`` (one directive per device) and return once the broker has
        them all."""


class RolloutRunner:
    """One rollout of one group, resumable from the registry."""

    def __init__(
        self,
        store: RegistryStore,
        sink: DirectiveSink,
        controller: RolloutController,
        *,
        group: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.sink = sink
        self.controller = controller
        self.group = group
        self.clock = clock
        self._lock = threading.Lock()
        self._tick_lock = threading.Lock()

    @classmethod
    def start(
        cls,
        store: RegistryStore,
        sink: DirectiveSink,
        *,
        rollout_id: str,
        group: str,
        bundle: str,
        policy: RolloutPolicy,
        previous_bundle: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> RolloutRunner:
        """Plan a new rollout of ``bundle`` over ``group``'s devices and record it.

        ``previous_bundle`` defaults to what most of the group runs now; the p95 baseline
        is each device's mean p95 on it, from the registry's health history.
        """
        if store.get_rollout(rollout_id) is not None:
            raise ConfigError(f"rollout {rollout_id!r} already exists; resume it instead")
        devices = store.list_devices(group=group)
        if not devices:
            raise ConfigError(f"group {group!r} has no enrolled devices")
        if previous_bundle is None:
            running = [d.bundle for d in devices if d.bundle and d.bundle != bundle]
            previous_bundle = max(set(running), key=running.count) if running else None
        ids = [d.device_id for d in devices]
        baseline = store.mean_p95(ids, bundle=previous_bundle) if previous_bundle else {}
        now = clock()
        controller = RolloutController(
            rollout_id=rollout_id,
            bundle=bundle,
            previous_bundle=previous_bundle,
            policy=policy,
            waves=plan_waves(
                [DeviceCandidate(device_id=d.device_id, online=d.online) for d in devices],
                policy,
            ),
            baseline_p95_ms=baseline,
            created=now,
        )
        runner = cls(store, sink, controller, group=group, clock=clock)
        store.save_rollout(to_record(controller, group=group, now=now))
        return runner

    @classmethod
    def resume(
        cls,
        store: RegistryStore,
        sink: DirectiveSink,
        rollout_id: str,
        *,
        clock: Callable[[], float] = time.time,
    ) -> RolloutRunner:
        """Pick a rollout up from the registry where it stopped (after a restart)."""
        record = store.get_rollout(rollout_id)
        if record is None:
            raise ConfigError(f"no rollout {rollout_id!r} in the registry")
        return cls(store, sink, from_record(record), group=record.group, clock=clock)

    # -- inputs --------------------------------------------------------------------------

    def on_event(self, device_id: str, event: EventMessage) -> None:
        """An update event from a device (feed it Ingestor's ``on_event``)."""
        with self._lock:
            controller = self.controller
            if event.kind == "rejected":
                # A rejection names no bundle; a device that has only just been sent this
                # rollout's directive is rejecting that one (bad signature, expired, replay).
                phases = controller.device_phases()
                if phases.get(device_id) is DevicePhase.SENT:
                    controller.on_event(
                        device_id,
                        DevicePhase.FAILED,
                        now=self.clock(),
                        reason=f"rejected the directive: {event.reason}",
                    )
                return
            state = event.state or ("rolled_back" if event.kind == "rolled_back" else None)
            if state is None:
                return  # e.g. an interrupted attempt: the device retries, no verdict yet
            controller.on_event(
                device_id, state, now=self.clock(), bundle=event.bundle_digest, reason=event.reason
            )

    def on_state(self, device_id: str, state: StateMessage) -> None:
        """A device's retained state (feed it Ingestor's ``on_state``).

        Only positive evidence is taken: a device that was sent this rollout's bundle and
        now runs it has committed it. That is how a restarted fleet manager learns what
        happened while it was away (update events are not retained; states are); failures
        in that gap show as silence and count against the gate at the wave timeout.
        """
        if state.bundle is None or state.bundle.digest != self.controller.bundle:
            return
        with self._lock:
            phase = self.controller.device_phases().get(device_id)
            if phase in (DevicePhase.SENT, DevicePhase.DOWNLOADING, DevicePhase.TESTING):
                self.controller.on_event(
                    device_id, DevicePhase.COMMITTED, now=self.clock(), bundle=state.bundle.digest
                )

    def on_telemetry(self, device_id: str, message: TelemetryMessage) -> None:
        """A telemetry batch from a device (feed it Ingestor's ``on_telemetry``)."""
        with self._lock:
            for sample in message.samples:
                self.controller.on_health(
                    device_id,
                    HealthSample(
                        bundle=sample.bundle_digest,
                        p95_ms=sample.latency_p95_ms,
                        error_rate=sample.errors / sample.requests if sample.requests else None,
                        drift=sample.drift,
                    ),
                )

    # -- the loop body -------------------------------------------------------------------

    def tick(self) -> list[Action]:
        """Apply queued requests, decide, publish, save; returns what was decided.

        The controller lock is not held while publishing: the link's network thread, which
        completes the publish acknowledgements, is also the thread that delivers device
        reports to :meth:`on_event`.
        """
        with self._tick_lock:
            with self._lock:
                controller = self.controller
                now = self.clock()
                requests = self.store.pending_requests(controller.rollout_id)
                actions: list[Action] = []
                for request in requests:
                    if request.action == "pause":
                        controller.pause(now=now)
                    elif request.action == "resume":
                        controller.resume(now=now)
                    elif request.action == "abort":
                        actions += controller.abort(request.reason or "aborted by hand", now=now)
                actions += controller.step(now=now)
            for action in actions:
                if isinstance(action, PublishDirectives):
                    self.sink.publish(
                        action, rollout_id=controller.rollout_id, policy=controller.policy
                    )
            with self._lock:
                self.store.save_rollout(to_record(controller, group=self.group, now=now))
            # Marked only after the save: a crash in between replays the request, and
            # pause, resume and abort are all harmless to apply twice.
            for request in requests:
                self.store.mark_request_handled(request.request_id, now=now)
            return actions

    def step_due(self, device_id: str) -> bool:
        """:meth:`RolloutController.step_due` under the runner's lock: call it after feeding
        a device's report, to tick early only when that report can change the outcome."""
        with self._lock:
            return self.controller.step_due(device_id)

    @property
    def finished(self) -> bool:
        return self.controller.status.finished

    @property
    def status(self) -> RolloutStatus:
        return self.controller.status


class SignedDirectiveSink:
    """Signs one directive per device with the deploy keys and publishes it retained on
    the device's directive topic, with the next sequence for that device from the registry.

    ``bundles`` maps a digest to the signed-metadata reference of that bundle file (SHA-256,
    size, name, version, release): the install bundle, and the previous bundle for rollbacks.
    """

    def __init__(
        self,
        link: Link,
        store: RegistryStore,
        *,
        fleet: str,
        deploy_keys: Sequence[SigningKey],
        bundles: Mapping[str, BundleRef],
        ack_timeout_s: float = 60.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not deploy_keys:
            raise ConfigError("signing directives needs at least one deploy key")
        self.link = link
        self.store = store
        self.fleet = fleet
        self.deploy_keys = list(deploy_keys)
        self.bundles = dict(bundles)
        self.ack_timeout_s = ack_timeout_s
        self.now = now

    def publish(self, action: PublishDirectives, *, rollout_id: str, policy: RolloutPolicy) -> None:
        from edgeops.protocol import device_directive_topic
        from edgeops.trust import create_directive, sign_metadata
        from edgeops.trust.metadata import RolloutPolicy as SignedPolicy

        if action.bundle is None or action.bundle not in self.bundles:
            raise StateError(
                f"cannot sign a {action.action} directive: bundle {action.bundle!r} is not "
                "known to this sink (its size and release are needed)"
            )
        ref = self.bundles[action.bundle]
        gates = SignedPolicy(
            rollout_id=rollout_id,
            wave=action.wave,
            max_error_rate=(
                None
                if policy.max_error_rate_percent is None
                else policy.max_error_rate_percent / 100.0
            ),
            max_drift=policy.max_drift,
        )
        acks = []
        issued = self.now()
        for device_id in action.device_ids:
            sequence = self.store.next_directive_sequence(f"device/{device_id}")
            directive = create_directive(
                fleet=self.fleet,
                bundle=ref,
                sequence=sequence,
                device=device_id,
                action=action.action,
                issued=issued,
                rollout=gates,
            )
            payload = sign_metadata(directive, self.deploy_keys)
            topic = device_directive_topic(self.fleet, device_id)
            acks.append(self.link.publish(topic, payload, qos=1, retain=True))
        for ack in acks:
            ack.wait(self.ack_timeout_s)


__all__ = ["DirectiveSink", "RolloutRunner", "SignedDirectiveSink"]
