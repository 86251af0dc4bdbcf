"""PahoLink and the bundle transfer on a real Mosquitto."""

from __future__ import annotations

import io
import os
import pwd
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edgeops.broker import MosquittoBroker, free_port
from edgeops.errors import TransportError
from edgeops.mqtt import (
    Backoff,
    BundleFetcher,
    Link,
    Message,
    MqttSettings,
    PahoLink,
    Will,
    publish_bundle,
)
from edgeops.mqtt.link import Ack, MessageHandler
from edgeops.mqtt.proxy import TcpProxy
from edgeops.protocol import (
    StateMessage,
    bundle_chunk_topic,
    device_directive_topic,
    state_topic,
)

pytestmark = pytest.mark.integration

FAST = Backoff(min_delay=0.05, max_delay=0.5, jitter=0.5)


def _settings(host: str, port: int, client_id: str, **kw) -> MqttSettings:
    return MqttSettings(host=host, port=port, client_id=client_id, backoff=FAST, **kw)


class Inbox:
    """Collects messages from a handler, with a wait."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self._cond = threading.Condition()

    def __call__(self, message: Message) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(self, predicate, timeout: float = 5.0) -> list[Message]:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self.messages), timeout), self.messages
            return list(self.messages)


@pytest.fixture
def links():
    opened: list[PahoLink] = []

    def make(broker_or_proxy, client_id: str, **kw) -> PahoLink:
        link = PahoLink(_settings(broker_or_proxy.host, broker_or_proxy.port, client_id, **kw))
        opened.append(link)
        return link

    yield make
    for link in opened:
        link.close()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_publish_subscribe_round_trip_with_broker_acks(mosquitto, links, protocol):
    publisher = links(mosquitto, "fleet", protocol=protocol)
    subscriber = links(mosquitto, "pi-1", protocol=protocol)
    publisher.connect(timeout=5)
    subscriber.connect(timeout=5)
    assert subscriber.protocol == protocol
    inbox = Inbox()
    subscriber.subscribe("edgeops/v1/acme/dev/+/events", inbox).wait(5)
    acks = [publisher.publish(f"edgeops/v1/acme/dev/pi-{i}/events", b"%d" % i) for i in range(50)]
    for ack in acks:
        ack.wait(5)
        assert ack.done()
    received = inbox.wait_for(lambda m: len(m) == 50)
    assert sorted(m.payload for m in received) == sorted(b"%d" % i for i in range(50))


def test_large_publishes_from_many_threads_arrive_intact(mosquitto, links):
    # Publishes from several threads at once, each larger than a socket buffer, must reach
    # the broker as whole packets with their acks matched to the right message.
    publisher = links(mosquitto, "fleet")
    subscriber = links(mosquitto, "watcher")
    publisher.connect(timeout=5)
    subscriber.connect(timeout=5)
    inbox = Inbox()
    subscriber.subscribe("bulk/#", inbox).wait(5)
    payloads = {
        f"bulk/{t}/{i}": random.Random(t * 100 + i).randbytes(300_000)
        for t in range(4)
        for i in range(10)
    }

    def send(thread: int) -> None:
        acks = [
            publisher.publish(topic, payload)
            for topic, payload in payloads.items()
            if topic.startswith(f"bulk/{thread}/")
        ]
        for ack in acks:
            ack.wait(20)

    workers = [threading.Thread(target=send, args=(t,)) for t in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    received = inbox.wait_for(lambda m: len(m) == len(payloads), timeout=20)
    assert {m.topic: m.payload for m in received} == payloads


def test_retained_directive_reaches_a_device_that_subscribes_later(mosquitto, links):
    fleet = links(mosquitto, "fleet")
    fleet.connect(timeout=5)
    topic = device_directive_topic("acme", "pi-1")
    fleet.publish(topic, b'{"signed": {}}', retain=True).wait(5)
    fleet.close()
    device = links(mosquitto, "pi-1")
    device.connect(timeout=5)
    inbox = Inbox()
    device.subscribe(topic, inbox)
    [message] = inbox.wait_for(lambda m: len(m) == 1)
    assert (message.payload, message.retain) == (b'{"signed": {}}', True)


_DEVICE_SCRIPT = """
import sys, time
from edgeops.mqtt import MqttSettings, PahoLink, Will
host, port, topic = sys.argv[1], int(sys.argv[2]), sys.argv[3]
will = Will(topic=topic, payload=sys.argv[4].encode(), retain=True)
link = PahoLink(MqttSettings(host=host, port=port, client_id="pi-9", will=will))
link.connect(timeout=10)
link.publish(topic, sys.argv[5].encode(), retain=True).wait(10)
print("ready", flush=True)
time.sleep(60)
"""


def test_last_will_marks_a_killed_device_offline(mosquitto, links):
    topic = state_topic("acme", "pi-9")
    offline = StateMessage(online=False, ts=1.0).to_bytes()
    online = StateMessage(online=True, ts=2.0).to_bytes()
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _DEVICE_SCRIPT,
            mosquitto.host,
            str(mosquitto.port),
            topic,
            offline.decode(),
            online.decode(),
        ],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        watcher = links(mosquitto, "fleet")
        watcher.connect(timeout=5)
        inbox = Inbox()
        watcher.subscribe(topic, inbox)
        inbox.wait_for(lambda m: [StateMessage.from_bytes(x.payload).online for x in m] == [True])
        process.send_signal(signal.SIGKILL)
        states = inbox.wait_for(lambda m: len(m) == 2)
        assert StateMessage.from_bytes(states[-1].payload).online is False
    finally:
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def test_clean_close_does_not_fire_the_will(mosquitto, links):
    watcher = links(mosquitto, "fleet")
    watcher.connect(timeout=5)
    inbox = Inbox()
    watcher.subscribe("will/#", inbox).wait(5)
    device = links(mosquitto, "pi-2", will=Will(topic="will/pi-2", payload=b"gone"))
    device.connect(timeout=5)
    device.close()
    marker = links(mosquitto, "marker")
    marker.connect(timeout=5)
    marker.publish("will/marker", b"after").wait(5)
    received = inbox.wait_for(lambda m: len(m) >= 1)
    assert [m.payload for m in received] == [b"after"]


def test_reconnects_after_a_broker_restart_and_subscribes_again(tmp_path, links):
    # Started as root, Mosquitto drops to its own user unless told whom to stay.
    user = pwd.getpwuid(os.getuid()).pw_name
    config = (
        f"allow_anonymous true\nuser {user}\npersistence true\npersistence_location {tmp_path}/\n"
    )
    with MosquittoBroker(config, workdir=tmp_path / "broker") as broker:
        fleet = links(broker, "fleet")
        device = links(broker, "pi-1")
        ups: list[bool] = []
        downs: list[str] = []
        device.on_connect(ups.append)
        device.on_disconnect(downs.append)
        fleet.connect(timeout=5)
        device.connect(timeout=5)
        inbox = Inbox()
        device.subscribe(device_directive_topic("acme", "pi-1"), inbox).wait(5)
        fleet.publish(device_directive_topic("acme", "pi-1"), b"seq-1", retain=True).wait(5)
        inbox.wait_for(lambda m: [x.payload for x in m] == [b"seq-1"])

        broker.stop()
        deadline = time.monotonic() + 5
        while device.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not device.connected
        queued = device.publish(state_topic("acme", "pi-1"), b"queued while away", qos=1)
        assert not queued.done()
        broker.start()

        queued.wait(10)  # PUBACK only once the broker is back
        # The retained directive survived the restart (persistence) and is delivered again
        # on the re-subscribe.
        inbox.wait_for(lambda m: [x.payload for x in m] == [b"seq-1", b"seq-1"], timeout=10)
        fleet.publish(device_directive_topic("acme", "pi-1"), b"seq-2", retain=True).wait(10)
        received = inbox.wait_for(lambda m: m and m[-1].payload == b"seq-2", timeout=10)
        assert [m.payload for m in received] == [b"seq-1", b"seq-1", b"seq-2"]
        assert device.connects == 2
        assert len(ups) == 2
        assert len(downs) == 1


def test_a_persistent_session_keeps_qos1_messages_while_the_client_is_away(mosquitto, links):
    fleet = links(mosquitto, "fleet")
    fleet.connect(timeout=5)
    first = links(mosquitto, "ingest", clean_session=False, session_expiry=60)
    subscribed = first.subscribe("edgeops/v1/acme/dev/+/telemetry", Inbox())
    first.connect(timeout=5)
    subscribed.wait(5)  # the SUBACK of the subscription sent after the CONNACK
    first.close()
    for i in range(3):
        fleet.publish(f"edgeops/v1/acme/dev/pi-{i}/telemetry", b"%d" % i).wait(5)
    # The same client id again: the broker still holds the session and its queued messages,
    # delivered to handlers registered before connect().
    inbox = Inbox()
    again = links(mosquitto, "ingest", clean_session=False, session_expiry=60)
    sessions: list[bool] = []
    again.on_connect(sessions.append)
    again.subscribe("edgeops/v1/acme/dev/+/telemetry", inbox)
    again.connect(timeout=5)
    received = inbox.wait_for(lambda m: len(m) == 3)
    assert sorted(m.payload for m in received) == [b"0", b"1", b"2"]
    assert sessions == [True]


def test_qos1_publishes_made_before_connect_are_sent_once_connected(mosquitto, links):
    watcher = links(mosquitto, "fleet")
    watcher.connect(timeout=5)
    inbox = Inbox()
    watcher.subscribe("edgeops/v1/acme/dev/pi-1/events", inbox).wait(5)
    device = links(mosquitto, "pi-1")
    early = device.publish("edgeops/v1/acme/dev/pi-1/events", b"booted", qos=1)
    assert not early.done()
    device.connect(timeout=5)
    early.wait(5)
    assert [m.payload for m in inbox.wait_for(lambda m: len(m) == 1)] == [b"booted"]


def test_connect_with_timeout_reports_an_unreachable_broker():
    link = PahoLink(_settings("127.0.0.1", free_port(), "lonely"))
    started = time.monotonic()
    with pytest.raises(TransportError, match=r"cannot connect to 127\.0\.0\.1"):
        link.connect(timeout=1.0)
    assert time.monotonic() - started < 3


def test_falls_back_to_mqtt_311_when_the_broker_refuses_mqtt_5(mosquitto, links):
    with TcpProxy(mosquitto.host, mosquitto.port, max_protocol_level=4) as old_broker:
        link = links(old_broker, "pi-old")
        link.connect(timeout=5)
        assert link.protocol == "3.1.1"
        inbox = Inbox()
        link.subscribe("t", inbox).wait(5)
        link.publish("t", b"x").wait(5)
        inbox.wait_for(lambda m: len(m) == 1)


def test_reconnect_attempts_back_off_and_stay_connected_to_the_same_settings():
    with TcpProxy("127.0.0.1", free_port()) as proxy:
        proxy.refuse()
        link = PahoLink(
            MqttSettings(
                host=proxy.host,
                port=proxy.port,
                client_id="retry",
                protocol="5",
                backoff=Backoff(min_delay=0.1, max_delay=0.4, jitter=0.5),
            ),
            rand=lambda: 0.0,
        )
        link.connect()
        time.sleep(1.25)
        link.close()
    # Delays 0.1, 0.2, 0.4, 0.4 ...: attempts at about 0, 0.1, 0.3, 0.7 and 1.1 s. Without a
    # backoff a refused link would try hundreds of times in the same time.
    assert 3 <= proxy.attempts <= 6
    assert "closed before CONNACK" in link.last_error
    assert link.protocol == "5"


# -- bundles ------------------------------------------------------------------------------


class CorruptingLink:
    """Flips a byte in the first delivery of one topic, as a faulty hop would."""

    def __init__(self, inner: Link, topic: str) -> None:
        self.inner = inner
        self.topic = topic
        self.wrappers: dict[MessageHandler, MessageHandler] = {}
        self.left = 1

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 1) -> Ack:
        # One wrapper per handler, so the link still sees one handler under two filters.
        if handler not in self.wrappers:
            self.wrappers[handler] = self._wrap(handler)
        return self.inner.subscribe(topic_filter, self.wrappers[handler], qos=qos)

    def _wrap(self, handler: MessageHandler) -> MessageHandler:
        def corrupting(message: Message) -> None:
            if message.topic == self.topic and self.left > 0:
                self.left -= 1
                payload = bytearray(message.payload)
                payload[len(payload) // 2] ^= 0x01
                message = Message(message.topic, bytes(payload), message.retain, message.qos)
            handler(message)

        return corrupting

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


BUNDLE = random.Random(3).randbytes(3 * 1024 * 1024 + 4321)
CHUNK = 64 * 1024


def test_three_fetchers_get_a_bundle_one_resuming_after_a_cut_and_one_refetching(
    mosquitto, links, tmp_path
):
    fleet = links(mosquitto, "fleet")
    fleet.connect(timeout=5)
    meta = publish_bundle(fleet, "acme", BUNDLE, chunk_size=CHUNK)
    assert meta.chunk_count == 49

    with TcpProxy(mosquitto.host, mosquitto.port) as proxy:
        plain = links(mosquitto, "pi-1")
        cut = links(proxy, "pi-2")
        flaky = links(mosquitto, "pi-3")
        for link in (plain, cut, flaky):
            link.connect(timeout=5)

        sinks = {name: (tmp_path / f"{name}.bundle").open("w+b") for name in ("a", "b", "c")}
        missing_at_cut: list[int] = []
        seen = {"count": 0}

        def cut_midway(received: int, total: int) -> None:
            seen["count"] += 1
            if seen["count"] == 10:
                missing_at_cut.extend(resuming.missing())
                proxy.cut()

        def make(link, sink, **kw) -> BundleFetcher:
            return BundleFetcher(
                link, "acme", digest=meta.digest, size=meta.total_size, sink=sink, window=8, **kw
            )

        whole = make(plain, sinks["a"])
        resuming = make(cut, sinks["b"], on_progress=cut_midway)
        bad_chunk = bundle_chunk_topic("acme", meta.digest, 17)
        refetching = make(CorruptingLink(flaky, bad_chunk), sinks["c"])
        for fetcher in (whole, resuming, refetching):
            fetcher.start()
        for fetcher in (whole, resuming, refetching):
            fetcher.wait(30)
        for sink in sinks.values():
            sink.close()

    for name in sinks:
        assert (tmp_path / f"{name}.bundle").read_bytes() == BUNDLE
    assert whole.deliveries == meta.chunk_count
    # Cut after 10 chunks: the reconnect asked only for what was missing.
    assert cut.connects == 2
    assert len(missing_at_cut) == meta.chunk_count - 10
    assert resuming.deliveries == meta.chunk_count
    assert refetching.refetched == 1
    assert refetching.deliveries == meta.chunk_count + 1


def test_a_wildcard_fetch_cut_midway_resumes_with_only_the_missing_chunks(mosquitto, links):
    fleet = links(mosquitto, "fleet")
    fleet.connect(timeout=5)
    meta = publish_bundle(fleet, "acme", BUNDLE, chunk_size=CHUNK)
    with TcpProxy(mosquitto.host, mosquitto.port) as proxy:
        device = links(proxy, "pi-4")
        device.connect(timeout=5)
        calls: list[int] = []
        missing_at_cut: list[int] = []

        def cut_midway(received: int, total: int) -> None:
            calls.append(received)
            if len(calls) == 20:
                missing_at_cut.extend(fetcher.missing())
                proxy.cut()

        sink = io.BytesIO()
        fetcher = BundleFetcher(
            device,
            "acme",
            digest=meta.digest,
            size=meta.total_size,
            sink=sink,
            window=64,
            on_progress=cut_midway,
        )
        fetcher.start()
        fetcher.wait(30)
    assert sink.getvalue() == BUNDLE
    assert device.connects == 2
    assert len(missing_at_cut) == meta.chunk_count - 20
    # After the reconnect the broker sent the missing chunks and nothing else.
    assert fetcher.deliveries == meta.chunk_count
    assert device.subscriptions == []


def test_importing_the_link_package_does_not_import_paho():
    # The agent imports edgeops.mqtt at start-up; paho loads with the first PahoLink.
    code = "import sys, edgeops.mqtt, edgeops.protocol; print('paho' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


@pytest.mark.faults
def test_a_fetch_survives_a_broker_restart_midway(tmp_path, links):
    user = pwd.getpwuid(os.getuid()).pw_name
    config = (
        f"allow_anonymous true\nuser {user}\npersistence true\npersistence_location {tmp_path}/\n"
    )
    with MosquittoBroker(config, workdir=tmp_path / "broker") as broker:
        fleet = links(broker, "fleet")
        fleet.connect(timeout=5)
        meta = publish_bundle(fleet, "acme", BUNDLE, chunk_size=CHUNK)
        device = links(broker, "pi-5")
        device.connect(timeout=5)
        halfway = threading.Event()
        resume = threading.Event()

        def pause_at_ten(received: int, total: int) -> None:
            # Hold the network thread so that the restart lands mid-fetch.
            if received == 10 * CHUNK:
                halfway.set()
                resume.wait(10)

        sink = io.BytesIO()
        fetcher = BundleFetcher(
            device,
            "acme",
            digest=meta.digest,
            size=meta.total_size,
            sink=sink,
            window=8,
            on_progress=pause_at_ten,
        )
        fetcher.start()
        assert halfway.wait(10)
        broker.stop()
        resume.set()
        broker.start()
        fetcher.wait(30)
    assert sink.getvalue() == BUNDLE
    assert device.connects == 2
    # Only what was missing after the restart was sent again.
    assert fetcher.deliveries == meta.chunk_count
