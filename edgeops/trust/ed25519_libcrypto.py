"""Ed25519 verification through the system OpenSSL that :mod:`ssl` has already loaded.

The pure-Python verifier (:mod:`edgeops.trust.ed25519_verify`) takes milliseconds per
signature and holds the GIL throughout; in a simulated 200-device rollout it was a third of
all GIL time. The agent imports :mod:`ssl` for TLS to the broker anyway, so the system
``libcrypto`` is already mapped into the process: calling its ``EVP_DigestVerify`` through
:mod:`ctypes` adds no library and no RSS, takes a few tens of microseconds, and releases the
GIL during each foreign call. ``cryptography`` stays off the device
(``docs/decisions/0006-agent-signature-verification.md``).

The library is found in ``/proc/self/maps`` after importing ``_ssl`` (the very file
:mod:`ssl` uses), else by the usual sonames; never with :func:`ctypes.util.find_library`,
which forks ``ldconfig``. It is loaded once, lazily, and checked against an RFC 8032 vector
before use. Anything missing (not Linux, OpenSSL before 1.1.1, a symbol, Ed25519 disabled)
leaves :func:`load` returning ``None`` and :func:`verify` on the pure-Python verifier.

The acceptance set is the pure-Python verifier's: the checks OpenSSL does not make (a
public key with a non-canonical ``y``, which OpenSSL reduces mod p) run first, in Python
(:func:`edgeops.trust.ed25519_verify.check_key_and_scalar`, cached per key). A failure
inside libcrypto (an allocation, say) is not taken as a verdict: that signature is checked
in pure Python instead.

Errors: :class:`edgeops.errors.SignatureError` with the reason, as in
:func:`edgeops.trust.ed25519_verify.verify`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Iterator

from edgeops.errors import SignatureError
from edgeops.trust import ed25519_verify

#: ``EVP_PKEY_ED25519`` (``NID_ED25519``) in every OpenSSL that has raw Ed25519 keys.
EVP_PKEY_ED25519 = 1087

# Tried in this order when /proc/self/maps names no libcrypto (a dlopen by soname: no fork).
_SONAMES = ("libcrypto.so.3", "libcrypto.so.1.1")

# RFC 8032 section 7.1, TEST 2: checked once at load, valid and with one bit flipped.
_SELF_TEST_KEY = bytes.fromhex("3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c")
_SELF_TEST_MESSAGE = bytes.fromhex("72")
_SELF_TEST_SIGNATURE = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


class LibcryptoEd25519:
    """The six libcrypto functions Ed25519 verification needs, with exact C signatures.

    Pointers are ``c_void_p`` and lengths ``size_t``, so nothing is truncated to a C ``int``
    on a 64-bit board. Raises :class:`AttributeError` if a symbol is missing.
    """

    def __init__(self, library: ctypes.CDLL, path: str) -> None:
        self.path = path
        """The file the functions come from."""
        # CDLL (not PyDLL): ctypes releases the GIL for the duration of each call.
        self._new_key = library.EVP_PKEY_new_raw_public_key
        self._new_key.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
        self._new_key.restype = ctypes.c_void_p
        self._free_key = library.EVP_PKEY_free
        self._free_key.argtypes = [ctypes.c_void_p]
        self._free_key.restype = None
        self._new_ctx = library.EVP_MD_CTX_new
        self._new_ctx.argtypes = []
        self._new_ctx.restype = ctypes.c_void_p
        self._free_ctx = library.EVP_MD_CTX_free
        self._free_ctx.argtypes = [ctypes.c_void_p]
        self._free_ctx.restype = None
        self._verify_init = library.EVP_DigestVerifyInit
        self._verify_init.argtypes = [ctypes.c_void_p] * 5
        self._verify_init.restype = ctypes.c_int
        self._verify = library.EVP_DigestVerify
        self._verify.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        self._verify.restype = ctypes.c_int
        self._clear_errors = library.ERR_clear_error
        self._clear_errors.argtypes = []
        self._clear_errors.restype = None

    def check(self, public_key: bytes, signature: bytes, message: bytes) -> bool | None:
        """OpenSSL's verdict on the signature (cofactorless, ``S < L``, ``R`` compared as
        bytes), or ``None`` when libcrypto failed before reaching one. No decoding checks of
        our own: see :func:`verify`."""
        key = self._new_key(EVP_PKEY_ED25519, None, public_key, len(public_key))
        if not key:
            self._clear_errors()
            return None
        try:
            ctx = self._new_ctx()
            if not ctx:
                self._clear_errors()
                return None
            try:
                if self._verify_init(ctx, None, None, None, key) != 1:
                    self._clear_errors()
                    return None
                result = self._verify(ctx, signature, len(signature), message, len(message))
            finally:
                self._free_ctx(ctx)
        finally:
            self._free_key(key)
        if result == 1:
            return True
        # 0 is "does not verify"; below 0 an error. Either may leave entries on this thread's
        # error queue, which the ssl module would otherwise read as its own.
        self._clear_errors()
        return False if result == 0 else None


def _mapped_libcrypto() -> Iterator[str]:
    """Paths of the libcrypto files mapped into this process, per ``/proc/self/maps``."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            lines = maps.readlines()
    except OSError:
        return
    seen: set[str] = set()
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6:
            continue
        path = fields[5].strip()
        if os.path.basename(path).startswith("libcrypto.so") and path not in seen:
            seen.add(path)
            yield path


