"""MQTT topics of the wire protocol, version 1: builders, one parser, subscription filters.

Every topic sits under ``edgeops/v1/{fleet}/``::

    edgeops/v1/{fleet}/dev/{device}/state        agent (and its last will), retained
    edgeops/v1/{fleet}/dev/{device}/events       agent
    edgeops/v1/{fleet}/dev/{device}/telemetry    agent
    edgeops/v1/{fleet}/dev/{device}/directive    fleet, retained, signed envelope
    edgeops/v1/{fleet}/group/{group}/directive   fleet, retained, signed envelope
    edgeops/v1/{fleet}/bundle/{digest}/meta      fleet, retained, BundleMeta
    edgeops/v1/{fleet}/bundle/{digest}/chunk/{i} fleet, retained, raw chunk bytes

Fleet, device and group ids share one charset (:data:`ID_PATTERN`): letters, digits and
``. _ -``, starting with a letter or digit, at most 64 characters. That excludes the MQTT
wildcards ``+`` and ``#``, the level separator ``/`` and a leading ``$`` (reserved for broker
topics), so an id can never widen an ACL pattern or a subscription.
"""

from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass

from edgeops.errors import ProtocolError

PROTOCOL_VERSION = 1
ROOT = f"edgeops/v{PROTOCOL_VERSION}"

ID_MAX_LENGTH = 64
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DIGEST_PATTERN = re.compile(r"[0-9a-f]{64}")
_INDEX_PATTERN = re.compile(r"0|[1-9][0-9]{0,8}")

# A whole bundle is at most MAX_CHUNKS chunks; the same bound applies to parsed indexes.
MAX_CHUNKS = 16384
# MQTT 3.1.1 §1.5.3: topic names are UTF-8 strings of at most 65535 bytes.
TOPIC_MAX_BYTES = 65535


class TopicKind(enum.Enum):
    """What a protocol topic carries."""

    STATE = "state"
    EVENTS = "events"
    TELEMETRY = "telemetry"
    DEVICE_DIRECTIVE = "device_directive"
    GROUP_DIRECTIVE = "group_directive"
    BUNDLE_META = "bundle_meta"
    BUNDLE_CHUNK = "bundle_chunk"


_DEVICE_CHANNELS = {
    "state": TopicKind.STATE,
    "events": TopicKind.EVENTS,
    "telemetry": TopicKind.TELEMETRY,
    "directive": TopicKind.DEVICE_DIRECTIVE,
}


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid fleet, device or group id, else raise ProtocolError."""
    if not isinstance(value, str) or ID_PATTERN.fullmatch(value) is None:
        raise ProtocolError(
            f"expected a {what} of 1-{ID_MAX_LENGTH} characters from [A-Za-z0-9._-] "
            f"starting with a letter or digit, got {_short(value)}"
        )
    return value


def validate_digest(value: str) -> str:
    """Return ``value`` if it is a lowercase hex SHA-256 digest, else raise ProtocolError."""
    if not isinstance(value, str) or DIGEST_PATTERN.fullmatch(value) is None:
        raise ProtocolError(
            f"expected a SHA-256 digest as 64 lowercase hex digits, got {_short(value)}"
        )
    return value


def validate_index(value: int) -> int:
    """Return ``value`` if it is a valid chunk index, else raise ProtocolError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_CHUNKS:
        raise ProtocolError(f"expected a chunk index in [0, {MAX_CHUNKS}), got {_short(value)}")
    return value


def _base(fleet: str) -> str:
    return f"{ROOT}/{validate_id(fleet, 'fleet id')}"


def _device(fleet: str, device_id: str, channel: str) -> str:
    return f"{_base(fleet)}/dev/{validate_id(device_id, 'device id')}/{channel}"


def state_topic(fleet: str, device_id: str) -> str:
    """Retained online/offline state of one device (also its last will)."""
    return _device(fleet, device_id, "state")


def events_topic(fleet: str, device_id: str) -> str:
    """Update progress and results of one device."""
    return _device(fleet, device_id, "events")


def telemetry_topic(fleet: str, device_id: str) -> str:
    """Batched metrics of one device."""
    return _device(fleet, device_id, "telemetry")


def device_directive_topic(fleet: str, device_id: str) -> str:
    """Retained signed directive for one device."""
    return _device(fleet, device_id, "directive")


def group_directive_topic(fleet: str, group: str) -> str:
    """Retained signed directive for every device of a group."""
    return f"{_base(fleet)}/group/{validate_id(group, 'group')}/directive"


