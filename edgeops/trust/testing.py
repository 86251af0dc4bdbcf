"""An in-memory fleet for tests: keys, roots, manifests and directives without files.

The fake beside :mod:`edgeops.trust.verify` (python-tuf's ``RepositorySimulator`` is the
model): unit tests of the agent and the fleet build signed objects with it and hand the
bytes to the code under test.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from edgeops.trust.issue import create_directive, new_root, rotated_root, sign_metadata
from edgeops.trust.keys import SigningKey
from edgeops.trust.metadata import (
    ROLES,
    BundleRef,
    Directive,
    FileEntry,
    Manifest,
    Root,
    TensorInfo,
    utcnow,
)
from edgeops.trust.verify import TrustedState


class MemoryFleet:
    """Keys per role, the current root and its history, and helpers to sign objects."""

    def __init__(
        self,
        fleet: str = "test-fleet",
        *,
        now: datetime | None = None,
        keys_per_role: Mapping[str, int] | None = None,
        thresholds: Mapping[str, int] | None = None,
        root_lifetime: timedelta = timedelta(days=365),
    ) -> None:
        self.fleet = fleet
        self.now = now or utcnow()
        self.keys: dict[str, list[SigningKey]] = {
            role: [SigningKey.generate() for _ in range((keys_per_role or {}).get(role, 1))]
            for role in ROLES
        }
        self.root: Root = new_root(
            fleet=fleet,
            role_keys={role: [k.public_key for k in keys] for role, keys in self.keys.items()},
            thresholds=thresholds,
            expires=self.now + root_lifetime,
        )
        self.root_bytes = sign_metadata(self.root, self.keys["root"])
        self.history: list[bytes] = [self.root_bytes]

    def trusted(self, now: datetime | None = None) -> TrustedState:
        """A device's view, trusting the first root."""
        return TrustedState(self.history[0], now=now or self.now)

    def sign(
        self, obj: Root | Manifest | Directive, keys: Sequence[SigningKey] | None = None
    ) -> bytes:
        """Sign with ``keys``, by default all keys of the role that signs ``obj``."""
        if keys is None:
            role = {"Root": "root", "Manifest": "release", "Directive": "deploy"}[
                type(obj).__name__
            ]
            keys = self.keys[role]
        return sign_metadata(obj, keys)

    def rotate(
        self,
        role: str,
        *,
        count: int = 1,
        threshold: int | None = None,
        sign_old: bool = True,
        sign_new: bool = True,
    ) -> bytes:
        """Root N+1 with new keys for ``role``; returns its bytes (also kept in history)."""
        new_keys = [SigningKey.generate() for _ in range(count)]
        new = rotated_root(
            self.root,
            role=role,
            new_public_keys=[k.public_key for k in new_keys],
            threshold=threshold,
            expires=self.now + timedelta(days=365),
        )
        old_root_keys = self.keys["root"]
        self.keys[role] = new_keys
        signers: list[SigningKey] = []
        if sign_old:
            signers += old_root_keys
        if sign_new:
            signers += [k for k in self.keys["root"] if k not in signers]
        data = sign_metadata(new, signers)
        self.root, self.root_bytes = new, data
        self.history.append(data)
        return data

    def manifest(self, **overrides: Any) -> Manifest:
        """A valid manifest with one model file; fields can be overridden."""
        model = b"model bytes"
        fields: dict[str, Any] = {
            "name": "detector",
            "version": "1.0.0",
            "release": 1,
            "created": self.now,
            "model": "model.onnx",
            "files": (
                FileEntry(
                    path="model.onnx", size=len(model), sha256=hashlib.sha256(model).hexdigest()
                ),
            ),
            "runtime": "onnxruntime",
            "runtime_min_version": "1.17",
            "inputs": (TensorInfo(name="x", shape=(1, 4), dtype="float32"),),
            "outputs": (TensorInfo(name="y", shape=(1, 2), dtype="float32"),),
        }
        fields.update(overrides)
        return Manifest(**fields)

    def directive(self, **overrides: Any) -> Directive:
        """A valid install directive for device ``dev-1``; fields can be overridden."""
        fields: dict[str, Any] = {
            "fleet": self.fleet,
            "bundle": BundleRef(
                sha256="ab" * 32, size=1000, name="detector", version="1.0.0", release=1
            ),
            "sequence": 1,
            "issued": self.now,
        }
        if "group" not in overrides:
            fields["device"] = "dev-1"
        fields.update(overrides)
        return create_directive(**fields)


__all__ = ["MemoryFleet"]
