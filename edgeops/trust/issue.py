"""Making signed metadata: new roots, rotations, directives (the signing side).

Everything here runs on the fleet side; devices only verify (:mod:`edgeops.trust.verify`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal

from edgeops.trust.envelope import envelope_bytes, sign_envelope
from edgeops.trust.keys import SigningKey
from edgeops.trust.metadata import (
    ROLES,
    BundleRef,
    Directive,
    Manifest,
    RoleKeys,
    RolloutPolicy,
    Root,
    Target,
    utcnow,
)

ROOT_LIFETIME = timedelta(days=365)
DIRECTIVE_LIFETIME = timedelta(days=7)


def sign_metadata(
    obj: Root | Manifest | Directive, keys: Iterable[SigningKey], *, pretty: bool = False
) -> bytes:
    """The envelope bytes of ``obj`` signed by every key in ``keys``."""
    return envelope_bytes(sign_envelope(obj.to_signed(), keys), pretty=pretty)


def new_root(
    *,
    fleet: str,
    role_keys: Mapping[str, Sequence[bytes]],
    thresholds: Mapping[str, int] | None = None,
    expires: datetime | None = None,
    version: int = 1,
) -> Root:
    """A root naming ``role_keys`` (raw public keys per role); thresholds default to 1."""
    from edgeops.trust.keys import keyid_of

    keys: dict[str, bytes] = {}
    roles: dict[str, RoleKeys] = {}
    for role in ROLES:
        ids = []
        for raw in role_keys.get(role, ()):
            keys[keyid_of(raw)] = raw
            ids.append(keyid_of(raw))
        roles[role] = RoleKeys(keyids=tuple(ids), threshold=(thresholds or {}).get(role, 1))
    return Root(
        fleet=fleet,
        version=version,
        expires=expires or utcnow() + ROOT_LIFETIME,
        keys=keys,
        roles=roles,
    )


def rotated_root(
    old: Root,
    *,
    role: str,
    new_public_keys: Sequence[bytes],
    threshold: int | None = None,
    expires: datetime | None = None,
) -> Root:
    """Root version N+1 with ``role``'s keys replaced; the other roles keep theirs.

    Sign the result with a threshold of ``old``'s root keys *and* a threshold of the new
    root's root keys (the same keys when ``role`` is not ``root``).
    """
    role_keys: dict[str, list[bytes]] = {
        name: [old.keys[k] for k in spec.keyids] for name, spec in old.roles.items()
    }
    role_keys[role] = list(new_public_keys)
    thresholds = {name: spec.threshold for name, spec in old.roles.items()}
    thresholds[role] = (
        threshold if threshold is not None else min(old.role(role).threshold, len(new_public_keys))
    )
    return new_root(
        fleet=old.fleet,
        role_keys=role_keys,
        thresholds=thresholds,
        expires=expires or utcnow() + ROOT_LIFETIME,
        version=old.version + 1,
    )


def create_directive(
    *,
    fleet: str,
    bundle: BundleRef,
    sequence: int,
    device: str | None = None,
    group: str | None = None,
    action: Literal["install", "rollback"] = "install",
    issued: datetime | None = None,
    expires: datetime | None = None,
    rollout: RolloutPolicy | None = None,
) -> Directive:
    """A directive for exactly one of ``device`` or ``group``; sign it with
    :func:`sign_metadata` and the deploy keys."""
    if (device is None) == (group is None):
        raise ValueError("a directive targets exactly one of device or group")
    target = (
        Target(kind="device", name=device) if device else Target(kind="group", name=group or "")
    )
    issued = issued or utcnow()
    return Directive(
        fleet=fleet,
        target=target,
        sequence=sequence,
        issued=issued,
        expires=expires or issued + DIRECTIVE_LIFETIME,
        action=action,
        bundle=bundle,
        rollout=rollout or RolloutPolicy(),
    )


__all__ = [
    "DIRECTIVE_LIFETIME",
    "ROOT_LIFETIME",
    "create_directive",
    "new_root",
    "rotated_root",
    "sign_metadata",
]
