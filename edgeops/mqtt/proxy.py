"""A loopback TCP proxy in front of a broker, for fault-injection tests and the demo.

Clients connect to the proxy's port instead of the broker's. The test can then cut every
live connection at once (:meth:`TcpProxy.cut`, what a Wi-Fi drop looks like to both ends),
refuse new connections for a while (:meth:`TcpProxy.refuse`), hold every byte for a while
(:meth:`TcpProxy.delay`, a slow link), stop forwarding while keeping both connections open
(:meth:`TcpProxy.stall`, a half-open link: no FIN, no RST, nothing arrives), and make the
proxy answer like an MQTT 3.1.1-only broker (``max_protocol_level=4``) to exercise the
MQTT 5 fallback.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from types import TracebackType

from edgeops.broker import free_port

_BUFFER = 65536
# MQTT 3.1.1 §3.2: CONNACK, remaining length 2, no session, return code 1
# ("unacceptable protocol version").
_CONNACK_BAD_VERSION = bytes([0x20, 0x02, 0x00, 0x01])


def _read_connect(client: socket.socket) -> bytes | None:
    """Read the whole first packet (CONNECT) from a client; None if it closed early."""
    data = b""
    while True:
        if len(data) >= 2:
            length, multiplier, position = 0, 1, 1
            while position < len(data) and position <= 4:
                byte = data[position]
                length += (byte & 0x7F) * multiplier
                multiplier *= 128
                position += 1
                if not byte & 0x80:
                    if len(data) >= position + length:
                        return data
                    break
        chunk = client.recv(_BUFFER)
        if not chunk:
            return None
        data += chunk


def _protocol_level(connect: bytes) -> int:
    position = 1
    while connect[position] & 0x80:
        position += 1
    # Variable header: protocol name (2-byte length + "MQTT"), then the level byte.
    return connect[position + 1 + 6]


class TcpProxy:
    """Forwards ``127.0.0.1:{port}`` to ``target_host:target_port``; a context manager."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        port: int | None = None,
        max_protocol_level: int | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.max_protocol_level = max_protocol_level
        self.connections = 0
        """How many client connections the proxy accepted and forwarded."""
        self.attempts = 0
        """How many TCP connections clients opened, refused ones included."""
        self._refusing = False
        self._delay_s = 0.0
        self._stalled = False
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._server: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> TcpProxy:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((self.host, self.port))
        server.listen(128)
        server.settimeout(0.2)
        self._server = server
        thread = threading.Thread(target=self._accept, name=f"tcp-proxy-{self.port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def cut(self) -> None:
        """Close every live connection abruptly, both ways."""
        with self._lock:
            live, self._live = self._live, set()
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def refuse(self, refusing: bool = True) -> None:
        """While set, accepted connections are closed at once (the broker seems down)."""
        self._refusing = refusing

    def delay(self, seconds: float) -> None:
        """Hold each block of data ``seconds`` before forwarding it, both ways (0: off)."""
        if seconds < 0:
            raise ValueError(f"expected a delay >= 0 s, got {seconds}")
        self._delay_s = seconds

    def stall(self, stalled: bool = True) -> None:
        """While set, forward nothing and read nothing, but keep every connection open:
        the ends see a silent peer (their keepalive is what notices), and what they sent
        meanwhile is delivered once the stall ends."""
        self._stalled = stalled

    def stop(self) -> None:
        self._stop.set()
        self.cut()
        if self._server is not None:
            self._server.close()
        for thread in self._threads:
            thread.join(2)

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.attempts += 1
            if self._refusing:
                client.close()
                continue
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            first = _read_connect(client)
            if first is None:
                return
            if self.max_protocol_level is not None and (
                _protocol_level(first) > self.max_protocol_level
            ):
                client.sendall(_CONNACK_BAD_VERSION)
                return
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
            upstream.sendall(first)
            with self._lock:
                self._live.update((client, upstream))
                self.connections += 1
            self._pump(client, upstream)
        except (OSError, IndexError, ValueError):
            pass
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    with self._lock:
                        self._live.discard(sock)
                    sock.close()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        while not self._stop.is_set():
            if client.fileno() < 0 or upstream.fileno() < 0:
                return
            if self._stalled:
                self._stop.wait(0.05)
                continue
            readable, _, _ = select.select(list(peers), [], [], 0.2)
            for sock in readable:
                data = sock.recv(_BUFFER)
                if not data:
                    return
                if self._delay_s:
                    time.sleep(self._delay_s)
                peers[sock].sendall(data)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["TcpProxy"]
