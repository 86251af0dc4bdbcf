"""The verification core against the attacks it exists to defeat; each expects one error type."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from edgeops.errors import (
    DigestMismatchError,
    ExpiredError,
    RollbackAttackError,
    SignatureError,
    SizeLimitError,
    ThresholdError,
    VerificationError,
    WrongTargetError,
)
from edgeops.trust import (
    BundleRef,
    SigningKey,
    TrustedState,
    check_bundle_ref,
    envelope_bytes,
    sign_envelope,
    sign_metadata,
)
from edgeops.trust.testing import MemoryFleet
from edgeops.trust.verify import MAX_DIRECTIVE_BYTES


def raises_exactly(error_type, match=None):
    """pytest.raises that also refuses a subclass (ThresholdError is a SignatureError)."""

    class _Exact:
        def __enter__(self):
            self._ctx = pytest.raises(error_type, match=match)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            result = self._ctx.__exit__(*exc)
            assert type(self.info.value) is error_type, repr(self.info.value)
            return result

    return _Exact()


@pytest.fixture
def fleet():
    return MemoryFleet()


# ----------------------------------------------------------------- happy paths


def test_manifest_and_directive_verify(fleet):
    trusted = fleet.trusted()
    manifest = fleet.manifest(release=3, boards=("rpi4",))
    got = trusted.verify_manifest(fleet.sign(manifest), board="rpi4", last_release_counter=2)
    assert got == manifest
    directive = fleet.directive(sequence=5)
    got_d = trusted.verify_directive(fleet.sign(directive), device_id="dev-1", last_sequence=4)
    assert got_d == directive
    assert trusted.root.fleet == "test-fleet"


def test_group_directive_verifies_for_member(fleet):
    directive = fleet.directive(group="canary")
    got = fleet.trusted().verify_directive(
        fleet.sign(directive), device_id="dev-9", groups=["canary"], last_sequence=None
    )
    assert got.target.kind == "group"


def test_threshold_two_of_three_passes(fleet):
    fleet = MemoryFleet(keys_per_role={"release": 3}, thresholds={"release": 2})
    manifest = fleet.manifest()
    data = fleet.sign(manifest, fleet.keys["release"][:2])
    assert fleet.trusted().verify_manifest(data).name == "detector"


# ----------------------------------------------------------------- signatures


def test_unknown_key(fleet):
    stranger = SigningKey.generate()
    with raises_exactly(SignatureError, match="not trusted for release"):
        fleet.trusted().verify_manifest(fleet.sign(fleet.manifest(), [stranger]))


def test_deploy_key_cannot_sign_manifest(fleet):
    with raises_exactly(SignatureError, match="not trusted for release"):
        fleet.trusted().verify_manifest(fleet.sign(fleet.manifest(), fleet.keys["deploy"]))


def test_threshold_not_met():
    fleet = MemoryFleet(keys_per_role={"release": 3}, thresholds={"release": 2})
    data = fleet.sign(fleet.manifest(), fleet.keys["release"][:1])
    with raises_exactly(ThresholdError, match="expected 2 distinct release signature"):
        fleet.trusted().verify_manifest(data)


def test_one_key_counted_twice():
    fleet = MemoryFleet(keys_per_role={"release": 2}, thresholds={"release": 2})
    key = fleet.keys["release"][0]
    envelope = sign_envelope(fleet.manifest().to_signed(), [key, key])
    assert len(envelope["signatures"]) == 2
    with raises_exactly(ThresholdError, match="expected 2 distinct release signature.*got 1"):
        fleet.trusted().verify_manifest(envelope_bytes(envelope))


def test_tampered_manifest(fleet):
    envelope = json.loads(fleet.sign(fleet.manifest(release=2)))
    envelope["signed"]["release"] = 99
    with raises_exactly(SignatureError, match="does not verify"):
        fleet.trusted().verify_manifest(json.dumps(envelope).encode())


def test_signature_garbage(fleet):
    envelope = json.loads(fleet.sign(fleet.manifest()))
    envelope["signatures"][0]["sig"] = "zz"
    with raises_exactly(SignatureError, match="not hex"):
        fleet.trusted().verify_manifest(json.dumps(envelope).encode())


def test_reformatted_envelope_still_verifies(fleet):
    # The signature covers canonical JSON of "signed", not the transport formatting.
    envelope = json.loads(fleet.sign(fleet.manifest()))
    pretty = json.dumps(envelope, indent=4).encode()
    assert fleet.trusted().verify_manifest(pretty).release == 1


# ----------------------------------------------------------------- rollback, freeze, targets


def test_lower_release_counter(fleet):
    data = fleet.sign(fleet.manifest(release=5))
    with raises_exactly(RollbackAttackError, match="expected release counter > 7, got 5"):
        fleet.trusted().verify_manifest(data, last_release_counter=7)
    with raises_exactly(RollbackAttackError, match="expected release counter > 5, got 5"):
        fleet.trusted().verify_manifest(data, last_release_counter=5)


def test_bundle_for_another_board(fleet):
    data = fleet.sign(fleet.manifest(boards=("jetson-orin-nano",)))
    with raises_exactly(WrongTargetError, match="expected a bundle for board 'rpi4'"):
        fleet.trusted().verify_manifest(data, board="rpi4")


def test_any_board_when_boards_empty(fleet):
    assert fleet.trusted().verify_manifest(fleet.sign(fleet.manifest()), board="rpi3")


def test_replayed_directive(fleet):
    data = fleet.sign(fleet.directive(sequence=4))
    with raises_exactly(RollbackAttackError, match="expected directive sequence > 4.*got 4"):
        fleet.trusted().verify_directive(data, device_id="dev-1", last_sequence=4)


def test_older_directive(fleet):
    data = fleet.sign(fleet.directive(sequence=2))
    with raises_exactly(RollbackAttackError, match="expected directive sequence > 4.*got 2"):
        fleet.trusted().verify_directive(data, device_id="dev-1", last_sequence=4)


def test_directive_for_another_device(fleet):
    data = fleet.sign(fleet.directive(device="dev-2"))
    with raises_exactly(WrongTargetError, match="expected a directive for device 'dev-1'"):
        fleet.trusted().verify_directive(data, device_id="dev-1")


def test_directive_for_a_group_not_joined(fleet):
    data = fleet.sign(fleet.directive(group="canary"))
    with raises_exactly(WrongTargetError, match="got one for group 'canary'"):
        fleet.trusted().verify_directive(data, device_id="dev-1", groups=["wave-1"])


def test_directive_for_another_fleet(fleet):
    data = fleet.sign(fleet.directive(fleet="other-fleet"))
    with raises_exactly(WrongTargetError, match="fleet 'test-fleet'"):
        fleet.trusted().verify_directive(data, device_id="dev-1")


def test_expired_directive(fleet):
    data = fleet.sign(fleet.directive(expires=fleet.now + timedelta(hours=1)))
    later = fleet.now + timedelta(hours=2)
    with raises_exactly(ExpiredError, match="expired at"):
        fleet.trusted().verify_directive(data, device_id="dev-1", now=later)


def test_directive_from_the_future(fleet):
    data = fleet.sign(fleet.directive(issued=fleet.now + timedelta(hours=1)))
    with raises_exactly(VerificationError, match="issued in the future"):
        fleet.trusted().verify_directive(data, device_id="dev-1")


def test_expired_root():
    fleet = MemoryFleet(root_lifetime=timedelta(days=1))
    trusted = fleet.trusted(now=fleet.now + timedelta(days=2))
    with raises_exactly(ExpiredError, match="root version 1 expired"):
        trusted.verify_manifest(fleet.sign(fleet.manifest()))
    with raises_exactly(ExpiredError, match="root version 1 expired"):
        trusted.verify_directive(fleet.sign(fleet.directive()), device_id="dev-1")


def test_directive_too_large(fleet):
    data = b" " * (MAX_DIRECTIVE_BYTES + 1)
    with raises_exactly(SizeLimitError, match=f"at most {MAX_DIRECTIVE_BYTES} bytes"):
        fleet.trusted().verify_directive(data, device_id="dev-1")


def test_wrong_type_is_refused(fleet):
    # A genuine directive must not pass as a manifest (and the reverse).
    with raises_exactly(VerificationError, match="expected signed metadata of type 'manifest'"):
        fleet.trusted().verify_manifest(fleet.sign(fleet.directive()))


# ----------------------------------------------------------------- mix-and-match


def test_mix_and_match_digest():
    ref = BundleRef(sha256="ab" * 32, size=100, name="m", version="1", release=1)
    check_bundle_ref(ref, sha256="ab" * 32, size=100)
    with raises_exactly(DigestMismatchError, match="not the bundle the directive names"):
        check_bundle_ref(ref, sha256="cd" * 32, size=100)
    with raises_exactly(SizeLimitError, match="expected a bundle of 100 bytes, got more"):
        check_bundle_ref(ref, sha256="ab" * 32, size=101)


# ----------------------------------------------------------------- root rotation


def test_rotation_of_release_key(fleet):
    old_release = fleet.keys["release"]
    fleet.rotate("release")
    trusted = fleet.trusted()
    new_root = trusted.update_root(fleet.history[1])
    assert new_root.version == 2
    assert trusted.verify_manifest(fleet.sign(fleet.manifest())).release == 1
    with raises_exactly(SignatureError, match="not trusted for release"):
        trusted.verify_manifest(fleet.sign(fleet.manifest(), old_release))


def test_rotation_of_root_key_chain(fleet):
    fleet.rotate("root")
    fleet.rotate("root")
    trusted = fleet.trusted()
    assert trusted.update_root_chain(fleet.history[1:]).version == 3
    assert trusted.root_bytes == fleet.history[2]


def test_rotation_signed_only_by_new_keys(fleet):
    fleet.rotate("root", sign_old=False)
    with raises_exactly(SignatureError, match="not trusted for root"):
        fleet.trusted().update_root(fleet.history[1])


def test_rotation_signed_only_by_old_keys(fleet):
    fleet.rotate("root", sign_new=False)
    with raises_exactly(SignatureError, match="its own root keys"):
        fleet.trusted().update_root(fleet.history[1])


def test_rotation_replayed_or_skipped(fleet):
    fleet.rotate("deploy")
    fleet.rotate("deploy")
    trusted = fleet.trusted()
    with raises_exactly(RollbackAttackError, match="expected root version 2, got 1"):
        trusted.update_root(fleet.history[0])
    with raises_exactly(VerificationError, match="expected root version 2 .*got 3"):
        trusted.update_root(fleet.history[2])


def test_rotation_threshold_of_old_root():
    fleet = MemoryFleet(keys_per_role={"root": 3}, thresholds={"root": 2})
    old_keys = fleet.keys["root"]
    new = fleet.rotate("root", count=3, threshold=2, sign_old=False)
    # Re-sign with one old key + all new keys: the old threshold (2) is not met.
    signed = sign_metadata(fleet.root, [old_keys[0], *fleet.keys["root"]])
    assert new != signed
    with raises_exactly(ThresholdError, match="expected 2 distinct root"):
        fleet.trusted().update_root(signed)


def test_initial_root_must_be_self_signed(fleet):
    stranger = SigningKey.generate()
    with raises_exactly(SignatureError):
        TrustedState(sign_metadata(fleet.root, [stranger]), now=fleet.now)


def test_intermediate_expired_root_can_be_walked():
    fleet = MemoryFleet(root_lifetime=timedelta(days=1))
    fleet.rotate("release")  # version 2 expires a year from fleet.now
    trusted = fleet.trusted(now=fleet.now + timedelta(days=30))
    trusted.update_root(fleet.history[1])
    assert trusted.verify_manifest(fleet.sign(fleet.manifest())).name == "detector"
