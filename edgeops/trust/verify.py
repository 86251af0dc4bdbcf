"""The one place a device decides what to trust. I/O-free: bytes and values in, frozen
verified objects out, or an :class:`~edgeops.errors.VerificationError` subclass.

Modelled on python-tuf's ``TrustedMetadataSet``. The order of checks is the protocol:

Root (:meth:`TrustedState.update_root`)
    1. size cap, strict JSON, ``_type`` root;
    2. a threshold of the *trusted* root's root keys signed it (:class:`SignatureError`,
       :class:`ThresholdError`) — so new keys alone cannot rotate themselves in;
    3. its version is exactly trusted + 1 (:class:`RollbackAttackError` when not greater);
    4. a threshold of its *own* root keys signed it (proves the new keys are held);
    5. the fleet name is unchanged.
    An intermediate root may be expired (a device offline for a year walks the chain);
    the expiry of the newest root is checked before anything is verified with it.

Manifest (:meth:`TrustedState.verify_manifest`)
    root not expired (:class:`ExpiredError`); size cap; release-role threshold; schema;
    release counter greater than the last one installed (:class:`RollbackAttackError`);
    board listed when the manifest restricts boards (:class:`WrongTargetError`).

Directive (:meth:`TrustedState.verify_directive`)
    root not expired; size cap; deploy-role threshold; schema; same fleet; target is this
    device or one of its groups (:class:`WrongTargetError`); not expired
    (:class:`ExpiredError`); sequence greater than the last one accepted for that target
    (:class:`RollbackAttackError`).

Bundle bytes against a directive (:func:`check_bundle_ref`): size then digest, so a
mix-and-match of a genuine directive with another genuine bundle is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from edgeops.errors import (
    DigestMismatchError,
    ExpiredError,
    RollbackAttackError,
    SizeLimitError,
    VerificationError,
    WrongTargetError,
)
from edgeops.trust.envelope import parse_envelope, verify_role
from edgeops.trust.metadata import BundleRef, Directive, Manifest, Root, format_time

MAX_ROOT_BYTES = 512 * 1024
MAX_MANIFEST_BYTES = 1024 * 1024
MAX_DIRECTIVE_BYTES = 64 * 1024
#: A directive issued this far in the future of the device clock is still accepted; boards
#: without a real-time clock drift until NTP syncs.
CLOCK_SKEW = timedelta(minutes=5)


class TrustedState:
    """The root a device trusts, and the checks of everything signed under it.

    ``root_bytes`` is the root shipped with the device (or persisted after the last
    rotation); it is trusted on first use, but must still carry a threshold of its own
    root signatures. ``now`` is the device clock, used for expiry checks.
    """

    def __init__(self, root_bytes: bytes, *, now: datetime) -> None:
        envelope = parse_envelope(root_bytes, expected_type="root", max_size=MAX_ROOT_BYTES)
        root = Root.from_signed(envelope.signed)
        verify_role(envelope, role_name="root", role=root.role("root"), keys=root.keys, what="root")
        self._root = root
        self._root_bytes = root_bytes
        self.now = now

    @property
    def root(self) -> Root:
        """The newest trusted root."""
        return self._root

    @property
    def root_bytes(self) -> bytes:
        """The bytes of :attr:`root` as received (persist these after a rotation)."""
        return self._root_bytes

    def update_root(self, data: bytes) -> Root:
        """Accept root version N+1, signed by the thresholds of root N and of itself."""
        trusted = self._root
        envelope = parse_envelope(data, expected_type="root", max_size=MAX_ROOT_BYTES)
        verify_role(
            envelope,
            role_name="root",
            role=trusted.role("root"),
            keys=trusted.keys,
            what=f"root rotation (checked with root version {trusted.version})",
        )
        new = Root.from_signed(envelope.signed)
        if new.version <= trusted.version:
            raise RollbackAttackError(
                f"expected root version {trusted.version + 1}, got {new.version}"
            )
        if new.version != trusted.version + 1:
            raise VerificationError(
                f"expected root version {trusted.version + 1} (one step at a time), "
                f"got {new.version}"
            )
        verify_role(
            envelope,
            role_name="root",
            role=new.role("root"),
            keys=new.keys,
            what=f"root version {new.version} (its own root keys)",
        )
        if new.fleet != trusted.fleet:
            raise WrongTargetError(
                f"expected a root for fleet {trusted.fleet!r}, got {new.fleet!r}"
            )
        self._root = new
        self._root_bytes = data
        return new

    def update_root_chain(self, chain: Iterable[bytes]) -> Root:
        """Apply :meth:`update_root` to each root in order (N+1, N+2, …)."""
        for data in chain:
            self.update_root(data)
        return self._root

    def check_root_expiry(self, now: datetime | None = None) -> None:
        """Raise :class:`ExpiredError` when the trusted root is past its expiry."""
        moment = now or self.now
        if moment >= self._root.expires:
            raise ExpiredError(
                f"root version {self._root.version} expired at "
                f"{format_time(self._root.expires)}; now {format_time(moment)}"
            )

    def verify_manifest(
        self,
        data: bytes,
        *,
        board: str | None = None,
        last_release_counter: int | None = None,
    ) -> Manifest:
        """Verify a bundle manifest envelope; returns the manifest it signs."""
        self.check_root_expiry()
        envelope = parse_envelope(data, expected_type="manifest", max_size=MAX_MANIFEST_BYTES)
        verify_role(
            envelope,
            role_name="release",
            role=self._root.role("release"),
            keys=self._root.keys,
            what="manifest",
        )
        manifest = Manifest.from_signed(envelope.signed)
        if last_release_counter is not None and manifest.release <= last_release_counter:
            raise RollbackAttackError(
                f"expected release counter > {last_release_counter}, got {manifest.release}"
            )
        if board is not None and manifest.boards and board not in manifest.boards:
            raise WrongTargetError(
                f"expected a bundle for board {board!r}, got one for {', '.join(manifest.boards)}"
            )
        return manifest

    def verify_directive(
        self,
        data: bytes,
        *,
        device_id: str,
        groups: Iterable[str] = (),
        last_sequence: int | None = None,
        now: datetime | None = None,
    ) -> Directive:
        """Verify a deployment directive for ``device_id`` (member of ``groups``).

        ``last_sequence`` is the last sequence this device accepted *for the directive's
        target* (its own id or that group); the caller keeps one counter per target.
        """
        moment = now or self.now
        self.check_root_expiry(moment)
        envelope = parse_envelope(data, expected_type="directive", max_size=MAX_DIRECTIVE_BYTES)
        verify_role(
            envelope,
            role_name="deploy",
            role=self._root.role("deploy"),
            keys=self._root.keys,
            what="directive",
        )
        directive = Directive.from_signed(envelope.signed)
        if directive.fleet != self._root.fleet:
            raise WrongTargetError(
                f"expected a directive for fleet {self._root.fleet!r}, got {directive.fleet!r}"
            )
        group_set = set(groups)
        target = directive.target
        if target.kind == "device" and target.name != device_id:
            raise WrongTargetError(
                f"expected a directive for device {device_id!r}, got one for device {target.name!r}"
            )
        if target.kind == "group" and target.name not in group_set:
            raise WrongTargetError(
                f"expected a directive for device {device_id!r} or its groups "
                f"({', '.join(sorted(group_set)) or 'none'}), got one for group {target.name!r}"
            )
        if moment >= directive.expires:
            raise ExpiredError(
                f"directive {directive.sequence} for {target} expired at "
                f"{format_time(directive.expires)}; now {format_time(moment)}"
            )
        if directive.issued > moment + CLOCK_SKEW:
            raise VerificationError(
                f"directive {directive.sequence} is issued in the future "
                f"({format_time(directive.issued)}; now {format_time(moment)})"
            )
        if last_sequence is not None and directive.sequence <= last_sequence:
            raise RollbackAttackError(
                f"expected directive sequence > {last_sequence} for {target}, "
                f"got {directive.sequence}"
            )
        return directive


def check_bundle_ref(ref: BundleRef, *, sha256: str, size: int) -> None:
    """Check a downloaded bundle file against the directive that named it."""
    if size > ref.size:
        raise SizeLimitError(f"expected a bundle of {ref.size} bytes, got more ({size})")
    if size != ref.size:
        raise DigestMismatchError(f"expected a bundle of {ref.size} bytes, got {size}")
    if sha256 != ref.sha256:
        raise DigestMismatchError(
            f"expected bundle sha256 {ref.sha256}, got {sha256} "
            "(not the bundle the directive names)"
        )


__all__ = [
    "CLOCK_SKEW",
    "MAX_DIRECTIVE_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_ROOT_BYTES",
    "TrustedState",
    "check_bundle_ref",
]
