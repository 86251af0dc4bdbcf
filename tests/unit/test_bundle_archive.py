"""Bundle archives against the attacks on them; bundles are built by hand with tarfile."""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import shutil
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeops.bundle import inspect_bundle, unpack_bundle, verify_and_unpack, verify_bundle
from edgeops.errors import (
    ArchiveError,
    ConfigError,
    DigestMismatchError,
    EdgeopsError,
    RollbackAttackError,
    SignatureError,
    SizeLimitError,
    StateError,
    WrongTargetError,
)
from edgeops.trust import BundleRef, FileEntry
from edgeops.trust.testing import MemoryFleet

MODEL = b"\x00model-bytes\xff" * 100
LABELS = b"cat\ndog\n"


def _entry(path, data):
    return FileEntry(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def _info(name, size, kind=tarfile.REGTYPE, **extra):
    info = tarfile.TarInfo(name)
    info.size = size
    info.type = kind
    for key, value in extra.items():
        setattr(info, key, value)
    return info


def build(
    path: Path,
    fleet: MemoryFleet,
    *,
    files=None,
    listed=None,
    manifest_kwargs=None,
    members=None,
    fmt=tarfile.USTAR_FORMAT,
    envelope=None,
):
    """Write a bundle: ``listed`` goes into the manifest, ``members`` into the archive
    (a list of (TarInfo, bytes | None)); both default to ``files``."""
    files = {"model.onnx": MODEL, "labels.txt": LABELS} if files is None else files
    listed = files if listed is None else listed
    manifest = fleet.manifest(
        files=tuple(_entry(p, d) for p, d in listed.items()), **(manifest_kwargs or {})
    )
    envelope = fleet.sign(manifest) if envelope is None else envelope
    if members is None:
        members = [(_info(p, len(d)), d) for p, d in files.items()]
    with tarfile.open(path, "w", format=fmt) as tar:
        tar.addfile(_info("manifest.json", len(envelope)), io.BytesIO(envelope))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return manifest


@pytest.fixture
def fleet():
    return MemoryFleet()


@pytest.fixture
def bundle(tmp_path, fleet):
    path = tmp_path / "b.bundle"
    build(path, fleet)
    return path


def test_verify_unpack_inspect(tmp_path, fleet, bundle):
    verified = verify_bundle(bundle, fleet.trusted())
    assert verified.size == bundle.stat().st_size
    assert verified.sha256 == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert verified.ref().sha256 == verified.sha256
    written = unpack_bundle(bundle, tmp_path / "out", verified.manifest)
    assert written["model.onnx"].read_bytes() == MODEL
    assert written["labels.txt"].read_bytes() == LABELS
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["labels.txt", "model.onnx"]
    info = inspect_bundle(bundle)
    assert [m["path"] for m in info["members"]] == ["manifest.json", "model.onnx", "labels.txt"]
    assert info["signed_by"] == [fleet.keys["release"][0].keyid]
    assert info["sha256"] == verified.sha256


def test_expected_ref_matches(fleet, bundle):
    ref = verify_bundle(bundle, fleet.trusted()).ref()
    assert verify_bundle(bundle, fleet.trusted(), expected=ref).sha256 == ref.sha256


def test_nested_paths_unpack(tmp_path, fleet):
    path = tmp_path / "b.bundle"
    manifest = build(path, fleet, files={"model.onnx": MODEL, "extra/labels/en.txt": LABELS})
    written = unpack_bundle(path, tmp_path / "out", manifest)
    assert (tmp_path / "out/extra/labels/en.txt").read_bytes() == LABELS
    assert written["extra/labels/en.txt"] == (tmp_path / "out/extra/labels/en.txt").resolve()


# ------------------------------------------------------------------ tampering


def test_tampered_model_bytes(tmp_path, fleet):
    path = tmp_path / "b.bundle"
    evil = bytes([MODEL[0] ^ 1]) + MODEL[1:]
    build(path, fleet, listed={"model.onnx": MODEL}, files={"model.onnx": evil})
    with pytest.raises(DigestMismatchError, match=re.escape("expected 'model.onnx' to hash to")):
        verify_bundle(path, fleet.trusted())


def test_tampered_manifest_in_archive(tmp_path, fleet, bundle):
    data = bundle.read_bytes()
    # Same length, so the tar header stays valid and only the signed content changes.
    tampered = data.replace(b'"name":"detector"', b'"name":"detectoR"', 1)
    assert tampered != data
    bundle.write_bytes(tampered)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_bundle(bundle, fleet.trusted())


def test_manifest_signed_by_unknown_key(tmp_path, fleet):
    from edgeops.trust import SigningKey

    stranger = MemoryFleet()
    path = tmp_path / "b.bundle"
    manifest = fleet.manifest(files=(_entry("model.onnx", MODEL),))
    build(
        path,
        fleet,
        files={"model.onnx": MODEL},
        envelope=stranger.sign(manifest, [SigningKey.generate()]),
    )
    with pytest.raises(SignatureError, match="not trusted for release"):
        verify_bundle(path, fleet.trusted())


def test_lower_release_and_wrong_board(tmp_path, fleet):
    path = tmp_path / "b.bundle"
    build(path, fleet, manifest_kwargs={"release": 3, "boards": ("rpi4",)})
    with pytest.raises(RollbackAttackError, match="expected release counter > 5, got 3"):
        verify_bundle(path, fleet.trusted(), last_release_counter=5)
    with pytest.raises(WrongTargetError, match="board 'rpi3'"):
        verify_bundle(path, fleet.trusted(), board="rpi3")


def test_mix_and_match(fleet, bundle, tmp_path):
    other = tmp_path / "other.bundle"
    build(other, fleet, manifest_kwargs={"version": "2.0"})
    ref = verify_bundle(other, fleet.trusted()).ref()
    # Same size (same layout), different bytes: the directive's digest must catch it.
    assert ref.size == bundle.stat().st_size
    with pytest.raises(DigestMismatchError, match="not the bundle the directive names"):
        verify_bundle(bundle, fleet.trusted(), expected=ref)


# ------------------------------------------------------------------ sizes


def test_member_larger_than_declared(tmp_path, fleet):
    path = tmp_path / "b.bundle"
    big = MODEL + b"x" * 10_000
    build(path, fleet, listed={"model.onnx": MODEL}, files={"model.onnx": big})
    with pytest.raises(SizeLimitError, match=f"of {len(MODEL)} bytes, the archive declares"):
        verify_bundle(path, fleet.trusted())


def test_endless_data_past_directive_size(fleet, bundle):
    ref = verify_bundle(bundle, fleet.trusted()).ref()
    with bundle.open("ab") as out:
        out.write(b"\x00" * 1_000_000)
    with pytest.raises(SizeLimitError, match=f"at most {ref.size} bytes, got more"):
        verify_bundle(bundle, fleet.trusted(), expected=ref)


def test_bundle_past_max_size(fleet, bundle):
    with pytest.raises(SizeLimitError, match="at most 4096 bytes"):
        verify_bundle(bundle, fleet.trusted(), max_size=4096)


def test_unpack_past_size_cap(tmp_path, fleet, bundle):
    manifest = verify_bundle(bundle, fleet.trusted()).manifest
    with pytest.raises(SizeLimitError, match="unpacks to at most 100 bytes"):
        unpack_bundle(bundle, tmp_path / "out", manifest, max_unpacked=100)
    assert not (tmp_path / "out").exists()


def test_truncated(fleet, bundle):
    data = bundle.read_bytes()
    bundle.write_bytes(data[:1200])
    with pytest.raises(ArchiveError, match="truncated"):
        verify_bundle(bundle, fleet.trusted())


def test_manifest_too_large(tmp_path, fleet):
    path = tmp_path / "b.bundle"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_info("manifest.json", 2 * 1024 * 1024), io.BytesIO(b" " * 2 * 1024 * 1024))
    with pytest.raises(SizeLimitError, match=re.escape("manifest.json of at most")):
        verify_bundle(path, fleet.trusted())


