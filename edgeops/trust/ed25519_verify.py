"""Ed25519 signature verification (RFC 8032 section 5.1.7) in pure Python.

The agent verifies a few signatures per update (root, manifest, directive). Doing that with
``cryptography`` maps its Rust extension and a second, statically linked OpenSSL into every
agent process, about 10 MB of RSS on a 1 GB board whose TLS already runs on the system
OpenSSL through :mod:`ssl`; ``docs/decisions/0006-agent-signature-verification.md`` has the
figures. Signing stays on ``cryptography`` (:class:`edgeops.trust.keys.SigningKey`).

Verification only: every input (public key, signature, message) is public, so nothing here
needs to run in constant time, and nothing here tries to.

Checks, in the order of RFC 8032 section 5.1.7:

1. The public key ``A`` and the signature's ``R`` are decoded strictly (section 5.1.3): a
   ``y`` coordinate that is not below p (a non-canonical encoding), a point not on the curve,
   and ``x = 0`` with the sign bit set are refused.
2. ``S`` must be below the group order ``L``; ``S >= L`` is refused (signature malleability).
3. ``k = SHA-512(R || A || M)`` mod ``L``, and the *cofactorless* equation
   ``[S]B = R + [k]A`` must hold. Section 5.1.7 names the cofactored ``[8][S]B = [8]R +
   [8][k]A`` and says checking the cofactorless one instead is sufficient. We use the
   cofactorless one because it is what OpenSSL (and so ``cryptography``, which signs our
   metadata and verified it before) checks: the two verifiers then accept exactly the same
   signatures from honest signers, and a signature that only the cofactored check would
   accept (possible only with a small-order component, never from a real signer) is refused.
   It is computed as ``[S]B + [k](-A)`` and compared with ``R`` in projective coordinates.

The deliberate differences from OpenSSL: it reduces a public key's ``y`` modulo p without
complaint and takes ``x = 0`` with the sign bit set, whereas this module refuses those
non-canonical encodings (section 5.1.3 says to fail). Roots only ever carry keys that
``cryptography`` produced, which are canonical. The faster paths in
:func:`edgeops.trust.keys.verify_signature` keep these key checks in Python
(:func:`check_key_and_scalar`) and so accept exactly what this module accepts.

Points are kept in extended homogeneous coordinates ``(X:Y:Z:T)`` with ``x = X/Z``,
``y = Y/Z``, ``xy = T/Z`` (section 5.1.4), so additions and doublings need no inversion;
the two scalar multiplications share their doublings (Straus's method, 4-bit windows).

Errors: :class:`edgeops.errors.SignatureError` for a malformed key or signature and for a
signature that does not verify; the message says which.
"""

from __future__ import annotations

import functools
import hashlib

from edgeops.errors import SignatureError

#: The field prime p = 2^255 - 19.
P = 2**255 - 19
#: The order of the base point B (section 5.1).
L = 2**252 + 27742317777372353535851937790883648493
#: The curve constant d = -121665/121666 (section 5.1).
D = -121665 * pow(121666, P - 2, P) % P
_D2 = 2 * D % P
#: A square root of -1 modulo p (section 5.1.1).
_SQRT_M1 = pow(2, (P - 1) // 4, P)

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64

# Extended homogeneous coordinates (X, Y, Z, T).
_Point = tuple[int, int, int, int]
_IDENTITY: _Point = (0, 1, 1, 0)
_WINDOW_BITS = 4
_WINDOWS = 64  # 64 windows of 4 bits cover every scalar below 2^256 (S < L, k < L)


def _add(p1: _Point, p2: _Point) -> _Point:
    """Point addition, section 5.1.4 (complete: also right for doubling and the identity)."""
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * _D2 * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _double(p1: _Point) -> _Point:
    """Point doubling, section 5.1.4."""
    x1, y1, z1, _ = p1
    a = x1 * x1 % P
    b = y1 * y1 % P
    c = 2 * z1 * z1 % P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1)
    g = a - b
    f = c + g
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def _negate(p1: _Point) -> _Point:
    x1, y1, z1, t1 = p1
    return (-x1 % P, y1, z1, -t1 % P)


def _equal(p1: _Point, p2: _Point) -> bool:
    """Projective equality: x1/z1 == x2/z2 and y1/z1 == y2/z2."""
    x1, y1, z1, _ = p1
    x2, y2, z2, _ = p2
    return (x1 * z2 - x2 * z1) % P == 0 and (y1 * z2 - y2 * z1) % P == 0


def _multiples(point: _Point) -> list[_Point]:
    """``[0]point .. [15]point``, the window table."""
    table = [_IDENTITY, point]
    for _ in range(2, 1 << _WINDOW_BITS):
        table.append(_add(table[-1], point))
    return table


