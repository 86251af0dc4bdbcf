"""Message schemas of the wire protocol: frozen dataclasses that encode to bounded JSON.

Every message is one JSON object with a schema version ``"v"``; a reader rejects a version
it does not know (``unsupported StateMessage schema version 2, this side reads 1``) rather
than guess. Within a version, fields are only ever added, and readers ignore fields they do
not know, so an older fleet manager can read a newer agent's messages of the same version.
Each message type has a size cap checked before the bytes are decoded, and every string,
list and mapping inside has its own bound, so one message costs a reader a bounded amount of
memory whatever a sender puts in it.

Validation runs in ``__post_init__``: a message that exists is valid, whether it was built
in code or read from the wire, and both ways fail with :class:`~edgeops.errors.ProtocolError`.

Directives travel as signed envelopes owned by :mod:`edgeops.trust`; this module carries them
as opaque bytes (:func:`check_directive_payload`) and never interprets them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self, TypeVar

from edgeops.errors import ProtocolError
from edgeops.protocol.topics import DIGEST_PATTERN, MAX_CHUNKS

SCHEMA_VERSION = 1

STATE_MAX_BYTES = 4 * 1024
EVENT_MAX_BYTES = 16 * 1024
TELEMETRY_MAX_BYTES = 256 * 1024
# 16384 chunk digests of 67 bytes each, plus the envelope.
META_MAX_BYTES = 1200 * 1024
DIRECTIVE_MAX_BYTES = 64 * 1024

TEXT_MAX = 256
REASON_MAX = 1024
FIGURES_MAX = 64
OUTPUTS_MAX = 64
SAMPLES_MAX = 256
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 8 * 1024 * 1024
MAX_SEQ = 2**63 - 1

_TOKEN = re.compile(r"[a-z][a-z0-9_]{0,31}")
_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

Scalar = float | int | str | bool | None

# Event kinds the agent emits today; the field accepts any token so that a newer agent's
# kinds reach an older fleet manager (which shows them as they are).
EVENT_KINDS = frozenset(
    {
        "update_progress",
        "update_result",
        "rejected",
        "rolled_back",
        "loop_guard",
        "telemetry_dropped",
    }
)


def check_directive_payload(payload: bytes) -> bytes:
    """Return a directive envelope's bytes unchanged if they are within the size cap.

    The envelope is verified by :mod:`edgeops.trust`; this is the wire-level bound only.
    """
    if not isinstance(payload, bytes | bytearray):
        raise ProtocolError(f"expected directive bytes, got {type(payload).__name__}")
    if len(payload) > DIRECTIVE_MAX_BYTES:
        raise ProtocolError(
            f"expected a directive of at most {DIRECTIVE_MAX_BYTES} bytes, got {len(payload)}"
        )
    if not payload:
        raise ProtocolError("expected a directive, got an empty payload (a cleared topic)")
    return bytes(payload)


# -- field checks ---------------------------------------------------------------------------

_T = TypeVar("_T")


def _fail(name: str, expected: str, value: object) -> ProtocolError:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return ProtocolError(f"field {name!r}: expected {expected}, got {text}")


# The exact-type tests first in _int and _float are the fast path for what JSON decodes to;
# subclasses (an IntEnum, a numpy float) take the slower isinstance route. bool is an int
# subclass and never a number here.


def _int(name: str, value: object, *, low: int = 0, high: int = MAX_SEQ) -> int:
    if type(value) is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise _fail(name, f"an integer in [{low}, {high}]", value)
    if not low <= value <= high:
        raise _fail(name, f"an integer in [{low}, {high}]", value)
    return value


def _float(name: str, value: object, *, low: float = -math.inf, high: float = math.inf) -> float:
    if type(value) is float:
        number = value
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(name, "a number", value)
    else:
        try:
            number = float(value)
        except OverflowError:
            # A JSON integer of a few hundred digits: a valid int, beyond any float.
            raise _fail(name, f"a finite number in [{low}, {high}]", value) from None
    # NaN fails the range test; infinities need isfinite.
    if not low <= number <= high or not math.isfinite(number):
        raise _fail(name, f"a finite number in [{low}, {high}]", value)
    return number


def _opt_float(name: str, value: object, *, low: float = -math.inf) -> float | None:
    return None if value is None else _float(name, value, low=low)


def _text(name: str, value: object, *, limit: int = TEXT_MAX) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise _fail(name, f"a string of at most {limit} characters", value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail(name, "valid Unicode text", value) from exc
    return value


def _token(name: str, value: object) -> str:
    if not isinstance(value, str) or _TOKEN.fullmatch(value) is None:
        raise _fail(name, "a lowercase token [a-z][a-z0-9_]{0,31}", value)
    return value


def _opt(check: Any, name: str, value: object) -> Any:
    return None if value is None else check(name, value)


def _digest(name: str, value: object) -> str:
    if not isinstance(value, str) or DIGEST_PATTERN.fullmatch(value) is None:
        raise _fail(name, "a SHA-256 hex digest", value)
    return value


def _scalar_map(name: str, value: object, *, limit: int, numbers_only: bool) -> dict[str, Any]:
    if not isinstance(value, Mapping) or len(value) > limit:
        raise _fail(name, f"an object of at most {limit} entries", value)
    checked: dict[str, Any] = {}
    for key, item in value.items():
        if not isinstance(key, str) or _KEY.fullmatch(key) is None:
            raise _fail(f"{name} key", "a key of 1-64 characters [A-Za-z0-9_.:-]", key)
        if numbers_only:
            checked[key] = _float(f"{name}.{key}", item)
        elif item is None or isinstance(item, bool):
            checked[key] = item
        elif isinstance(item, int):
            checked[key] = _int(f"{name}.{key}", item, low=-MAX_SEQ)
        elif isinstance(item, float):
            checked[key] = _float(f"{name}.{key}", item)
        elif isinstance(item, str):
            checked[key] = _text(f"{name}.{key}", item)
        else:
            raise _fail(f"{name}.{key}", "a number, string, boolean or null", item)
    return checked


# -- encoding -------------------------------------------------------------------------------


def _reject_constant(token: str) -> Any:
    raise ProtocolError(f"JSON constant {token} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two readers could otherwise keep different copies of a repeated key.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ProtocolError(f"duplicate JSON key {key!r}")
            seen.add(key)
    return result


# One decoder for every message: json.loads with hooks would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)


def decode_object(data: bytes, *, what: str, cap: int) -> dict[str, Any]:
    """Decode one bounded JSON object and check its schema version."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ProtocolError(f"expected {what} bytes, got {type(data).__name__}")
    if len(data) > cap:
        raise ProtocolError(f"expected a {what} of at most {cap} bytes, got {len(data)}")
    try:
        value = _DECODER.decode(str(data, "utf-8"))
    except ProtocolError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what} is not valid UTF-8 JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ProtocolError(f"expected a {what} JSON object, got {type(value).__name__}")
    if "v" not in value:
        raise ProtocolError(f"{what} has no schema version field 'v'")
    version = value["v"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise ProtocolError(f"{what} schema version must be an integer, got {version!r:.40}")
    if version != SCHEMA_VERSION:
        raise ProtocolError(
            f"unsupported {what} schema version {version}, this side reads {SCHEMA_VERSION}"
        )
    return value


def _encode(obj: dict[str, Any], *, what: str, cap: int) -> bytes:
    data = json.dumps(obj, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode()
    if len(data) > cap:
        raise ProtocolError(f"{what} encodes to {len(data)} bytes, over its cap of {cap}")
    return data


def _field(obj: Mapping[str, Any], name: str, default: object = ...) -> Any:
    if name in obj:
        return obj[name]
    if default is ...:
        raise ProtocolError(f"missing field {name!r}")
    return default


class _Message:
    """Shared ``to_bytes``/``from_bytes`` over ``_to_obj``/``_from_obj``."""

    WHAT: ClassVar[str]
    MAX_BYTES: ClassVar[int]

    def _to_obj(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _from_obj(cls, obj: Mapping[str, Any]) -> Self:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The message as compact UTF-8 JSON with ``"v"`` first; raises if over the cap."""
        return _encode({"v": SCHEMA_VERSION, **self._to_obj()}, what=self.WHAT, cap=self.MAX_BYTES)

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Parse and validate a message; any defect raises ProtocolError."""
        obj = decode_object(data, what=cls.WHAT, cap=cls.MAX_BYTES)
        try:
            return cls._from_obj(obj)
        except ProtocolError as exc:
            raise ProtocolError(f"invalid {cls.WHAT}: {exc}") from exc


# -- messages -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BundleRef:
    """Which bundle a device runs: name, version, SHA-256 of the bundle file, release counter."""

    name: str
    version: str
    digest: str
    release: int

    def __post_init__(self) -> None:
        _text("bundle.name", self.name, limit=128)
        _text("bundle.version", self.version, limit=64)
        _digest("bundle.digest", self.digest)
        _int("bundle.release", self.release)

    def to_obj(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "release": self.release,
        }

    @classmethod
    def from_obj(cls, value: object, name: str) -> BundleRef | None:
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise _fail(name, "an object or null", value)
        return cls(
            name=_field(value, "name"),
            version=_field(value, "version"),
            digest=_field(value, "digest"),
            release=_field(value, "release"),
        )


@dataclass(frozen=True, kw_only=True)
class StateMessage(_Message):
    """Retained state of one device (``.../dev/{id}/state``), also its last will.

    ``ts`` is the sender's wall clock in seconds since the epoch. A last will is composed
    at connect time, so for ``online=False`` readers should prefer their receive time.
    """

    WHAT: ClassVar[str] = "state message"
    MAX_BYTES: ClassVar[int] = STATE_MAX_BYTES

    online: bool
    ts: float
    bundle: BundleRef | None = None
    previous: BundleRef | None = None
    agent_version: str = ""
    board: str = ""
    update: str = "idle"

    def __post_init__(self) -> None:
        if not isinstance(self.online, bool):
            raise _fail("online", "true or false", self.online)
        object.__setattr__(self, "ts", _float("ts", self.ts, low=0.0))
        for name in ("bundle", "previous"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, BundleRef):
                raise _fail(name, "a BundleRef or None", value)
        _text("agent_version", self.agent_version, limit=64)
        _text("board", self.board, limit=64)
        _token("update", self.update)

    def _to_obj(self) -> dict[str, Any]:
        return {
            "online": self.online,
            "ts": self.ts,
            "bundle": None if self.bundle is None else self.bundle.to_obj(),
            "previous": None if self.previous is None else self.previous.to_obj(),
            "agent_version": self.agent_version,
            "board": self.board,
            "update": self.update,
        }

    @classmethod
    def _from_obj(cls, obj: Mapping[str, Any]) -> Self:
        return cls(
            online=_field(obj, "online"),
            ts=_field(obj, "ts"),
            bundle=BundleRef.from_obj(_field(obj, "bundle", None), "bundle"),
            previous=BundleRef.from_obj(_field(obj, "previous", None), "previous"),
            agent_version=_field(obj, "agent_version", ""),
            board=_field(obj, "board", ""),
            update=_field(obj, "update", "idle"),
        )


@dataclass(frozen=True, kw_only=True)
class EventMessage(_Message):
    """One event of a device (``.../dev/{id}/events``), numbered by a per-device ``seq``.

    ``directive_seq`` ties an update event to the directive it answers; ``figures`` carries
    the measurements behind a decision (e.g. ``{"p95_ms": 41.2, "budget_p95_ms": 30}``).
    """

    WHAT: ClassVar[str] = "event message"
    MAX_BYTES: ClassVar[int] = EVENT_MAX_BYTES

    seq: int
    kind: str
    ts: float
    directive_seq: int | None = None
    bundle_digest: str | None = None
    state: str | None = None
    reason: str = ""
    figures: Mapping[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _int("seq", self.seq)
        _token("kind", self.kind)
        object.__setattr__(self, "ts", _float("ts", self.ts, low=0.0))
        _opt(_int, "directive_seq", self.directive_seq)
        _opt(_digest, "bundle_digest", self.bundle_digest)
        _opt(_token, "state", self.state)
        _text("reason", self.reason, limit=REASON_MAX)
        figures = _scalar_map("figures", self.figures, limit=FIGURES_MAX, numbers_only=False)
        object.__setattr__(self, "figures", figures)

    def _to_obj(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "ts": self.ts,
            "directive_seq": self.directive_seq,
            "bundle_digest": self.bundle_digest,
            "state": self.state,
            "reason": self.reason,
            "figures": dict(self.figures),
        }

    @classmethod
    def _from_obj(cls, obj: Mapping[str, Any]) -> Self:
        return cls(
            seq=_field(obj, "seq"),
            kind=_field(obj, "kind"),
            ts=_field(obj, "ts"),
            directive_seq=_field(obj, "directive_seq", None),
            bundle_digest=_field(obj, "bundle_digest", None),
            state=_field(obj, "state", None),
            reason=_field(obj, "reason", ""),
            figures=_field(obj, "figures", {}),
        )


@dataclass(frozen=True, kw_only=True)
class TelemetrySample:
    """Measurements over one window of ``window_s`` seconds ending at ``ts``.

    Latency percentiles are None when the window served no requests; ``drift`` is the input
    drift score against the bundle's reference statistics (None without a reference);
    ``outputs`` summarises the output distribution (e.g. class shares, mean score).
    """

    ts: float
    window_s: float
    requests: int = 0
    errors: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_p99_ms: float | None = None
    cpu_percent: float = 0.0
    rss_mb: float = 0.0
    temperature_c: float | None = None
    disk_free_mb: float = 0.0
    bundle_digest: str | None = None
    drift: float | None = None
    outputs: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The checks of a sample read from the wire (from_obj), so the two cannot drift apart.
        for name, value in _sample_fields(self.__dict__).items():
            object.__setattr__(self, name, value)

    def to_obj(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "window_s": self.window_s,
            "requests": self.requests,
            "errors": self.errors,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "cpu_percent": self.cpu_percent,
            "rss_mb": self.rss_mb,
            "temperature_c": self.temperature_c,
            "disk_free_mb": self.disk_free_mb,
            "bundle_digest": self.bundle_digest,
            "drift": self.drift,
            "outputs": dict(self.outputs),
        }

    @classmethod
    def from_obj(cls, value: object) -> TelemetrySample:
        if not isinstance(value, Mapping):
            raise _fail("samples[]", "an object", value)
        # The checks of __post_init__, run once: through __init__ they would run twice, and
        # the fleet manager reads tens of thousands of samples a second.
        sample = object.__new__(cls)
        sample.__dict__.update(_sample_fields(value))
        return sample


def _sample_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of a :class:`TelemetrySample` from ``obj``, checked and normalised (numbers
    as floats); absent optional fields take the class defaults."""
    get = obj.get
    return {
        "ts": _float("ts", _field(obj, "ts"), low=0.0),
        "window_s": _float("window_s", _field(obj, "window_s"), low=0.0),
        "requests": _int("requests", get("requests", 0)),
        "errors": _int("errors", get("errors", 0)),
        "latency_p50_ms": _opt_float("latency_p50_ms", get("latency_p50_ms"), low=0.0),
        "latency_p95_ms": _opt_float("latency_p95_ms", get("latency_p95_ms"), low=0.0),
        "latency_p99_ms": _opt_float("latency_p99_ms", get("latency_p99_ms"), low=0.0),
        "cpu_percent": _float("cpu_percent", get("cpu_percent", 0.0), low=0.0),
        "rss_mb": _float("rss_mb", get("rss_mb", 0.0), low=0.0),
        "temperature_c": _opt_float("temperature_c", get("temperature_c")),
        "disk_free_mb": _float("disk_free_mb", get("disk_free_mb", 0.0), low=0.0),
        "bundle_digest": _opt(_digest, "bundle_digest", get("bundle_digest")),
        "drift": _opt_float("drift", get("drift"), low=0.0),
        "outputs": _scalar_map("outputs", get("outputs", {}), limit=OUTPUTS_MAX, numbers_only=True),
    }


@dataclass(frozen=True, kw_only=True)
class TelemetryMessage(_Message):
    """A batch of samples (``.../dev/{id}/telemetry``) with a per-device increasing ``seq``.

    The fleet side drops a (device, seq) it has seen, so a replay after a reconnect is
    harmless. ``dropped`` counts samples the device's bounded store discarded since its
    previous message (oldest first, when the broker was out of reach too long).
    """

    WHAT: ClassVar[str] = "telemetry message"
    MAX_BYTES: ClassVar[int] = TELEMETRY_MAX_BYTES

    seq: int
    samples: tuple[TelemetrySample, ...]
    dropped: int = 0

    def __post_init__(self) -> None:
        _int("seq", self.seq)
        _int("dropped", self.dropped)
        if not isinstance(self.samples, tuple | list) or not 1 <= len(self.samples) <= SAMPLES_MAX:
            raise _fail("samples", f"a list of 1-{SAMPLES_MAX} samples", self.samples)
        if not all(isinstance(sample, TelemetrySample) for sample in self.samples):
            raise _fail("samples", "TelemetrySample items", self.samples)
        object.__setattr__(self, "samples", tuple(self.samples))

    def _to_obj(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "dropped": self.dropped,
            "samples": [sample.to_obj() for sample in self.samples],
        }

    @classmethod
    def _from_obj(cls, obj: Mapping[str, Any]) -> Self:
        samples = _field(obj, "samples")
        if not isinstance(samples, list) or not 1 <= len(samples) <= SAMPLES_MAX:
            raise _fail("samples", f"a list of 1-{SAMPLES_MAX} samples", samples)
        return cls(
            seq=_field(obj, "seq"),
            dropped=_field(obj, "dropped", 0),
            samples=tuple([TelemetrySample.from_obj(sample) for sample in samples]),
        )


@dataclass(frozen=True, kw_only=True)
class BundleMeta(_Message):
    """How a bundle is cut into chunks (``.../bundle/{digest}/meta``).

    Not trusted on its own: a receiver checks ``digest`` and ``total_size`` against the
    signed directive before using it, and the whole file's SHA-256 after assembly.
    """

    WHAT: ClassVar[str] = "bundle meta"
    MAX_BYTES: ClassVar[int] = META_MAX_BYTES

    digest: str
    total_size: int
    chunk_size: int
    chunk_sha256: tuple[str, ...]

    def __post_init__(self) -> None:
        _digest("digest", self.digest)
        _int("chunk_size", self.chunk_size, low=MIN_CHUNK_SIZE, high=MAX_CHUNK_SIZE)
        _int("total_size", self.total_size, low=1, high=MAX_CHUNKS * MAX_CHUNK_SIZE)
        if not isinstance(self.chunk_sha256, tuple | list):
            raise _fail("chunk_sha256", "a list of digests", self.chunk_sha256)
        expected = -(-self.total_size // self.chunk_size)
        if expected > MAX_CHUNKS:
            raise _fail("total_size", f"at most {MAX_CHUNKS} chunks", self.total_size)
        if len(self.chunk_sha256) != expected:
            raise ProtocolError(
                f"field 'chunk_sha256': expected {expected} digests for {self.total_size} bytes "
                f"in chunks of {self.chunk_size}, got {len(self.chunk_sha256)}"
            )
        for digest in self.chunk_sha256:
            _digest("chunk_sha256[]", digest)
        object.__setattr__(self, "chunk_sha256", tuple(self.chunk_sha256))

    @property
    def chunk_count(self) -> int:
        """How many chunks the bundle has."""
        return len(self.chunk_sha256)

    def chunk_length(self, index: int) -> int:
        """Size in bytes of chunk ``index`` (the last one may be short)."""
        if not 0 <= index < self.chunk_count:
            raise ProtocolError(f"expected a chunk index below {self.chunk_count}, got {index}")
        return min(self.chunk_size, self.total_size - index * self.chunk_size)

    def _to_obj(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "total_size": self.total_size,
            "chunk_size": self.chunk_size,
            "chunk_count": self.chunk_count,
            "chunk_sha256": list(self.chunk_sha256),
        }

    @classmethod
    def _from_obj(cls, obj: Mapping[str, Any]) -> Self:
        hashes = _field(obj, "chunk_sha256")
        if not isinstance(hashes, list):
            raise _fail("chunk_sha256", "a list of digests", hashes)
        meta = cls(
            digest=_field(obj, "digest"),
            total_size=_field(obj, "total_size"),
            chunk_size=_field(obj, "chunk_size"),
            chunk_sha256=tuple(hashes),
        )
        count = _field(obj, "chunk_count", meta.chunk_count)
        if count != meta.chunk_count:
            raise _fail("chunk_count", str(meta.chunk_count), count)
        return meta


__all__ = [
    "DIRECTIVE_MAX_BYTES",
    "EVENT_KINDS",
    "EVENT_MAX_BYTES",
    "MAX_CHUNK_SIZE",
    "META_MAX_BYTES",
    "MIN_CHUNK_SIZE",
    "SCHEMA_VERSION",
    "STATE_MAX_BYTES",
    "TELEMETRY_MAX_BYTES",
    "BundleMeta",
    "BundleRef",
    "EventMessage",
    "StateMessage",
    "TelemetryMessage",
    "TelemetrySample",
    "check_directive_payload",
    "decode_object",
]
