"""The service's HTTP side: JSON API, dashboard assets and Prometheus ``/metrics``.

:class:`FleetApi` is the routing, I/O-free: it takes a method, a request target and a body
and returns a :class:`Response`, so it is tested without sockets. :class:`HttpServer`
serves it with the standard library's threading HTTP server (the reasons are those of the
agent's inference API, docs/decisions/0003-inference-api-server.md: no dependency for a
handful of small JSON endpoints), bound to 127.0.0.1 unless told otherwise.

=============================================  =============================================
``GET  /``                                     the dashboard page (``/dashboard.js``, ``.css``)
``GET  /api/fleet``                            summary and one row per device
``GET  /api/devices/{id}``                     device, update history, recent health
``GET  /api/devices/{id}/health?since=&limit=`` health samples since a Unix time, oldest first
``GET  /api/rollouts``                         every rollout, newest first
``GET  /api/rollouts/{id}``                    one rollout with waves and device phases
``POST /api/rollouts/{id}/pause|resume|abort`` queue a request for the rollout's runner (202)
``GET  /metrics``                              Prometheus text format 0.0.4
``GET  /healthz``                              200 while the service runs
=============================================  =============================================

Errors are ``{"error": "..."}`` with 400 (bad parameter or body), 404 (unknown path, device
or rollout), 405 (wrong method), 409 (a request for a finished rollout), 413 (body past
the cap) and 500 (anything unexpected, logged).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from edgeops import __version__
from edgeops.errors import ConfigError, StateError
from edgeops.fleet.registry import ROLLOUT_ACTIONS, RegistryStore
from edgeops.fleet.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from edgeops.fleet.status import device_detail, fleet_status, list_rollouts, rollout_status

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
#: health samples one request returns at most (a day of 1-minute windows and some)
MAX_HEALTH_SAMPLES = 2000
DEFAULT_HEALTH_SAMPLES = 500
REQUEST_TIMEOUT_S = 10.0

_DEVICE = re.compile(r"^/api/devices/([^/]+)(/health)?/?$")
_ROLLOUT = re.compile(r"^/api/rollouts/([^/]+)(?:/(pause|resume|abort))?/?$")
_ASSETS = {
    "/": ("dashboard.html", "text/html; charset=utf-8"),
    "/index.html": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


@dataclass(frozen=True)
class Response:
    """What the routing answers: status, content type, body, extra headers."""

    status: HTTPStatus
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: HTTPStatus, value: Any) -> Response:
        return cls(status, json.dumps(value, separators=(",", ":"), allow_nan=False).encode())

    @classmethod
    def error(cls, status: HTTPStatus, message: str) -> Response:
        return cls.json(status, {"error": message})


class ApiError(Exception):
    """A request the API refuses, with the status to answer."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _finite(value: Any) -> Any:
    # JSON has no NaN or Infinity; a device may well report one.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _asset(name: str) -> bytes:
    return resources.files("edgeops.fleet.service").joinpath(name).read_bytes()


