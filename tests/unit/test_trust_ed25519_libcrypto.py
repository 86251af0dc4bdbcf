"""Ed25519 verification through the system libcrypto: it loads on this machine, and it,
the pure-Python verifier and the ``cryptography`` path accept exactly the same signatures,
including on crafted encodings (non-canonical keys and ``R``, ``S >= L``, small-order points)
where OpenSSL on its own would differ; without libcrypto, pure Python takes over."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeops.errors import SignatureError
from edgeops.trust import ed25519_libcrypto, ed25519_verify, keys
from edgeops.trust.ed25519_verify import L, P

from .test_trust_ed25519_verify import _flip, _reference

Verifier = Callable[[bytes, bytes, bytes], bool]

# RFC 8032 section 7.1: (PUBLIC KEY, MESSAGE, SIGNATURE), hex; the secret keys and a check
# that they give these values are in test_trust_ed25519_verify.py.
RFC8032_VECTORS = {
    "TEST 1": (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    "TEST 2": (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    "TEST 3": (
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    "TEST SHA(abc)": (
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
}

# The eight points of order dividing 8, canonically encoded ("Taming the many EdDSAs",
# Chalkias et al. 2020, table 6): identity, order 2, two of order 4, four of order 8.
SMALL_ORDER = [
    bytes.fromhex(encoded)
    for encoded in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    )
]
IDENTITY = SMALL_ORDER[0]
# Every encoding that section 5.1.3 refuses although it names a point: y >= p (19 values,
# each with either sign bit), and x = 0 with the sign bit set (y = 1 and y = p - 1).
NON_CANONICAL = [
    (y | sign << 255).to_bytes(32, "little") for y in range(P, 2**255) for sign in (0, 1)
] + [
    (1 | 1 << 255).to_bytes(32, "little"),
    (P - 1 | 1 << 255).to_bytes(32, "little"),
]
ZERO_S = bytes(32)


def _binding() -> ed25519_libcrypto.LibcryptoEd25519:
    binding = ed25519_libcrypto.load()
    assert binding is not None, "the system libcrypto should load on this machine"
    return binding


def _cryptography_path(public: bytes, signature: bytes, message: bytes) -> bool:
    assert keys._CRYPTOGRAPHY_ED25519 in sys.modules  # this module imports it
    return keys.verify_signature(public, signature, message)


BACKENDS: dict[str, Verifier] = {
    "pure Python": ed25519_verify.is_valid,
    "libcrypto": ed25519_libcrypto.is_valid,
    "cryptography": _cryptography_path,
}


def _verdicts(public: bytes, signature: bytes, message: bytes) -> dict[str, bool]:
    return {name: verify(public, signature, message) for name, verify in BACKENDS.items()}


def test_the_system_libcrypto_is_the_one_ssl_maps():
    import ssl

    binding = _binding()
    assert "libcrypto.so" in binding.path
    with open("/proc/self/maps", encoding="utf-8") as maps:
        mapped = maps.read()
    assert binding.path in mapped
    assert ssl.OPENSSL_VERSION_INFO >= (1, 1, 1)


@pytest.mark.parametrize("name", sorted(RFC8032_VECTORS))
def test_rfc8032_vectors(name: str):
    public_hex, message_hex, signature_hex = RFC8032_VECTORS[name]
    public, message = bytes.fromhex(public_hex), bytes.fromhex(message_hex)
    signature = bytes.fromhex(signature_hex)
    assert _binding().check(public, signature, message) is True
    ed25519_libcrypto.verify(public, signature, message)
    with pytest.raises(SignatureError, match="does not verify"):
        ed25519_libcrypto.verify(public, signature, message + b"\x00")
    for bit in (0, 255, 256, 511):
        assert not ed25519_libcrypto.is_valid(public, _flip(signature, bit), message)


def test_reasons_match_the_pure_python_verifier():
    public = bytes.fromhex(RFC8032_VECTORS["TEST 1"][0])
    with pytest.raises(SignatureError, match="32-byte Ed25519 public key, got 31"):
        ed25519_libcrypto.verify(public[:31], bytes(64), b"m")
    with pytest.raises(SignatureError, match="64-byte Ed25519 signature, got 63"):
        ed25519_libcrypto.verify(public, bytes(63), b"m")
    with pytest.raises(SignatureError, match="encode no point"):
        ed25519_libcrypto.verify((2).to_bytes(32, "little"), bytes(64), b"m")
    with pytest.raises(SignatureError, match="S >= L"):
        ed25519_libcrypto.verify(public, bytes(32) + L.to_bytes(32, "little"), b"m")


@settings(max_examples=25, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=32))
def test_libcrypto_and_cryptography_agree_on_every_bit_flip(seed: bytes, message: bytes):
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signature = private.sign(message)
    assert ed25519_libcrypto.is_valid(public, signature, message)
    assert _cryptography_path(public, signature, message)
    for bit in range(len(signature) * 8):
        flipped = _flip(signature, bit)
        assert not ed25519_libcrypto.is_valid(public, flipped, message)
        assert not _cryptography_path(public, flipped, message)
    for bit in range(len(public) * 8):
        flipped = _flip(public, bit)
        verdict = ed25519_libcrypto.is_valid(flipped, signature, message)
        assert verdict == _cryptography_path(flipped, signature, message)
        assert verdict == _reference(flipped, signature, message)
    for bit in range(len(message) * 8):
        flipped = _flip(message, bit)
        assert not ed25519_libcrypto.is_valid(public, signature, flipped)
        assert not _cryptography_path(public, signature, flipped)


# Pure Python takes milliseconds per signature: each example is about 800 verifications.
@pytest.mark.slow
@settings(max_examples=4, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=8))
def test_all_backends_agree_on_valid_signatures_and_every_bit_flip(seed: bytes, message: bytes):
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signature = private.sign(message)
    assert set(_verdicts(public, signature, message).values()) == {True}
    for bit in range(len(signature) * 8):
        assert set(_verdicts(public, _flip(signature, bit), message).values()) == {False}
    for bit in range(len(public) * 8):
        flipped = _flip(public, bit)
        verdicts = _verdicts(flipped, signature, message)
        assert set(verdicts.values()) == {_reference(flipped, signature, message)}, verdicts
    for bit in range(len(message) * 8):
        assert set(_verdicts(public, signature, _flip(message, bit)).values()) == {False}


def test_openssl_alone_takes_non_canonical_keys_and_every_backend_refuses_them():
    # [0]B == R + [k]A holds for A = R = identity whatever k is: a signature by the identity
    # key, which OpenSSL verifies for every encoding of that key. Ours decode the key first.
    binding = _binding()
    for encoded in ((P + 1).to_bytes(32, "little"), (1 | 1 << 255).to_bytes(32, "little")):
        assert binding.check(encoded, IDENTITY + ZERO_S, b"m") is True
        assert _verdicts(encoded, IDENTITY + ZERO_S, b"m") == dict.fromkeys(BACKENDS, False)
    for encoded in NON_CANONICAL:
        with pytest.raises(SignatureError, match="encode no point"):
            ed25519_libcrypto.verify(encoded, IDENTITY + ZERO_S, b"m")
        assert not keys.verify_signature(encoded, IDENTITY + ZERO_S, b"m")


def test_non_canonical_r_is_refused_by_openssl_itself():
    # R is not decoded in Python on the libcrypto path: OpenSSL compares the canonical
    # encoding of [S]B - [k]A with R byte for byte. With A = identity and S = 0 that is the
    # identity's encoding, so every other encoding of the identity as R must be refused.
    binding = _binding()
    assert binding.check(IDENTITY, IDENTITY + ZERO_S, b"m") is True
    for r in ((P + 1).to_bytes(32, "little"), (1 | 1 << 255).to_bytes(32, "little")):
        assert binding.check(IDENTITY, r + ZERO_S, b"m") is False
        assert _verdicts(IDENTITY, r + ZERO_S, b"m") == dict.fromkeys(BACKENDS, False)
    for r in NON_CANONICAL:
        assert binding.check(IDENTITY, r + ZERO_S, b"m") is False
        assert not ed25519_libcrypto.is_valid(IDENTITY, r + ZERO_S, b"m")


def test_s_not_below_l_is_refused_by_every_backend():
    public_hex, message_hex, signature_hex = RFC8032_VECTORS["TEST 2"]
    public, message = bytes.fromhex(public_hex), bytes.fromhex(message_hex)
    signature = bytes.fromhex(signature_hex)
    s = int.from_bytes(signature[32:], "little")
    for bad_s in (s + L, L, 2**256 - 1):
        malleated = signature[:32] + bad_s.to_bytes(32, "little")
        assert _verdicts(public, malleated, message) == dict.fromkeys(BACKENDS, False)
        # OpenSSL (1.1.1 and later) checks it too; we do not rely on it.
        assert _binding().check(public, malleated, message) is False


def test_small_order_keys_and_r_get_the_same_verdict_everywhere():
    # The cofactorless equation, as in OpenSSL: a small-order R or key gets whatever verdict
    # [S]B - [k]A == R gives, the same in every backend. (A = R = identity with S = 0 does
    # verify: the identity key signs everything. Roots carry only keys cryptography made.)
    accepted = set()
    for a in SMALL_ORDER:
        for r in SMALL_ORDER:
            for s in (0, 1):
                signature = r + s.to_bytes(32, "little")
                verdicts = _verdicts(a, signature, b"m")
                assert len(set(verdicts.values())) == 1, (a.hex(), r.hex(), s, verdicts)
                assert verdicts["libcrypto"] == _reference(a, signature, b"m")
                if verdicts["libcrypto"]:
                    accepted.add((a, r, s))
    assert (IDENTITY, IDENTITY, 0) in accepted
    assert all(s == 0 for _a, _r, s in accepted)  # [1]B is no small-order point


def test_without_libcrypto_pure_python_verifies(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ed25519_libcrypto, "_open", lambda: None)
    monkeypatch.setattr(ed25519_libcrypto, "_loader", ed25519_libcrypto._Once())
    calls: list[bytes] = []
    pure_verify = ed25519_verify.verify

    def spy(public: bytes, signature: bytes, message: bytes) -> None:
        calls.append(message)
        pure_verify(public, signature, message)

    monkeypatch.setattr(ed25519_verify, "verify", spy)
    public_hex, message_hex, signature_hex = RFC8032_VECTORS["TEST 3"]
    public, message = bytes.fromhex(public_hex), bytes.fromhex(message_hex)
    signature = bytes.fromhex(signature_hex)

    assert ed25519_libcrypto.load() is None
    ed25519_libcrypto.verify(public, signature, message)
    with pytest.raises(SignatureError, match="does not verify"):
        ed25519_libcrypto.verify(public, signature, b"other")
    assert calls == [message, b"other"]


def test_a_libcrypto_failure_is_no_verdict(monkeypatch: pytest.MonkeyPatch):
    # An allocation failing inside libcrypto must neither accept nor refuse: pure Python decides.
    binding = _binding()
    monkeypatch.setattr(binding, "_new_ctx", lambda: None)
    public_hex, message_hex, signature_hex = RFC8032_VECTORS["TEST 1"]
    public, message = bytes.fromhex(public_hex), bytes.fromhex(message_hex)
    signature = bytes.fromhex(signature_hex)
    assert binding.check(public, signature, message) is None
    assert ed25519_libcrypto.is_valid(public, signature, message)
    assert not ed25519_libcrypto.is_valid(public, _flip(signature, 3), message)


def test_the_loader_never_runs_find_library(monkeypatch: pytest.MonkeyPatch):
    import ctypes.util

    def refuse(name: str) -> None:
        raise AssertionError(f"find_library({name!r}) forks ldconfig")

    monkeypatch.setattr(ctypes.util, "find_library", refuse)
    monkeypatch.setattr(ed25519_libcrypto, "_loader", ed25519_libcrypto._Once())
    assert ed25519_libcrypto.load() is not None


def test_without_cryptography_keys_verify_through_libcrypto(monkeypatch: pytest.MonkeyPatch):
    key = keys.SigningKey.generate()
    signature = key.sign(b"directive")
    # As on a device: nothing has imported cryptography's Ed25519.
    monkeypatch.delitem(sys.modules, keys._CRYPTOGRAPHY_ED25519)
    used: list[bool] = []
    libcrypto_is_valid = ed25519_libcrypto.is_valid

    def spy(public: bytes, signature: bytes, message: bytes) -> bool:
        used.append(True)
        return libcrypto_is_valid(public, signature, message)

    monkeypatch.setattr(ed25519_libcrypto, "is_valid", spy)
    assert keys.verify_signature(key.public_key, signature, b"directive")
    assert not keys.verify_signature(key.public_key, signature, b"directivE")
    assert used == [True, True]
