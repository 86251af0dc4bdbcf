"""Message schemas: round trips, versions, caps, and hostile input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeops.errors import ProtocolError
from edgeops.protocol import (
    DIRECTIVE_MAX_BYTES,
    STATE_MAX_BYTES,
    BundleMeta,
    BundleRef,
    EventMessage,
    StateMessage,
    TelemetryMessage,
    TelemetrySample,
    check_directive_payload,
)

DIGEST = "cd" * 32
MESSAGE_TYPES = (StateMessage, EventMessage, TelemetryMessage, BundleMeta)

finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
positive = st.floats(allow_nan=False, allow_infinity=False, min_value=0, max_value=1e12)
text = st.text(max_size=40).filter(lambda s: all(not 0xD800 <= ord(c) <= 0xDFFF for c in s))
tokens = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)
keys = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
digests = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
seqs = st.integers(0, 2**63 - 1)

bundle_refs = st.builds(
    BundleRef, name=text, version=text, digest=digests, release=st.integers(0, 2**40)
)
states = st.builds(
    StateMessage,
    online=st.booleans(),
    ts=positive,
    bundle=st.none() | bundle_refs,
    previous=st.none() | bundle_refs,
    agent_version=text,
    board=text,
    update=tokens,
)
scalars = st.none() | st.booleans() | st.integers(-(2**63) + 1, 2**63 - 1) | finite | text
events = st.builds(
    EventMessage,
    seq=seqs,
    kind=tokens,
    ts=positive,
    directive_seq=st.none() | seqs,
    bundle_digest=st.none() | digests,
    state=st.none() | tokens,
    reason=text,
    figures=st.dictionaries(keys, scalars, max_size=8),
)
samples = st.builds(
    TelemetrySample,
    ts=positive,
    window_s=positive,
    requests=st.integers(0, 10**9),
    errors=st.integers(0, 10**9),
    latency_p50_ms=st.none() | positive,
    latency_p95_ms=st.none() | positive,
    latency_p99_ms=st.none() | positive,
    cpu_percent=positive,
    rss_mb=positive,
    temperature_c=st.none() | finite,
    disk_free_mb=positive,
    bundle_digest=st.none() | digests,
    drift=st.none() | positive,
    outputs=st.dictionaries(keys, finite, max_size=8),
)
telemetry = st.builds(
    TelemetryMessage,
    seq=seqs,
    samples=st.lists(samples, min_size=1, max_size=5).map(tuple),
    dropped=st.integers(0, 10**6),
)


@st.composite
def metas(draw):
    chunk_size = draw(st.integers(1024, 8 * 1024 * 1024))
    count = draw(st.integers(1, 12))
    last = draw(st.integers(1, chunk_size))
    return BundleMeta(
        digest=draw(digests),
        total_size=(count - 1) * chunk_size + last,
        chunk_size=chunk_size,
        chunk_sha256=tuple(draw(st.lists(digests, min_size=count, max_size=count))),
    )


@pytest.mark.parametrize(
    ("strategy", "cls"),
    [
        (states, StateMessage),
        (events, EventMessage),
        (telemetry, TelemetryMessage),
        (metas(), BundleMeta),
    ],
)
def test_round_trip_is_identity(strategy, cls):
    @given(strategy)
    def check(message):
        data = message.to_bytes()
        assert cls.from_bytes(data) == message
        assert json.loads(data)["v"] == 1

    check()


@pytest.mark.parametrize("cls", MESSAGE_TYPES)
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_protocol_errors(cls, data):
    try:
        message = cls.from_bytes(data)
    except ProtocolError:
        return
    assert cls.from_bytes(message.to_bytes()) == message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)


def _near_miss(message_strategy):
    """Valid messages with one field replaced by an arbitrary JSON value."""

    @st.composite
    def build(draw):
        obj = json.loads(draw(message_strategy).to_bytes())
        key = draw(st.sampled_from(sorted(obj)))
        obj[key] = draw(json_values)
        return json.dumps(obj).encode()

    return build()


@pytest.mark.parametrize(
    ("strategy", "cls"),
    [
        (states, StateMessage),
        (events, EventMessage),
        (telemetry, TelemetryMessage),
        (metas(), BundleMeta),
    ],
)
def test_structurally_close_json_raises_only_protocol_errors(strategy, cls):
    @given(_near_miss(strategy))
    def check(data):
        try:
            message = cls.from_bytes(data)
        except ProtocolError:
            return
        assert cls.from_bytes(message.to_bytes()) == message

    check()


def _state(**changes):
    obj = {"v": 1, "online": True, "ts": 1.5}
    obj.update(changes)
    return json.dumps(obj).encode()


def test_unknown_schema_version_is_rejected_clearly():
    with pytest.raises(
        ProtocolError, match="unsupported state message schema version 2, this side reads 1"
    ):
        StateMessage.from_bytes(_state(v=2))
    with pytest.raises(ProtocolError, match="no schema version"):
        StateMessage.from_bytes(b'{"online": true, "ts": 1}')


def test_unknown_fields_of_the_same_version_are_ignored():
    message = StateMessage.from_bytes(_state(added_in_a_later_release={"x": 1}))
    assert message == StateMessage(online=True, ts=1.5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"x" * (STATE_MAX_BYTES + 1), "at most 4096 bytes"),
        (b'{"v":1,"online":true,"ts":NaN}', "NaN is not allowed"),
        (b'{"v":1,"v":1,"online":true,"ts":1}', "duplicate JSON key 'v'"),
        (_state(online=1), "field 'online'"),
        (_state(ts=-1), "field 'ts'"),
        (_state(update="Not A Token"), "field 'update'"),
        (
            _state(bundle={"name": "m", "version": "1", "digest": "x", "release": 1}),
            "bundle.digest",
        ),
        (b"[1, 2]", "JSON object"),
        (b"\xff\xfe", "not valid UTF-8 JSON"),
    ],
)
def test_malformed_state_messages_say_what_was_wrong(data, message):
    with pytest.raises(ProtocolError, match=message):
        StateMessage.from_bytes(data)


def test_event_and_telemetry_bounds():
    with pytest.raises(ProtocolError, match="figures"):
        EventMessage(seq=1, kind="update_result", ts=1.0, figures={f"k{i}": i for i in range(65)})
    with pytest.raises(ProtocolError, match="samples"):
        TelemetryMessage(seq=1, samples=())
    with pytest.raises(ProtocolError, match="field 'seq'"):
        TelemetryMessage(seq=True, samples=(TelemetrySample(ts=1.0, window_s=10.0),))
    ints_become_floats = TelemetrySample(ts=1, window_s=10, rss_mb=30)
    assert ints_become_floats.rss_mb == 30.0
    assert isinstance(ints_become_floats.ts, float)


def test_meta_must_agree_with_its_own_sizes():
    with pytest.raises(ProtocolError, match="expected 2 digests for 2000 bytes"):
        BundleMeta(digest=DIGEST, total_size=2000, chunk_size=1024, chunk_sha256=(DIGEST,))
    good = BundleMeta(digest=DIGEST, total_size=2000, chunk_size=1024, chunk_sha256=(DIGEST,) * 2)
    assert good.chunk_length(1) == 976
    tampered = json.loads(good.to_bytes())
    tampered["chunk_count"] = 3
    with pytest.raises(ProtocolError, match="chunk_count"):
        BundleMeta.from_bytes(json.dumps(tampered).encode())


def test_directive_payload_is_opaque_but_bounded():
    assert check_directive_payload(b'{"signed": {}}') == b'{"signed": {}}'
    with pytest.raises(ProtocolError, match=f"at most {DIRECTIVE_MAX_BYTES} bytes"):
        check_directive_payload(b"x" * (DIRECTIVE_MAX_BYTES + 1))
    with pytest.raises(ProtocolError, match="empty payload"):
        check_directive_payload(b"")


def _telemetry(**sample_changes):
    sample = {"ts": 1.5, "window_s": 10.0}
    sample.update(sample_changes)
    return json.dumps({"v": 1, "seq": 1, "samples": [sample]}).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # A JSON integer beyond float range once escaped as OverflowError.
        (_telemetry(ts=10**400), "field 'ts': expected a finite number"),
        (_telemetry(outputs={"score": -(10**400)}), "field 'outputs.score'"),
        (_telemetry(cpu_percent=True), "field 'cpu_percent': expected a number"),
        (_telemetry(requests=1.0), "field 'requests'"),
        (_telemetry(drift=-0.1), "field 'drift'"),
        (b'{"v":1,"seq":1,"samples":[{"ts":1,"ts":2,"window_s":1}]}', "duplicate JSON key 'ts'"),
        (b'{"v":1,"seq":1,"samples":[{"window_s":1}]}', "missing field 'ts'"),
    ],
)
def test_malformed_telemetry_says_what_was_wrong(data, message):
    with pytest.raises(ProtocolError, match=message):
        TelemetryMessage.from_bytes(data)


@given(samples)
def test_a_sample_read_from_the_wire_equals_the_one_built_in_code(sample):
    obj = sample.to_obj()
    read = TelemetrySample.from_obj(obj)
    assert read == sample
    assert read == TelemetrySample(**obj)
    assert type(read.outputs) is dict


def test_absent_sample_fields_take_the_class_defaults():
    assert TelemetrySample.from_obj({"ts": 1, "window_s": 2}) == TelemetrySample(ts=1, window_s=2)


def test_number_subclasses_are_accepted_as_plain_numbers():
    class Celsius(float):
        pass

    class Count(int):
        pass

    sample = TelemetrySample(ts=Count(3), window_s=Celsius(2.5), requests=Count(4))
    assert (type(sample.ts), sample.ts) == (float, 3.0)
    assert (type(sample.window_s), sample.window_s) == (float, 2.5)
    assert sample.requests == 4
    with pytest.raises(ProtocolError, match="field 'requests'"):
        TelemetrySample(ts=1.0, window_s=1.0, requests=True)
