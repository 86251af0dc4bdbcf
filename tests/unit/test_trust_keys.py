"""Keys and canonical JSON."""

from __future__ import annotations

import hashlib
import math
import stat

import pytest

from edgeops.errors import ConfigError, InputError, SizeLimitError
from edgeops.trust import SigningKey, canonical_json, parse_json
from edgeops.trust.keys import verify_signature


def test_keyid_is_sha256_of_raw_public_key():
    key = SigningKey.generate()
    assert len(key.public_key) == 32
    assert key.keyid == hashlib.sha256(key.public_key).hexdigest()


def test_signature_verifies_and_fails_on_other_data():
    key = SigningKey.generate()
    sig = key.sign(b"hello")
    assert len(sig) == 64
    assert verify_signature(key.public_key, sig, b"hello")
    assert not verify_signature(key.public_key, sig, b"hellO")
    assert not verify_signature(SigningKey.generate().public_key, sig, b"hello")


def test_save_load_plain_has_mode_0600(tmp_path):
    key = SigningKey.generate()
    path = tmp_path / "k.pem"
    key.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"ENCRYPTED" not in path.read_bytes()
    assert SigningKey.load(path).keyid == key.keyid


def test_save_load_encrypted(tmp_path):
    key = SigningKey.generate()
    path = tmp_path / "k.pem"
    key.save(path, passphrase="s3cret")
    assert b"ENCRYPTED" in path.read_bytes()
    assert SigningKey.load(path, passphrase="s3cret").keyid == key.keyid
    with pytest.raises(ConfigError, match="EDGEOPS_KEY_PASSPHRASE"):
        SigningKey.load(path)
    with pytest.raises(ConfigError, match="wrong passphrase"):
        SigningKey.load(path, passphrase="nope")


def test_load_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read key"):
        SigningKey.load(tmp_path / "absent.pem")


def test_canonical_json_rules():
    assert canonical_json({"b": 1, "a": [True, None, 0.5, "é"]}) == (
        '{"a":[true,null,0.5,"é"],"b":1}'.encode()
    )
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(InputError, match="non-finite"):
            canonical_json({"x": bad})
    with pytest.raises(InputError, match="keys must be strings"):
        canonical_json({1: 2})
    with pytest.raises(InputError, match="cannot encode"):
        canonical_json({"x": b"bytes"})


def test_canonical_json_round_trips_floats():
    value = {"scale": 0.003921568859368563, "tiny": 1e-30, "n": -7}
    assert canonical_json(parse_json(canonical_json(value), max_size=1000, what="x")) == (
        canonical_json(value)
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a":1,"a":2}', "duplicate object key"),
        (b'{"a":NaN}', "non-finite"),
        (b'{"a":Infinity}', "non-finite"),
        (b'{"a":1e400}', "non-finite"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b"[" * 100000 + b"]" * 100000, "nests too deeply|deeper than 64"),
    ],
)
def test_parse_json_rejects(data, message):
    with pytest.raises(InputError, match=message):
        parse_json(data, max_size=10**6, what="x")


def test_parse_json_size_cap():
    with pytest.raises(SizeLimitError, match="at most 10 bytes, got 11"):
        parse_json(b'"123456789"', max_size=10, what="x")
