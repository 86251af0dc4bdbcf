"""The fleet's trust: Ed25519 keys, canonical JSON envelopes, the root of trust, bundle
manifests and deployment directives, and the I/O-free verification core.

* :mod:`edgeops.trust.keys` — :class:`SigningKey`, key ids.
* :mod:`edgeops.trust.ed25519_verify` — Ed25519 verification (RFC 8032), pure Python.
* :mod:`edgeops.trust.ed25519_libcrypto` — the same through the system libcrypto ``ssl`` maps.
* :mod:`edgeops.trust.canonical` — the bytes a signature covers; a strict JSON parser.
* :mod:`edgeops.trust.envelope` — ``{"signed", "signatures"}`` and role thresholds.
* :mod:`edgeops.trust.metadata` — :class:`Root`, :class:`Manifest`, :class:`Directive`.
* :mod:`edgeops.trust.issue` — making and signing them (fleet side).
* :mod:`edgeops.trust.verify` — :class:`TrustedState`, every check a device makes.

The format is our own rather than python-tuf's Metadata API;
``docs/decisions/0002-signed-metadata.md`` has the reasons and the measured cost. Signing
uses ``cryptography``; a device verifies without it, through the system libcrypto that
``ssl`` already loads for TLS, or in pure Python where that library cannot be used
(``docs/decisions/0006-agent-signature-verification.md``).
"""

from __future__ import annotations

from edgeops.trust.canonical import canonical_json, parse_json
from edgeops.trust.envelope import envelope_bytes, parse_envelope, sign_envelope, verify_role
from edgeops.trust.issue import create_directive, new_root, rotated_root, sign_metadata
from edgeops.trust.keys import PASSPHRASE_ENV, SigningKey, env_passphrase, keyid_of
from edgeops.trust.metadata import (
    SPEC_VERSION,
    Budgets,
    BundleRef,
    Directive,
    FileEntry,
    Lineage,
    Manifest,
    RoleKeys,
    RolloutPolicy,
    Root,
    Target,
    TensorInfo,
    format_time,
    parse_time,
    utcnow,
)
from edgeops.trust.verify import TrustedState, check_bundle_ref

__all__ = [
    "PASSPHRASE_ENV",
    "SPEC_VERSION",
    "Budgets",
    "BundleRef",
    "Directive",
    "FileEntry",
    "Lineage",
    "Manifest",
    "RoleKeys",
    "RolloutPolicy",
    "Root",
    "SigningKey",
    "Target",
    "TensorInfo",
    "TrustedState",
    "canonical_json",
    "check_bundle_ref",
    "create_directive",
    "env_passphrase",
    "envelope_bytes",
    "format_time",
    "keyid_of",
    "new_root",
    "parse_envelope",
    "parse_json",
    "parse_time",
    "rotated_root",
    "sign_envelope",
    "sign_metadata",
    "utcnow",
    "verify_role",
]
