"""The rollout state machine: values in, decisions out.

:class:`RolloutController` holds one rollout. The code that runs it (``edgeops push`` in the
foreground, ``edgeops fleet serve`` as a service) feeds it what devices report —
:meth:`~RolloutController.on_event` for update progress, :meth:`~RolloutController.on_health`
for telemetry — and calls :meth:`~RolloutController.step` with the current time. ``step``
returns the actions to carry out (publish install directives to a wave, publish rollback
directives, report the outcome). The controller does no I/O and reads no clock, so every
decision is a unit test.

Crash safety is the caller's half of the contract: carry out the actions ``step`` returned,
*then* save :meth:`~RolloutController.to_dict`. A crash in between loses the save, so after a
restart the same actions come out again: directives are published at least once, never
skipped (a repeated directive for the same bundle is a no-op on the device, which checks its
running digest).

Per wave::

    not started ─step─▶ installing ──all devices settled──▶ soaking ──soak elapsed──▶ passed
                           │  failures > max, or silent past the wave timeout │
                           └──────────────▶ failed ◀── health gate broken ────┘

A failed wave aborts the rollout: rollback directives go to every device that was sent the
install directive and has not already failed or rolled back on its own, and no later wave is
ever started, so no device outside the waves already started ever sees the new bundle.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from edgeops.errors import ConfigError, StateError
from edgeops.fleet.rollout.policy import RolloutPolicy, WavePlan, check_plan

STATE_VERSION = 1
_LOG_LIMIT = 200


class RolloutStatus(StrEnum):
    """Where the rollout as a whole stands."""

    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ABORTED = "aborted"

    @property
    def finished(self) -> bool:
        return self in (RolloutStatus.SUCCEEDED, RolloutStatus.ABORTED)


class WaveStage(StrEnum):
    """Where one wave stands."""

    NOT_STARTED = "not_started"
    INSTALLING = "installing"
    SOAKING = "soaking"
    PASSED = "passed"
    FAILED = "failed"


class DevicePhase(StrEnum):
    """A device's part in the rollout, as the controller knows it."""

    PENDING = "pending"  # its wave has not started: it has not been sent the directive
    SENT = "sent"  # directive published, nothing heard back yet
    DOWNLOADING = "downloading"
    TESTING = "testing"
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"

    @property
    def settled(self) -> bool:
        return self in (DevicePhase.COMMITTED, DevicePhase.ROLLED_BACK, DevicePhase.FAILED)

    @property
    def failure(self) -> bool:
        return self in (DevicePhase.ROLLED_BACK, DevicePhase.FAILED)


# The agent's update states (docs/architecture.md, Agent) folded into the phases a rollout
# gates on. ``rolling_back`` already counts as a failure: the device has given up on the bundle.
_AGENT_STATES: dict[str, DevicePhase] = {
    "downloading": DevicePhase.DOWNLOADING,
    "verifying": DevicePhase.DOWNLOADING,
    "staged": DevicePhase.TESTING,
    "testing": DevicePhase.TESTING,
    "activating": DevicePhase.TESTING,
    "trial": DevicePhase.TESTING,
    "committed": DevicePhase.COMMITTED,
    "rolling_back": DevicePhase.ROLLED_BACK,
    "rolled_back": DevicePhase.ROLLED_BACK,
    "failed": DevicePhase.FAILED,
}


def phase_from_agent_state(state: str) -> DevicePhase | None:
    """The rollout phase an agent update state means, or ``None`` for states that say
    nothing about this rollout (``idle``)."""
    return _AGENT_STATES.get(state)


@dataclass(frozen=True, kw_only=True)
class HealthSample:
    """One telemetry reading, reduced to what the gates look at.

    ``error_rate`` is a fraction (0.02 is 2 %); ``bundle`` is the digest the device was
    running when it measured, so readings from the old bundle feed the baseline and readings
    from the new one feed the gate.
    """

    bundle: str | None
    p95_ms: float | None = None
    error_rate: float | None = None
    drift: float | None = None


@dataclass(frozen=True)
class PublishDirectives:
    """Publish a signed directive to each device: ``install`` the rollout's bundle, or
    ``rollback`` to the previous one (``bundle`` is then the previous digest, or ``None``
    when it is unknown and the device falls back to its own previous slot)."""

    action: Literal["install", "rollback"]
    device_ids: tuple[str, ...]
    bundle: str | None
    wave: int


