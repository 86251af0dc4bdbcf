"""Signed envelopes: ``{"signed": {...}, "signatures": [{"keyid": hex, "sig": hex}]}``.

A signature covers the canonical JSON (:func:`edgeops.trust.canonical.canonical_json`) of
``signed``; the envelope itself may be formatted in any way. A role's threshold counts
*distinct* key ids of that role whose signatures verify, so listing one key twice counts
once; signatures by keys outside the role are ignored unless nothing else signed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgeops.errors import SignatureError, ThresholdError, VerificationError
from edgeops.trust.canonical import canonical_json, parse_json
from edgeops.trust.keys import SigningKey, verify_signature
from edgeops.trust.metadata import RoleKeys

#: More signatures than this is an attempt to make the verifier work, not a real envelope.
MAX_SIGNATURES = 32


@dataclass(frozen=True)
class Signature:
    """One signature: the signing key's id and the 64 signature bytes."""

    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A parsed envelope whose signatures have not been checked yet."""

    signed: dict[str, Any]
    signatures: tuple[Signature, ...]
    signed_bytes: bytes
    """The canonical JSON of :attr:`signed`: the bytes the signatures cover."""


def sign_envelope(signed: dict[str, Any], keys: Iterable[SigningKey]) -> dict[str, Any]:
    """An envelope around ``signed`` with one signature per key."""
    data = canonical_json(signed)
    signatures = [{"keyid": key.keyid, "sig": key.sign(data).hex()} for key in keys]
    if not signatures:
        raise ValueError("sign_envelope needs at least one key")
    return {"signed": signed, "signatures": signatures}


def envelope_bytes(envelope: dict[str, Any], *, pretty: bool = False) -> bytes:
    """Serialize an envelope: canonical by default, indented for files people read."""
    if pretty:
        import json

        canonical_json(envelope)  # the same value checks as the compact form
        return (json.dumps(envelope, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    return canonical_json(envelope)


def parse_envelope(data: bytes, *, expected_type: str, max_size: int) -> Envelope:
    """Parse an envelope of ``expected_type`` (``root``, ``manifest``, ``directive``).

    Checks shape only; :func:`verify_role` checks the signatures.
    """
    value = parse_json(data, max_size=max_size, what=expected_type, error=VerificationError)
    if not isinstance(value, dict) or set(value) != {"signed", "signatures"}:
        raise VerificationError(
            f"{expected_type}: expected an object with 'signed' and 'signatures', got "
            f"{sorted(value) if isinstance(value, dict) else type(value).__name__}"
        )
    signed, raw_sigs = value["signed"], value["signatures"]
    if not isinstance(signed, dict):
        raise VerificationError(f"{expected_type}: 'signed' must be an object")
    if signed.get("_type") != expected_type:
        raise VerificationError(
            f"expected signed metadata of type {expected_type!r}, got {signed.get('_type')!r}"
        )
    if not isinstance(raw_sigs, list):
        raise VerificationError(f"{expected_type}: 'signatures' must be a list")
    if len(raw_sigs) > MAX_SIGNATURES:
        raise VerificationError(
            f"{expected_type}: expected at most {MAX_SIGNATURES} signatures, got {len(raw_sigs)}"
        )
    signatures = []
    for entry in raw_sigs:
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("keyid"), str)
            or not isinstance(entry.get("sig"), str)
        ):
            raise SignatureError(
                f"{expected_type}: a signature must be {{'keyid': str, 'sig': str}}"
            )
        try:
            sig = bytes.fromhex(entry["sig"])
        except ValueError as exc:
            raise SignatureError(f"{expected_type}: signature is not hex") from exc
        signatures.append(Signature(keyid=entry["keyid"], sig=sig))
    return Envelope(
        signed=signed, signatures=tuple(signatures), signed_bytes=canonical_json(signed)
    )


def verify_role(
    envelope: Envelope,
    *,
    role_name: str,
    role: RoleKeys,
    keys: Mapping[str, bytes],
    what: str,
) -> None:
    """Check that a threshold of ``role``'s distinct keys signed ``envelope``.

    Raises :class:`SignatureError` when a key of the role signed something else (tampering)
    or only unknown keys signed, :class:`ThresholdError` when too few distinct keys did.
    """
    valid: set[str] = set()
    unknown: list[str] = []
    for signature in envelope.signatures:
        if signature.keyid not in role.keyids:
            unknown.append(signature.keyid)
            continue
        if not verify_signature(keys[signature.keyid], signature.sig, envelope.signed_bytes):
            raise SignatureError(
                f"{what}: the signature by {role_name} key {signature.keyid[:16]} does not "
                f"verify (content changed after signing, or a forged signature)"
            )
        valid.add(signature.keyid)
    if len(valid) >= role.threshold:
        return
    if not valid and unknown:
        raise SignatureError(
            f"{what}: expected signatures by {role.threshold} of the {role_name} keys "
            f"{', '.join(k[:16] for k in role.keyids)}, got only keys not trusted for "
            f"{role_name}: {', '.join(sorted({k[:16] for k in unknown}))}"
        )
    raise ThresholdError(
        f"{what}: expected {role.threshold} distinct {role_name} signature(s), got {len(valid)}"
    )


__all__ = [
    "MAX_SIGNATURES",
    "Envelope",
    "Signature",
    "envelope_bytes",
    "parse_envelope",
    "sign_envelope",
    "verify_role",
]