class FleetApi:
    """Routes requests to the registry and the service's own figures.

    ``metrics`` renders the ``/metrics`` text; ``info`` gives the service's own state
    (instance, share group, rollouts driven, ingest counters) for ``/api/fleet``.
    """

    def __init__(
        self,
        store: RegistryStore,
        *,
        metrics: Callable[[], str],
        info: Callable[[], dict[str, Any]] = dict,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.info = info
        self.clock = clock
        self._assets: dict[str, bytes] = {}

    def handle(self, method: str, target: str, body: bytes = b"") -> Response:
        """Answer one request; never raises."""
        try:
            return self._route(method, target, body)
        except ApiError as exc:
            return Response.error(exc.status, exc.message)
        except Exception as exc:
            log.exception("fleet api: unexpected failure on %s %s", method, target)
            return Response.error(
                HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(exc).__name__}: {exc}"
            )

    def _route(self, method: str, target: str, body: bytes) -> Response:
        parts = urlsplit(target)
        path = parts.path
        query = parse_qs(parts.query, keep_blank_values=True)
        if path in _ASSETS:
            self._allow(method, "GET", path)
            name, content_type = _ASSETS[path]
            if name not in self._assets:
                self._assets[name] = _asset(name)
            return Response(
                HTTPStatus.OK, self._assets[name], content_type, {"Cache-Control": "no-cache"}
            )
        if path == "/metrics":
            self._allow(method, "GET", path)
            return Response(HTTPStatus.OK, self.metrics().encode(), METRICS_CONTENT_TYPE)
        if path == "/healthz":
            self._allow(method, "GET", path)
            return Response.json(HTTPStatus.OK, {"ok": True, "version": __version__})
        if path in ("/api/fleet", "/api/fleet/"):
            self._allow(method, "GET", path)
            group = query.get("group", [None])[0] or None
            status = fleet_status(self.store, group=group, now=self.clock()).to_json()
            status["service"] = self.info()
            return Response.json(HTTPStatus.OK, _finite(status))
        if path in ("/api/rollouts", "/api/rollouts/"):
            self._allow(method, "GET", path)
            active = query.get("active", ["0"])[0] in ("1", "true", "yes")
            views = [v.to_json() for v in list_rollouts(self.store, active_only=active)]
            return Response.json(HTTPStatus.OK, _finite(views))
        match = _DEVICE.match(path)
        if match is not None:
            self._allow(method, "GET", path)
            device_id = unquote(match.group(1))
            if match.group(2):
                return self._health(device_id, query)
            detail = device_detail(self.store, device_id, events=50, samples=50)
            if detail is None:
                raise ApiError(HTTPStatus.NOT_FOUND, f"no device {device_id!r} in the registry")
            return Response.json(HTTPStatus.OK, _finite(detail.to_json()))
        match = _ROLLOUT.match(path)
        if match is not None:
            rollout_id, action = unquote(match.group(1)), match.group(2)
            if action is not None:
                self._allow(method, "POST", path)
                return self._request(rollout_id, action, body)
            self._allow(method, "GET", path)
            view = rollout_status(self.store, rollout_id)
            if view is None:
                raise ApiError(HTTPStatus.NOT_FOUND, f"no rollout {rollout_id!r}")
            return Response.json(HTTPStatus.OK, _finite(view.to_json()))
        raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint {path}")

    @staticmethod
    def _allow(method: str, wanted: str, path: str) -> None:
        if method != wanted:
            raise ApiError(
                HTTPStatus.METHOD_NOT_ALLOWED, f"{method} not allowed on {path}; use {wanted}"
            )

    def _health(self, device_id: str, query: dict[str, list[str]]) -> Response:
        if self.store.get_device(device_id) is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no device {device_id!r} in the registry")
        since = _number(query, "since", 0.0)
        limit = int(_number(query, "limit", DEFAULT_HEALTH_SAMPLES))
        if not 1 <= limit <= MAX_HEALTH_SAMPLES:
            raise ApiError(
                HTTPStatus.BAD_REQUEST, f"expected limit in 1..{MAX_HEALTH_SAMPLES}, got {limit}"
            )
        # Newest first from the registry: the newest `limit` samples since `since`, then
        # oldest first for plotting.
        rows = [r for r in self.store.telemetry_for(device_id, limit=limit) if r.ts >= since]
        rows.sort(key=lambda r: (r.ts, r.seq, r.idx))
        samples = [
            {
                "ts": r.ts,
                "seq": r.seq,
                "bundle": r.bundle,
                "requests": r.requests,
                "errors": r.errors,
                "p50_ms": r.p50_ms,
                "p95_ms": r.p95_ms,
                "p99_ms": r.p99_ms,
                "error_rate": r.error_rate,
                "drift": r.drift,
                "temp_c": r.temp_c,
                "cpu_percent": r.cpu_percent,
                "rss_mb": r.rss_mb,
            }
            for r in rows
        ]
        return Response.json(
            HTTPStatus.OK, _finite({"device_id": device_id, "since": since, "samples": samples})
        )

    def _request(self, rollout_id: str, action: str, body: bytes) -> Response:
        reason = ""
        if body.strip():
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError) as exc:
                raise ApiError(HTTPStatus.BAD_REQUEST, f"expected a JSON body: {exc}") from exc
            if not isinstance(data, dict) or not isinstance(data.get("reason", ""), str):
                raise ApiError(
                    HTTPStatus.BAD_REQUEST,
                    'expected a body like {"reason": "why"}, got ' + repr(data)[:200],
                )
            reason = data.get("reason", "")
        record = self.store.get_rollout(rollout_id)
        if record is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no rollout {rollout_id!r}")
        if record.status not in ("running", "paused"):
            raise ApiError(
                HTTPStatus.CONFLICT, f"rollout {rollout_id} has finished ({record.status})"
            )
        assert action in ROLLOUT_ACTIONS
        if action == "abort" and not reason:
            reason = "aborted from the fleet service API"
        try:
            request = self.store.add_rollout_request(
                rollout_id, action, reason=reason, now=self.clock()
            )
        except (ConfigError, StateError) as exc:
            raise ApiError(HTTPStatus.CONFLICT, str(exc)) from exc
        return Response.json(
            HTTPStatus.ACCEPTED,
            {"rollout_id": rollout_id, "request": action, "request_id": request.request_id},
        )


