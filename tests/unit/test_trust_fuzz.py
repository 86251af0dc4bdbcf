"""Property tests: on arbitrary input the parsers raise only edgeops errors."""

from __future__ import annotations

import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeops.errors import EdgeopsError
from edgeops.trust import Directive, Manifest, Root
from edgeops.trust.testing import MemoryFleet

FLEET = MemoryFleet()
TRUSTED = FLEET.trusted()
GENUINE = {
    "manifest": FLEET.sign(FLEET.manifest()),
    "directive": FLEET.sign(FLEET.directive()),
    "root": FLEET.root_bytes,
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def _all_parsers(data: bytes) -> None:
    for call in (
        lambda: TRUSTED.verify_manifest(data, board="rpi4", last_release_counter=0),
        lambda: TRUSTED.verify_directive(data, device_id="dev-1", last_sequence=0),
        lambda: FLEET.trusted().update_root(data),
    ):
        with contextlib.suppress(EdgeopsError):
            call()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data):
    _all_parsers(data)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_arbitrary_json(value):
    _all_parsers(json.dumps(value).encode())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(GENUINE)), st.data())
def test_mutated_signed_fields(kind, data):
    """Replace one field of a genuine signed object with an arbitrary JSON value."""
    envelope = json.loads(GENUINE[kind])
    signed = envelope["signed"]
    key = data.draw(st.sampled_from(sorted(signed)))
    signed[key] = data.draw(json_values)
    _all_parsers(json.dumps(envelope).encode())
    # The signature check stops these before the schema; the schema readers must hold alone.
    readers = {
        "manifest": Manifest.from_signed,
        "directive": Directive.from_signed,
        "root": Root.from_signed,
    }
    with contextlib.suppress(EdgeopsError):
        readers[kind](signed)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(GENUINE)), st.integers(min_value=0), st.integers(0, 255))
def test_flipped_byte(kind, position, value):
    raw = bytearray(GENUINE[kind])
    raw[position % len(raw)] = value
    _all_parsers(bytes(raw))
