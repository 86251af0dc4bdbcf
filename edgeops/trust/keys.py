"""Ed25519 signing keys and key ids.

A key id is the hex SHA-256 of the 32-byte raw public key, so the id can be recomputed from
the key itself and a root cannot list a key under someone else's id.

Private keys are stored as PKCS#8 PEM, mode 0600, encrypted with the best available scheme
when a passphrase is given (the CLI reads it from ``EDGEOPS_KEY_PASSPHRASE``).
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from edgeops.errors import ConfigError, SignatureError
from edgeops.trust import ed25519_libcrypto, ed25519_verify

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

# A device verifies through the system libcrypto that ssl has already mapped
# (edgeops.trust.ed25519_libcrypto), else in pure Python (edgeops.trust.ed25519_verify);
# cryptography loads only where private keys are handled, so a device that only verifies
# never maps its Rust extension and bundled OpenSSL
# (docs/decisions/0006-agent-signature-verification.md).

#: The environment variable the CLI reads a key passphrase from.
PASSPHRASE_ENV = "EDGEOPS_KEY_PASSPHRASE"

KEYTYPE = "ed25519"

_CRYPTOGRAPHY_ED25519 = "cryptography.hazmat.primitives.asymmetric.ed25519"


def keyid_of(public_raw: bytes) -> str:
    """Key id of a raw 32-byte Ed25519 public key: its hex SHA-256."""
    return hashlib.sha256(public_raw).hexdigest()


def env_passphrase() -> str | None:
    """The passphrase from ``EDGEOPS_KEY_PASSPHRASE``, or ``None`` when unset or empty."""
    return os.environ.get(PASSPHRASE_ENV) or None


def verify_signature(public_raw: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``data`` by ``public_raw``.

    A malformed key or signature counts as not valid; :func:`ed25519_libcrypto.verify` raises
    :class:`SignatureError` with the reason instead. Every path accepts exactly the signatures
    that the pure-Python :func:`ed25519_verify.verify` accepts.
    """
    if _CRYPTOGRAPHY_ED25519 not in sys.modules:
        # The system libcrypto when ssl has it mapped, else pure Python.
        return ed25519_libcrypto.is_valid(public_raw, signature, data)
    # A process that has loaded cryptography anyway (the fleet side, the CLI) lets its OpenSSL
    # do the curve arithmetic. The strict decoding of the key stays ours, so every path accepts
    # exactly the same signatures (OpenSSL alone takes non-canonical keys).
    try:
        ed25519_verify.check_key_and_scalar(public_raw, signature)
    except SignatureError:
        return False
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(bytes(public_raw)).verify(bytes(signature), data)
    except InvalidSignature:
        return False
    return True


class SigningKey:
    """An Ed25519 private key with its public half and key id."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        from cryptography.hazmat.primitives import serialization

        self._private = private
        self.public_key: bytes = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        """The raw 32-byte public key."""
        self.keyid: str = keyid_of(self.public_key)
        """Hex SHA-256 of :attr:`public_key`."""

    def __repr__(self) -> str:
        return f"SigningKey(keyid={self.keyid[:16]}…)"

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key."""
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._private.sign(data)

    def to_pem(self, passphrase: str | None = None) -> bytes:
        """PKCS#8 PEM, encrypted when ``passphrase`` is given."""
        from cryptography.hazmat.primitives import serialization

        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
            if passphrase
            else serialization.NoEncryption()
        )
        return self._private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def save(self, path: Path, passphrase: str | None = None) -> None:
        """Write the key to ``path`` atomically with mode 0600."""
        from edgeops.fsutil import atomic_write_bytes

        atomic_write_bytes(Path(path), self.to_pem(passphrase), mode=0o600)

    @classmethod
    def from_pem(
        cls, data: bytes, passphrase: str | None = None, *, source: str = "key"
    ) -> SigningKey:
        """Read a PEM private key; raises :class:`ConfigError` on a wrong passphrase or type."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        password = passphrase.encode("utf-8") if passphrase else None
        try:
            private = serialization.load_pem_private_key(data, password=password)
        except TypeError as exc:
            if password is None:
                raise ConfigError(
                    f"{source} is encrypted: set {PASSPHRASE_ENV} to its passphrase"
                ) from exc
            raise ConfigError(f"{source} is not encrypted, but a passphrase was given") from exc
        except ValueError as exc:
            raise ConfigError(
                f"cannot read {source}: wrong passphrase or not a PEM private key"
            ) from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigError(f"{source} must be an Ed25519 key, got {type(private).__name__}")
        return cls(private)

    @classmethod
    def load(cls, path: Path, passphrase: str | None = None) -> SigningKey:
        """Read a key written by :meth:`save`."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read key {path}: {exc.strerror or exc}") from exc
        return cls.from_pem(data, passphrase, source=f"key {path}")


def check_public_key(keyid: str, public_hex: str) -> bytes:
    """Decode a root's public key entry and check its id; returns the raw key."""
    try:
        raw = bytes.fromhex(public_hex)
    except ValueError as exc:
        raise SignatureError(f"public key {keyid[:16]} is not hex") from exc
    if len(raw) != 32:
        raise SignatureError(f"expected a 32-byte Ed25519 public key, got {len(raw)} bytes")
    if keyid_of(raw) != keyid:
        raise SignatureError(f"expected key id {keyid_of(raw)} for this public key, got {keyid}")
    return raw


__all__ = [
    "KEYTYPE",
    "PASSPHRASE_ENV",
    "SigningKey",
    "check_public_key",
    "env_passphrase",
    "keyid_of",
    "verify_signature",
]
