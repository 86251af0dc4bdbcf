"""A rollout controller to and from its registry record (values only, no I/O)."""

from __future__ import annotations

from edgeops.errors import StateError
from edgeops.fleet.registry.records import RolloutRecord, WaveRecord
from edgeops.fleet.rollout.controller import RolloutController


def to_record(controller: RolloutController, *, group: str, now: float) -> RolloutRecord:
    """The record :meth:`RegistryStore.save_rollout` stores: the full controller state to
    resume from, plus per-wave counts and per-device phases flattened for queries."""
    state = controller.to_dict()
    progress = controller.progress(now=now)
    waves = tuple(
        WaveRecord(
            index=p.index,
            canary=p.canary,
            stage=p.stage.value,
            devices=tuple(saved["devices"]),
            counts=p.counts,
            started=saved["started"],
            ended=saved["ended"],
            reason=saved["reason"],
        )
        for p, saved in zip(progress, state["waves"], strict=True)
    )
    return RolloutRecord(
        rollout_id=controller.rollout_id,
        group=group,
        bundle=controller.bundle,
        previous_bundle=controller.previous_bundle,
        status=controller.status.value,
        created=controller.created,
        updated=now,
        reason=controller.reason,
        policy=controller.policy.to_dict(),
        state=state,
        waves=waves,
        device_phases={d: p.value for d, p in controller.device_phases().items()},
    )


def from_record(record: RolloutRecord) -> RolloutController:
    """The controller a record was saved from, ready to continue."""
    if not record.state:
        raise StateError(f"rollout {record.rollout_id} has no saved controller state")
    return RolloutController.from_dict(record.state)


__all__ = ["from_record", "to_record"]
