"""Signed model bundles: one ustar file with ``manifest.json`` first, then the model,
``test_vectors.npz``, ``reference_stats.json`` and extra files.

* :func:`create_bundle` (host) builds and signs one; :func:`load_test_vectors` reads its
  test vectors back.
* :func:`verify_bundle` checks one in a single streaming pass against a
  :class:`~edgeops.trust.verify.TrustedState`; :func:`unpack_bundle` writes the listed
  files, checking each digest again; :func:`verify_and_unpack` does both in one pass (what
  the agent uses); :func:`inspect_bundle` is an unverified look.

Importing this package loads neither numpy nor a model runtime.
"""

from __future__ import annotations

from edgeops.bundle.archive import (
    MANIFEST_NAME,
    MAX_BUNDLE_BYTES,
    UnpackedBundle,
    VerifiedBundle,
    inspect_bundle,
    unpack_bundle,
    verify_and_unpack,
    verify_bundle,
)
from edgeops.bundle.create import (
    REFERENCE_STATS_NAME,
    TEST_VECTORS_NAME,
    create_bundle,
    file_digest,
    load_test_vectors,
)

__all__ = [
    "MANIFEST_NAME",
    "MAX_BUNDLE_BYTES",
    "REFERENCE_STATS_NAME",
    "TEST_VECTORS_NAME",
    "UnpackedBundle",
    "VerifiedBundle",
    "create_bundle",
    "file_digest",
    "inspect_bundle",
    "load_test_vectors",
    "unpack_bundle",
    "verify_and_unpack",
    "verify_bundle",
]