def bundle_meta_topic(fleet: str, digest: str) -> str:
    """Retained :class:`~edgeops.protocol.BundleMeta` of the bundle whose SHA-256 is ``digest``."""
    return f"{_base(fleet)}/bundle/{validate_digest(digest)}/meta"


def bundle_chunk_topic(fleet: str, digest: str, index: int) -> str:
    """Retained raw bytes of chunk ``index`` of a bundle."""
    return f"{_base(fleet)}/bundle/{validate_digest(digest)}/chunk/{validate_index(index)}"


@dataclass(frozen=True)
class Topic:
    """A parsed protocol topic; the fields that do not apply to ``kind`` are None."""

    kind: TopicKind
    fleet: str
    device_id: str | None = None
    group: str | None = None
    digest: str | None = None
    index: int | None = None

    def __str__(self) -> str:
        if self.kind is TopicKind.GROUP_DIRECTIVE:
            assert self.group is not None
            return group_directive_topic(self.fleet, self.group)
        if self.kind is TopicKind.BUNDLE_META:
            assert self.digest is not None
            return bundle_meta_topic(self.fleet, self.digest)
        if self.kind is TopicKind.BUNDLE_CHUNK:
            assert self.digest is not None
            assert self.index is not None
            return bundle_chunk_topic(self.fleet, self.digest, self.index)
        assert self.device_id is not None
        channel = "directive" if self.kind is TopicKind.DEVICE_DIRECTIVE else self.kind.value
        return _device(self.fleet, self.device_id, channel)


def parse_topic(topic: str) -> Topic:
    """Parse a protocol topic name; anything else raises ProtocolError."""
    if not isinstance(topic, str):
        raise ProtocolError(f"expected a topic string, got {type(topic).__name__}")
    if len(topic) > 512:
        # Every valid v1 topic is far shorter; refuse before splitting attacker-sized input.
        raise ProtocolError(f"expected a topic of at most 512 characters, got {len(topic)}")
    levels = topic.split("/")
    if len(levels) < 5 or levels[0] != "edgeops":
        raise ProtocolError(f"expected a topic under {ROOT}/, got {_short(topic)}")
    if levels[1] != f"v{PROTOCOL_VERSION}":
        raise ProtocolError(
            f"unsupported topic version {_short(levels[1])}: this side speaks v{PROTOCOL_VERSION}"
        )
    fleet = validate_id(levels[2], "fleet id")
    area, rest = levels[3], levels[4:]
    if area == "dev" and len(rest) == 2 and rest[1] in _DEVICE_CHANNELS:
        device_id = validate_id(rest[0], "device id")
        return Topic(_DEVICE_CHANNELS[rest[1]], fleet, device_id=device_id)
    if area == "group" and len(rest) == 2 and rest[1] == "directive":
        return Topic(TopicKind.GROUP_DIRECTIVE, fleet, group=validate_id(rest[0], "group"))
    if area == "bundle" and len(rest) == 2 and rest[1] == "meta":
        return Topic(TopicKind.BUNDLE_META, fleet, digest=validate_digest(rest[0]))
    if area == "bundle" and len(rest) == 3 and rest[1] == "chunk":
        digest = validate_digest(rest[0])
        if _INDEX_PATTERN.fullmatch(rest[2]) is None:
            raise ProtocolError(f"expected a decimal chunk index, got {_short(rest[2])}")
        return Topic(
            TopicKind.BUNDLE_CHUNK, fleet, digest=digest, index=validate_index(int(rest[2]))
        )
    raise ProtocolError(f"unknown edgeops topic {_short(topic)}")


# -- subscription filters -------------------------------------------------------------------


def agent_directive_filters(fleet: str, device_id: str, groups: tuple[str, ...] = ()) -> list[str]:
    """Filters an agent subscribes to for directives: its own topic and its groups'."""
    return [device_directive_topic(fleet, device_id)] + [
        group_directive_topic(fleet, group) for group in groups
    ]


def bundle_chunk_filter(fleet: str, digest: str) -> str:
    """Every chunk of one bundle."""
    return f"{_base(fleet)}/bundle/{validate_digest(digest)}/chunk/+"


def fleet_state_filter(fleet: str) -> str:
    """Retained state of every device of a fleet."""
    return f"{_base(fleet)}/dev/+/state"


def fleet_events_filter(fleet: str) -> str:
    """Events of every device of a fleet."""
    return f"{_base(fleet)}/dev/+/events"


