"""The agent's update state machine, free of I/O: one module to audit.

Every decision about an update is taken here and nowhere else (the pattern of python-tuf's
``trusted_metadata_set``): the daemon feeds :class:`Updater` events (a directive arrived, the
download finished, the health check answered, a trial measurement came in, the process
started) and executes the actions it gets back (persist the state, fetch, verify, check,
activate, roll back, report). Out-of-order events raise :class:`~edgeops.errors.StateError`.

Phases::

    idle ─▶ downloading ─▶ verifying ─▶ staged ─▶ testing ─▶ activating ─▶ trial ─▶ committed
                 │              │                    │            │           │
                 └──────────────┴────────────────────┴─▶ failed   └───────────┴─▶ rolling_back
                                                                                    │
                                                                rolled_back ◀───────┘

``idle``, ``committed``, ``rolled_back`` and ``failed`` are resting phases; the others are
transient. ``failed`` means the candidate was abandoned before it ever served (the running
model never changed); ``rolled_back`` means it served and the previous committed bundle
serves again.

Write-ahead rule: every list of actions starts with :class:`Persist` of the new phase, so the
phase on disk is always the one whose side effect is about to happen.

Crash-resume (Mender's rule, decided here): a bundle that was never committed is never
trusted after a restart. On :class:`Started`, a transient phase means the process died mid
update; the candidate is dropped without exception, the committed bundle is loaded, and the
directive's record is marked ``interrupted``. Before activation that returns to the resting
phase the device had (nothing it serves changed); from ``activating`` on it is
``rolled_back``. There is no "keep the candidate if the trial was nearly done" exception:
a crash during a trial may be the candidate's own doing (a runtime segfault, an OOM kill),
and only the committed bundle has proved it is not.

Retries and the loop guard: directives are retained on the broker, so the same signed bytes
come again on every connect. A directive is recognised by the SHA-256 of its bytes. Bytes
already handled with a final outcome (committed, failed, no-op, gave up) are ignored. An
``interrupted`` directive (crash, lost connection during the download) is retried, at most
``max_attempts`` times in all; after that it is marked ``gave_up`` and reported once as
``loop_guard``.

Anti-rollback: each target (``device`` or ``group/<name>``) has its own directive sequence,
which must grow (checked by the trust core against the recorded one). Bundles are checked
against the release counter of the committed bundle; the only way to a lower release is a
signed ``rollback`` directive, which can only return to the previous committed bundle that the
device still keeps.

Directives that arrive while an update is in progress wait (the newest per target) until a
resting phase is reached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Literal

from edgeops.agent.health import TrialPolicy, TrialVerdict, TrialWindow, judge_trial
from edgeops.errors import InputError, StateError

STATE_VERSION = 1


class Phase(StrEnum):
    """Where an update stands; persisted in ``state.json``."""

    IDLE = "idle"
    DOWNLOADING = "downloading"
    VERIFYING = "verifying"
    STAGED = "staged"
    TESTING = "testing"
    ACTIVATING = "activating"
    TRIAL = "trial"
    COMMITTED = "committed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


RESTING_PHASES = frozenset({Phase.IDLE, Phase.COMMITTED, Phase.ROLLED_BACK, Phase.FAILED})
#: Phases in which the candidate may have served requests.
ACTIVATED_PHASES = frozenset({Phase.ACTIVATING, Phase.TRIAL, Phase.ROLLING_BACK})


class Outcome(StrEnum):
    """What became of one directive (one signed message)."""

    IN_PROGRESS = "in_progress"
    COMMITTED = "committed"
    NOOP = "noop"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    GAVE_UP = "gave_up"


FINAL_OUTCOMES = frozenset({Outcome.COMMITTED, Outcome.NOOP, Outcome.FAILED, Outcome.GAVE_UP})

Action_ = Literal["install", "rollback"]
#: A value in an event's figures (the wire protocol allows flat scalars only).
Scalar = float | int | str | bool | None


# --------------------------------------------------------------------------- values


@dataclass(frozen=True, kw_only=True)
class Order:
    """A verified directive, reduced to what the updater acts on.

    ``target`` is ``"device"`` or ``"group/<name>"``; ``bundle_digest`` is the SHA-256 (hex)
    of the whole bundle file, ``bundle_size`` its size in bytes.
    """

    target: str
    sequence: int
    action: Action_
    bundle_digest: str
    bundle_size: int
    policy: TrialPolicy = field(default_factory=TrialPolicy)

    def __post_init__(self) -> None:
        if self.action not in ("install", "rollback"):
            raise StateError(f"expected action install or rollback, got {self.action!r}")
        if self.sequence < 0 or self.bundle_size < 0:
            raise StateError("sequence and bundle size must not be negative")

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "sequence": self.sequence,
            "action": self.action,
            "bundle_digest": self.bundle_digest,
            "bundle_size": self.bundle_size,
            "policy": self.policy.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Order:
        return cls(
            target=str(data["target"]),
            sequence=int(data["sequence"]),
            action=data["action"],
            bundle_digest=str(data["bundle_digest"]),
            bundle_size=int(data["bundle_size"]),
            policy=TrialPolicy.from_json(data.get("policy", {})),
        )


@dataclass(frozen=True, kw_only=True)
class BundleRef:
    """A verified bundle the device keeps: its file digest and its manifest's release."""

    digest: str
    release_counter: int
    version: str = ""
    name: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "release_counter": self.release_counter,
            "version": self.version,
            "name": self.name,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BundleRef:
        return cls(
            digest=str(data["digest"]),
            release_counter=int(data["release_counter"]),
            version=str(data.get("version", "")),
            name=str(data.get("name", "")),
        )


