"""The in-memory broker behaves like MQTT where agent and fleet logic depend on it."""

from __future__ import annotations

import pytest

from edgeops.errors import StateError, TransportError
from edgeops.mqtt import FakeBroker, Link, Message, Will


def _collect(link: Link, topic_filter: str) -> list[Message]:
    received: list[Message] = []
    link.subscribe(topic_filter, received.append)
    return received


def test_wildcards_and_retained_messages_reach_late_subscribers():
    broker = FakeBroker()
    fleet = broker.link("fleet")
    fleet.connect()
    fleet.publish("edgeops/v1/f/dev/a/directive", b"for a", retain=True).wait(1)
    fleet.publish("edgeops/v1/f/dev/b/directive", b"for b", retain=True).wait(1)
    device = broker.link("a")
    device.connect(timeout=1)
    received = _collect(device, "edgeops/v1/f/dev/a/#")
    assert [(m.payload, m.retain) for m in received] == [(b"for a", True)]
    fleet.publish("edgeops/v1/f/dev/a/directive", b"newer", retain=True)
    assert [(m.payload, m.retain) for m in received][-1] == (b"newer", False)
    fleet.publish("edgeops/v1/f/dev/a/directive", b"", retain=True)
    assert "edgeops/v1/f/dev/a/directive" not in broker.retained


def test_acks_can_be_held_to_test_delete_after_puback():
    broker = FakeBroker()
    link = broker.link("pi")
    link.connect()
    broker.hold_acks = True
    ack = link.publish("t", b"1", qos=1)
    assert not ack.done()
    with pytest.raises(TransportError, match="no acknowledgement within"):
        ack.wait(0.01)
    broker.release_acks()
    ack.wait(0)
    assert ack.done()


def test_qos1_publishes_queue_while_disconnected_and_flush_on_reconnect():
    broker = FakeBroker()
    watcher = broker.link("watcher")
    watcher.connect()
    received = _collect(watcher, "telemetry")
    device = broker.link("pi")
    device.connect()
    broker.stop()
    assert not device.connected
    queued = device.publish("telemetry", b"1", qos=1)
    lost = device.publish("telemetry", b"0", qos=0)
    with pytest.raises(TransportError, match="QoS 0"):
        lost.wait(0)
    assert not queued.done()
    broker.start()
    assert queued.done()
    assert [m.payload for m in received] == [b"1"]


def test_will_is_published_when_a_client_drops_but_not_on_clean_close():
    broker = FakeBroker()
    will = Will(topic="edgeops/v1/f/dev/pi/state", payload=b"offline")
    device = broker.link("pi", will=will)
    device.connect()
    broker.drop("pi", reconnect=False)
    assert broker.retained["edgeops/v1/f/dev/pi/state"].payload == b"offline"
    other = broker.link("pi2", will=Will(topic="x", payload=b"gone"))
    other.connect()
    other.close()
    assert "x" not in broker.retained
    with pytest.raises(StateError):
        broker.drop("pi2")


def test_reconnect_resubscribes_and_redelivers_retained_and_calls_back():
    broker = FakeBroker()
    fleet = broker.link("fleet")
    fleet.connect()
    fleet.publish("d", b"directive", retain=True)
    device = broker.link("pi")
    events: list[str] = []
    device.on_connect(lambda session: events.append(f"up {session}"))
    device.on_disconnect(lambda reason: events.append(f"down {reason}"))
    device.connect()
    received = _collect(device, "d")
    broker.stop()
    broker.start()
    assert events == ["up False", "down broker stopped", "up False"]
    assert [m.payload for m in received] == [b"directive", b"directive"]
    assert device.connects == 2


def test_connect_with_timeout_fails_when_the_broker_is_down_and_later_start_connects():
    broker = FakeBroker()
    broker.stop()
    with pytest.raises(TransportError, match="not reachable"):
        broker.link("a").connect(timeout=0.1)
    patient = broker.link("b")
    patient.connect()
    assert not patient.connected
    broker.start()
    assert patient.connected


def test_same_client_id_evicts_the_older_connection():
    broker = FakeBroker()
    first = broker.link("pi", will=Will(topic="state", payload=b"offline"))
    first.connect()
    second = broker.link("pi")
    second.connect()
    assert not first.connected
    assert second.connected
    assert broker.retained["state"].payload == b"offline"


def test_handlers_publishing_in_turn_run_to_completion_without_recursion():
    broker = FakeBroker()
    link = broker.link("echo")
    link.connect()
    seen: list[int] = []

    def bounce(message: Message) -> None:
        count = int(message.payload)
        seen.append(count)
        if count < 3000:
            link.publish("ping", str(count + 1).encode())

    link.subscribe("ping", bounce)
    link.publish("ping", b"0")
    assert len(seen) == 3001