def _decode_point(encoded: bytes) -> _Point | None:
    """Section 5.1.3, strictly: ``None`` for a non-canonical ``y``, a point off the curve, or
    ``x = 0`` with the sign bit set."""
    y = int.from_bytes(encoded, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        return None
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    # x = (u/v)^((p+3)/8), computed as u v^3 (u v^7)^((p-5)/8) to need no inversion.
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    vxx = v * x * x % P
    if vxx == u:
        pass
    elif vxx == -u % P:
        x = x * _SQRT_M1 % P
    else:
        return None  # u/v is not a square: no point with this y
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


_B_Y = 4 * pow(5, P - 2, P) % P
_B = _decode_point(_B_Y.to_bytes(32, "little"))
assert _B is not None  # B's x is even ("positive"), so the encoding is y with sign bit 0
_B_TABLE = _multiples(_B)


def _straus(s: int, b_table: list[_Point], k: int, a_table: list[_Point]) -> _Point:
    """``[s]B + [k]A`` from the window tables of ``B`` and ``A``, sharing the doublings."""
    mask = (1 << _WINDOW_BITS) - 1
    acc = _IDENTITY
    started = False
    for shift in range((_WINDOWS - 1) * _WINDOW_BITS, -1, -_WINDOW_BITS):
        if started:
            for _ in range(_WINDOW_BITS):
                acc = _double(acc)
        s_digit = (s >> shift) & mask
        k_digit = (k >> shift) & mask
        if s_digit:
            acc = _add(acc, b_table[s_digit])
            started = True
        if k_digit:
            acc = _add(acc, a_table[k_digit])
            started = True
    return acc


# A device sees a handful of keys (root, targets, directive roles), each for many signatures:
# the decoding's modular square root is done once per key, not once per signature.
@functools.lru_cache(maxsize=16)
def _decode_public_key(public_key: bytes) -> _Point | None:
    return _decode_point(public_key)


def check_key_and_scalar(public_key: bytes, signature: bytes) -> tuple[_Point, int]:
    """The checks OpenSSL's verifier does not make itself: lengths, the key ``A`` decoded
    strictly (OpenSSL reduces a non-canonical ``y`` mod p), and ``S < L`` (OpenSSL checks it
    too, since 1.1.1; kept because it costs one comparison). Returns ``A`` and ``S``.

    The signature's ``R`` is not decoded: OpenSSL compares the canonical encoding of
    ``[S]B - [k]A`` with ``R`` byte for byte, which refuses every ``R`` that strict decoding
    would. Raises :class:`SignatureError` with the reason.
    """
    public_key, signature = bytes(public_key), bytes(signature)
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise SignatureError(
            f"expected a {PUBLIC_KEY_BYTES}-byte Ed25519 public key, got {len(public_key)} bytes"
        )
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError(
            f"expected a {SIGNATURE_BYTES}-byte Ed25519 signature, got {len(signature)} bytes"
        )
    a_point = _decode_public_key(public_key)
    if a_point is None:
        raise SignatureError("expected an Ed25519 public key, got bytes that encode no point")
    s = int.from_bytes(signature[32:], "little")
    if s >= L:
        raise SignatureError("expected the signature's S below the group order L, got S >= L")
    return a_point, s


def check_encoding(public_key: bytes, signature: bytes) -> tuple[_Point, _Point, int]:
    """The strict decoding half of :func:`verify`: the key ``A``, the signature's ``R`` and ``S``.

    Raises :class:`SignatureError` for wrong lengths, a key or ``R`` that is not a canonical
    curve point, or ``S >= L``.
    """
    a_point, s = check_key_and_scalar(public_key, signature)
    r_point = _decode_point(bytes(signature[:32]))
    if r_point is None:
        raise SignatureError("expected a curve point as the signature's R, got none")
    return a_point, r_point, s


def verify(public_key: bytes, signature: bytes, message: bytes) -> None:
    """Check an Ed25519 ``signature`` of ``message`` by the raw 32-byte ``public_key``.

    Returns ``None`` when the signature is valid; raises :class:`SignatureError` otherwise
    (wrong lengths, a key or ``R`` that is not a canonical curve point, ``S >= L``, or a
    signature that does not verify).
    """
    a_point, r_point, s = check_encoding(public_key, signature)
    r_bytes = bytes(signature[:32])
    k = int.from_bytes(hashlib.sha512(r_bytes + bytes(public_key) + message).digest(), "little") % L
    # [S]B + [k](-A) == R  <=>  [S]B == R + [k]A (the cofactorless equation, section 5.1.7)
    check = _straus(s, _B_TABLE, k, _multiples(_negate(a_point)))
    if not _equal(check, r_point):
        raise SignatureError("the Ed25519 signature does not verify")


def is_valid(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Whether :func:`verify` accepts the signature (malformed input counts as invalid)."""
    try:
        verify(public_key, signature, message)
    except SignatureError:
        return False
    return True


__all__ = ["PUBLIC_KEY_BYTES", "SIGNATURE_BYTES", "L", "P", "is_valid", "verify"]
