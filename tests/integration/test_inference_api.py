"""The inference API over real HTTP (loopback TCP and a Unix socket) on real LiteRT."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeops.agent.runtimes import load_model
from edgeops.agent.runtimes.testing import (
    fake_add_runtime,
    tflite_add_model,
    tflite_image_mean_model,
)
from edgeops.agent.serving import (
    HEADER_LENGTH,
    ApiConfig,
    InferenceServer,
    ModelHolder,
    ModelInfo,
    UnixHTTPConnection,
    decode_response,
    encode_request,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    (tmp_path / "image.tflite").write_bytes(tflite_image_mean_model(height=64, width=48))
    (tmp_path / "add1.tflite").write_bytes(tflite_add_model(constant=1.0))
    (tmp_path / "add2.tflite").write_bytes(tflite_add_model(constant=2.0))
    return tmp_path


@pytest.fixture
def holder(model_dir: Path) -> Iterator[ModelHolder]:
    holder = ModelHolder()
    holder.swap(load_model(model_dir / "image.tflite"), ModelInfo(name="meanpix", version="4"))
    yield holder
    holder.close()


@pytest.fixture
def server(holder: ModelHolder) -> Iterator[InferenceServer]:
    with InferenceServer(
        holder, ApiConfig(port=0, max_body_bytes=64 * 1024), poll_interval=0.05
    ) as server:
        yield server


@pytest.fixture
def conn(server: InferenceServer) -> Iterator[http.client.HTTPConnection]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    yield conn
    conn.close()


def request(conn, method: str, path: str, body: bytes | None = None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, response.getheaders(), response.read()


def get_json(conn, path: str) -> tuple[int, dict[str, Any]]:
    status, _, body = request(conn, "GET", path)
    return status, json.loads(body)


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, 64, 48, 3), dtype=np.uint8)


def infer(conn, inputs, *, path="/v2/models/meanpix/infer", **kwargs):
    body, headers = encode_request(inputs, **kwargs)
    status, resp_headers, payload = request(conn, "POST", path, body, headers)
    length = dict(resp_headers).get(HEADER_LENGTH)
    return status, payload, int(length) if length else None


def test_health_and_metadata(conn) -> None:
    assert get_json(conn, "/v2/health/live") == (200, {"live": True})
    assert get_json(conn, "/v2/health/ready") == (200, {"ready": True})
    status, meta = get_json(conn, "/v2")
    assert status == 200
    assert meta["name"] == "edgeops-agent"
    assert meta["extensions"] == ["binary_tensor_data"]
    status, model = get_json(conn, "/v2/models/meanpix")
    assert status == 200
    assert model == {
        "name": "meanpix",
        "versions": ["4"],
        "platform": "tflite",
        "inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 64, 48, 3]}],
        "outputs": [{"name": "mean", "datatype": "FP32", "shape": [1, 3]}],
    }
    assert get_json(conn, "/v2/models/meanpix/versions/4") == (200, model)
    assert get_json(conn, "/v2/models/meanpix/ready") == (200, {"name": "meanpix", "ready": True})


def test_binary_inference_matches_in_process(conn, holder: ModelHolder) -> None:
    x = image(1)
    status, payload, length = infer(conn, {"image": x})
    assert status == 200
    assert length is not None  # binary outputs came back
    out = decode_response(payload, length)
    expected = holder.infer({"image": x})
    np.testing.assert_array_equal(out["mean"], expected["mean"])
    np.testing.assert_allclose(out["mean"][0], x.reshape(-1, 3).mean(0) / 255, atol=1e-5)


def test_json_inference_and_versioned_path(conn) -> None:
    x = image(2)
    status, payload, length = infer(
        conn,
        {"image": x},
        path="/v2/models/meanpix/versions/4/infer",
        binary_inputs=False,
        binary_outputs=False,
        request_id="abc",
    )
    assert status == 200
    assert length is None
    response = json.loads(payload)
    assert response["id"] == "abc"
    assert response["model_version"] == "4"
    assert response["outputs"][0]["shape"] == [1, 3]
    np.testing.assert_allclose(
        response["outputs"][0]["data"], x.reshape(-1, 3).mean(0) / 255, atol=1e-5
    )


def test_keep_alive_reuses_one_connection(conn) -> None:
    for seed in range(5):
        assert infer(conn, {"image": image(seed)})[0] == 200
        sock = conn.sock
        assert sock is not None
    assert conn.sock is sock


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "message"),
    [
        ("/v2/models/meanpix/infer", b"{oops", {}, 400, "not valid JSON"),
        ("/v2/models/other/infer", b"{}", {}, 404, "unknown model 'other'"),
        ("/v2/models/meanpix/versions/9/infer", b"{}", {}, 404, "no version '9'"),
        ("/v2/models/meanpix/infer", b"{}", {HEADER_LENGTH: "x"}, 400, "bad Inference-Header"),
        ("/v2/nothing", b"", {}, 404, "no such endpoint"),
    ],
)
def test_bad_requests_get_protocol_errors(conn, path, body, headers, status, message) -> None:
    got, _, payload = request(conn, "POST", path, body, headers)
    assert got == status
    assert message in json.loads(payload)["error"]
    # and the connection still serves
    assert get_json(conn, "/v2/health/live")[0] == 200


def test_wrong_shape_dtype_and_size(conn) -> None:
    status, payload, _ = infer(conn, {"image": np.zeros((1, 64, 47, 3), np.uint8)})
    assert status == 400
    assert "expected shape [1, 64, 48, 3], got [1, 64, 47, 3]" in json.loads(payload)["error"]
    status, payload, _ = infer(conn, {"image": np.zeros((1, 64, 48, 3), np.float32)})
    assert status == 400
    assert "expected datatype UINT8, got 'FP32'" in json.loads(payload)["error"]
    body, headers = encode_request({"image": image()})
    status, _, payload = request(conn, "POST", "/v2/models/meanpix/infer", body[:-10], headers)
    assert status == 400
    assert "only" in json.loads(payload)["error"]


def test_wrong_method(conn) -> None:
    status, _, payload = request(conn, "GET", "/v2/models/meanpix/infer")
    assert status == 405
    status, _, payload = request(conn, "POST", "/v2/health/live", b"{}")
    assert status == 405
    assert "not allowed" in json.loads(payload)["error"]


def test_oversized_body_is_refused_without_reading_it(server: InferenceServer) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with sock:
        sock.sendall(
            b"POST /v2/models/meanpix/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 100000000\r\n\r\n"
        )
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 413 ")
    assert b"exceeds the cap of 65536 bytes" in reply
    assert b"Connection: close" in reply


def test_missing_content_length_is_411(server: InferenceServer) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with sock:
        sock.sendall(b"POST /v2/models/meanpix/infer HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = read_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 411 ")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /v2 HTTP/7.0\r\n\r\n", 505),
        (b"HEAD /v2 HTTP/1.1\r\nHost: x\r\n\r\n", 501),
        (b"GET /v2 HTTP/1.1\r\n" + b"X-Pad: y\r\n" * 200 + b"\r\n", 431),
    ],
)
def test_unparsable_requests_get_json_errors(server: InferenceServer, raw: bytes, status: int):
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with sock:
        sock.sendall(raw)
        reply = read_until_closed(sock)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["error"]


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_slow_client_times_out_and_server_keeps_serving(holder: ModelHolder) -> None:
    config = ApiConfig(port=0, request_timeout_s=0.5)
    with InferenceServer(holder, config, poll_interval=0.05) as server:
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with slow:
            slow.sendall(
                b"POST /v2/models/meanpix/infer HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 5000\r\n\r\n{"
            )
            started = time.monotonic()
            reply = read_until_closed(slow)  # the server hangs up
            assert time.monotonic() - started < 3
        assert b"200 OK" not in reply
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        assert infer(conn, {"image": image()})[0] == 200
        conn.close()
        time.sleep(0.05)
        snap = server.metrics.snapshot()
        assert (snap.requests, snap.rejected) == (1, 1)  # the stalled request is no success


def test_connection_cap_answers_503(holder: ModelHolder) -> None:
    with InferenceServer(
        holder, ApiConfig(port=0, max_connections=1), poll_interval=0.05
    ) as server:
        first = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        assert get_json(first, "/v2/health/live")[0] == 200  # holds the only slot (keep-alive)
        second = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with second:
            reply = read_until_closed(second)
        assert reply.startswith(b"HTTP/1.1 503 ")
        first.close()


def test_stop_waits_for_a_request_and_hangs_up_idle_connections() -> None:
    holder = ModelHolder()
    holder.swap(fake_add_runtime(delay=0.4), ModelInfo(name="adder"))
    server = InferenceServer(holder, ApiConfig(port=0), poll_interval=0.05)
    server.start()
    idle = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200 ")  # kept alive, now idle
    busy = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    outcome: list[int] = []

    def slow_request() -> None:
        outcome.append(
            infer(busy, {"x": np.zeros((1, 4), np.float32)}, path="/v2/models/adder/infer")[0]
        )

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    server.stop()
    thread.join()
    assert outcome == [200]  # the request under way was answered
    assert time.monotonic() - started < 3
    assert idle.recv(4096) == b""  # the idle keep-alive connection was closed, not left open
    idle.close()
    busy.close()
    holder.close()


def test_not_ready_without_a_model() -> None:
    empty = ModelHolder()
    with InferenceServer(empty, ApiConfig(port=0), poll_interval=0.05) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        assert get_json(conn, "/v2/health/live")[0] == 200
        assert get_json(conn, "/v2/health/ready") == (400, {"ready": False})
        assert get_json(conn, "/v2/models/meanpix")[0] == 404
        status, payload, _ = infer(conn, {"image": image()})
        assert status == 503
        assert "not loaded" in json.loads(payload)["error"]
        conn.close()


def test_unix_socket(holder: ModelHolder, tmp_path: Path) -> None:
    path = tmp_path / "api.sock"
    path.touch()
    path.unlink()
    with InferenceServer(holder, ApiConfig(unix_socket=path), poll_interval=0.05) as server:
        assert server.url == f"unix:{path}"
        conn = UnixHTTPConnection(path)
        assert get_json(conn, "/v2/health/ready") == (200, {"ready": True})
        x = image(3)
        status, payload, length = infer(conn, {"image": x})
        assert status == 200
        np.testing.assert_allclose(
            decode_response(payload, length)["mean"][0], x.reshape(-1, 3).mean(0) / 255, atol=1e-5
        )
        conn.close()
    assert not path.exists()


def test_metrics_record_latency_and_rejections(conn, server: InferenceServer, holder) -> None:
    for seed in range(4):
        assert infer(conn, {"image": image(seed)})[0] == 200
    assert infer(conn, {"image": np.zeros((1, 2), np.uint8)})[0] == 400
    time.sleep(0.05)  # the server books a request just after answering it
    api = server.metrics.snapshot()
    assert (api.requests, api.errors, api.rejected) == (4, 0, 1)
    assert api.p50_ms is not None
    assert api.p50_ms > 0
    model = holder.metrics.snapshot()
    assert model.requests == 4


def test_http_load_during_swaps_has_zero_failures(model_dir: Path) -> None:
    holder = ModelHolder()
    holder.swap(load_model(model_dir / "add1.tflite"), ModelInfo(name="adder", version="1"))
    failures: list[str] = []
    answers: set[float] = set()
    stop = threading.Event()

    with InferenceServer(holder, ApiConfig(port=0), poll_interval=0.05) as server:

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            x = np.zeros((1, 4), np.float32)
            while not stop.is_set():
                status, payload, length = infer(conn, {"x": x}, path="/v2/models/adder/infer")
                if status != 200:
                    failures.append(f"{status} {payload[:200]!r}")
                else:
                    answers.add(float(decode_response(payload, length)["y"][0, 0]))
            conn.close()

        clients = [threading.Thread(target=client) for _ in range(4)]
        for thread in clients:
            thread.start()
        for i in range(20):
            time.sleep(0.02)
            name = "add2.tflite" if i % 2 == 0 else "add1.tflite"
            holder.swap(load_model(model_dir / name), ModelInfo(name="adder", version=str(i + 2)))
        stop.set()
        for thread in clients:
            thread.join()
        requests = server.metrics.snapshot().requests
    holder.close()
    assert failures == []
    assert answers == {1.0, 2.0}
    assert requests > 50