@dataclass(frozen=True, kw_only=True)
class DirectiveRecord:
    """The last directive accepted for one target, and what became of it."""

    target: str
    sequence: int
    raw_digest: str
    bundle_digest: str
    outcome: Outcome
    attempts: int
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "sequence": self.sequence,
            "raw_digest": self.raw_digest,
            "bundle_digest": self.bundle_digest,
            "outcome": self.outcome.value,
            "attempts": self.attempts,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DirectiveRecord:
        return cls(
            target=str(data["target"]),
            sequence=int(data["sequence"]),
            raw_digest=str(data["raw_digest"]),
            bundle_digest=str(data["bundle_digest"]),
            outcome=Outcome(data["outcome"]),
            attempts=int(data["attempts"]),
            reason=str(data.get("reason", "")),
        )


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """The update in progress: the order, the directive's bytes digest, and once verified
    the bundle itself."""

    order: Order
    raw_digest: str
    bundle: BundleRef | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "order": self.order.to_json(),
            "raw_digest": self.raw_digest,
            "bundle": self.bundle.to_json() if self.bundle else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        bundle = data.get("bundle")
        return cls(
            order=Order.from_json(data["order"]),
            raw_digest=str(data["raw_digest"]),
            bundle=BundleRef.from_json(bundle) if bundle else None,
        )