# ------------------------------------------------------------------ archive shape


@pytest.mark.parametrize(
    ("info", "data", "message"),
    [
        (_info("/etc/passwd", 4), b"root", "expected a relative path"),
        (_info("../escape.txt", 4), b"evil", r"'\.\.'"),
        (_info("a/../../escape.txt", 4), b"evil", r"'\.\.'"),
        (_info("./model.onnx", 4), b"evil", r"'\.'"),
        (_info("link", 0, tarfile.SYMTYPE, linkname="/etc/passwd"), None, "symbolic link"),
        (_info("hard", 0, tarfile.LNKTYPE, linkname="model.onnx"), None, "hard link"),
        (_info("tty", 0, tarfile.CHRTYPE, devmajor=5, devminor=0), None, "character device"),
        (_info("disk", 0, tarfile.BLKTYPE, devmajor=8, devminor=0), None, "block device"),
        (_info("fifo", 0, tarfile.FIFOTYPE), None, "FIFO"),
        (_info("dir", 0, tarfile.DIRTYPE), None, "directory"),
    ],
)
def test_unsafe_members(tmp_path, fleet, info, data, message):
    path = tmp_path / "b.bundle"
    members = [(_info("model.onnx", len(MODEL)), MODEL), (info, data)]
    build(path, fleet, files={"model.onnx": MODEL}, members=members)
    with pytest.raises(ArchiveError, match=message):
        verify_bundle(path, fleet.trusted())
    with pytest.raises(ArchiveError, match=message):
        inspect_bundle(path)
    manifest = fleet.manifest(files=(_entry("model.onnx", MODEL),))
    with pytest.raises(ArchiveError, match=message):
        unpack_bundle(path, tmp_path / "out", manifest)
    assert list((tmp_path / "out").iterdir()) == []  # the model written first was removed


