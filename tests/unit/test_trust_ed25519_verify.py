"""The pure-Python Ed25519 verifier: RFC 8032 test vectors, agreement with ``cryptography``
on valid signatures and every single-bit flip, strict decoding, and malformed input."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeops.errors import SignatureError
from edgeops.trust.ed25519_verify import L, P, is_valid, verify
from edgeops.trust.keys import SigningKey, verify_signature

# RFC 8032 section 7.1: (SECRET KEY, PUBLIC KEY, MESSAGE, SIGNATURE), hex.
RFC8032_VECTORS = {
    "TEST 1": (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    "TEST 2": (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
        "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    "TEST 3": (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac"
        "18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    "TEST SHA(abc)": (
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
        "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589"
        "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
}


def _raw_public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _reference(public: bytes, signature: bytes, message: bytes) -> bool:
    """``cryptography``'s (OpenSSL's) verdict."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


@pytest.mark.parametrize("name", sorted(RFC8032_VECTORS))
def test_rfc8032_vectors(name: str):
    secret, public_hex, message_hex, signature_hex = RFC8032_VECTORS[name]
    public, message = bytes.fromhex(public_hex), bytes.fromhex(message_hex)
    signature = bytes.fromhex(signature_hex)
    # The vector was typed in correctly: the secret key gives this public key and signature.
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    assert _raw_public(private) == public
    assert private.sign(message) == signature

    verify(public, signature, message)
    assert not is_valid(public, signature, message + b"\x00")
    assert not is_valid(public, _flip(signature, 0), message)


def test_sha_abc_vector_signs_the_digest_of_abc():
    assert RFC8032_VECTORS["TEST SHA(abc)"][2] == hashlib.sha512(b"abc").hexdigest()


# Each example checks every bit of signature, key and message (up to 1024 verifications).
@pytest.mark.slow
@settings(max_examples=10, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=32))
def test_agrees_with_cryptography_on_valid_signatures_and_every_bit_flip(
    seed: bytes, message: bytes
):
    private = Ed25519PrivateKey.from_private_bytes(seed)
    public, signature = _raw_public(private), private.sign(message)
    verify(public, signature, message)

    for bit in range(len(signature) * 8):
        flipped = _flip(signature, bit)
        assert is_valid(public, flipped, message) == _reference(public, flipped, message) is False
    for bit in range(len(public) * 8):
        flipped = _flip(public, bit)
        assert is_valid(flipped, signature, message) == _reference(flipped, signature, message)
    for bit in range(len(message) * 8):
        flipped = _flip(message, bit)
        assert is_valid(public, signature, flipped) is _reference(public, signature, flipped)
        assert not is_valid(public, signature, flipped)


@settings(max_examples=50, deadline=None)
@given(
    public=st.binary(max_size=40), signature=st.binary(max_size=70), message=st.binary(max_size=40)
)
def test_arbitrary_bytes_raise_signature_error_or_agree(
    public: bytes, signature: bytes, message: bytes
):
    try:
        verify(public, signature, message)
    except SignatureError:
        accepted = False
    else:
        accepted = True
    if len(public) == 32 and len(signature) == 64:
        assert accepted == _reference(public, signature, message)
    else:
        assert not accepted


@pytest.mark.parametrize(
    ("public", "signature", "expected"),
    [
        (b"\x01" * 31, b"\x00" * 64, "32-byte Ed25519 public key, got 31"),
        (b"\x01" * 33, b"\x00" * 64, "32-byte Ed25519 public key, got 33"),
        (b"", b"\x00" * 64, "32-byte Ed25519 public key, got 0"),
        (bytes.fromhex(RFC8032_VECTORS["TEST 1"][1]), b"\x00" * 63, "64-byte"),
        (bytes.fromhex(RFC8032_VECTORS["TEST 1"][1]), b"\x00" * 65, "64-byte"),
    ],
)
def test_wrong_lengths_raise(public: bytes, signature: bytes, expected: str):
    with pytest.raises(SignatureError, match=expected):
        verify(public, signature, b"m")


def test_a_key_that_is_no_point_raises():
    # y = 2 has no x on the curve: (y^2 - 1) / (d y^2 + 1) is not a square mod p.
    with pytest.raises(SignatureError, match="encode no point"):
        verify((2).to_bytes(32, "little"), bytes(64), b"m")


def test_non_canonical_y_is_refused():
    # y = p + 1 encodes the same point as y = 1 (the identity); RFC 8032 5.1.3 says to fail.
    non_canonical = (P + 1).to_bytes(32, "little")
    with pytest.raises(SignatureError, match="encode no point"):
        verify(non_canonical, bytes(64), b"m")
    # R non-canonical likewise, with an otherwise valid key.
    public = bytes.fromhex(RFC8032_VECTORS["TEST 1"][1])
    with pytest.raises(SignatureError, match="signature's R"):
        verify(public, non_canonical + bytes(32), b"m")


def test_x_zero_with_the_sign_bit_set_is_refused():
    # y = 1 is the identity (x = 0); setting the sign bit asks for "x = -0".
    negative_zero = (1 | 1 << 255).to_bytes(32, "little")
    with pytest.raises(SignatureError, match="encode no point"):
        verify(negative_zero, bytes(64), b"m")


def test_s_not_below_l_is_refused():
    _secret, public_hex, message_hex, signature_hex = RFC8032_VECTORS["TEST 2"]
    signature = bytes.fromhex(signature_hex)
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + L).to_bytes(32, "little")
    with pytest.raises(SignatureError, match="S >= L"):
        verify(bytes.fromhex(public_hex), malleated, bytes.fromhex(message_hex))
    assert not _reference(bytes.fromhex(public_hex), malleated, bytes.fromhex(message_hex))


def test_a_forged_signature_raises():
    public = bytes.fromhex(RFC8032_VECTORS["TEST 1"][1])
    signature = bytes.fromhex(RFC8032_VECTORS["TEST 1"][3])
    with pytest.raises(SignatureError, match="does not verify"):
        verify(public, signature, b"not the empty message")


def test_signing_key_round_trip_through_keys_module():
    key = SigningKey.generate()
    signature = key.sign(b"directive")
    assert verify_signature(key.public_key, signature, b"directive")
    assert not verify_signature(key.public_key, signature, b"directivE")
    assert not verify_signature(key.public_key[:31], signature, b"directive")
