"""How to reach the broker: frozen, validated settings and the broker URL parser."""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from edgeops.errors import ConfigError, ProtocolError
from edgeops.protocol.topics import validate_topic_name

ProtocolChoice = Literal["auto", "5", "3.1.1"]

# MQTT 3.1.1 §3.1.3.1 guarantees 23 characters; Mosquitto and every broker we target take
# more. The charset keeps ids usable as certificate CNs and ACL pattern substitutions.
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Capped exponential reconnect delay with jitter.

    The n-th consecutive failure waits ``min(max_delay, min_delay * 2**n)`` scaled by a
    random factor in ``[1 - jitter, 1]``, so a fleet that lost its broker at the same moment
    does not come back in lockstep (the thundering herd after a broker restart).
    """

    min_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.min_delay <= self.max_delay:
            raise ConfigError(
                f"expected 0 < min_delay <= max_delay, got {self.min_delay} and {self.max_delay}"
            )
        if not 0 <= self.jitter <= 1:
            raise ConfigError(f"expected jitter in [0, 1], got {self.jitter}")

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after ``failures`` consecutive failed attempts (0 for the first)."""
        exponent = min(max(failures, 0), 62)
        base = min(self.max_delay, self.min_delay * 2.0**exponent)
        return base * (1.0 - self.jitter * rand())


@dataclass(frozen=True, kw_only=True)
class TlsSettings:
    """TLS to the broker. ``cafile`` None trusts the system CAs; a client certificate
    (``certfile`` + ``keyfile``) is how a device proves its identity to a fleet broker."""

    cafile: Path | None = None
    certfile: Path | None = None
    keyfile: Path | None = None

    def __post_init__(self) -> None:
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError("a client certificate needs both certfile and keyfile")


@dataclass(frozen=True, kw_only=True)
class Will:
    """The message the broker publishes for a client that vanishes without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True

    def __post_init__(self) -> None:
        if self.qos not in (0, 1, 2):
            raise ConfigError(f"expected will qos 0, 1 or 2, got {self.qos}")
        try:
            validate_topic_name(self.topic)
        except ProtocolError as exc:
            raise ConfigError(f"last will: {exc}") from exc


def parse_mqtt_url(url: str) -> tuple[str, int, bool]:
    """``mqtt://host[:port]`` or ``mqtts://host[:port]`` to ``(host, port, tls)``.

    Default ports are 1883 and 8883 (IANA).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"expected mqtt://host:port or mqtts://host:port, got {url!r}") from exc
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(f"expected mqtt://host:port or mqtts://host:port, got {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ConfigError(f"expected only scheme, host and port in the broker URL, got {url!r}")
    tls = parts.scheme == "mqtts"
    return parts.hostname, port or (8883 if tls else 1883), tls


@dataclass(frozen=True, kw_only=True)
class MqttSettings:
    """Everything a link needs to reach and stay connected to the broker.

    ``protocol="auto"`` speaks MQTT 5 and falls back to 3.1.1 when the broker refuses it.
    ``clean_session=False`` keeps the session (subscriptions, queued QoS 1 messages) on the
    broker for ``session_expiry`` seconds (MQTT 5) or until cleaned (3.1.1).
    ``max_queued`` bounds the QoS 1 messages kept in memory while the broker is away.
    """

    host: str
    client_id: str
    port: int = 1883
    tls: TlsSettings | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keepalive: int = 30
    protocol: ProtocolChoice = "auto"
    clean_session: bool = True
    session_expiry: int = 3600
    backoff: Backoff = field(default_factory=Backoff)
    will: Will | None = None
    connect_timeout: float = 10.0
    max_queued: int = 10000

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("expected a broker host, got an empty string")
        if not 0 < self.port < 65536:
            raise ConfigError(f"expected a port in 1-65535, got {self.port}")
        if _CLIENT_ID.fullmatch(self.client_id) is None:
            raise ConfigError(
                f"expected a client id of 1-128 characters [A-Za-z0-9._:-], got {self.client_id!r}"
            )
        if not 5 <= self.keepalive <= 65535:
            raise ConfigError(f"expected keepalive in 5-65535 s, got {self.keepalive}")
        if self.protocol not in ("auto", "5", "3.1.1"):
            raise ConfigError(f"expected protocol auto, 5 or 3.1.1, got {self.protocol!r}")
        if self.session_expiry < 0 or self.connect_timeout <= 0 or self.max_queued < 1:
            raise ConfigError("session_expiry, connect_timeout and max_queued must be positive")
        if self.password is not None and self.username is None:
            raise ConfigError("a password needs a username")

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        client_id: str,
        tls: TlsSettings | None = None,
        **options: object,
    ) -> MqttSettings:
        """Settings from a broker URL; ``mqtts://`` without ``tls`` trusts the system CAs."""
        host, port, use_tls = parse_mqtt_url(url)
        if use_tls and tls is None:
            tls = TlsSettings()
        if not use_tls and tls is not None:
            raise ConfigError(f"TLS files given for a plain mqtt:// URL {url!r}; use mqtts://")
        return cls(host=host, port=port, client_id=client_id, tls=tls, **options)  # type: ignore[arg-type]


__all__ = ["Backoff", "MqttSettings", "ProtocolChoice", "TlsSettings", "Will", "parse_mqtt_url"]
