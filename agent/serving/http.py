"""The inference API server: Open Inference Protocol (KServe v2) REST on the standard library.

``http.server`` with one thread per connection, HTTP/1.1 keep-alive, on 127.0.0.1 or a
Unix socket (docs/decisions/0003-inference-api-server.md says why no web framework).

=====================================================  ==============================
``GET  /v2/health/live``                               200 while the server runs
``GET  /v2/health/ready``                              200 with a model, else 400
``GET  /v2``                                           server metadata
``GET  /v2/models/{name}[/versions/{v}]``              model metadata
``GET  /v2/models/{name}[/versions/{v}]/ready``        200 when that model serves
``POST /v2/models/{name}[/versions/{v}]/infer``        inference (JSON or binary tensors)
=====================================================  ==============================

Every failure is answered ``{"error": "..."}``: 400 for a bad request (malformed JSON,
wrong input name, shape, datatype or size), 404 for an unknown model or path, 405 for a
wrong method, 411 without a Content-Length, 413 past the body cap, 500 when the model
fails, 503 when no model is loaded or the connection cap is reached. A client that stops
sending is cut off after ``request_timeout_s``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import socketserver
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edgeops import __version__
from edgeops.agent.serving.holder import ActiveModel, ModelHolder
from edgeops.agent.serving.protocol import (
    EXTENSIONS,
    HEADER_LENGTH,
    decode_request,
    encode_response,
)
from edgeops.agent.telemetry.metrics import MetricsWindow
from edgeops.errors import ConfigError, InferenceInputError, ModelError, StateError

log = logging.getLogger(__name__)

_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer))?/?$")
_READ_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    """Where and how the inference API listens.

    ``unix_socket`` wins over ``host``/``port`` when set. ``port=0`` picks a free port.
    ``max_body_bytes`` caps a request (a 1×640×640×3 float32 image is 4.9 MB);
    ``request_timeout_s`` bounds every read from a client, and the whole body read;
    ``max_connections`` bounds the threads the server runs at once.
    """

    host: str = "127.0.0.1"
    port: int = 8321
    unix_socket: Path | None = None
    max_body_bytes: int = 32 * 1024 * 1024
    request_timeout_s: float = 10.0
    max_connections: int = 32

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"expected an API port in 0..65535, got {self.port}")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"expected max_body_bytes >= 1024, got {self.max_body_bytes}")
        if self.request_timeout_s <= 0:
            raise ConfigError(f"expected request_timeout_s > 0, got {self.request_timeout_s}")
        if self.max_connections < 1:
            raise ConfigError(f"expected max_connections >= 1, got {self.max_connections}")


class _HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _raw_response(status: HTTPStatus, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status.value} {status.phrase}", f"Server: edgeops/{__version__}"]
    lines += [f"{key}: {value}" for key, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ServerMixin

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.api_config.request_timeout_s)
        if self.connection.family in (socket.AF_INET, socket.AF_INET6):
            # Small responses must not wait for Nagle's algorithm and a delayed ACK.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server calls this itself for requests it cannot parse (bad request line, too
        # many or too long headers, unknown method); answer in the protocol's JSON form
        # instead of its HTML page.
        status = HTTPStatus(code)
        self.close_connection = True
        self._send_json(status, {"error": message or explain or status.phrase})

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("inference api: " + format, *args)

    # -- plumbing ----------------------------------------------------------------------

    def _send(
        self, status: HTTPStatus, body: bytes, content_type: str, extra: dict[str, str] | None
    ) -> None:
        headers = {"Content-Type": content_type, **(extra or {})}
        if self.close_connection:
            headers["Connection"] = "close"
        self.wfile.write(_raw_response(status, body, headers))
        self.log_request(status.value, len(body))

    def _send_json(self, status: HTTPStatus, value: Any) -> None:
        self._send(
            status, json.dumps(value, separators=(",", ":")).encode(), "application/json", None
        )

    def _send_error(self, status: HTTPStatus, message: str) -> None:
        self._send_json(status, {"error": message})

    def _read_body(self) -> bytearray:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise _HttpError(
                HTTPStatus.LENGTH_REQUIRED, "send a Content-Length; chunked bodies are not accepted"
            )
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True
            raise _HttpError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise _HttpError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {raw!r}")
        cap = self.server.api_config.max_body_bytes
        if length > cap:
            # The body is not read, so the connection cannot be reused.
            self.close_connection = True
            raise _HttpError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body of {length} bytes exceeds the cap of {cap} bytes",
            )
        deadline = time.monotonic() + self.server.api_config.request_timeout_s
        # Read straight into one buffer: a 1.2 MB float image is not copied again by a join,
        # and the input arrays are views of it.
        body = bytearray(length)
        view = memoryview(body)
        done = 0
        while done < length:
            if time.monotonic() > deadline:
                self.close_connection = True
                raise _HttpError(HTTPStatus.REQUEST_TIMEOUT, "the request body came too slowly")
            count = self.rfile.readinto1(view[done : done + _READ_CHUNK])
            if not count:
                self.close_connection = True
                raise _HttpError(HTTPStatus.BAD_REQUEST, "the body ended before Content-Length")
            done += count
        return body

    def _dispatch(self, method: str) -> None:
        server = self.server
        server.enter_request()
        started = time.perf_counter()
        is_infer = False
        status = HTTPStatus.OK
        try:
            path = self.path.split("?", 1)[0]
            is_infer = method == "POST" and path.rstrip("/").endswith("/infer")
            status = self._route(method, path)
        except _HttpError as exc:
            status = exc.status
            self._send_error(exc.status, exc.message)
        except (TimeoutError, ConnectionError):
            # the client stalled or hung up: its fault, counted as rejected, not as a success
            status = HTTPStatus.REQUEST_TIMEOUT
            self.close_connection = True
            raise
        except Exception as exc:
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            log.exception("inference api: unexpected failure on %s %s", method, self.path)
            self.close_connection = True
            self._send_error(status, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            server.leave_request()
            if is_infer:
                if status >= 500:
                    server.metrics.record(time.perf_counter() - started, ok=False)
                elif status >= 400:
                    server.metrics.record_rejected()
                else:
                    server.metrics.record(time.perf_counter() - started)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- routes ------------------------------------------------------------------------

    def _route(self, method: str, path: str) -> HTTPStatus:
        holder = self.server.holder
        if path in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/"):
            if method != "GET":
                self._drain_body()
                raise _HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed on {path}")
            if path == "/v2/health/live":
                self._send_json(HTTPStatus.OK, {"live": True})
                return HTTPStatus.OK
            if path == "/v2/health/ready":
                # The protocol answers "not ready" with a 4xx status.
                status = HTTPStatus.OK if holder.ready else HTTPStatus.BAD_REQUEST
                self._send_json(status, {"ready": holder.ready})
                return status
            self._send_json(
                HTTPStatus.OK,
                {"name": "edgeops-agent", "version": __version__, "extensions": list(EXTENSIONS)},
            )
            return HTTPStatus.OK
        match = _MODEL_PATH.match(path)
        if match is None:
            self._drain_body()
            raise _HttpError(HTTPStatus.NOT_FOUND, f"no such endpoint {path}")
        name, version, action = match.groups()
        wanted = "POST" if action == "infer" else "GET"
        if method != wanted:
            self._drain_body()
            raise _HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed on {path}")
        if action == "infer":
            return self._infer(name, version)
        try:
            with holder.use() as model:
                self._check_model(model, name, version)
                if action == "ready":
                    self._send_json(HTTPStatus.OK, {"name": name, "ready": True})
                else:
                    self._send_json(HTTPStatus.OK, self._metadata(model))
        except StateError as exc:
            raise _HttpError(HTTPStatus.NOT_FOUND, f"model {name!r} is not loaded") from exc
        return HTTPStatus.OK

    def _drain_body(self) -> None:
        # A body left unread would be parsed as the next request on this connection.
        if self.headers.get("Content-Length", "0") not in ("", "0"):
            self.close_connection = True

    @staticmethod
    def _check_model(model: ActiveModel, name: str, version: str | None) -> None:
        if name != model.info.name:
            raise _HttpError(
                HTTPStatus.NOT_FOUND,
                f"unknown model {name!r}; this device serves {model.info.name!r}",
            )
        if version is not None and version != model.info.version:
            raise _HttpError(
                HTTPStatus.NOT_FOUND,
                f"model {name!r} has no version {version!r}; it serves {model.info.version!r}",
            )

    @staticmethod
    def _metadata(model: ActiveModel) -> dict[str, Any]:
        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [
                {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}
                for spec in specs
            ]

        return {
            "name": model.info.name,
            "versions": [model.info.version],
            "platform": model.platform,
            "inputs": tensors(model.inputs),
            "outputs": tensors(model.outputs),
        }

    def _infer(self, name: str, version: str | None) -> HTTPStatus:
        body = self._read_body()
        raw_length = self.headers.get(HEADER_LENGTH)
        header_length: int | None = None
        if raw_length is not None:
            try:
                header_length = int(raw_length)
            except ValueError as exc:
                raise _HttpError(
                    HTTPStatus.BAD_REQUEST, f"bad {HEADER_LENGTH} {raw_length!r}"
                ) from exc
        try:
            with self.server.holder.use() as model:
                self._check_model(model, name, version)
                request = decode_request(body, header_length, model.inputs)
                output_names = [spec.name for spec in model.outputs]
                if request.outputs is not None:
                    unknown = sorted(set(request.outputs) - set(output_names))
                    if unknown:
                        raise InferenceInputError(
                            f"unknown output(s) {unknown}; the model has {output_names}"
                        )
                results = model.run(request.inputs)
                selected = request.outputs or dict.fromkeys(
                    output_names, request.binary_output_default
                )
                payload, json_length = encode_response(
                    model_name=model.info.name,
                    model_version=model.info.version,
                    outputs={key: results[key] for key in output_names if key in selected},
                    binary=selected,
                    request_id=request.request_id,
                )
        except InferenceInputError as exc:
            raise _HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from exc
        except StateError as exc:
            raise _HttpError(
                HTTPStatus.SERVICE_UNAVAILABLE, f"model {name!r} is not loaded: {exc}"
            ) from exc
        except ModelError as exc:
            raise _HttpError(HTTPStatus.INTERNAL_SERVER_ERROR, f"the model failed: {exc}") from exc
        if json_length is None:
            self._send(HTTPStatus.OK, payload, "application/json", None)
        else:
            self._send(
                HTTPStatus.OK,
                payload,
                "application/octet-stream",
                {HEADER_LENGTH: str(json_length)},
            )
        return HTTPStatus.OK


class _ServerMixin(socketserver.BaseServer):
    """What both server classes share: the holder, the caps, the busy count."""

    holder: ModelHolder
    api_config: ApiConfig
    metrics: MetricsWindow
    daemon_threads = True

    def init_shared(self, holder: ModelHolder, config: ApiConfig, metrics: MetricsWindow) -> None:
        self.holder = holder
        self.api_config = config
        self.metrics = metrics
        self._slots = threading.BoundedSemaphore(config.max_connections)
        self._busy = 0
        self._busy_cond = threading.Condition()
        self._connections: set[socket.socket] = set()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response is routine; socketserver would print a
        # traceback to stderr for it.
        log.debug("inference api: connection dropped", exc_info=True)

    def enter_request(self) -> None:
        with self._busy_cond:
            self._busy += 1

    def leave_request(self) -> None:
        with self._busy_cond:
            self._busy -= 1
            self._busy_cond.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._busy_cond:
            return self._busy_cond.wait_for(lambda: self._busy == 0, timeout=timeout)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            body = json.dumps({"error": "too many connections; retry later"}).encode()
            headers = {"Content-Type": "application/json", "Connection": "close"}
            with contextlib.suppress(OSError):
                request.sendall(_raw_response(HTTPStatus.SERVICE_UNAVAILABLE, body, headers))
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        with self._busy_cond:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            with self._busy_cond:
                self._connections.discard(request)
            self._slots.release()

    def hang_up(self) -> None:
        """Close every open connection (idle keep-alive ones would otherwise linger)."""
        with self._busy_cond:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _TcpServer(_ServerMixin, ThreadingHTTPServer):
    pass


class _UnixServer(_ServerMixin, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    pass


class InferenceServer:
    """Serves a :class:`ModelHolder` over the Open Inference Protocol REST API.

    ::

        with InferenceServer(holder, ApiConfig(port=0)) as server:
            print(server.url)        # http://127.0.0.1:40123
    """

    def __init__(
        self,
        holder: ModelHolder,
        config: ApiConfig | None = None,
        *,
        metrics: MetricsWindow | None = None,
        poll_interval: float = 0.5,
    ) -> None:
        self.holder = holder
        # How often the accept loop checks for stop(): the cost of an idle server (a few
        # wake-ups a second) against how long stop() waits.
        self.poll_interval = poll_interval
        self.config = config or ApiConfig()
        #: end-to-end /infer latency as the HTTP client sees it (server side)
        self.metrics = metrics or MetricsWindow()
        self._server: _TcpServer | _UnixServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a background thread; raises :class:`ConfigError` if it cannot bind."""
        if self._server is not None:
            raise StateError("the inference API is already running")
        server: _TcpServer | _UnixServer
        try:
            if self.config.unix_socket is not None:
                path = self.config.unix_socket
                if path.is_socket():
                    path.unlink()  # left by a previous run that was killed
                server = _UnixServer(str(path), _Handler)
                os.chmod(path, 0o660)
            else:
                server = _TcpServer((self.config.host, self.config.port), _Handler)
        except OSError as exc:
            where = self.config.unix_socket or f"{self.config.host}:{self.config.port}"
            raise ConfigError(f"the inference API cannot listen on {where}: {exc}") from exc
        server.init_shared(self.holder, self.config, self.metrics)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self.poll_interval},
            name="edgeops-inference-api",
            daemon=True,
        )
        self._thread.start()
        log.info("inference API listening on %s", self.url)

    @property
    def port(self) -> int:
        """The TCP port (useful with ``port=0``); raises for a Unix socket."""
        if self._server is None or not isinstance(self._server, _TcpServer):
            raise StateError("the inference API is not listening on TCP")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port`` or ``unix:/path``."""
        if self.config.unix_socket is not None:
            return f"unix:{self.config.unix_socket}"
        return f"http://{self.config.host}:{self.port}"

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop accepting, let requests under way finish (up to ``timeout``), close."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        if not server.wait_idle(timeout):
            log.warning("inference API stopped with requests still running")
        server.hang_up()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.config.unix_socket is not None:
            self.config.unix_socket.unlink(missing_ok=True)

    def __enter__(self) -> InferenceServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
