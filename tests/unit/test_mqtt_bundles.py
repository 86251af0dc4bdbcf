"""Bundles as retained chunks on the fake broker: publish once, fetch, resume, refetch."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeops.errors import (
    DigestMismatchError,
    InputError,
    ProtocolError,
    SizeLimitError,
    TransportError,
)
from edgeops.mqtt import BundleFetcher, FakeBroker, Link, Message, publish_bundle
from edgeops.mqtt.link import Ack, MessageHandler
from edgeops.protocol import (
    bundle_chunk_filter,
    bundle_chunk_topic,
    bundle_meta_topic,
    split_chunks,
)

KIB = 1024
DATA = random.Random(7).randbytes(40 * KIB + 123)


class CorruptingLink:
    """Wraps a link and flips a byte in (or with ``lose``, drops) the first ``times``
    deliveries of one topic, as a bad cable or a buggy bridge would."""

    def __init__(self, inner: Link, topic: str, times: int = 1, *, lose: bool = False) -> None:
        self.inner = inner
        self.topic = topic
        self.wrappers: dict[MessageHandler, MessageHandler] = {}
        self.left = times
        self.lose = lose

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 1) -> Ack:
        # One wrapper per handler, so the link still sees one handler under two filters.
        if handler not in self.wrappers:
            self.wrappers[handler] = self._wrap(handler)
        return self.inner.subscribe(topic_filter, self.wrappers[handler], qos=qos)

    def _wrap(self, handler: MessageHandler) -> MessageHandler:
        def corrupting(message: Message) -> None:
            if message.topic == self.topic and self.left > 0:
                self.left -= 1
                if self.lose:
                    return
                payload = bytearray(message.payload)
                payload[0] ^= 0xFF
                message = Message(message.topic, bytes(payload), message.retain, message.qos)
            handler(message)

        return corrupting

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def _setup(window: int = 4):
    broker = FakeBroker()
    fleet = broker.link("fleet")
    fleet.connect()
    meta = publish_bundle(fleet, "acme", DATA, chunk_size=4 * KIB)
    return broker, meta


def _fetcher(link, meta, sink, **kw) -> BundleFetcher:
    return BundleFetcher(link, "acme", digest=meta.digest, size=meta.total_size, sink=sink, **kw)


def test_fleet_publishes_each_chunk_once_whatever_the_number_of_fetchers():
    broker, meta = _setup()
    sinks = []
    for n in range(5):
        link = broker.link(f"pi-{n}")
        link.connect()
        sink = io.BytesIO()
        fetcher = _fetcher(link, meta, sink, window=3)
        fetcher.start()
        fetcher.wait(1)
        assert fetcher.deliveries == meta.chunk_count
        assert link.subscriptions == []
        sinks.append(sink)
    assert all(sink.getvalue() == DATA for sink in sinks)
    assert len(broker.publishes_to(bundle_chunk_filter("acme", meta.digest))) == meta.chunk_count
    assert len(broker.publishes_to(bundle_meta_topic("acme", meta.digest))) == 1


def test_meta_is_published_after_every_chunk():
    broker, meta = _setup()
    topics = [m.topic for _, m in broker.log]
    assert topics[-1] == bundle_meta_topic("acme", meta.digest)


def test_a_fetch_cut_off_midway_resumes_with_only_the_missing_chunks():
    broker, meta = _setup()
    link = broker.link("pi")
    link.connect()
    sink = io.BytesIO()
    progress: list[int] = []

    def cut_after_three(received: int, total: int) -> None:
        progress.append(received)
        if len(progress) == 3:
            broker.drop("pi", reconnect=False)

    fetcher = _fetcher(link, meta, sink, window=4, on_progress=cut_after_three)
    fetcher.start()
    assert fetcher.progress() == (3, meta.chunk_count)
    missing = fetcher.missing()
    assert len(missing) == meta.chunk_count - 3
    with pytest.raises(TransportError, match=f"3 of {meta.chunk_count} chunks"):
        fetcher.wait(0.01)
    # Only a window of missing chunks is held, so only those come back on reconnect.
    assert len(link.subscriptions) <= 4
    assert all(int(topic.rsplit("/", 1)[1]) in missing for topic in link.subscriptions)
    link.reconnect()
    fetcher.wait(1)
    assert sink.getvalue() == DATA
    assert fetcher.deliveries == meta.chunk_count


def test_a_small_bundle_comes_through_the_wildcard_and_resumes_through_missing_topics():
    broker, meta = _setup()
    link = broker.link("pi")
    link.connect()
    sink = io.BytesIO()
    held: list[list[str]] = []
    calls: list[int] = []

    def cut_after_four(received: int, total: int) -> None:
        calls.append(received)
        if len(calls) == 4:
            held.append(link.subscriptions)
            broker.drop("pi", reconnect=False)
            held.append(link.subscriptions)

    fetcher = _fetcher(link, meta, sink, on_progress=cut_after_four)
    fetcher.start()
    assert held[0] == [bundle_chunk_filter("acme", meta.digest)]
    # After the drop, before the reconnect: the missing chunks' own topics, no wildcard.
    missing = fetcher.missing()
    assert held[1] == sorted(bundle_chunk_topic("acme", meta.digest, i) for i in missing)
    link.reconnect()
    fetcher.wait(1)
    assert sink.getvalue() == DATA
    assert fetcher.deliveries == meta.chunk_count
    assert link.subscriptions == []


def test_chunks_that_arrive_before_the_meta_are_asked_for_again_once_it_comes():
    broker = FakeBroker()
    fleet = broker.link("fleet")
    fleet.connect()
    meta, chunks = split_chunks(DATA, 4 * KIB)
    link = broker.link("pi")
    link.connect()
    sink = io.BytesIO()
    fetcher = _fetcher(link, meta, sink)
    fetcher.start()
    # The fleet is still publishing: chunks first, the meta last.
    for index, chunk in enumerate(chunks):
        fleet.publish(bundle_chunk_topic("acme", meta.digest, index), chunk, retain=True)
    assert fetcher.progress() == (0, 0)
    fleet.publish(bundle_meta_topic("acme", meta.digest), meta.to_bytes(), retain=True)
    fetcher.wait(1)
    assert sink.getvalue() == DATA
    assert fetcher.deliveries == meta.chunk_count
    assert link.subscriptions == []


def test_a_corrupt_chunk_is_detected_and_only_that_chunk_is_fetched_again():
    broker, meta = _setup()
    link = broker.link("pi")
    link.connect()
    bad_topic = bundle_chunk_topic("acme", meta.digest, 5)
    sink = io.BytesIO()
    fetcher = _fetcher(CorruptingLink(link, bad_topic, times=2), meta, sink)
    fetcher.start()
    fetcher.wait(1)
    assert sink.getvalue() == DATA
    assert fetcher.refetched == 2
    assert fetcher.deliveries == meta.chunk_count + 2


def test_progress_counts_each_new_chunk_once_and_a_corrupt_one_not():
    broker, meta = _setup()
    link = broker.link("pi")
    link.connect()
    bad_topic = bundle_chunk_topic("acme", meta.digest, 3)
    progress: list[tuple[int, int]] = []
    fetcher = _fetcher(
        CorruptingLink(link, bad_topic, times=1),
        meta,
        io.BytesIO(),
        on_progress=lambda received, total: progress.append((received, total)),
    )
    fetcher.start()
    fetcher.wait(1)
    assert fetcher.refetched == 1
    assert len(progress) == meta.chunk_count
    assert [total for _, total in progress] == [meta.total_size] * meta.chunk_count
    received = [r for r, _ in progress]
    assert received == sorted(set(received))
    assert received[-1] == meta.total_size


@pytest.mark.parametrize("window", [32, 2])
def test_a_stalled_fetch_asks_again_for_what_is_missing(window):
    broker, meta = _setup()
    link = broker.link("pi")
    link.connect()
    lost_topic = bundle_chunk_topic("acme", meta.digest, 7)
    sink = io.BytesIO()
    fetcher = _fetcher(CorruptingLink(link, lost_topic, lose=True), meta, sink, window=window)
    fetcher.start()
    assert fetcher.missing() == [7]
    with pytest.raises(TransportError, match=f"{meta.chunk_count - 1} of {meta.chunk_count}"):
        fetcher.wait(0.01)
    before = fetcher.deliveries
    fetcher.request_missing()
    fetcher.wait(1)
    assert sink.getvalue() == DATA
    assert fetcher.deliveries == before + 1


@pytest.mark.parametrize("lost", ["meta", "chunk"])
def test_wait_with_a_stall_limit_asks_again_by_itself(lost):
    broker, meta = _setup()
    link = broker.link("pi")
    link.connect()
    topic = (
        bundle_meta_topic("acme", meta.digest)
        if lost == "meta"
        else bundle_chunk_topic("acme", meta.digest, 7)
    )
    sink = io.BytesIO()
    fetcher = _fetcher(CorruptingLink(link, topic, lose=True), meta, sink)
    fetcher.start()
    # Without the stall limit the lost delivery holds the fetch until its timeout.
    with pytest.raises(TransportError):
        fetcher.wait(0.3)
    assert fetcher.stalls == 0
    fetcher.wait(5, stall_s=0.05)
    assert sink.getvalue() == DATA
    assert fetcher.stalls >= 1


def test_a_chunk_that_stays_corrupt_fails_the_fetch_after_the_refetch_limit():
    broker, meta = _setup()
    link = broker.link("pi")
    link.connect()
    bad_topic = bundle_chunk_topic("acme", meta.digest, 2)
    fetcher = _fetcher(
        CorruptingLink(link, bad_topic, times=100), meta, io.BytesIO(), max_refetch=3
    )
    fetcher.start()
    with pytest.raises(DigestMismatchError, match="chunk 2"):
        fetcher.wait(1)
    assert link.subscriptions == []


def test_meta_for_another_size_than_the_directive_is_refused():
    broker, meta = _setup()
    link = broker.link("pi")
    link.connect()
    fetcher = BundleFetcher(
        link, "acme", digest=meta.digest, size=meta.total_size + 1, sink=io.BytesIO()
    )
    fetcher.start()
    with pytest.raises(SizeLimitError, match="signed directive"):
        fetcher.wait(1)


def test_garbage_in_the_meta_topic_fails_clearly():
    broker = FakeBroker()
    fleet = broker.link("fleet")
    fleet.connect()
    digest = "ee" * 32
    fleet.publish(bundle_meta_topic("acme", digest), b"not json", retain=True)
    link = broker.link("pi")
    link.connect()
    fetcher = BundleFetcher(link, "acme", digest=digest, size=100, sink=io.BytesIO())
    fetcher.start()
    with pytest.raises(ProtocolError, match="bundle meta"):
        fetcher.wait(1)


def test_a_bundle_above_the_device_cap_is_refused_before_subscribing():
    broker, meta = _setup()
    with pytest.raises(SizeLimitError):
        BundleFetcher(
            broker.link("pi"),
            "acme",
            digest=meta.digest,
            size=meta.total_size,
            sink=io.BytesIO(),
            max_total=KIB,
        )


@settings(max_examples=60, deadline=None)
@given(
    junk=st.lists(
        st.tuples(
            st.integers(-1, 12) | st.text(alphabet="az09-_./", max_size=4),
            st.binary(max_size=5 * KIB),
        ),
        max_size=6,
    )
)
def test_junk_on_the_chunk_topics_never_escapes_the_fetcher(junk):
    # FakeBroker re-raises handler errors, so any exception out of the fetcher fails here.
    broker, meta = _setup()
    rogue = broker.link("rogue")
    rogue.connect()
    base = bundle_chunk_filter("acme", meta.digest)[:-1]
    for index, payload in junk:
        rogue.publish(f"{base}{index}", payload, retain=True)
    link = broker.link("pi")
    link.connect()
    sink = io.BytesIO()
    fetcher = _fetcher(link, meta, sink, max_refetch=1)
    fetcher.start()
    for index, payload in junk:
        rogue.publish(f"{base}{index}", payload)
    if fetcher.error is not None:
        assert isinstance(fetcher.error, InputError)
    elif fetcher.done:
        assert sink.getvalue() == DATA
    else:
        # Junk replaced or cleared a retained chunk: the fetch waits for the fleet to
        # publish it again, which heals it.
        assert fetcher.missing()
        for index in fetcher.missing():
            rogue.publish(
                bundle_chunk_topic("acme", meta.digest, index),
                DATA[index * 4 * KIB :][: 4 * KIB],
                retain=True,
            )
        assert fetcher.done
        assert sink.getvalue() == DATA
