"""Topic builders, the parser, id validation and MQTT filter matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeops.errors import ProtocolError
from edgeops.protocol import (
    MAX_CHUNKS,
    Topic,
    TopicKind,
    agent_directive_filters,
    bundle_chunk_filter,
    bundle_chunk_topic,
    bundle_meta_topic,
    device_directive_topic,
    events_topic,
    fleet_ingest_filters,
    group_directive_topic,
    parse_topic,
    shared_filter,
    state_topic,
    strip_share,
    telemetry_topic,
    topic_matches,
    validate_filter,
    validate_id,
    validate_topic_name,
)

DIGEST = "ab" * 32
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
digests = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)


def test_builders_produce_the_documented_layout():
    assert state_topic("acme", "pi-7") == "edgeops/v1/acme/dev/pi-7/state"
    assert events_topic("acme", "pi-7") == "edgeops/v1/acme/dev/pi-7/events"
    assert telemetry_topic("acme", "pi-7") == "edgeops/v1/acme/dev/pi-7/telemetry"
    assert device_directive_topic("acme", "pi-7") == "edgeops/v1/acme/dev/pi-7/directive"
    assert group_directive_topic("acme", "cams") == "edgeops/v1/acme/group/cams/directive"
    assert bundle_meta_topic("acme", DIGEST) == f"edgeops/v1/acme/bundle/{DIGEST}/meta"
    assert bundle_chunk_topic("acme", DIGEST, 12) == f"edgeops/v1/acme/bundle/{DIGEST}/chunk/12"


@pytest.mark.parametrize(
    "bad", ["", "+", "#", "a/b", "a+b", "dev#1", "$SYS", "-lead", "x" * 65, "é", "a b", "a\0b"]
)
def test_ids_that_could_widen_a_subscription_or_acl_are_refused(bad):
    with pytest.raises(ProtocolError, match="expected a device id"):
        state_topic("acme", bad)
    with pytest.raises(ProtocolError, match="expected a fleet id"):
        validate_id(bad, "fleet id")


def test_parse_names_each_kind():
    assert parse_topic("edgeops/v1/acme/dev/pi-7/telemetry") == Topic(
        TopicKind.TELEMETRY, "acme", device_id="pi-7"
    )
    assert parse_topic("edgeops/v1/acme/group/cams/directive") == Topic(
        TopicKind.GROUP_DIRECTIVE, "acme", group="cams"
    )
    parsed = parse_topic(bundle_chunk_topic("acme", DIGEST, 3))
    assert (parsed.kind, parsed.digest, parsed.index) == (TopicKind.BUNDLE_CHUNK, DIGEST, 3)


@pytest.mark.parametrize(
    ("topic", "message"),
    [
        ("edgeops/v2/acme/dev/pi/state", "unsupported topic version 'v2'"),
        ("other/v1/acme/dev/pi/state", "expected a topic under edgeops/v1/"),
        ("edgeops/v1/acme/dev/pi/reboot", "unknown edgeops topic"),
        ("edgeops/v1/acme/dev/pi/state/extra", "unknown edgeops topic"),
        (f"edgeops/v1/acme/bundle/{DIGEST}/chunk/007", "expected a decimal chunk index"),
        (f"edgeops/v1/acme/bundle/{DIGEST}/chunk/{MAX_CHUNKS}", "expected a chunk index"),
        ("edgeops/v1/acme/bundle/ABCD/meta", "SHA-256 digest"),
        ("edgeops/v1/acme/dev/+/state", "expected a device id"),
    ],
)
def test_parse_rejects_with_a_clear_message(topic, message):
    with pytest.raises(ProtocolError, match=message):
        parse_topic(topic)


@given(fleet=ids, device=ids, group=ids, digest=digests, index=st.integers(0, MAX_CHUNKS - 1))
def test_every_built_topic_parses_back_to_itself(fleet, device, group, digest, index):
    built = [
        state_topic(fleet, device),
        events_topic(fleet, device),
        telemetry_topic(fleet, device),
        device_directive_topic(fleet, device),
        group_directive_topic(fleet, group),
        bundle_meta_topic(fleet, digest),
        bundle_chunk_topic(fleet, digest, index),
    ]
    for topic in built:
        parsed = parse_topic(topic)
        assert str(parsed) == topic
        assert parsed.fleet == fleet


@given(st.text(max_size=300))
def test_parse_raises_only_protocol_errors_on_arbitrary_text(text):
    try:
        parsed = parse_topic(text)
    except ProtocolError:
        return
    assert str(parsed) == text


@given(
    st.lists(
        st.sampled_from(
            [
                "edgeops",
                "v1",
                "acme",
                "dev",
                "bundle",
                "group",
                "chunk",
                "meta",
                "state",
                "directive",
                DIGEST,
                "1",
                "01",
                "+",
                "#",
                "",
            ]
        ),
        max_size=8,
    )
)
def test_parse_raises_only_protocol_errors_on_near_miss_topics(levels):
    text = "/".join(levels)
    try:
        parsed = parse_topic(text)
    except ProtocolError:
        return
    assert str(parsed) == text


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/d", False),
        ("a/#", "a", True),
        ("a/#", "a/b/c", True),
        ("#", "$SYS/x", False),
        ("+/x", "$SYS/x", False),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
        ("$share/g/a/+", "a/b", True),
    ],
)
def test_topic_matches_follows_mqtt_rules(pattern, topic, expected):
    assert topic_matches(pattern, topic) is expected


def test_subscription_filters_match_what_they_are_for():
    agent = agent_directive_filters("acme", "pi-7", ("cams", "lab"))
    assert any(topic_matches(f, device_directive_topic("acme", "pi-7")) for f in agent)
    assert any(topic_matches(f, group_directive_topic("acme", "lab")) for f in agent)
    assert not any(topic_matches(f, device_directive_topic("acme", "pi-8")) for f in agent)
    ingest = fleet_ingest_filters("acme")
    for topic in (
        state_topic("acme", "x"),
        events_topic("acme", "x"),
        telemetry_topic("acme", "x"),
    ):
        assert sum(topic_matches(f, topic) for f in ingest) == 1
    assert not any(topic_matches(f, device_directive_topic("acme", "x")) for f in ingest)
    assert topic_matches(bundle_chunk_filter("acme", DIGEST), bundle_chunk_topic("acme", DIGEST, 9))
    assert shared_filter("ingest", ingest[2]) == "$share/ingest/edgeops/v1/acme/dev/+/telemetry"


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b#", "a+/b"])
def test_invalid_filters_are_refused(bad):
    with pytest.raises(ProtocolError):
        validate_filter(bad)


@pytest.mark.parametrize("bad", ["", "a/+", "a/#", "a\0"])
def test_topic_names_with_wildcards_are_refused(bad):
    with pytest.raises(ProtocolError):
        validate_topic_name(bad)


levels = st.sampled_from(["a", "b", "edgeops", "v1", "$SYS", ""])
filter_levels = levels | st.just("+")


@given(
    topic=st.lists(levels, min_size=1, max_size=5).map("/".join),
    pattern=st.tuples(st.lists(filter_levels, min_size=1, max_size=5), st.booleans()).map(
        lambda parts: "/".join(parts[0] + (["#"] if parts[1] else []))
    ),
)
def test_topic_matches_agrees_with_paho(topic, pattern):
    from paho.mqtt.client import topic_matches_sub

    assert topic_matches(pattern, topic) is topic_matches_sub(pattern, topic)


def _reference_matches(topic_filter: str, topic: str) -> bool:
    """topic_matches as it was written before filters were compiled: level by level."""
    pattern = strip_share(topic_filter).split("/")
    levels = topic.split("/")
    if topic.startswith("$") and pattern[0] in ("+", "#"):
        return False
    for position, part in enumerate(pattern):
        if part == "#":
            return True
        if position >= len(levels):
            return False
        if part != "+" and part != levels[position]:
            return False
    return len(pattern) == len(levels)


odd_levels = levels | st.sampled_from(["a.b", "(x)", "a*", "\\n", "\n", "+x", "$share"])


@given(
    topic=st.lists(odd_levels, min_size=1, max_size=5).map("/".join),
    pattern=st.tuples(
        st.sampled_from(["", "$share/g/"]),
        st.lists(odd_levels | st.just("+"), min_size=0, max_size=5),
        st.booleans(),
    ).map(lambda parts: parts[0] + "/".join(parts[1] + (["#"] if parts[2] else []))),
)
def test_compiled_filters_match_like_the_level_by_level_rules(topic, pattern):
    assert topic_matches(pattern, topic) is _reference_matches(pattern, topic)
