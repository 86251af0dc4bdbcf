"""Rollouts: the wave plan and the gate decisions, I/O-free.

:func:`plan_waves` splits a group into waves under a :class:`RolloutPolicy`;
:class:`RolloutController` walks them, fed with device reports and the time, and returns the
directives to publish. Running it (MQTT, the registry, a clock) is the caller's job.
"""

from __future__ import annotations

from edgeops.fleet.rollout.controller import (
    Action,
    DevicePhase,
    HealthSample,
    HealthVerdict,
    PublishDirectives,
    RolloutController,
    RolloutFinished,
    RolloutStatus,
    WaveProgress,
    WaveStage,
    phase_from_agent_state,
)
from edgeops.fleet.rollout.policy import (
    DeviceCandidate,
    RolloutPolicy,
    WavePlan,
    check_plan,
    parse_duration,
    parse_percent,
    parse_waves,
    plan_waves,
)

__all__ = [
    "Action",
    "DeviceCandidate",
    "DevicePhase",
    "HealthSample",
    "HealthVerdict",
    "PublishDirectives",
    "RolloutController",
    "RolloutFinished",
    "RolloutPolicy",
    "RolloutStatus",
    "WavePlan",
    "WaveProgress",
    "WaveStage",
    "check_plan",
    "parse_duration",
    "parse_percent",
    "parse_waves",
    "phase_from_agent_state",
    "plan_waves",
]
