"""The :class:`~edgeops.mqtt.link.Link` on a real broker, with paho-mqtt 2.x.

paho is imported when a :class:`PahoLink` is created, not when this module is, so that
``import edgeops.mqtt`` stays cheap for code that only needs the fake.

The network loop is one named thread per link (``edgeops-mqtt-{client id}``) that drives
``Client.loop()`` and does its own reconnecting, because paho's ``reconnect_delay_set``
backs off without jitter and a fleet that lost its broker would otherwise return in
lockstep. Every socket write happens on that thread: ``on_socket_register_write`` is set,
which stops paho from writing from the caller's thread, where two threads could interleave
the bytes of two large publishes on one socket.

paho's exceptions and error codes are turned into :class:`~edgeops.errors.TransportError`
in one place, :func:`_paho_errors`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from edgeops.errors import ConfigError, ProtocolError, StateError, TransportError
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
from edgeops.mqtt.settings import MqttSettings, Will
from edgeops.protocol.topics import topic_matches, validate_filter, validate_topic_name

if TYPE_CHECKING:
    import paho.mqtt.client as paho_client

_log = logging.getLogger(__name__)

# MQTT 5 reason code 0x84 "Unsupported Protocol Version" (§3.2.2.2); MQTT 3.1.1 CONNACK
# return code 1 "unacceptable protocol version" (§3.2.2.3).
_UNSUPPORTED_VERSION = {0x84, 1}
_LOOP_TIMEOUT = 0.5
_CLOSE_GRACE = 2.0


@contextlib.contextmanager
def _paho_errors(action: str) -> Iterator[None]:
    """The one place where paho's and the socket layer's exceptions become ours."""
    try:
        yield
    except TransportError:
        raise
    except OSError as exc:  # ssl.SSLError and socket errors included
        raise TransportError(f"{action}: {exc.strerror or exc}") from exc
    except (ValueError, RuntimeError) as exc:
        raise TransportError(f"{action}: {exc}") from exc


def _close_failed_handshakes(client: paho_client.Client) -> None:
    """Replace paho's TLS wrapping with one that closes the socket of a failed handshake:
    paho 2.2's ``_ssl_wrap_socket`` leaves it open (found with a proxy that accepts and
    closes, as a broker behind a broken network looks), one descriptor per reconnect
    attempt until the collector runs. Hostname checking stays with the context."""
    context = client._ssl_context
    assert context is not None
    assert context.check_hostname

    def wrap(tcp_sock: Any) -> Any:
        try:
            tls_sock = context.wrap_socket(
                tcp_sock, server_hostname=client._host, do_handshake_on_connect=False
            )
        except BaseException:
            tcp_sock.close()
            raise
        try:
            tls_sock.settimeout(client._connect_timeout)
            tls_sock.do_handshake()
        except BaseException:
            tls_sock.close()
            raise
        return tls_sock

    client._ssl_wrap_socket = wrap  # type: ignore[method-assign]


def _rc_text(rc: int) -> str:
    import paho.mqtt.client as mqtt

    return str(mqtt.error_string(rc))


class PahoLink:
    """A link to a real MQTT broker; see :class:`~edgeops.mqtt.link.Link` for the contract.

    ``rand`` feeds the backoff jitter (tests pass a fixed one).
    """

    def __init__(self, settings: MqttSettings, *, rand: Callable[[], float] = random.random):
        try:
            import paho.mqtt.client  # noqa: F401
        except ImportError as exc:
            raise ConfigError(
                'paho-mqtt is not installed; install "edgeops[agent]" or "edgeops[fleet]"'
            ) from exc
        self._settings = settings
        self._rand = rand
        self._lock = threading.Lock()
        self._subscriptions: dict[str, tuple[MessageHandler, int]] = {}
        self._sub_waiting: dict[str, list[EventAck]] = {}
        self._sub_mids: dict[int, list[str]] = {}
        self._early_subacks: dict[int, list[str | None]] = {}
        self._pub_acks: dict[int, EventAck] = {}
        self._early_pubacks: dict[int, str | None] = {}
        self._on_connect: list[ConnectCallback] = []
        self._on_disconnect: list[DisconnectCallback] = []
        self._will = settings.will
        self._use_v5 = settings.protocol != "3.1.1"
        self._client: paho_client.Client | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._outcome = threading.Event()
        self._failures = 0
        self._got_connack = False
        self._refused = False
        self._version_refused = False
        self._last_error = "no connection attempt yet"
        self._closed = False
        self.connects = 0
        """How many CONNACKs this link received (1 + reconnects)."""
        # Built now, so that QoS 1 publishes made before connect() queue like those made
        # while the broker is away.
        self._client = self._build_client()

    # -- properties -----------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self._settings.client_id

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def protocol(self) -> str:
        """The MQTT version in use or being tried: ``"5"`` or ``"3.1.1"``."""
        return "5" if self._use_v5 else "3.1.1"

    @property
    def last_error(self) -> str:
        """Why the last connection attempt or connection failed."""
        return self._last_error

    # -- lifecycle ------------------------------------------------------------------------

    def connect(self, timeout: float | None = None) -> None:
        if self._closed:
            raise StateError("link is closed; create a new one")
        if self._thread is not None:
            raise StateError("connect() called twice")
        self._thread = threading.Thread(
            target=self._run, name=f"edgeops-mqtt-{self.client_id}", daemon=True
        )
        self._thread.start()
        if timeout is None:
            return
        deadline = time.monotonic() + timeout
        while not self._connected.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._refused:
                break
            self._outcome.wait(min(remaining, 0.1))
            self._outcome.clear()
        if not self._connected.is_set():
            reason = self._last_error
            self.close()
            raise TransportError(
                f"cannot connect to {self._settings.host}:{self._settings.port} "
                f"within {timeout:g} s: {reason}"
            )

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        client = self._client
        if client is not None and self._connected.is_set():
            with contextlib.suppress(Exception):
                # DISCONNECT first, so that the broker does not publish the will.
                client.disconnect()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_CLOSE_GRACE + 2 * _LOOP_TIMEOUT + 1)
        self._connected.clear()
        self._fail_pending("link closed")

    # -- messaging ------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Ack:
        import paho.mqtt.client as mqtt

        if self._closed or self._client is None:
            raise TransportError(f"{self.client_id}: publish on a closed link")
        validate_topic_name(topic)
        if qos not in (0, 1, 2):
            raise ProtocolError(f"expected qos 0, 1 or 2, got {qos}")
        with _paho_errors(f"publish to {topic}"):
            info = self._client.publish(topic, bytes(payload), qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            raise TransportError(
                f"publish to {topic}: {self._settings.max_queued} messages already wait "
                "for the broker"
            )
        ack = EventAck(f"publish to {topic}")
        if qos == 0 and info.rc == mqtt.MQTT_ERR_NO_CONN:
            ack.fail("not connected; QoS 0 messages are not queued")
            return ack
        with self._lock:
            missing = info.mid not in self._early_pubacks
            early = self._early_pubacks.pop(info.mid, None)
            if missing:
                self._pub_acks[info.mid] = ack
        if not missing:
            _finish(ack, early)
        return ack

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 1) -> Ack:
        validate_filter(topic_filter)
        if qos not in (0, 1, 2):
            raise ProtocolError(f"expected qos 0, 1 or 2, got {qos}")
        if self._closed:
            raise TransportError(f"{self.client_id}: subscribe on a closed link")
        ack = EventAck(f"subscribe to {topic_filter}")
        with self._lock:
            self._subscriptions[topic_filter] = (handler, qos)
            self._sub_waiting.setdefault(topic_filter, []).append(ack)
        if self._connected.is_set():
            self._send_subscribe([(topic_filter, qos)])
        return ack

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            known = self._subscriptions.pop(topic_filter, None) is not None
            waiting = self._sub_waiting.pop(topic_filter, [])
        for ack in waiting:
            ack.fail("unsubscribed before the broker acknowledged")
        client = self._client
        if known and client is not None and self._connected.is_set():
            with _paho_errors(f"unsubscribe from {topic_filter}"):
                client.unsubscribe(topic_filter)

    def set_will(self, will: Will | None) -> None:
        self._will = will

    def on_connect(self, callback: ConnectCallback) -> Callable[[], None]:
        return callback_remover(self._on_connect, callback)

    def on_disconnect(self, callback: DisconnectCallback) -> Callable[[], None]:
        return callback_remover(self._on_disconnect, callback)

    @property
    def subscriptions(self) -> list[str]:
        """Filters currently held (what a reconnect re-subscribes)."""
        with self._lock:
            return sorted(self._subscriptions)

    # -- the paho client ------------------------------------------------------------------

    def _build_client(self) -> paho_client.Client:
        import ssl

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        settings = self._settings
        protocol = mqtt.MQTTv5 if self._use_v5 else mqtt.MQTTv311
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=settings.client_id,
            protocol=protocol,
            clean_session=None if self._use_v5 else settings.clean_session,
        )
        client.max_queued_messages_set(settings.max_queued)
        client.suppress_exceptions = False
        if settings.tls is not None:
            tls = settings.tls
            try:
                client.tls_set(
                    ca_certs=None if tls.cafile is None else str(tls.cafile),
                    certfile=None if tls.certfile is None else str(tls.certfile),
                    keyfile=None if tls.keyfile is None else str(tls.keyfile),
                    cert_reqs=ssl.CERT_REQUIRED,
                    tls_version=ssl.PROTOCOL_TLS_CLIENT,
                )
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot use the TLS files {tls}: {exc}") from exc
            _close_failed_handshakes(client)
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_message = self._handle_message
        client.on_publish = self._handle_publish
        client.on_subscribe = self._handle_subscribe
        # Keep every socket write on the network thread (see the module docstring).
        client.on_socket_register_write = _ignore_socket_event
        properties = None
        if self._use_v5 and not settings.clean_session:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = settings.session_expiry
        client.connect_async(
            settings.host,
            settings.port,
            keepalive=settings.keepalive,
            clean_start=settings.clean_session
            if self._use_v5
            else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
        )
        return client

    def _apply_will(self, client: paho_client.Client) -> None:
        will = self._will
        if will is None:
            client.will_clear()
        else:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

    def _run(self) -> None:
        import paho.mqtt.client as mqtt

        stop_seen: float | None = None
        while True:
            client = self._client
            assert client is not None
            if self._stop.is_set():
                stop_seen = stop_seen or time.monotonic()
                if client.socket() is None or time.monotonic() - stop_seen > _CLOSE_GRACE:
                    break
            elif client.socket() is None:
                self._got_connack = False
                try:
                    self._apply_will(client)
                    with _paho_errors("connect"):
                        client.reconnect()
                except TransportError as exc:
                    self._note_failure(str(exc))
                    continue
            try:
                rc = client.loop(timeout=_LOOP_TIMEOUT)
            except Exception as exc:
                # A malformed packet from the broker or a callback bug must not end the
                # thread: drop the connection and reconnect.
                _log.warning("%s: network loop error: %s", self.client_id, exc, exc_info=True)
                rc = mqtt.MQTT_ERR_UNKNOWN
                self._handle_disconnect(client, None, None, None, None)
            if rc == mqtt.MQTT_ERR_SUCCESS or self._stop.is_set():
                continue
            if client.socket() is not None:
                # Some of paho's error paths (a select() on a broken socket) leave the socket
                # in place; without closing it the next turn would never reconnect.
                with contextlib.suppress(Exception):
                    client._sock_close()
            self._connection_ended(rc)
        # Closes the wake-up socket pair too; paho otherwise leaves it to garbage collection.
        final = self._client
        if final is not None:
            with contextlib.suppress(Exception):
                final._reset_sockets()
        self._connected.clear()

    def _connection_ended(self, rc: int) -> None:
        if self._version_refused:
            self._fall_back_to_v311()
            return
        if not self._got_connack:
            self._note_failure(f"connection closed before CONNACK ({_rc_text(rc)})")
            return
        self._note_failure(
            self._last_error if self._refused else f"connection lost ({_rc_text(rc)})"
        )

    def _fall_back_to_v311(self) -> None:
        _log.info("%s: broker refused MQTT 5, falling back to 3.1.1", self.client_id)
        old = self._client
        self._use_v5 = False
        self._refused = False
        self._version_refused = False
        with contextlib.suppress(Exception):
            if old is not None:
                old._reset_sockets()
        self._client = self._build_client()
        self._fail_publishes("dropped while switching to MQTT 3.1.1; publish again")

    def _note_failure(self, reason: str) -> None:
        self._last_error = reason
        delay = self._settings.backoff.delay(self._failures, self._rand)
        self._failures += 1
        _log.debug("%s: %s; next attempt in %.2f s", self.client_id, reason, delay)
        self._stop.wait(delay)

    # -- paho callbacks (network thread) --------------------------------------------------

    def _handle_connect(
        self, client: paho_client.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._got_connack = True
        if reason.is_failure:
            code = int(reason.value)
            self._last_error = f"broker refused the connection: {reason}"
            if code in _UNSUPPORTED_VERSION and self._use_v5 and self._settings.protocol == "auto":
                # An MQTT 3.1.1 broker answering an MQTT 5 CONNECT: speak 3.1.1 from now on.
                self._version_refused = True
                return
            self._refused = True
            self._outcome.set()
            return
        self._refused = False
        self._failures = 0
        self.connects += 1
        self._connected.set()
        self._outcome.set()
        with self._lock:
            filters = [(f, qos) for f, (_, qos) in self._subscriptions.items()]
        if filters:
            try:
                self._send_subscribe(filters)
            except TransportError as exc:
                _log.warning("%s: re-subscribe failed: %s", self.client_id, exc)
        session_present = bool(getattr(flags, "session_present", False))
        for callback in list(self._on_connect):
            try:
                callback(session_present)
            except Exception:
                _log.exception("%s: on_connect callback failed", self.client_id)

    def _handle_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if not was_connected:
            return
        text = "connection lost" if reason is None else f"disconnected: {reason}"
        self._last_error = text
        for callback in list(self._on_disconnect):
            try:
                callback(text)
            except Exception:
                _log.exception("%s: on_disconnect callback failed", self.client_id)

    def _handle_message(self, client: Any, userdata: Any, raw: Any) -> None:
        try:
            message = Message(raw.topic, bytes(raw.payload), retain=bool(raw.retain), qos=raw.qos)
        except UnicodeDecodeError:
            _log.warning("%s: dropped a message with a non-UTF-8 topic", self.client_id)
            return
        with self._lock:
            handlers: list[MessageHandler] = []
            for topic_filter, (handler, _) in self._subscriptions.items():
                # One call per distinct handler, however many of its filters match.
                if topic_matches(topic_filter, message.topic) and handler not in handlers:
                    handlers.append(handler)
        for handler in handlers:
            try:
                handler(message)
            except Exception:
                _log.exception("%s: handler failed on %s", self.client_id, message.topic)

    def _handle_publish(
        self, client: Any, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        failure = f"broker refused: {reason}" if reason.is_failure else None
        with self._lock:
            ack = self._pub_acks.pop(mid, None)
            if ack is None:
                self._early_pubacks[mid] = failure
                return
        _finish(ack, failure)

    def _handle_subscribe(
        self, client: Any, userdata: Any, mid: int, reasons: list[Any], properties: Any
    ) -> None:
        results = [f"broker refused: {r}" if r.is_failure else None for r in reasons]
        with self._lock:
            filters = self._sub_mids.pop(mid, None)
            if filters is None:
                self._early_subacks[mid] = results
                return
        self._finish_subscribe(filters, results)

    # -- helpers --------------------------------------------------------------------------

    def _send_subscribe(self, filters: list[tuple[str, int]]) -> None:
        client = self._client
        if client is None:
            return
        with _paho_errors(f"subscribe to {filters[0][0]}"):
            rc, mid = client.subscribe(filters)
        if rc != 0 or mid is None:
            return  # not connected any more: the next CONNACK subscribes again
        with self._lock:
            early = self._early_subacks.pop(mid, None)
            if early is None:
                self._sub_mids[mid] = [f for f, _ in filters]
        if early is not None:
            self._finish_subscribe([f for f, _ in filters], early)

    def _finish_subscribe(self, filters: list[str], results: list[str | None]) -> None:
        for topic_filter, failure in zip(filters, results, strict=False):
            with self._lock:
                waiting = self._sub_waiting.pop(topic_filter, [])
            for ack in waiting:
                _finish(ack, failure)

    def _fail_publishes(self, reason: str) -> None:
        with self._lock:
            acks = list(self._pub_acks.values())
            self._pub_acks.clear()
        for ack in acks:
            ack.fail(reason)

    def _fail_pending(self, reason: str) -> None:
        self._fail_publishes(reason)
        with self._lock:
            waiting = [ack for acks in self._sub_waiting.values() for ack in acks]
            self._sub_waiting.clear()
        for ack in waiting:
            ack.fail(reason)


def _finish(ack: EventAck, failure: str | None) -> None:
    if failure is None:
        ack.complete()
    else:
        ack.fail(failure)


def _ignore_socket_event(client: Any, userdata: Any, sock: Any) -> None:
    """Registered so that paho leaves writing to the network thread's ``loop()``."""


__all__ = ["PahoLink"]


if TYPE_CHECKING:

    def _implements_link(link: PahoLink) -> Link:
        return link
