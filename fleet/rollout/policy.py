"""The rollout policy and the wave plan, both pure values.

A policy is what ``edgeops push`` takes on its command line (canary, waves, soak, gates); the
plan is the ordered list of device waves that policy yields for a group. Neither touches I/O,
so the same code decides in ``edgeops push``, in ``edgeops fleet serve`` and in the tests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgeops.errors import ConfigError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``90``, ``30s``, ``15m``, ``2h`` or ``1d``."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"expected a duration like 30s, 15m or 2h, got {text!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]


def parse_percent(text: str) -> float:
    """A percentage from ``10%`` or ``10`` (both mean ten percent)."""
    body = text.strip().removesuffix("%").strip()
    try:
        value = float(body)
    except ValueError:
        raise ConfigError(f"expected a percentage like 10%, got {text!r}") from None
    if not 0.0 <= value <= 100.0:
        raise ConfigError(f"expected a percentage between 0% and 100%, got {text!r}")
    return value


def parse_waves(text: str) -> tuple[float, ...]:
    """Cumulative wave sizes from ``10%,50%,100%``."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise ConfigError(f"expected waves like 10%,50%,100%, got {text!r}")
    return tuple(parse_percent(part) for part in parts)


@dataclass(frozen=True, kw_only=True)
class RolloutPolicy:
    """How a bundle spreads over a group and what stops it.

    ``waves`` are cumulative shares of the group (``(10, 50, 100)``: the first wave brings the
    group to 10 %, the second to 50 %, the last to everyone); the canary, when set, is an
    extra first wave of ``canary_count`` devices or ``canary_percent`` of the group and counts
    towards the later waves' shares.

    Gates, checked on every wave:

    * ``max_failures_percent`` — devices of the wave that failed, rolled back, or stayed
      silent past ``wave_timeout_s``, as a share of the wave; more than this aborts.
    * ``max_error_rate_percent`` — mean live error rate of the updated devices.
    * ``max_p95_regression_percent`` — median over the updated devices of each device's p95
      latency on the new bundle against its own p95 on the previous bundle (boards in one
      group differ too much for a group-wide baseline to mean anything).
    * ``max_drift`` — mean input-drift score of the updated devices; ``None`` turns it off.

    A wave that passes its install gate soaks for ``soak_s`` seconds, health checked all the
    while, before the next wave starts.
    """

    canary_count: int | None = None
    canary_percent: float | None = None
    waves: tuple[float, ...] = (10.0, 50.0, 100.0)
    soak_s: float = 300.0
    max_failures_percent: float = 0.0
    max_error_rate_percent: float | None = 5.0
    max_p95_regression_percent: float | None = 25.0
    max_drift: float | None = None
    wave_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.canary_count is not None and self.canary_percent is not None:
            raise ConfigError("give the canary as a count or as a percentage, not both")
        if self.canary_count is not None and self.canary_count < 1:
            raise ConfigError(f"expected a canary of at least 1 device, got {self.canary_count}")
        if self.canary_percent is not None and not 0.0 < self.canary_percent <= 100.0:
            raise ConfigError(f"expected a canary share in (0%, 100%], got {self.canary_percent}%")
        if not self.waves:
            raise ConfigError("expected at least one wave")
        previous = 0.0
        for share in self.waves:
            if not previous < share <= 100.0:
                raise ConfigError(
                    "expected increasing wave shares ending at 100%, "
                    f"got {', '.join(f'{w:g}%' for w in self.waves)}"
                )
            previous = share
        if self.waves[-1] != 100.0:
            raise ConfigError(f"expected the last wave to be 100%, got {self.waves[-1]:g}%")
        for name in ("soak_s", "wave_timeout_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"expected {name} >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.max_failures_percent <= 100.0:
            raise ConfigError(
                f"expected max_failures_percent in [0, 100], got {self.max_failures_percent}"
            )
        for name in ("max_error_rate_percent", "max_p95_regression_percent", "max_drift"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"expected {name} >= 0, got {value}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored with the rollout, carried in directives)."""
        return {
            "canary_count": self.canary_count,
            "canary_percent": self.canary_percent,
            "waves": list(self.waves),
            "soak_s": self.soak_s,
            "max_failures_percent": self.max_failures_percent,
            "max_error_rate_percent": self.max_error_rate_percent,
            "max_p95_regression_percent": self.max_p95_regression_percent,
            "max_drift": self.max_drift,
            "wave_timeout_s": self.wave_timeout_s,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutPolicy:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown rollout policy fields: {', '.join(sorted(unknown))}")
        values = dict(data)
        if "waves" in values:
            values["waves"] = tuple(float(w) for w in values["waves"])
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class DeviceCandidate:
    """What the planner needs to know about a device of the target group."""

    device_id: str
    online: bool = True


@dataclass(frozen=True)
class WavePlan:
    """One wave: its position, whether it is the canary, and its devices in order."""

    index: int
    devices: tuple[str, ...]
    canary: bool = False
    cumulative_percent: float = field(default=100.0)


def plan_waves(devices: Iterable[DeviceCandidate], policy: RolloutPolicy) -> tuple[WavePlan, ...]:
    """Split a group into waves according to ``policy``.

    The order is deterministic: online devices first (a silent canary proves nothing),
    then by id. Waves that would be empty (a tiny group with fine-grained shares) are
    dropped, so every returned wave has at least one device and each device appears once.
    """
    seen: set[str] = set()
    ordered: list[DeviceCandidate] = []
    for device in sorted(devices, key=lambda d: (not d.online, d.device_id)):
        if device.device_id in seen:
            raise ConfigError(f"device {device.device_id!r} appears twice in the group")
        seen.add(device.device_id)
        ordered.append(device)
    total = len(ordered)
    if total == 0:
        raise ConfigError("the group has no devices to roll out to")

    ids = [device.device_id for device in ordered]
    plans: list[WavePlan] = []
    taken = 0
    canary = 0
    if policy.canary_count is not None:
        canary = min(policy.canary_count, total)
    elif policy.canary_percent is not None:
        canary = max(1, math.ceil(total * policy.canary_percent / 100.0))
    if canary:
        plans.append(
            WavePlan(0, tuple(ids[:canary]), canary=True, cumulative_percent=100.0 * canary / total)
        )
        taken = canary
    for share in policy.waves:
        # Round up so a 10 % wave of a 5-device group still moves at least one device.
        upto = min(total, max(1, math.ceil(total * share / 100.0 - 1e-9)))
        if upto <= taken:
            continue
        plans.append(WavePlan(len(plans), tuple(ids[taken:upto]), cumulative_percent=share))
        taken = upto
    return tuple(plans)


def check_plan(plans: Sequence[WavePlan]) -> None:
    """Raise if a stored plan is not a partition of devices into non-empty waves."""
    seen: set[str] = set()
    for expected, wave in enumerate(plans):
        if wave.index != expected:
            raise ConfigError(f"expected wave {expected}, got wave {wave.index}")
        if not wave.devices:
            raise ConfigError(f"wave {wave.index} has no devices")
        for device_id in wave.devices:
            if device_id in seen:
                raise ConfigError(f"device {device_id!r} is in two waves")
            seen.add(device_id)


__all__ = [
    "DeviceCandidate",
    "RolloutPolicy",
    "WavePlan",
    "check_plan",
    "parse_duration",
    "parse_percent",
    "parse_waves",
    "plan_waves",
]