def test_pax_header_is_refused(tmp_path, fleet):
    path = tmp_path / "b.bundle"
    long_name = "x" * 300
    members = [(_info(long_name, 1), b"a")]
    build(path, fleet, files={"model.onnx": MODEL}, members=members, fmt=tarfile.PAX_FORMAT)
    with pytest.raises(ArchiveError, match="pax extended header"):
        verify_bundle(path, fleet.trusted())


def test_duplicate_member(tmp_path, fleet):
    path = tmp_path / "b.bundle"
    members = [(_info("model.onnx", len(MODEL)), MODEL)] * 2
    build(path, fleet, files={"model.onnx": MODEL}, members=members)
    with pytest.raises(ArchiveError, match="appears twice"):
        verify_bundle(path, fleet.trusted())


def test_member_not_in_manifest(tmp_path, fleet):
    path = tmp_path / "b.bundle"
    build(
        path,
        fleet,
        listed={"model.onnx": MODEL},
        files={"model.onnx": MODEL, "payload.sh": b"rm -rf /"},
    )
    with pytest.raises(ArchiveError, match=re.escape("'payload.sh' is not listed")):
        verify_bundle(path, fleet.trusted())


def test_partial_bundle(tmp_path, fleet):
    path = tmp_path / "b.bundle"
    build(
        path,
        fleet,
        listed={"model.onnx": MODEL, "labels.txt": LABELS},
        files={"model.onnx": MODEL},
    )
    with pytest.raises(ArchiveError, match=re.escape("partial bundle: missing labels.txt")):
        verify_bundle(path, fleet.trusted())


def test_manifest_must_be_first(tmp_path, fleet):
    path = tmp_path / "b.bundle"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        tar.addfile(_info("model.onnx", len(MODEL)), io.BytesIO(MODEL))
    with pytest.raises(ArchiveError, match=re.escape("expected manifest.json as the first member")):
        verify_bundle(path, fleet.trusted())