@dataclass(frozen=True)
class RolloutFinished:
    """The rollout reached its end; ``status`` is succeeded or aborted."""

    status: RolloutStatus
    reason: str


Action = PublishDirectives | RolloutFinished


@dataclass
class _Mean:
    count: int = 0
    total: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value

    @property
    def value(self) -> float | None:
        return self.total / self.count if self.count else None

    def to_list(self) -> list[float]:
        return [self.count, self.total]

    @classmethod
    def from_list(cls, data: list[float]) -> _Mean:
        return cls(int(data[0]), float(data[1]))


@dataclass
class _Device:
    wave: int
    phase: DevicePhase = DevicePhase.PENDING
    updated: float | None = None
    reason: str = ""
    rollback_sent: bool = False
    baseline_p95: _Mean = field(default_factory=_Mean)
    p95: _Mean = field(default_factory=_Mean)
    error_rate: _Mean = field(default_factory=_Mean)
    drift: _Mean = field(default_factory=_Mean)

    def to_dict(self) -> dict[str, Any]:
        return {
            "wave": self.wave,
            "phase": self.phase.value,
            "updated": self.updated,
            "reason": self.reason,
            "rollback_sent": self.rollback_sent,
            "baseline_p95": self.baseline_p95.to_list(),
            "p95": self.p95.to_list(),
            "error_rate": self.error_rate.to_list(),
            "drift": self.drift.to_list(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> _Device:
        return cls(
            wave=int(data["wave"]),
            phase=DevicePhase(data["phase"]),
            updated=data["updated"],
            reason=str(data["reason"]),
            rollback_sent=bool(data["rollback_sent"]),
            baseline_p95=_Mean.from_list(data["baseline_p95"]),
            p95=_Mean.from_list(data["p95"]),
            error_rate=_Mean.from_list(data["error_rate"]),
            drift=_Mean.from_list(data["drift"]),
        )


@dataclass
class _Wave:
    plan: WavePlan
    stage: WaveStage = WaveStage.NOT_STARTED
    started: float | None = None
    settled: float | None = None
    ended: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class HealthVerdict:
    """The health gate over the devices updated so far."""

    error_rate_percent: float | None
    p95_regression_percent: float | None
    drift: float | None
    devices_measured: int
    violation: str | None


@dataclass(frozen=True)
class WaveProgress:
    """Counts per phase for one wave, for progress displays."""

    index: int
    canary: bool
    stage: WaveStage
    devices: int
    counts: dict[str, int]


def _stage(wave: _Wave) -> WaveStage:
    # Read through a function so the type checker does not keep a narrowing of
    # ``wave.stage`` across the calls that change it.
    return wave.stage


class RolloutController:
    """One rollout of ``bundle`` to a group, wave by wave, gated by ``policy``.

    ``baseline_p95_ms`` seeds each device's p95 on the bundle it runs now (from the
    registry's health history); readings that arrive during the rollout from the old bundle
    are added to it.
    """

    def __init__(
        self,
        *,
        rollout_id: str,
        bundle: str,
        previous_bundle: str | None,
        policy: RolloutPolicy,
        waves: Iterable[WavePlan],
        baseline_p95_ms: Mapping[str, float] | None = None,
        created: float = 0.0,
    ) -> None:
        plans = tuple(waves)
        check_plan(plans)
        if not plans:
            raise ConfigError("a rollout needs at least one wave")
        self.rollout_id = rollout_id
        self.bundle = bundle
        self.previous_bundle = previous_bundle
        self.policy = policy
        self.created = created
        self.status = RolloutStatus.RUNNING
        self.reason = ""
        self.current = 0
        self.finished_at: float | None = None
        self._waves = [_Wave(plan) for plan in plans]
        self._devices: dict[str, _Device] = {}
        for plan in plans:
            for device_id in plan.devices:
                self._devices[device_id] = _Device(wave=plan.index)
        for device_id, p95 in (baseline_p95_ms or {}).items():
            if device_id in self._devices and p95 > 0:
                self._devices[device_id].baseline_p95.add(p95)
        self.log: list[tuple[float, str]] = []
        if policy.max_p95_regression_percent is not None and not any(
            r.baseline_p95.count for r in self._devices.values()
        ):
            self._note(
                created,
                "no device has a p95 on the previous bundle yet: the p95 gate applies to "
                "devices as their old-bundle readings arrive",
            )

    # -- inputs -------------------------------------------------------------------------

    def on_event(
        self,
        device_id: str,
        state: str | DevicePhase,
        *,
        now: float,
        bundle: str | None = None,
        reason: str = "",
    ) -> bool:
        """Record a device's update progress; ``True`` when it changed the device's phase.

        Ignored: devices outside the rollout, devices whose wave has not started (their
        reports are about something else), progress about another bundle, and anything
        after a device failed or rolled back (those are final for this rollout).
        """
        record = self._devices.get(device_id)
        if record is None or record.phase is DevicePhase.PENDING:
            return False
        phase = state if isinstance(state, DevicePhase) else phase_from_agent_state(state)
        if phase is None or phase is DevicePhase.PENDING or phase is DevicePhase.SENT:
            return False
        if record.phase.failure:
            return False
        if not phase.failure and bundle is not None and bundle != self.bundle:
            return False
        if record.phase is DevicePhase.COMMITTED and not phase.failure:
            return False
        if phase is record.phase:
            return False
        record.phase = phase
        record.updated = now
        if reason:
            record.reason = reason
        return True

    def on_health(self, device_id: str, sample: HealthSample) -> None:
        """Record a telemetry reading: the new bundle's feed the gate, the old one's the
        device's baseline."""
        record = self._devices.get(device_id)
        if record is None:
            return
        if sample.bundle is not None and sample.bundle == self.bundle:
            if record.phase is not DevicePhase.COMMITTED:
                return
            if sample.p95_ms is not None:
                record.p95.add(sample.p95_ms)
            if sample.error_rate is not None:
                record.error_rate.add(sample.error_rate)
            if sample.drift is not None:
                record.drift.add(sample.drift)
        elif (
            record.phase is not DevicePhase.COMMITTED
            and sample.p95_ms is not None
            and (self.previous_bundle is None or sample.bundle == self.previous_bundle)
        ):
            record.baseline_p95.add(sample.p95_ms)

    def pause(self, *, now: float) -> None:
        """Start no new wave until :meth:`resume`; the running wave is still watched and
        its gates can still abort."""
        if self.status is RolloutStatus.RUNNING:
            self.status = RolloutStatus.PAUSED
            self._note(now, "paused by hand")

    def resume(self, *, now: float) -> None:
        """Undo :meth:`pause`."""
        if self.status is RolloutStatus.PAUSED:
            self.status = RolloutStatus.RUNNING
            self._note(now, "resumed by hand")

    def abort(self, reason: str, *, now: float) -> list[Action]:
        """Stop by hand: roll back every device already sent the bundle."""
        if self.status.finished:
            return []
        wave = self._waves[self.current]
        if wave.stage in (WaveStage.INSTALLING, WaveStage.SOAKING):
            wave.stage = WaveStage.FAILED
            wave.ended = now
            wave.reason = reason
        return self._abort(reason, now=now)

    # -- decisions ----------------------------------------------------------------------

    def step(self, *, now: float) -> list[Action]:
        """Decide what to do at ``now``; carry the actions out, then save :meth:`to_dict`."""
        actions: list[Action] = []
        while not self.status.finished:
            wave = self._waves[self.current]
            if wave.stage is WaveStage.NOT_STARTED:
                if self.status is RolloutStatus.PAUSED:
                    # Held between waves, the devices already updated still run the new
                    # bundle: their health can still abort the rollout.
                    verdict = self.health()
                    if verdict.violation is not None:
                        actions.extend(self._abort(f"while paused: {verdict.violation}", now=now))
                    break
                actions.append(self._start_wave(wave, now))
                break
            if wave.stage is WaveStage.INSTALLING:
                self._check_installing(wave, now, actions)
            if _stage(wave) is WaveStage.SOAKING and not self.status.finished:
                self._check_soaking(wave, now, actions)
            if _stage(wave) is not WaveStage.PASSED or self.status.finished:
                break
            if self.current == len(self._waves) - 1:
                self.status = RolloutStatus.SUCCEEDED
                self.finished_at = now
                self.reason = f"all {len(self._waves)} waves passed"
                self._note(now, self.reason)
                actions.append(RolloutFinished(self.status, self.reason))
                break
            self.current += 1
        return actions

    def _start_wave(self, wave: _Wave, now: float) -> PublishDirectives:
        wave.stage = WaveStage.INSTALLING
        wave.started = now
        for device_id in wave.plan.devices:
            record = self._devices[device_id]
            record.phase = DevicePhase.SENT
            record.updated = now
        label = "canary" if wave.plan.canary else f"wave {wave.plan.index}"
        self._note(now, f"{label} started: {len(wave.plan.devices)} devices")
        return PublishDirectives("install", wave.plan.devices, self.bundle, wave.plan.index)

    def _failures(self, wave: _Wave, now: float) -> tuple[int, int, bool]:
        assert wave.started is not None
        timed_out = now - wave.started >= self.policy.wave_timeout_s
        failed = silent = 0
        for device_id in wave.plan.devices:
            phase = self._devices[device_id].phase
            if phase.failure:
                failed += 1
            elif not phase.settled and timed_out:
                silent += 1
        return failed, silent, timed_out

    def _allowed_failures(self, wave: _Wave) -> int:
        return math.floor(len(wave.plan.devices) * self.policy.max_failures_percent / 100 + 1e-9)

    def _check_install_gate(self, wave: _Wave, now: float, actions: list[Action]) -> bool:
        failed, silent, _ = self._failures(wave, now)
        allowed = self._allowed_failures(wave)
        if failed + silent > allowed:
            size = len(wave.plan.devices)
            detail = f"{failed} failed or rolled back"
            if silent:
                detail += f", {silent} silent past the {self.policy.wave_timeout_s:g} s timeout"
            self._fail_wave(
                wave,
                f"{self._label(wave)}: {detail} of {size} devices; "
                f"the gate allows {allowed} ({self.policy.max_failures_percent:g}%)",
                now,
                actions,
            )
            return False
        return True

    def _check_installing(self, wave: _Wave, now: float, actions: list[Action]) -> None:
        if not self._check_install_gate(wave, now, actions):
            return
        if not self._check_health_gate(wave, now, actions):
            return
        _, _, timed_out = self._failures(wave, now)
        settled = all(self._devices[d].phase.settled for d in wave.plan.devices)
        if settled or timed_out:
            wave.stage = WaveStage.SOAKING
            wave.settled = now
            self._note(now, f"{self._label(wave)} installed; soaking {self.policy.soak_s:g} s")

    def _check_soaking(self, wave: _Wave, now: float, actions: list[Action]) -> None:
        if not self._check_install_gate(wave, now, actions):
            return
        if not self._check_health_gate(wave, now, actions):
            return
        assert wave.settled is not None
        assert wave.started is not None
        if now - wave.settled < self.policy.soak_s:
            return
        if self._health_gated() and self._missing_health(wave):
            # The gate cannot pass on no evidence; wait for telemetry until the wave's
            # timeout, then count the silence against the wave.
            if now - wave.started < self.policy.wave_timeout_s:
                return
            self._fail_wave(
                wave,
                f"{self._label(wave)}: no health telemetry from its updated devices within "
                f"the {self.policy.wave_timeout_s:g} s wave timeout",
                now,
                actions,
            )
            return
        wave.stage = WaveStage.PASSED
        wave.ended = now
        self._note(now, f"{self._label(wave)} passed its gates")

    def _health_gated(self) -> bool:
        policy = self.policy
        return (
            policy.max_error_rate_percent is not None
            or policy.max_p95_regression_percent is not None
            or policy.max_drift is not None
        )

    def _missing_health(self, wave: _Wave) -> bool:
        committed = [
            self._devices[d]
            for d in wave.plan.devices
            if self._devices[d].phase is DevicePhase.COMMITTED
        ]
        if not committed:
            return False
        return all(
            r.p95.count == 0 and r.error_rate.count == 0 and r.drift.count == 0 for r in committed
        )

    def health(self) -> HealthVerdict:
        """The health gate over every committed device of the waves started so far."""
        records = [
            r
            for r in self._devices.values()
            if r.phase is DevicePhase.COMMITTED and r.wave <= self.current
        ]
        errors = [v for v in (r.error_rate.value for r in records) if v is not None]
        drifts = [v for v in (r.drift.value for r in records) if v is not None]
        ratios = []
        for r in records:
            new, base = r.p95.value, r.baseline_p95.value
            if new is not None and base is not None and base > 0:
                ratios.append((new - base) / base * 100.0)
        measured = sum(1 for r in records if r.p95.count or r.error_rate.count or r.drift.count)
        error_percent = statistics.fmean(errors) * 100.0 if errors else None
        regression = statistics.median(ratios) if ratios else None
        drift = statistics.fmean(drifts) if drifts else None
        policy = self.policy
        violation = None
        if (
            policy.max_error_rate_percent is not None
            and error_percent is not None
            and error_percent > policy.max_error_rate_percent
        ):
            violation = (
                f"error rate {error_percent:.2f}% exceeds the "
                f"{policy.max_error_rate_percent:g}% gate"
            )
        elif (
            policy.max_p95_regression_percent is not None
            and regression is not None
            and regression > policy.max_p95_regression_percent
        ):
            violation = (
                f"p95 latency regressed {regression:.1f}% against the previous bundle; "
                f"the gate allows {policy.max_p95_regression_percent:g}%"
            )
        elif policy.max_drift is not None and drift is not None and drift > policy.max_drift:
            violation = f"input drift {drift:.3f} exceeds the {policy.max_drift:g} gate"
        return HealthVerdict(error_percent, regression, drift, measured, violation)

    def _check_health_gate(self, wave: _Wave, now: float, actions: list[Action]) -> bool:
        verdict = self.health()
        if verdict.violation is None:
            return True
        self._fail_wave(wave, f"{self._label(wave)}: {verdict.violation}", now, actions)
        return False

    def _fail_wave(self, wave: _Wave, reason: str, now: float, actions: list[Action]) -> None:
        wave.stage = WaveStage.FAILED
        wave.ended = now
        wave.reason = reason
        actions.extend(self._abort(reason, now=now))

    def _abort(self, reason: str, *, now: float) -> list[Action]:
        targets = tuple(
            device_id
            for device_id, record in self._devices.items()
            if record.phase
            not in (DevicePhase.PENDING, DevicePhase.ROLLED_BACK, DevicePhase.FAILED)
            and not record.rollback_sent
        )
        for device_id in targets:
            self._devices[device_id].rollback_sent = True
        self.status = RolloutStatus.ABORTED
        self.reason = reason
        self.finished_at = now
        self._note(now, f"aborted: {reason}; rolling back {len(targets)} devices")
        actions: list[Action] = []
        if targets:
            actions.append(
                PublishDirectives("rollback", targets, self.previous_bundle, self.current)
            )
        actions.append(RolloutFinished(self.status, reason))
        return actions

    def _label(self, wave: _Wave) -> str:
        return "canary" if wave.plan.canary else f"wave {wave.plan.index}"

    def _note(self, now: float, message: str) -> None:
        self.log.append((now, message))
        del self.log[:-_LOG_LIMIT]

    # -- views --------------------------------------------------------------------------

    @property
    def waves(self) -> tuple[WavePlan, ...]:
        return tuple(wave.plan for wave in self._waves)

    def wave_stage(self, index: int) -> WaveStage:
        return self._waves[index].stage

    def device_phase(self, device_id: str) -> DevicePhase:
        return self._devices[device_id].phase

    def step_due(self, device_id: str) -> bool:
        """Whether ``device_id``'s latest report lets a :meth:`step` move the rollout on:
        the device failed (the gate may trip), or it was the last of the current wave to
        settle (the wave's install phase can end)."""
        record = self._devices.get(device_id)
        if record is None or self.status.finished or not record.phase.settled:
            return False
        if record.phase.failure:
            return True
        wave = self._waves[self.current]
        return wave.stage is WaveStage.INSTALLING and all(
            self._devices[d].phase.settled for d in wave.plan.devices
        )

    def device_phases(self) -> dict[str, DevicePhase]:
        return {device_id: record.phase for device_id, record in self._devices.items()}

    def rolled_back_by_fleet(self) -> set[str]:
        """Devices a rollback directive was issued to."""
        return {d for d, r in self._devices.items() if r.rollback_sent}

    def progress(self, *, now: float) -> list[WaveProgress]:
        """Per wave counts: pending, waiting (sent, not heard), downloading, testing,
        committed, rolled back, failed, silent (not settled past the wave timeout)."""
        out = []
        for wave in self._waves:
            counts = dict.fromkeys(
                (
                    "pending",
                    "waiting",
                    "downloading",
                    "testing",
                    "committed",
                    "rolled_back",
                    "failed",
                    "silent",
                ),
                0,
            )
            timed_out = wave.started is not None and (
                (wave.ended or now) - wave.started >= self.policy.wave_timeout_s
            )
            for device_id in wave.plan.devices:
                phase = self._devices[device_id].phase
                if not phase.settled and phase is not DevicePhase.PENDING and timed_out:
                    counts["silent"] += 1
                elif phase is DevicePhase.SENT:
                    counts["waiting"] += 1
                else:
                    counts[phase.value] += 1
            out.append(
                WaveProgress(
                    wave.plan.index, wave.plan.canary, wave.stage, len(wave.plan.devices), counts
                )
            )
        return out

    # -- persistence --------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state; :meth:`from_dict` restores an identical controller."""
        return {
            "version": STATE_VERSION,
            "rollout_id": self.rollout_id,
            "bundle": self.bundle,
            "previous_bundle": self.previous_bundle,
            "policy": self.policy.to_dict(),
            "created": self.created,
            "status": self.status.value,
            "reason": self.reason,
            "current": self.current,
            "finished_at": self.finished_at,
            "waves": [
                {
                    "index": w.plan.index,
                    "canary": w.plan.canary,
                    "cumulative_percent": w.plan.cumulative_percent,
                    "devices": list(w.plan.devices),
                    "stage": w.stage.value,
                    "started": w.started,
                    "settled": w.settled,
                    "ended": w.ended,
                    "reason": w.reason,
                }
                for w in self._waves
            ],
            "devices": {d: r.to_dict() for d, r in self._devices.items()},
            "log": [[t, m] for t, m in self.log],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutController:
        """Restore a controller saved with :meth:`to_dict`."""
        if data.get("version") != STATE_VERSION:
            raise StateError(
                f"expected rollout state version {STATE_VERSION}, got {data.get('version')!r}"
            )
        try:
            plans = [
                WavePlan(
                    int(w["index"]),
                    tuple(w["devices"]),
                    canary=bool(w["canary"]),
                    cumulative_percent=float(w["cumulative_percent"]),
                )
                for w in data["waves"]
            ]
            controller = cls(
                rollout_id=str(data["rollout_id"]),
                bundle=str(data["bundle"]),
                previous_bundle=data["previous_bundle"],
                policy=RolloutPolicy.from_dict(data["policy"]),
                waves=plans,
                created=float(data["created"]),
            )
            controller.status = RolloutStatus(data["status"])
            controller.reason = str(data["reason"])
            controller.current = int(data["current"])
            controller.finished_at = data["finished_at"]
            for wave, saved in zip(controller._waves, data["waves"], strict=True):
                wave.stage = WaveStage(saved["stage"])
                wave.started = saved["started"]
                wave.settled = saved["settled"]
                wave.ended = saved["ended"]
                wave.reason = str(saved["reason"])
            devices = data["devices"]
            if set(devices) != set(controller._devices):
                raise StateError("saved rollout devices do not match its waves")
            for device_id, saved_device in devices.items():
                controller._devices[device_id] = _Device.from_dict(saved_device)
            controller.log = [(float(t), str(m)) for t, m in data["log"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"saved rollout state is malformed: {exc!r}") from exc
        return controller


__all__ = [
    "Action",
    "DevicePhase",
    "HealthSample",
    "HealthVerdict",
    "PublishDirectives",
    "RolloutController",
    "RolloutFinished",
    "RolloutStatus",
    "WaveProgress",
    "WaveStage",
    "phase_from_agent_state",
]