def _number(query: dict[str, list[str]], name: str, default: float) -> float:
    values = query.get(name)
    if not values or values[0] == "":
        return default
    try:
        value = float(values[0])
    except ValueError:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, f"expected a number for {name}, got {values[0]!r}"
        ) from None
    if not math.isfinite(value):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"expected a finite {name}, got {values[0]!r}")
    return value


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(REQUEST_TIMEOUT_S)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fleet api: " + format, *args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (bad request line, unknown method) in our JSON form.
        status = HTTPStatus(code)
        self.close_connection = True
        self._write(Response.error(status, message or explain or status.phrase))

    def _write(self, response: Response) -> None:
        self.send_response(response.status.value)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for key, value in response.headers.items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _body(self) -> bytes | Response:
        raw = self.headers.get("Content-Length")
        if raw is None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self.close_connection = True
                return Response.error(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length")
            return b""
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            return Response.error(HTTPStatus.BAD_REQUEST, f"bad Content-Length {raw!r}")
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            return Response.error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body of {length} bytes exceeds the cap of {MAX_BODY_BYTES} bytes",
            )
        return self.rfile.read(length)

    def _serve(self) -> None:
        body = self._body()
        if isinstance(body, Response):
            self._write(body)
            return
        self._write(self.server.api.handle(self.command, self.path, body))

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: FleetApi

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("fleet api: connection dropped", exc_info=True)


class HttpServer:
    """Serves a :class:`FleetApi` on ``host:port`` (``port=0`` picks a free one)."""

    def __init__(self, api: FleetApi, *, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.api = api
        self.host = host
        self.requested_port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve in a background thread; :class:`ConfigError` if it cannot bind."""
        if self._server is not None:
            raise StateError("the fleet HTTP server is already running")
        try:
            server = _Server((self.host, self.requested_port), _Handler)
        except OSError as exc:
            raise ConfigError(
                f"the fleet service cannot listen on {self.host}:{self.requested_port}: {exc}"
            ) from exc
        server.api = self.api
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="edgeops-fleet-http",
            daemon=True,
        )
        self._thread.start()

    @property
    def port(self) -> int:
        if self._server is None:
            raise StateError("the fleet HTTP server is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop accepting and close; requests under way run on daemon threads."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)


__all__ = [
    "DEFAULT_HEALTH_SAMPLES",
    "MAX_BODY_BYTES",
    "MAX_HEALTH_SAMPLES",
    "ApiError",
    "FleetApi",
    "HttpServer",
    "Response",
]