def test_bad_header_checksum(fleet, bundle):
    data = bytearray(bundle.read_bytes())
    data[0] ^= 0x01  # first byte of the manifest member's name
    bundle.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="checksum"):
        verify_bundle(bundle, fleet.trusted())


def test_unpack_needs_empty_destination(tmp_path, fleet, bundle):
    manifest = verify_bundle(bundle, fleet.trusted()).manifest
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.onnx").symlink_to("/etc/passwd")
    with pytest.raises(StateError, match="not empty"):
        unpack_bundle(bundle, tmp_path / "out", manifest)


def test_unpack_tampered_file_leaves_nothing(tmp_path, fleet):
    path = tmp_path / "b.bundle"
    manifest = build(
        path,
        fleet,
        listed={"model.onnx": MODEL, "labels.txt": LABELS},
        files={"model.onnx": MODEL, "labels.txt": LABELS.upper()},
    )
    with pytest.raises(DigestMismatchError, match=re.escape("'labels.txt'")):
        unpack_bundle(path, tmp_path / "out", manifest)
    assert list((tmp_path / "out").iterdir()) == []


# ------------------------------------------------------------------ arbitrary bytes

_FLEET = MemoryFleet()
_TRUSTED = _FLEET.trusted()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=4096), st.integers(min_value=0, max_value=3))
def test_arbitrary_bytes_raise_only_edgeops_errors(tmp_path, data, prefix_blocks):
    # Start some inputs with a valid header so the fuzzing reaches past the first check.
    valid = tmp_path / "valid.bundle"
    if not valid.exists():
        build(valid, _FLEET)
    path = tmp_path / "fuzz.bundle"
    path.write_bytes(valid.read_bytes()[: prefix_blocks * 512] + data)
    for call in (lambda: verify_bundle(path, _TRUSTED), lambda: inspect_bundle(path)):
        with contextlib.suppress(EdgeopsError):
            call()


def _with_byte_set(valid: Path, position: int, value: int) -> tuple[Path, Path, int]:
    """``valid`` (built once per test), and a copy beside it with the byte at ``position``
    (modulo its size) set to ``value``; returns both paths and the byte it replaced."""
    if not valid.exists():
        build(valid, _FLEET)
    raw = bytearray(valid.read_bytes())
    original = raw[position % len(raw)]
    raw[position % len(raw)] = value
    path = valid.parent / "flip.bundle"
    path.write_bytes(bytes(raw))
    return valid, path, original


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(min_value=0), st.integers(0, 255))
def test_flipped_byte_in_valid_bundle(tmp_path, position, value):
    valid, path, original = _with_byte_set(tmp_path / "valid2.bundle", position, value)
    ref = BundleRef(
        sha256=hashlib.sha256(valid.read_bytes()).hexdigest(),
        size=valid.stat().st_size,
        name="detector",
        version="1.0.0",
        release=1,
    )
    try:
        verify_bundle(path, _TRUSTED, expected=ref)
    except EdgeopsError:
        assert original != value
    else:
        assert original == value  # any change at all is caught by the whole-file digest


# ------------------------------------------------------------------ one pass: verify_and_unpack


def test_verify_and_unpack_matches_verify_then_unpack(tmp_path, fleet):
    path = tmp_path / "b.bundle"
    build(path, fleet, files={"model.onnx": MODEL, "extra/labels/en.txt": LABELS})
    verified = verify_bundle(path, fleet.trusted())
    separate = unpack_bundle(path, tmp_path / "two-pass", verified.manifest)
    for digest_checked in (False, True):
        dest = tmp_path / f"one-pass-{digest_checked}"
        one = verify_and_unpack(
            path, dest, fleet.trusted(), expected=verified.ref(), digest_checked=digest_checked
        )
        assert one.verified == verified
        assert sorted(one.files) == sorted(separate)
        for name, written in one.files.items():
            assert written == (dest / name).resolve()
            assert written.read_bytes() == separate[name].read_bytes()
        # Only the members: no temporary file is left behind.
        assert sorted(str(f.relative_to(dest)) for f in dest.rglob("*") if f.is_file()) == [
            "extra/labels/en.txt",
            "model.onnx",
        ]