def fleet_telemetry_filter(fleet: str) -> str:
    """Telemetry of every device of a fleet."""
    return f"{_base(fleet)}/dev/+/telemetry"


def fleet_ingest_filters(fleet: str) -> list[str]:
    """What the fleet manager reads from devices: state, events and telemetry."""
    return [fleet_state_filter(fleet), fleet_events_filter(fleet), fleet_telemetry_filter(fleet)]


def shared_filter(share_group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription (§4.8.2): the broker hands each message to one member.

    Several fleet-manager instances subscribe with the same ``share_group`` to split ingest.
    """
    validate_filter(topic_filter)
    return f"$share/{validate_id(share_group, 'share group')}/{topic_filter}"


def validate_filter(topic_filter: str) -> str:
    """Return ``topic_filter`` if it is a valid MQTT filter (§4.7.1), else raise ProtocolError."""
    if not isinstance(topic_filter, str) or not topic_filter:
        raise ProtocolError(f"expected a non-empty topic filter, got {_short(topic_filter)}")
    if len(topic_filter.encode("utf-8", "surrogatepass")) > TOPIC_MAX_BYTES or "\0" in topic_filter:
        raise ProtocolError("topic filter is too long or contains NUL")
    levels = topic_filter.split("/")
    for position, level in enumerate(levels):
        if "#" in level and (level != "#" or position != len(levels) - 1):
            raise ProtocolError(f"'#' must be a whole last level, got {_short(topic_filter)}")
        if "+" in level and level != "+":
            raise ProtocolError(f"'+' must be a whole level, got {_short(topic_filter)}")
    return topic_filter


def validate_topic_name(topic: str) -> str:
    """Return ``topic`` if a client may publish to it (no wildcards), else raise ProtocolError."""
    if not isinstance(topic, str) or not topic:
        raise ProtocolError(f"expected a non-empty topic name, got {_short(topic)}")
    if "+" in topic or "#" in topic or "\0" in topic:
        raise ProtocolError(f"a topic name may not contain '+', '#' or NUL, got {_short(topic)}")
    if len(topic.encode("utf-8", "surrogatepass")) > TOPIC_MAX_BYTES:
        raise ProtocolError(f"expected a topic of at most {TOPIC_MAX_BYTES} bytes")
    return topic


def strip_share(topic_filter: str) -> str:
    """The plain filter inside a ``$share/{group}/{filter}`` subscription (others unchanged)."""
    if topic_filter.startswith("$share/"):
        parts = topic_filter.split("/", 2)
        if len(parts) == 3:
            return parts[2]
    return topic_filter


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` by the MQTT rules (§4.7).

    Shared-subscription prefixes are ignored, and wildcards at the first level do not match
    topics starting with ``$`` (§4.7.2).
    """
    return _filter_pattern(topic_filter).fullmatch(topic) is not None


@functools.lru_cache(maxsize=1024)
def _filter_pattern(topic_filter: str) -> re.Pattern[str]:
    # A link tests every message against each of its few filters: compiling a filter once
    # makes that a single regex match instead of two splits and a loop per filter.
    levels = strip_share(topic_filter).split("/")
    parts: list[str] = []
    for part in levels:
        if part == "#":
            # '#' also matches the parent level itself: "a/#" matches "a" (§4.7.1.2).
            tail = "(?:/.*)?" if parts else ".*"
            break
        parts.append("[^/]*" if part == "+" else re.escape(part))
    else:
        tail = ""
    no_dollar = "(?!\\$)" if levels[0] in ("+", "#") else ""  # §4.7.2
    return re.compile(no_dollar + "/".join(parts) + tail, re.DOTALL)


__all__ = [
    "DIGEST_PATTERN",
    "ID_MAX_LENGTH",
    "ID_PATTERN",
    "MAX_CHUNKS",
    "PROTOCOL_VERSION",
    "ROOT",
    "Topic",
    "TopicKind",
    "agent_directive_filters",
    "bundle_chunk_filter",
    "bundle_chunk_topic",
    "bundle_meta_topic",
    "device_directive_topic",
    "events_topic",
    "fleet_events_filter",
    "fleet_ingest_filters",
    "fleet_state_filter",
    "fleet_telemetry_filter",
    "group_directive_topic",
    "parse_topic",
    "shared_filter",
    "state_topic",
    "strip_share",
    "telemetry_topic",
    "topic_matches",
    "validate_digest",
    "validate_filter",
    "validate_id",
    "validate_index",
    "validate_topic_name",
]
