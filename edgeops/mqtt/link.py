"""The one interface through which the agent and the fleet manager talk MQTT.

Two implementations: :class:`~edgeops.mqtt.paho.PahoLink` (a real broker, paho-mqtt 2.x)
and :class:`~edgeops.mqtt.fake.FakeLink` (an in-memory :class:`~edgeops.mqtt.fake.FakeBroker`
for unit tests). Code that takes a :class:`Link` works with either.

Threading contract: handlers and connection callbacks run on the link's network thread
(for the fake, on whichever thread published). They must not block for long; they may
call ``publish``, ``subscribe`` and ``unsubscribe``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from edgeops.errors import TransportError
from edgeops.mqtt.settings import Will


@dataclass(frozen=True)
class Message:
    """One received message."""

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 0


_C = TypeVar("_C")

MessageHandler = Callable[[Message], None]
ConnectCallback = Callable[[bool], None]
"""Called after every successful CONNACK with the broker's ``session_present`` flag."""
DisconnectCallback = Callable[[str], None]
"""Called when an established connection ends, with a human-readable reason."""


@runtime_checkable
class Ack(Protocol):
    """Completion of a publish (PUBACK for QoS 1, written to the socket for QoS 0) or of a
    subscribe (SUBACK)."""

    def done(self) -> bool:
        """True once the broker acknowledged."""
        ...

    def wait(self, timeout: float) -> None:
        """Block until acknowledged; TransportError on timeout, refusal or a closed link."""
        ...


PublishHandle = Ack


class Link(Protocol):
    """A connection to the broker that survives broker restarts and network loss.

    After a reconnect the link subscribes again to every filter it holds, so retained
    messages on those filters are delivered again. QoS 1 publishes made while the broker is
    away are queued (up to a cap) and sent after the reconnect; their :class:`Ack` completes
    only on the broker's PUBACK.
    """

    @property
    def client_id(self) -> str:
        """The MQTT client id."""
        ...

    @property
    def connected(self) -> bool:
        """Whether a CONNACK was received on the current connection."""
        ...

    def connect(self, timeout: float | None = None) -> None:
        """Start connecting, and keep reconnecting with backoff until :meth:`close`.

        With ``timeout``, block until the first CONNACK and raise TransportError (and stop)
        if none came in time; with None, return at once (a device boots without a broker).
        """
        ...

    def close(self) -> None:
        """Disconnect cleanly (the broker does not publish the will) and stop reconnecting."""
        ...

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Ack:
        """Publish ``payload``; the returned :class:`Ack` completes on the broker's ack."""
        ...

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 1) -> Ack:
        """Deliver messages matching ``topic_filter`` to ``handler``.

        Subscribing again to a filter already held replaces its handler and makes the broker
        resend the retained messages that match (MQTT 3.1.1 §3.8.4).
        """
        ...

    def unsubscribe(self, topic_filter: str) -> None:
        """Stop delivering ``topic_filter`` (also after future reconnects)."""
        ...

    def set_will(self, will: Will | None) -> None:
        """The last will to register with the broker from the next connection on."""
        ...

    def on_connect(self, callback: ConnectCallback) -> Callable[[], None]:
        """Register a callback for every successful connection (first and reconnects).

        Returns a function that unregisters it.
        """
        ...

    def on_disconnect(self, callback: DisconnectCallback) -> Callable[[], None]:
        """Register a callback for every loss of an established connection.

        It runs before the link reconnects, so subscription changes it makes are what the
        reconnect subscribes to. Returns a function that unregisters it.
        """
        ...


def callback_remover(callbacks: list[_C], callback: _C) -> Callable[[], None]:
    """Append ``callback`` and return a function that removes it again (once)."""
    callbacks.append(callback)

    def remove() -> None:
        with contextlib.suppress(ValueError):
            callbacks.remove(callback)

    return remove


class EventAck:
    """An :class:`Ack` completed from another thread; shared by the link implementations."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._event = threading.Event()
        self._error: str | None = None

    def done(self) -> bool:
        return self._event.is_set() and self._error is None

    def complete(self) -> None:
        self._event.set()

    def fail(self, reason: str) -> None:
        if not self._event.is_set():
            self._error = reason
            self._event.set()

    def wait(self, timeout: float) -> None:
        if not self._event.wait(timeout):
            raise TransportError(f"{self._what}: no acknowledgement within {timeout:g} s")
        if self._error is not None:
            raise TransportError(f"{self._what}: {self._error}")


__all__ = [
    "Ack",
    "ConnectCallback",
    "DisconnectCallback",
    "EventAck",
    "Link",
    "Message",
    "MessageHandler",
    "PublishHandle",
]