@dataclass(frozen=True, kw_only=True)
class UpdaterState:
    """Everything the updater persists; ``state.json`` is its JSON form."""

    phase: Phase = Phase.IDLE
    committed: BundleRef | None = None
    previous: BundleRef | None = None
    candidate: Candidate | None = None
    records: Mapping[str, DirectiveRecord] = field(default_factory=dict)
    reason: str = ""

    def __post_init__(self) -> None:
        if self.phase in RESTING_PHASES and self.candidate is not None:
            raise StateError(f"phase {self.phase} must not have a candidate")
        if self.phase not in RESTING_PHASES and self.candidate is None:
            raise StateError(f"phase {self.phase} needs a candidate")

    @property
    def running(self) -> BundleRef | None:
        """The bundle that serves once the device rests: always the committed one."""
        return self.committed

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "phase": self.phase.value,
            "committed": self.committed.to_json() if self.committed else None,
            "previous": self.previous.to_json() if self.previous else None,
            "candidate": self.candidate.to_json() if self.candidate else None,
            "records": {key: rec.to_json() for key, rec in sorted(self.records.items())},
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UpdaterState:
        """Parse persisted state; anything malformed raises :class:`StateError`."""
        if data.get("version") != STATE_VERSION:
            raise StateError(f"expected state version {STATE_VERSION}, got {data.get('version')!r}")
        try:
            committed = data.get("committed")
            previous = data.get("previous")
            candidate = data.get("candidate")
            return cls(
                phase=Phase(data["phase"]),
                committed=BundleRef.from_json(committed) if committed else None,
                previous=BundleRef.from_json(previous) if previous else None,
                candidate=Candidate.from_json(candidate) if candidate else None,
                records={
                    str(key): DirectiveRecord.from_json(rec)
                    for key, rec in dict(data.get("records", {})).items()
                },
                reason=str(data.get("reason", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"persisted agent state is malformed: {exc}") from exc


# --------------------------------------------------------------------------- events in


@dataclass(frozen=True)
class Started:
    """The process (re)started with the persisted state: resume or roll back."""


@dataclass(frozen=True)
class DirectiveReceived:
    """Signed directive bytes arrived on the topic of ``target`` (``device``/``group/<g>``)."""

    target: str
    raw: bytes


PROGRESS_STEPS = 4
"""Download progress is reported to the fleet at each of these fractions (quarters)."""


def progress_step(received: int, total: int) -> int:
    """Which of the :data:`PROGRESS_STEPS` a download of ``received`` of ``total`` bytes is
    in; a DownloadProgress that does not change it changes nothing."""
    return received * PROGRESS_STEPS // total if total > 0 else 0


@dataclass(frozen=True)
class DownloadProgress:
    received: int
    total: int


@dataclass(frozen=True)
class DownloadFinished:
    """Every chunk is on disk, in one file whose digest is yet to be checked."""


@dataclass(frozen=True)
class DownloadFailed:
    """The fetch gave up (broker gone, chunks missing, over the cap); ``transient`` means
    the same directive may succeed later."""

    reason: str
    transient: bool = True


@dataclass(frozen=True)
class BundleVerified:
    """The bundle's digest, signature, board and release counter checked; it is unpacked."""

    bundle: BundleRef


@dataclass(frozen=True)
class BundleRejected:
    reason: str


@dataclass(frozen=True)
class HealthChecked:
    ok: bool
    reason: str = ""
    figures: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Activated:
    """The candidate serves; the previous model is still loaded for an instant rollback."""


@dataclass(frozen=True)
class ActivationFailed:
    reason: str


@dataclass(frozen=True)
class TrialMeasured:
    """Live figures of the candidate since activation (``window.elapsed_s`` included)."""

    window: TrialWindow


@dataclass(frozen=True)
class RolledBack:
    """The rollback target serves again (or, with ``ok=False``, could not be loaded)."""

    ok: bool = True
    reason: str = ""


Event = (
    Started
    | DirectiveReceived
    | DownloadProgress
    | DownloadFinished
    | DownloadFailed
    | BundleVerified
    | BundleRejected
    | HealthChecked
    | Activated
    | ActivationFailed
    | TrialMeasured
    | RolledBack
)


# --------------------------------------------------------------------------- actions out


@dataclass(frozen=True)
class Persist:
    """Write ``state`` atomically before doing anything else in the list."""

    state: UpdaterState


@dataclass(frozen=True)
class LoadCommitted:
    """Serve the committed bundle (or nothing when ``bundle`` is None); drop candidates."""

    bundle: BundleRef | None


@dataclass(frozen=True)
class Fetch:
    """Download the bundle's chunks into the state dir; answer with DownloadFinished/Failed."""

    digest: str
    size: int


@dataclass(frozen=True)
class Verify:
    """Check the downloaded file against ``digest``/``size``, its manifest's signature, the
    board and ``last_release_counter``; unpack it; answer BundleVerified/BundleRejected."""

    digest: str
    size: int
    last_release_counter: int | None


@dataclass(frozen=True)
class CheckHealth:
    """Load the candidate beside the serving model, run its test vectors and budgets."""

    bundle: BundleRef


@dataclass(frozen=True)
class Activate:
    """Swap the candidate in; keep the old model loaded for the trial; answer Activated."""

    bundle: BundleRef
    policy: TrialPolicy


@dataclass(frozen=True)
class RollBack:
    """Swap ``to`` back in (None: serve nothing); answer RolledBack."""

    to: BundleRef | None
    reason: str


@dataclass(frozen=True)
class Commit:
    """The candidate is committed; only the bundles in ``keep`` need to stay on disk."""

    bundle: BundleRef
    keep: tuple[str, ...]


@dataclass(frozen=True)
class Discard:
    """Remove the candidate's files (download, unpacked copy) unless it is in use."""

    digest: str


@dataclass(frozen=True)
class Report:
    """Publish an event message (``edgeops.protocol.EventMessage`` without seq and ts).

    ``kind`` is one of the protocol's event kinds; ``state`` the phase the fleet folds into
    a rollout phase (None: says nothing final); ``figures`` the flat measurements behind it.
    """

    kind: str
    state: str | None = None
    directive_seq: int | None = None
    bundle_digest: str | None = None
    reason: str = ""
    figures: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True)
class PublishState:
    """Publish the retained state message (running and previous bundle)."""


UpdaterAction = (
    Persist
    | LoadCommitted
    | Fetch
    | Verify
    | CheckHealth
    | Activate
    | RollBack
    | Commit
    | Discard
    | Report
    | PublishState
)

#: Verifies signed directive bytes with the trust core: ``(raw, last_sequence) -> Order``.
#: Bad data raises :class:`~edgeops.errors.VerificationError` (or another InputError).
DirectiveVerifier = Callable[[bytes, str, int | None], Order]


def raw_digest(raw: bytes) -> str:
    """How the updater recognises the same signed directive delivered again."""
    return hashlib.sha256(raw).hexdigest()


# --------------------------------------------------------------------------- the machine


#: Phases in which the running model has not changed yet.
BEFORE_ACTIVATION = frozenset({Phase.DOWNLOADING, Phase.VERIFYING, Phase.STAGED, Phase.TESTING})


class Updater:
    """The update state machine. ``handle(event)`` returns the actions to execute, in order.

    ``verify_directive(raw, target, last_sequence)`` is the trust core's directive check
    (I/O-free); it raises an :class:`~edgeops.errors.InputError` naming the reason.
    """

    def __init__(
        self,
        state: UpdaterState,
        *,
        verify_directive: DirectiveVerifier,
        max_attempts: int = 3,
    ) -> None:
        if max_attempts < 1:
            raise StateError(f"expected max_attempts >= 1, got {max_attempts}")
        self._state = state
        self._verify = verify_directive
        self._max_attempts = max_attempts
        # Held in memory only: the broker re-delivers retained directives on every connect.
        self._waiting: dict[str, bytes] = {}
        self._reported_progress = -1

    @property
    def state(self) -> UpdaterState:
        return self._state

    @property
    def phase(self) -> Phase:
        return self._state.phase

    @property
    def busy(self) -> bool:
        return self._state.phase not in RESTING_PHASES

    def restore(self, state: UpdaterState) -> None:
        """Go back to ``state``, the last one persisted, when the write-ahead of a
        transition failed (a full disk): a transition that was not written did not happen."""
        self._state = state

    def give_up(self, reason: str) -> list[UpdaterAction]:
        """Abandon the update in progress before activation (its next state could not be
        written): the device rests on its committed bundle, the candidate is discarded and
        the failure reported. Later phases raise :class:`StateError`."""
        if self._state.phase not in BEFORE_ACTIVATION:
            raise StateError(f"cannot give up an update in phase {self._state.phase.value}")
        return self._abandon(self._state.phase, reason)

    # ------------------------------------------------------------------ dispatch

    def handle(self, event: Event) -> list[UpdaterAction]:
        """Apply ``event``; the returned actions start with Persist whenever state changed."""
        actions = self._dispatch(event)
        # Directives that waited while busy run as soon as the device rests again.
        while not self.busy and self._waiting:
            target = next(iter(self._waiting))
            raw = self._waiting.pop(target)
            actions.extend(self._on_directive(DirectiveReceived(target, raw)))
        return actions

    def _dispatch(self, event: Event) -> list[UpdaterAction]:
        match event:
            case Started():
                return self._on_started()
            case DirectiveReceived():
                return self._on_directive(event)
            case DownloadProgress():
                return self._on_progress(event)
            case DownloadFinished():
                return self._on_download_finished()
            case DownloadFailed():
                outcome = Outcome.INTERRUPTED if event.transient else Outcome.FAILED
                return self._abandon(
                    Phase.DOWNLOADING,
                    f"download failed: {event.reason}",
                    outcome=outcome,
                    discard=not event.transient,
                )
            case BundleVerified():
                return self._on_verified(event)
            case BundleRejected():
                return self._abandon(Phase.VERIFYING, f"bundle rejected: {event.reason}")
            case HealthChecked():
                return self._on_health(event)
            case Activated():
                return self._on_activated()
            case ActivationFailed():
                return self._start_rollback(
                    Phase.ACTIVATING, f"activation failed: {event.reason}", {}
                )
            case TrialMeasured():
                return self._on_trial(event)
            case RolledBack():
                return self._on_rolled_back(event)
        raise StateError(f"unknown event {event!r}")  # pragma: no cover

    def _expect(self, *phases: Phase) -> Candidate:
        if self._state.phase not in phases:
            names = " or ".join(p.value for p in phases)
            raise StateError(f"expected phase {names}, got {self._state.phase.value}")
        assert self._state.candidate is not None  # guaranteed by UpdaterState
        return self._state.candidate

    def _set(self, **changes: Any) -> Persist:
        self._state = replace(self._state, **changes)
        return Persist(self._state)

    def _record(self, target: str, **changes: Any) -> dict[str, DirectiveRecord]:
        records = dict(self._state.records)
        records[target] = replace(records[target], **changes)
        return records

    def _resting_phase(self) -> Phase:
        return Phase.COMMITTED if self._state.committed else Phase.IDLE

    @staticmethod
    def _report(
        kind: str,
        state: Phase | None,
        order: Order | None,
        reason: str = "",
        figures: Mapping[str, Scalar] | None = None,
        *,
        bundle: str | None = None,
    ) -> Report:
        flat: dict[str, Scalar] = {}
        if order is not None:
            flat.update(target=order.target, action=order.action)
        flat.update(figures or {})
        return Report(
            kind=kind,
            state=state.value if state else None,
            directive_seq=order.sequence if order else None,
            bundle_digest=bundle or (order.bundle_digest if order else None),
            reason=reason,
            figures=flat,
        )

    # ------------------------------------------------------------------ start-up

    def _on_started(self) -> list[UpdaterAction]:
        state = self._state
        if state.phase in RESTING_PHASES:
            return [LoadCommitted(state.committed), PublishState()]
        candidate = state.candidate
        assert candidate is not None
        order = candidate.order
        interrupted_in = state.phase
        reason = f"agent restarted during {interrupted_in.value}"
        records = self._record(order.target, outcome=Outcome.INTERRUPTED, reason=reason)
        if interrupted_in in ACTIVATED_PHASES and order.action == "install":
            phase = Phase.ROLLED_BACK
        else:
            # Nothing the device serves changed (or a rollback directive did not finish, so
            # the committed bundle is still the one it left): it rests where it was.
            phase = self._resting_phase()
        persist = self._set(phase=phase, candidate=None, records=records, reason=reason)
        actions: list[UpdaterAction] = [persist, LoadCommitted(state.committed)]
        if order.action == "install":
            actions.append(Discard(order.bundle_digest))
        # Reported as progress, not a result: the retained directive comes again on connect
        # and is retried, so the fleet must not count this as the device's final answer.
        actions += [
            self._report(
                "update_progress",
                None,
                order,
                reason,
                {"interrupted_in": interrupted_in.value, "running": _digest(state.committed)},
            ),
            PublishState(),
        ]
        return actions

    # ------------------------------------------------------------------ directives

    def _on_directive(self, event: DirectiveReceived) -> list[UpdaterAction]:
        if self.busy:
            self._waiting[event.target] = event.raw
            return []
        digest = raw_digest(event.raw)
        record = self._state.records.get(event.target)
        attempts = 1
        last_sequence = record.sequence if record else None
        if record is not None and record.raw_digest == digest:
            if record.outcome is not Outcome.INTERRUPTED:
                return []  # the retained copy of a directive already handled
            if record.attempts >= self._max_attempts:
                reason = (
                    f"directive sequence {record.sequence} for {record.target} was "
                    f"interrupted {record.attempts} times; giving up "
                    f"(max_attempts={self._max_attempts})"
                )
                records = self._record(event.target, outcome=Outcome.GAVE_UP, reason=reason)
                return [
                    self._set(records=records, reason=reason),
                    Report(
                        kind="loop_guard",
                        state=Phase.FAILED.value,
                        directive_seq=record.sequence,
                        bundle_digest=record.bundle_digest,
                        reason=reason,
                        figures={"target": record.target, "attempts": record.attempts},
                    ),
                ]
            attempts = record.attempts + 1
            # Its sequence was checked when first accepted; re-verify signature and expiry.
            last_sequence = record.sequence - 1
        try:
            order = self._verify(event.raw, event.target, last_sequence)
        except InputError as exc:
            return [self._rejected(event.target, type(exc).__name__, str(exc))]
        if order.target != event.target:
            return [
                self._rejected(
                    event.target,
                    "WrongTargetError",
                    f"expected a directive for {event.target}, got one for {order.target}",
                )
            ]
        return self._accept(order, digest, attempts)

    @staticmethod
    def _rejected(target: str, error: str, reason: str) -> Report:
        # Nothing is persisted: a rejected directive changes no state on the device.
        return Report(
            kind="rejected",
            reason=f"{error}: {reason}",
            figures={"target": target, "error": error},
        )

    def _accept(self, order: Order, digest: str, attempts: int) -> list[UpdaterAction]:
        state = self._state
        records = dict(state.records)
        record = DirectiveRecord(
            target=order.target,
            sequence=order.sequence,
            raw_digest=digest,
            bundle_digest=order.bundle_digest,
            outcome=Outcome.IN_PROGRESS,
            attempts=attempts,
        )
        if state.committed is not None and state.committed.digest == order.bundle_digest:
            records[order.target] = replace(record, outcome=Outcome.NOOP)
            return [
                self._set(records=records, reason=""),
                self._report(
                    "update_result",
                    Phase.COMMITTED,
                    order,
                    "already running this bundle",
                    {"attempt": attempts},
                ),
            ]
        if order.action == "rollback":
            return self._accept_rollback(order, digest, record, records)
        records[order.target] = record
        candidate = Candidate(order=order, raw_digest=digest)
        self._reported_progress = -1
        return [
            self._set(phase=Phase.DOWNLOADING, candidate=candidate, records=records, reason=""),
            self._report(
                "update_progress",
                Phase.DOWNLOADING,
                order,
                figures={"attempt": attempts, "size": order.bundle_size},
            ),
            Fetch(order.bundle_digest, order.bundle_size),
        ]

    def _accept_rollback(
        self,
        order: Order,
        digest: str,
        record: DirectiveRecord,
        records: dict[str, DirectiveRecord],
    ) -> list[UpdaterAction]:
        previous = self._state.previous
        if previous is None or previous.digest != order.bundle_digest:
            reason = (
                f"rollback asks for bundle {order.bundle_digest[:12]}, but the previous "
                f"committed bundle is {_digest(previous)[:12] or 'none'}"
            )
            records[order.target] = replace(record, outcome=Outcome.FAILED, reason=reason)
            return [
                self._set(records=records, reason=reason),
                self._report("update_result", Phase.FAILED, order, reason),
            ]
        records[order.target] = record
        # The candidate of a rollback is the previous bundle, already verified and kept.
        candidate = Candidate(order=order, raw_digest=digest, bundle=previous)
        reason = f"rollback directive sequence {order.sequence}"
        return [
            self._set(
                phase=Phase.ROLLING_BACK, candidate=candidate, records=records, reason=reason
            ),
            self._report("update_progress", Phase.ROLLING_BACK, order, reason),
            RollBack(previous, reason),
        ]

    # ------------------------------------------------------------------ download, verify

    def _on_progress(self, event: DownloadProgress) -> list[UpdaterAction]:
        candidate = self._expect(Phase.DOWNLOADING)
        if event.total <= 0:
            return []
        # Report in quarter steps: a progress event per chunk would flood the broker.
        step = min(PROGRESS_STEPS, progress_step(event.received, event.total))
        if step <= self._reported_progress or step in (0, PROGRESS_STEPS):
            return []
        self._reported_progress = step
        return [
            self._report(
                "update_progress",
                Phase.DOWNLOADING,
                candidate.order,
                figures={"received": event.received, "total": event.total},
            )
        ]

    def _on_download_finished(self) -> list[UpdaterAction]:
        candidate = self._expect(Phase.DOWNLOADING)
        order = candidate.order
        committed = self._state.committed
        counter = committed.release_counter if committed else None
        return [
            self._set(phase=Phase.VERIFYING),
            self._report("update_progress", Phase.VERIFYING, order),
            Verify(order.bundle_digest, order.bundle_size, counter),
        ]

    def _on_verified(self, event: BundleVerified) -> list[UpdaterAction]:
        candidate = self._expect(Phase.VERIFYING)
        if event.bundle.digest != candidate.order.bundle_digest:
            raise StateError(
                f"expected verification of {candidate.order.bundle_digest}, "
                f"got {event.bundle.digest}"
            )
        staged = replace(candidate, bundle=event.bundle)
        return [
            self._set(phase=Phase.STAGED, candidate=staged),
            self._report(
                "update_progress",
                Phase.STAGED,
                candidate.order,
                figures={"version": event.bundle.version, "release": event.bundle.release_counter},
            ),
            self._set(phase=Phase.TESTING),
            self._report("update_progress", Phase.TESTING, candidate.order),
            CheckHealth(event.bundle),
        ]

    def _abandon(
        self,
        expected: Phase,
        reason: str,
        *,
        outcome: Outcome = Outcome.FAILED,
        discard: bool = True,
        figures: Mapping[str, Scalar] | None = None,
    ) -> list[UpdaterAction]:
        """Give the candidate up before it ever served: the running model never changed."""
        candidate = self._expect(expected)
        order = candidate.order
        records = self._record(order.target, outcome=outcome, reason=reason)
        final = outcome is Outcome.FAILED
        phase = Phase.FAILED if final else self._resting_phase()
        actions: list[UpdaterAction] = [
            self._set(phase=phase, candidate=None, records=records, reason=reason)
        ]
        if discard:
            actions.append(Discard(order.bundle_digest))
        flat: dict[str, Scalar] = {
            "failed_in": expected.value,
            "running": _digest(self._state.committed),
        }
        flat.update(figures or {})
        if final:
            actions.append(self._report("update_result", Phase.FAILED, order, reason, flat))
        else:
            # Transient: the retained directive is retried on the next connect.
            actions.append(self._report("update_progress", None, order, reason, flat))
        actions.append(PublishState())
        return actions

    # ------------------------------------------------------------------ health, activation

    def _on_health(self, event: HealthChecked) -> list[UpdaterAction]:
        candidate = self._expect(Phase.TESTING)
        if not event.ok:
            return self._abandon(
                Phase.TESTING, f"health check failed: {event.reason}", figures=event.figures
            )
        assert candidate.bundle is not None
        return [
            self._set(phase=Phase.ACTIVATING),
            self._report(
                "update_progress", Phase.ACTIVATING, candidate.order, figures=event.figures
            ),
            Activate(candidate.bundle, candidate.order.policy),
        ]

    def _on_activated(self) -> list[UpdaterAction]:
        candidate = self._expect(Phase.ACTIVATING)
        policy = candidate.order.policy
        return [
            self._set(phase=Phase.TRIAL),
            self._report(
                "update_progress",
                Phase.TRIAL,
                candidate.order,
                figures={
                    "window_s": policy.window_s,
                    "max_error_rate": policy.max_error_rate,
                    "max_p95_ms": policy.max_p95_ms,
                },
            ),
            PublishState(),
        ]

    def _on_trial(self, event: TrialMeasured) -> list[UpdaterAction]:
        candidate = self._expect(Phase.TRIAL)
        verdict = judge_trial(candidate.order.policy, event.window)
        if verdict is TrialVerdict.CONTINUE:
            return []
        figures = event.window.figures()
        if verdict is TrialVerdict.FAIL:
            reason = "trial failed: " + candidate.order.policy.explain(event.window)
            return self._start_rollback(Phase.TRIAL, reason, figures)
        return self._commit(candidate, figures)

    def _commit(self, candidate: Candidate, figures: Mapping[str, Scalar]) -> list[UpdaterAction]:
        bundle = candidate.bundle
        assert bundle is not None
        old = self._state.committed
        records = self._record(candidate.order.target, outcome=Outcome.COMMITTED, reason="")
        persist = self._set(
            phase=Phase.COMMITTED,
            committed=bundle,
            previous=old,
            candidate=None,
            records=records,
            reason="",
        )
        keep = (bundle.digest,) + ((old.digest,) if old else ())
        return [
            persist,
            Commit(bundle, keep),
            self._report(
                "update_result",
                Phase.COMMITTED,
                candidate.order,
                figures={**figures, "previous": _digest(old)},
            ),
            PublishState(),
        ]

    def _start_rollback(
        self, expected: Phase, reason: str, figures: Mapping[str, Scalar]
    ) -> list[UpdaterAction]:
        candidate = self._expect(expected)
        committed = self._state.committed
        return [
            self._set(phase=Phase.ROLLING_BACK, reason=reason),
            self._report(
                "update_progress",
                Phase.ROLLING_BACK,
                candidate.order,
                reason,
                {**figures, "to": _digest(committed)},
            ),
            RollBack(committed, reason),
        ]

    def _on_rolled_back(self, event: RolledBack) -> list[UpdaterAction]:
        candidate = self._expect(Phase.ROLLING_BACK)
        state = self._state
        order = candidate.order
        if not event.ok:
            reason = f"{state.reason}; rollback failed: {event.reason}"
            records = self._record(order.target, outcome=Outcome.FAILED, reason=reason)
            self._set(phase=Phase.FAILED, candidate=None, records=records, reason=reason)
            return [
                Persist(self._state),
                LoadCommitted(state.committed),
                self._report("update_result", Phase.FAILED, order, reason),
                PublishState(),
            ]
        if order.action == "rollback":
            # The bundle left behind stays on disk as the new "previous": a later rollback
            # directive can return to it, and it is still a verified bundle.
            records = self._record(order.target, outcome=Outcome.COMMITTED, reason="")
            persist = self._set(
                phase=Phase.ROLLED_BACK,
                committed=state.previous,
                previous=state.committed,
                candidate=None,
                records=records,
            )
            return [
                persist,
                self._report(
                    "rolled_back",
                    Phase.ROLLED_BACK,
                    order,
                    state.reason,
                    {"running": _digest(state.previous)},
                ),
                PublishState(),
            ]
        records = self._record(order.target, outcome=Outcome.FAILED, reason=state.reason)
        persist = self._set(phase=Phase.ROLLED_BACK, candidate=None, records=records)
        return [
            persist,
            Discard(order.bundle_digest),
            self._report(
                "rolled_back",
                Phase.ROLLED_BACK,
                order,
                state.reason,
                {"running": _digest(state.committed)},
            ),
            PublishState(),
        ]


def _digest(bundle: BundleRef | None) -> str:
    return bundle.digest if bundle else ""


__all__ = [
    "ACTIVATED_PHASES",
    "BEFORE_ACTIVATION",
    "PROGRESS_STEPS",
    "RESTING_PHASES",
    "Activate",
    "Activated",
    "ActivationFailed",
    "BundleRef",
    "BundleRejected",
    "BundleVerified",
    "Candidate",
    "CheckHealth",
    "Commit",
    "DirectiveReceived",
    "DirectiveRecord",
    "DirectiveVerifier",
    "Discard",
    "DownloadFailed",
    "DownloadFinished",
    "DownloadProgress",
    "Event",
    "Fetch",
    "HealthChecked",
    "LoadCommitted",
    "Order",
    "Outcome",
    "Persist",
    "Phase",
    "PublishState",
    "Report",
    "RollBack",
    "RolledBack",
    "Started",
    "TrialMeasured",
    "Updater",
    "UpdaterAction",
    "UpdaterState",
    "Verify",
    "progress_step",
    "raw_digest",
]
