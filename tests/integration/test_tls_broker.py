"""TLS with client certificates from the fleet CA, on a real Mosquitto."""

from __future__ import annotations

import ssl
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edgeops.fleet.ca import create_ca, sign_leaf

pytestmark = pytest.mark.integration


def _connect(tls_fleet, certfile=None, keyfile=None, client_id="c"):
    """A connected, looping client, or the failure: ('ok', client) / ('refused', reason)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    ctx = ssl.create_default_context(cafile=str(tls_fleet.path / "ca" / "ca.crt"))
    if certfile is not None:
        ctx.load_cert_chain(str(certfile), str(keyfile))
    client.tls_set_context(ctx)
    connected = threading.Event()
    result: dict[str, object] = {}

    def on_connect(client, userdata, flags, reason_code, properties):
        result["rc"] = reason_code
        connected.set()

    def on_disconnect(client, userdata, flags, reason_code, properties):
        # A refused handshake ends here without a CONNACK; no need to wait out the timeout.
        result.setdefault("rc", f"disconnected: {reason_code}")
        connected.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(tls_fleet.broker.host, tls_fleet.broker.port, keepalive=10)
    except (ssl.SSLError, OSError) as exc:
        return "refused", repr(exc)
    client.loop_start()
    if connected.wait(5) and not isinstance(result["rc"], str) and not result["rc"].is_failure:  # type: ignore[attr-defined]
        return "ok", client
    client.loop_stop()
    client.disconnect()
    return "refused", result.get("rc", "no CONNACK")


def test_client_with_fleet_certificate_connects_and_round_trips(tls_fleet):
    certfile, keyfile = tls_fleet.client_files("dev-1")
    status, client = _connect(tls_fleet, certfile, keyfile, client_id="client-x")
    assert status == "ok", client
    received = threading.Event()
    payloads = []

    def on_message(client, userdata, message):
        payloads.append(message.payload)
        received.set()

    client.on_message = on_message
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.subscribe("edgeops/v1/tls-test/dev/dev-1/state", qos=1)
    assert subscribed.wait(5)
    client.publish("edgeops/v1/tls-test/dev/dev-1/state", b"online", qos=1)
    assert received.wait(5)
    assert payloads == [b"online"]
    client.loop_stop()
    client.disconnect()
    # The broker took the user name from the certificate's common name.
    assert "as client-x" in tls_fleet.broker.log_text()
    assert "u'dev-1'" in tls_fleet.broker.log_text()


def test_client_without_certificate_is_refused(tls_fleet):
    status, reason = _connect(tls_fleet)
    assert status == "refused", reason
    assert "peer did not return a certificate" in tls_fleet.broker.log_text()


def test_client_with_certificate_from_another_ca_is_refused(tls_fleet, tmp_path):
    other_key, other_cert = create_ca("intruder")
    key_pem, cert_pem = sign_leaf(other_key, other_cert, "dev-1", kind="device")
    (tmp_path / "i.crt").write_bytes(cert_pem)
    (tmp_path / "i.key").write_bytes(key_pem)
    status, reason = _connect(tls_fleet, tmp_path / "i.crt", tmp_path / "i.key")
    assert status == "refused", reason
    assert "certificate verify failed" in tls_fleet.broker.log_text()


def test_manager_certificate_connects(tls_fleet):
    tls = tls_fleet.path / "tls"
    status, client = _connect(tls_fleet, tls / "manager.crt", tls / "manager.key", "mgr")
    assert status == "ok", client
    client.loop_stop()
    client.disconnect()