def _open() -> LibcryptoEd25519 | None:
    if not sys.platform.startswith("linux"):
        return None
    with contextlib.suppress(ImportError):
        import _ssl  # noqa: F401  (maps the libcrypto that ssl uses; the agent has it already)
    for name in (*_mapped_libcrypto(), *_SONAMES):
        try:
            binding = LibcryptoEd25519(ctypes.CDLL(name), name)
        except (OSError, AttributeError):
            continue  # not loadable, or older than OpenSSL 1.1.1 (no raw Ed25519 keys)
        signature = _SELF_TEST_SIGNATURE
        flipped = signature[:-1] + bytes([signature[-1] ^ 1])
        if (
            binding.check(_SELF_TEST_KEY, signature, _SELF_TEST_MESSAGE) is True
            and binding.check(_SELF_TEST_KEY, flipped, _SELF_TEST_MESSAGE) is False
        ):
            return binding
    return None


class _Once:
    """Runs :func:`_open` on the first :meth:`get`, under a lock, and keeps what it gave."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done = False
        self._binding: LibcryptoEd25519 | None = None

    def get(self) -> LibcryptoEd25519 | None:
        if not self._done:
            with self._lock:
                if not self._done:
                    self._binding = _open()
                    self._done = True
        return self._binding


_loader = _Once()


def load() -> LibcryptoEd25519 | None:
    """The libcrypto binding, loaded on the first call (thread-safe); ``None`` if this
    process cannot have one, in which case :func:`verify` uses pure Python."""
    return _loader.get()


def verify(public_key: bytes, signature: bytes, message: bytes) -> None:
    """Check an Ed25519 ``signature`` of ``message`` by the raw 32-byte ``public_key``,
    accepting exactly what :func:`edgeops.trust.ed25519_verify.verify` accepts.

    Returns ``None`` when the signature is valid; raises :class:`SignatureError` otherwise.
    """
    binding = load()
    if binding is None:
        ed25519_verify.verify(public_key, signature, message)
        return
    ed25519_verify.check_key_and_scalar(public_key, signature)
    verdict = binding.check(bytes(public_key), bytes(signature), bytes(message))
    if verdict is None:
        ed25519_verify.verify(public_key, signature, message)
    elif not verdict:
        raise SignatureError("the Ed25519 signature does not verify")


def is_valid(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether :func:`verify` accepts the signature (malformed input counts as invalid)."""
    try:
        verify(public_key, signature, message)
    except SignatureError:
        return False
    return True


__all__ = ["EVP_PKEY_ED25519", "LibcryptoEd25519", "is_valid", "load", "verify"]
