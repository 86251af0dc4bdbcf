"""An in-memory broker and link for fast unit tests of agent and fleet logic.

:class:`FakeBroker` keeps retained messages, matches wildcards by the MQTT rules,
publishes last wills for clients that vanish, and acknowledges QoS 1 publishes (or holds
the acknowledgements until the test releases them). :class:`FakeLink` implements
:class:`~edgeops.mqtt.link.Link` against it.

Delivery is synchronous and run-to-completion: when ``publish`` (or ``subscribe``,
``start`` ...) returns on the test's thread, every resulting delivery has run, including
messages that handlers published in turn, without recursion. (If another thread is
delivering at that moment, that thread runs the new deliveries instead.) Simulated failures:
:meth:`FakeBroker.stop` / :meth:`FakeBroker.start` (broker restart: links lose their
connection and come back, re-subscribing) and :meth:`FakeBroker.drop` (one client's network
fails: its will is published).

Sessions are always clean; QoS 2 is treated as QoS 1.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgeops.errors import ProtocolError, StateError, TransportError
from edgeops.mqtt.link import (
    Ack,
    ConnectCallback,
    DisconnectCallback,
    EventAck,
    Link,
    Message,
    MessageHandler,
    callback_remover,
)
from edgeops.mqtt.settings import Will
from edgeops.protocol.topics import topic_matches, validate_filter, validate_topic_name

_log = logging.getLogger(__name__)


class FakeBroker:
    """An MQTT broker in memory. ``log`` records every publish it accepted, in order, as
    ``(client_id, message)``; ``retained`` maps topics to their retained message."""

    def __init__(self, *, raise_handler_errors: bool = True) -> None:
        self._lock = threading.RLock()
        self.retained: dict[str, Message] = {}
        self.log: list[tuple[str, Message]] = []
        self.running = True
        self.hold_acks = False
        self.raise_handler_errors = raise_handler_errors
        self._links: dict[str, FakeLink] = {}
        self._connected: dict[str, FakeLink] = {}
        self._held: list[EventAck] = []
        self._tasks: deque[Callable[[], None]] = deque()
        self._draining = False

    # -- what tests call ------------------------------------------------------------------

    def link(self, client_id: str, *, will: Will | None = None) -> FakeLink:
        """A new link to this broker (not yet connected)."""
        return FakeLink(self, client_id, will=will)

    def stop(self) -> None:
        """The broker goes away: every link loses its connection (no wills: the broker that
        would publish them is down). Retained messages survive, as with persistence on."""
        with self._lock:
            self.running = False
            lost = list(self._connected.values())
            self._connected.clear()
        for link in lost:
            link._lost("broker stopped")
        self._pump()

    def start(self) -> None:
        """The broker is back: every link that wants a connection reconnects."""
        with self._lock:
            self.running = True
            waiting = [link for link in self._links.values() if link._wants_connection]
        for link in waiting:
            link._attempt()
        self._pump()

    def drop(self, client_id: str, *, reconnect: bool = True) -> None:
        """One client's connection breaks: the broker publishes its will. With ``reconnect``
        the link comes straight back, as a real one would after its backoff."""
        with self._lock:
            link = self._connected.pop(client_id, None)
        if link is None:
            raise StateError(f"client {client_id!r} is not connected")
        link._lost("connection lost")
        if link._will is not None:
            self._accept(client_id, _will_message(link._will))
        if reconnect:
            link._attempt()
        self._pump()

    def release_acks(self) -> None:
        """Complete every acknowledgement held while ``hold_acks`` was set."""
        with self._lock:
            held, self._held = self._held, []
        for ack in held:
            ack.complete()

    def connected_clients(self) -> list[str]:
        """Client ids with a live connection."""
        with self._lock:
            return sorted(self._connected)

    def publishes_to(self, topic_filter: str) -> list[Message]:
        """Every accepted publish whose topic matches ``topic_filter``."""
        with self._lock:
            return [m for _, m in self.log if topic_matches(topic_filter, m.topic)]

    # -- called by FakeLink ---------------------------------------------------------------

    def _register(self, link: FakeLink) -> None:
        with self._lock:
            self._links[link.client_id] = link

    def _connect(self, link: FakeLink) -> bool:
        with self._lock:
            if not self.running:
                return False
            previous = self._connected.get(link.client_id)
            self._connected[link.client_id] = link
        if previous is not None and previous is not link:
            # MQTT 3.1.1 §3.1.4: a second connection with the same client id evicts the first.
            previous._lost("session taken over")
            previous._wants_connection = False
            if previous._will is not None:
                self._accept(previous.client_id, _will_message(previous._will))
        return True

    def _disconnect(self, link: FakeLink) -> None:
        with self._lock:
            if self._connected.get(link.client_id) is link:
                del self._connected[link.client_id]
            if self._links.get(link.client_id) is link:
                del self._links[link.client_id]

    def _accept(self, client_id: str, message: Message, ack: EventAck | None = None) -> None:
        with self._lock:
            self.log.append((client_id, message))
            if message.retain:
                if message.payload:
                    self.retained[message.topic] = message
                else:
                    # MQTT 3.1.1 §3.3.1.3: an empty retained payload clears the topic.
                    self.retained.pop(message.topic, None)
            receivers = list(self._connected.values())
            if ack is not None:
                if self.hold_acks and message.qos > 0:
                    self._held.append(ack)
                else:
                    self._tasks.append(ack.complete)
            live = Message(message.topic, message.payload, retain=False, qos=message.qos)
            for receiver in receivers:
                if receiver._matches(message.topic):
                    self._tasks.append(_deliver(receiver, live))

    def _send_retained(self, link: FakeLink, topic_filter: str) -> None:
        with self._lock:
            for topic, message in sorted(self.retained.items()):
                if topic_matches(topic_filter, topic):
                    self._tasks.append(_deliver(link, message))

    def _schedule(self, task: Callable[[], None]) -> None:
        with self._lock:
            self._tasks.append(task)

    def _pump(self) -> None:
        with self._lock:
            if self._draining:
                return
            self._draining = True
        try:
            while True:
                with self._lock:
                    if not self._tasks:
                        return
                    task = self._tasks.popleft()
                task()
        finally:
            with self._lock:
                self._draining = False


def _deliver(link: FakeLink, message: Message) -> Callable[[], None]:
    return lambda: link._dispatch(message)


def _will_message(will: Will) -> Message:
    return Message(will.topic, will.payload, retain=will.retain, qos=will.qos)


class FakeLink:
    """A :class:`~edgeops.mqtt.link.Link` to a :class:`FakeBroker`."""

    def __init__(self, broker: FakeBroker, client_id: str, *, will: Will | None = None) -> None:
        self._broker = broker
        self._client_id = client_id
        self._will = will
        self._subscriptions: dict[str, MessageHandler] = {}
        self._on_connect: list[ConnectCallback] = []
        self._on_disconnect: list[DisconnectCallback] = []
        self._outbox: list[tuple[Message, EventAck]] = []
        self._pending_subacks: list[tuple[str, EventAck]] = []
        self._connected = False
        self._wants_connection = False
        self._closed = False
        self.connects = 0

    @property
    def client_id(self) -> str:
        return self._client_id

    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self, timeout: float | None = None) -> None:
        if self._closed:
            raise StateError("link is closed")
        self._broker._register(self)
        self._wants_connection = True
        self._attempt()
        self._broker._pump()
        if timeout is not None and not self._connected:
            self._wants_connection = False
            raise TransportError(f"{self._client_id}: broker not reachable (fake broker stopped)")

    def reconnect(self) -> None:
        """Come back after :meth:`FakeBroker.drop` with ``reconnect=False``, as a real link
        does after its backoff."""
        if self._closed:
            raise StateError("link is closed")
        self._wants_connection = True
        self._attempt()
        self._broker._pump()

    def close(self) -> None:
        self._wants_connection = False
        self._closed = True
        self._connected = False
        self._broker._disconnect(self)
        for _, ack in self._outbox:
            ack.fail("link closed before the message was sent")
        self._outbox.clear()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Ack:
        if self._closed:
            raise TransportError(f"{self._client_id}: publish on a closed link")
        validate_topic_name(topic)
        if qos not in (0, 1, 2):
            raise ProtocolError(f"expected qos 0, 1 or 2, got {qos}")
        ack = EventAck(f"publish to {topic}")
        message = Message(topic, bytes(payload), retain=retain, qos=min(qos, 1))
        if not self._connected:
            if qos == 0:
                ack.fail("not connected; QoS 0 messages are not queued")
            else:
                self._outbox.append((message, ack))
            return ack
        self._broker._accept(self._client_id, message, ack)
        self._broker._pump()
        return ack

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 1) -> Ack:
        validate_filter(topic_filter)
        self._subscriptions[topic_filter] = handler
        ack = EventAck(f"subscribe to {topic_filter}")
        if self._connected:
            ack.complete()
            self._broker._send_retained(self, topic_filter)
            self._broker._pump()
        else:
            self._pending_subacks.append((topic_filter, ack))
        return ack

    def unsubscribe(self, topic_filter: str) -> None:
        self._subscriptions.pop(topic_filter, None)

    def set_will(self, will: Will | None) -> None:
        self._will = will

    def on_connect(self, callback: ConnectCallback) -> Callable[[], None]:
        return callback_remover(self._on_connect, callback)

    def on_disconnect(self, callback: DisconnectCallback) -> Callable[[], None]:
        return callback_remover(self._on_disconnect, callback)

    @property
    def subscriptions(self) -> list[str]:
        """Filters currently held (what a reconnect re-subscribes)."""
        return sorted(self._subscriptions)

    # -- driven by the broker -------------------------------------------------------------

    def _attempt(self) -> None:
        if not self._wants_connection or self._connected:
            return
        if not self._broker._connect(self):
            return
        self._connected = True
        self.connects += 1
        for topic_filter in list(self._subscriptions):
            self._broker._send_retained(self, topic_filter)
        for _, ack in self._pending_subacks:
            ack.complete()
        self._pending_subacks.clear()
        outbox, self._outbox = self._outbox, []
        for message, ack in outbox:
            self._broker._accept(self._client_id, message, ack)
        for callback in list(self._on_connect):
            self._broker._schedule(functools.partial(callback, False))

    def _lost(self, reason: str) -> None:
        if not self._connected:
            return
        self._connected = False
        # Run now, not queued: like a real link, a reconnect must see what they changed.
        for on_disconnect in list(self._on_disconnect):
            on_disconnect(reason)

    def _matches(self, topic: str) -> bool:
        return any(topic_matches(f, topic) for f in self._subscriptions)

    def _dispatch(self, message: Message) -> None:
        if not self._connected:
            return
        called: list[MessageHandler] = []
        for topic_filter, handler in list(self._subscriptions.items()):
            # One call per distinct handler, however many of its filters match.
            if topic_matches(topic_filter, message.topic) and handler not in called:
                called.append(handler)
                try:
                    handler(message)
                except Exception:
                    if self._broker.raise_handler_errors:
                        raise
                    _log.exception("handler for %s failed on %s", topic_filter, message.topic)


__all__ = ["FakeBroker", "FakeLink"]


if TYPE_CHECKING:

    def _implements_link(link: FakeLink) -> Link:
        return link