def _attack_tampered_model(tmp_path, fleet, bundle):
    evil = bytes([MODEL[0] ^ 1]) + MODEL[1:]
    build(bundle, fleet, listed={"model.onnx": MODEL}, files={"model.onnx": evil})
    return {}


def _attack_tampered_manifest(tmp_path, fleet, bundle):
    build(bundle, fleet)
    bundle.write_bytes(bundle.read_bytes().replace(b'"name":"detector"', b'"name":"detectoR"'))
    return {}


def _attack_old_release(tmp_path, fleet, bundle):
    build(bundle, fleet, manifest_kwargs={"release": 3})
    return {"last_release_counter": 5}


def _attack_wrong_board(tmp_path, fleet, bundle):
    build(bundle, fleet, manifest_kwargs={"boards": ("rpi4",)})
    return {"board": "rpi3"}


def _attack_mix_and_match(tmp_path, fleet, bundle):
    other = tmp_path / "other.bundle"
    build(other, fleet, manifest_kwargs={"version": "2.0"})
    build(bundle, fleet)
    return {"expected": verify_bundle(other, fleet.trusted()).ref()}


def _attack_endless_data(tmp_path, fleet, bundle):
    build(bundle, fleet)
    ref = verify_bundle(bundle, fleet.trusted()).ref()
    with bundle.open("ab") as out:
        out.write(b"\x00" * 100_000)
    return {"expected": ref}


def _attack_member_larger(tmp_path, fleet, bundle):
    big = MODEL + b"x" * 10_000
    build(bundle, fleet, listed={"model.onnx": MODEL}, files={"model.onnx": big})
    return {}


def _attack_last_member_tampered(tmp_path, fleet, bundle):
    build(
        bundle,
        fleet,
        listed={"model.onnx": MODEL, "labels.txt": LABELS},
        files={"model.onnx": MODEL, "labels.txt": LABELS.upper()},
    )
    return {}


def _attack_partial(tmp_path, fleet, bundle):
    build(
        bundle,
        fleet,
        listed={"model.onnx": MODEL, "labels.txt": LABELS},
        files={"model.onnx": MODEL},
    )
    return {}


def _attack_unlisted_member(tmp_path, fleet, bundle):
    build(
        bundle,
        fleet,
        listed={"model.onnx": MODEL},
        files={"model.onnx": MODEL, "payload.sh": b"rm -rf /"},
    )
    return {}


def _attack_path_escape(tmp_path, fleet, bundle):
    members = [(_info("model.onnx", len(MODEL)), MODEL), (_info("../escape.txt", 4), b"evil")]
    build(bundle, fleet, files={"model.onnx": MODEL}, members=members)
    return {}


def _attack_truncated(tmp_path, fleet, bundle):
    build(bundle, fleet)
    bundle.write_bytes(bundle.read_bytes()[:1200])
    return {}


def _attack_trailing_garbage_same_size(tmp_path, fleet, bundle):
    # The directive's size and digest are right for the genuine file; the last bytes (past
    # every member) are changed: only the whole-file digest can tell.
    build(bundle, fleet)
    ref = verify_bundle(bundle, fleet.trusted()).ref()
    data = bytearray(bundle.read_bytes())
    data[-1] ^= 0xFF
    bundle.write_bytes(bytes(data))
    return {"expected": ref}


