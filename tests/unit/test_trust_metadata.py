"""Schema rules of the signed objects, checked on the values themselves."""

from __future__ import annotations

import copy
import re

import pytest

from edgeops.errors import SignatureError, VerificationError
from edgeops.trust import Directive, Manifest, RoleKeys, Root, SigningKey, create_directive
from edgeops.trust.metadata import check_member_path, format_time, parse_time
from edgeops.trust.testing import MemoryFleet

FLEET = MemoryFleet()


def test_round_trips():
    root = FLEET.root
    assert Root.from_signed(root.to_signed()) == root
    manifest = FLEET.manifest(boards=("rpi4",))
    assert Manifest.from_signed(manifest.to_signed()) == manifest
    directive = FLEET.directive(group="canary")
    assert Directive.from_signed(directive.to_signed()) == directive


def test_root_keyid_must_match_public_key():
    signed = FLEET.root.to_signed()
    keyid, _entry = next(iter(signed["keys"].items()))
    signed["keys"][keyid] = {"keytype": "ed25519", "public": SigningKey.generate().public_key.hex()}
    with pytest.raises(SignatureError, match="expected key id"):
        Root.from_signed(signed)


def test_threshold_bounds():
    with pytest.raises(VerificationError, match="threshold <= 1"):
        RoleKeys(keyids=("a",), threshold=2)
    with pytest.raises(VerificationError, match="threshold >= 1"):
        RoleKeys(keyids=("a",), threshold=0)
    with pytest.raises(VerificationError, match="same key id twice"):
        RoleKeys(keyids=("a", "a"), threshold=1)


def test_root_roles_are_exactly_three():
    signed = FLEET.root.to_signed()
    signed["roles"]["timestamp"] = copy.deepcopy(signed["roles"]["root"])
    with pytest.raises(VerificationError, match="unknown roles timestamp"):
        Root.from_signed(signed)
    del signed["roles"]["timestamp"], signed["roles"]["deploy"]
    with pytest.raises(VerificationError, match="missing field 'deploy'"):
        Root.from_signed(signed)


def test_spec_version_and_type():
    signed = FLEET.manifest().to_signed()
    signed["spec_version"] = "2"
    with pytest.raises(VerificationError, match="expected spec_version '1', got '2'"):
        Manifest.from_signed(signed)


def test_bool_is_not_an_integer():
    signed = FLEET.manifest().to_signed()
    signed["release"] = True
    with pytest.raises(
        VerificationError, match=re.escape("manifest.release: expected an integer, got bool")
    ):
        Manifest.from_signed(signed)


def test_manifest_model_must_be_listed():
    signed = FLEET.manifest().to_signed()
    signed["model"] = "other.onnx"
    with pytest.raises(VerificationError, match=re.escape("'other.onnx' is not in manifest.files")):
        Manifest.from_signed(signed)


def test_manifest_rejects_unsafe_file_paths():
    signed = FLEET.manifest().to_signed()
    signed["files"][0]["path"] = "../model.onnx"
    with pytest.raises(VerificationError, match=re.escape("without '', '.' or '..' parts")):
        Manifest.from_signed(signed)


@pytest.mark.parametrize("path", ["/abs", "a//b", "a/./b", "..", "a\\b", "", "x" * 256])
def test_member_paths(path):
    with pytest.raises(VerificationError):
        check_member_path(path)


def test_directive_target_and_times():
    with pytest.raises(ValueError, match="exactly one of device or group"):
        create_directive(fleet="f", bundle=FLEET.directive().bundle, sequence=1)
    with pytest.raises(VerificationError, match="expected expires after issued"):
        FLEET.directive(expires=FLEET.now)
    signed = FLEET.directive().to_signed()
    signed["target"] = {"device": "a", "group": "b"}
    with pytest.raises(VerificationError, match=re.escape("directive.target")):
        Directive.from_signed(signed)
    signed["target"] = {"device": "dev/1/#"}
    with pytest.raises(VerificationError, match=re.escape("directive.target")):
        Directive.from_signed(signed)


def test_times():
    moment = parse_time("2026-11-23T09:44:13Z", "t")
    assert format_time(moment) == "2026-11-23T09:44:13Z"
    for bad in ("2026-11-23 09:44:13", "2026-13-01T00:00:00Z", 5, "2026-11-23T09:44:13+01:00"):
        with pytest.raises(VerificationError):
            parse_time(bad, "t")
