"""A client connection for the inference API when it listens on a Unix socket.

Apps on the board talk to the agent over its Unix socket (``[api] unix_socket`` in
agent.toml); :class:`UnixHTTPConnection` is ``http.client.HTTPConnection`` for such a path,
to use with :func:`~edgeops.agent.serving.protocol.encode_request` and
:func:`~edgeops.agent.serving.protocol.decode_response`.
"""

from __future__ import annotations

import http.client
import socket
from pathlib import Path


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over the Unix socket at ``path`` (``Host: localhost``)."""

    def __init__(self, path: str | Path, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()  # the socket file exists before the server listens on it
            raise
        self.sock = sock


__all__ = ["UnixHTTPConnection"]
