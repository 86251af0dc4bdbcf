"""The test broker fixture starts a real Mosquitto that a real paho client can use."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

pytestmark = pytest.mark.integration


def test_mosquitto_fixture_delivers_a_retained_message(mosquitto):
    received: list[bytes] = []
    done = threading.Event()

    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pub")
    publisher.connect(mosquitto.host, mosquitto.port)
    publisher.loop_start()
    publisher.publish("edgeops/test", b"hello", qos=1, retain=True).wait_for_publish(5)
    publisher.loop_stop()
    publisher.disconnect()

    def on_message(client, userdata, message):
        received.append(message.payload)
        done.set()

    subscriber = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sub")
    subscriber.on_message = on_message
    subscriber.on_connect = lambda c, u, f, rc, p: c.subscribe("edgeops/test", qos=1)
    subscriber.connect(mosquitto.host, mosquitto.port)
    subscriber.loop_start()
    try:
        assert done.wait(5), mosquitto.log_text()
    finally:
        subscriber.loop_stop()
        subscriber.disconnect()
    assert received == [b"hello"]