@pytest.mark.parametrize(
    ("attack", "error"),
    [
        (_attack_tampered_model, DigestMismatchError),
        (_attack_tampered_manifest, SignatureError),
        (_attack_old_release, RollbackAttackError),
        (_attack_wrong_board, WrongTargetError),
        (_attack_mix_and_match, DigestMismatchError),
        (_attack_endless_data, SizeLimitError),
        (_attack_member_larger, SizeLimitError),
        (_attack_last_member_tampered, DigestMismatchError),
        (_attack_partial, ArchiveError),
        (_attack_unlisted_member, ArchiveError),
        (_attack_path_escape, ArchiveError),
        (_attack_truncated, ArchiveError),
        (_attack_trailing_garbage_same_size, DigestMismatchError),
    ],
)
def test_verify_and_unpack_raises_what_verify_raises_and_keeps_nothing(
    tmp_path, fleet, attack, error
):
    bundle = tmp_path / "b.bundle"
    options = attack(tmp_path, fleet, bundle)
    with pytest.raises(error) as from_verify:
        verify_bundle(bundle, fleet.trusted(), **options)
    dest = tmp_path / "staging" / "files"
    with pytest.raises(error) as from_one_pass:
        verify_and_unpack(bundle, dest, fleet.trusted(), **options)
    assert str(from_one_pass.value) == str(from_verify.value)
    assert not dest.exists()
    assert not (tmp_path / "escape.txt").exists()


def test_verify_and_unpack_writes_nothing_before_the_manifest_verifies(tmp_path, fleet):
    bundle = tmp_path / "b.bundle"
    _attack_tampered_manifest(tmp_path, fleet, bundle)
    with pytest.raises(SignatureError):
        verify_and_unpack(bundle, tmp_path / "out", fleet.trusted())
    assert not (tmp_path / "out").exists()


def test_verify_and_unpack_into_an_existing_folder_empties_it_on_failure(tmp_path, fleet):
    bundle = tmp_path / "b.bundle"
    _attack_last_member_tampered(tmp_path, fleet, bundle)
    (tmp_path / "out").mkdir()
    with pytest.raises(DigestMismatchError, match=re.escape("'labels.txt'")):
        verify_and_unpack(bundle, tmp_path / "out", fleet.trusted())
    assert list((tmp_path / "out").iterdir()) == []


def test_verify_and_unpack_size_caps(tmp_path, fleet, bundle):
    with pytest.raises(SizeLimitError, match="unpacks to at most 100 bytes"):
        verify_and_unpack(bundle, tmp_path / "out", fleet.trusted(), max_unpacked=100)
    assert not (tmp_path / "out").exists()
    with pytest.raises(SizeLimitError, match="at most 4096 bytes"):
        verify_and_unpack(bundle, tmp_path / "out", fleet.trusted(), max_size=4096)
    assert not (tmp_path / "out").exists()


def test_digest_checked_still_compares_the_size(tmp_path, fleet, bundle):
    ref = verify_bundle(bundle, fleet.trusted()).ref()
    with pytest.raises(ConfigError, match="expected bundle reference"):
        verify_and_unpack(bundle, tmp_path / "out", fleet.trusted(), digest_checked=True)
    bigger = BundleRef(
        sha256=ref.sha256, size=ref.size + 512, name=ref.name, version=ref.version, release=1
    )
    with pytest.raises(DigestMismatchError, match=f"expected a bundle of {ref.size + 512} bytes"):
        verify_and_unpack(
            bundle, tmp_path / "out", fleet.trusted(), expected=bigger, digest_checked=True
        )
    assert not (tmp_path / "out").exists()


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(min_value=0), st.integers(0, 255))
def test_flipped_byte_one_pass(tmp_path, position, value):
    valid, path, original = _with_byte_set(tmp_path / "valid3.bundle", position, value)
    ref = verify_bundle(valid, _TRUSTED).ref()
    dest = tmp_path / "out"
    shutil.rmtree(dest, ignore_errors=True)
    try:
        verify_and_unpack(path, dest, _TRUSTED, expected=ref)
    except EdgeopsError:
        assert original != value
        assert not dest.exists()
    else:
        assert original == value
        assert (dest / "model.onnx").read_bytes() == MODEL
