"""Bundles over MQTT: publish once as retained chunks, fetch with resume.

The fleet calls :func:`publish_bundle` once per bundle whatever the fleet size: each chunk
is one retained QoS 1 message, and the meta goes last so that a device that sees the meta
finds every chunk already on the broker. The broker fans the bytes out.

A device runs a :class:`BundleFetcher`: it subscribes to the bundle's meta and checks it
against the signed directive (digest, size, cap). A small bundle (at most ``window``
chunks) is fetched through the one wildcard filter ``.../chunk/+``, subscribed right behind
the meta when the directive's size says the bundle is small, so the broker sends the meta
and then every chunk without waiting for a round trip. A larger bundle, or any bundle after
a disconnect, is fetched through one topic per missing chunk, a window at a time, each
unsubscribed as it arrives: the link's subscriptions are then exactly the chunks still
missing, and the link's re-subscribe after a reconnect makes the broker resend only those
(retained messages are re-sent on every subscribe, MQTT 3.1.1 §3.8.4). The switch from the
wildcard happens in the link's disconnect callback, which runs before the reconnect. A
chunk whose SHA-256 is wrong is requested again by subscribing to its own topic again, a
bounded number of times.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from edgeops.errors import (
    ConfigError,
    EdgeopsError,
    InputError,
    ProtocolError,
    StorageError,
    TransportError,
)
from edgeops.mqtt.link import Ack, Link, Message
from edgeops.protocol.chunks import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_BUNDLE,
    ChunkAssembler,
    Sink,
    split_chunks,
)
from edgeops.protocol.messages import BundleMeta
from edgeops.protocol.topics import (
    TopicKind,
    bundle_chunk_filter,
    bundle_chunk_topic,
    bundle_meta_topic,
    parse_topic,
)

DEFAULT_WINDOW = 32
DEFAULT_MAX_REFETCH = 3


def _wait_all(acks: deque[Ack], keep: int, timeout: float) -> None:
    while len(acks) > keep:
        acks.popleft().wait(timeout)


def publish_bundle(
    link: Link,
    fleet: str,
    source: bytes | Path | str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    timeout: float = 60.0,
    in_flight: int = 16,
) -> BundleMeta:
    """Publish a bundle's chunks and then its meta, retained, each exactly once.

    Waits for the broker's PUBACK of every message (at most ``in_flight`` outstanding, so
    memory stays at a few chunks); TransportError if one does not come within ``timeout``.
    """
    meta, chunks = split_chunks(source, chunk_size)
    acks: deque[Ack] = deque()
    for index, chunk in enumerate(chunks):
        topic = bundle_chunk_topic(fleet, meta.digest, index)
        acks.append(link.publish(topic, chunk, qos=1, retain=True))
        _wait_all(acks, in_flight, timeout)
    _wait_all(acks, 0, timeout)
    link.publish(bundle_meta_topic(fleet, meta.digest), meta.to_bytes(), qos=1, retain=True).wait(
        timeout
    )
    return meta


def unpublish_bundle(link: Link, fleet: str, meta: BundleMeta, *, timeout: float = 60.0) -> None:
    """Clear a bundle's retained meta and chunks from the broker (meta first)."""
    link.publish(bundle_meta_topic(fleet, meta.digest), b"", qos=1, retain=True).wait(timeout)
    acks: deque[Ack] = deque()
    for index in range(meta.chunk_count):
        topic = bundle_chunk_topic(fleet, meta.digest, index)
        acks.append(link.publish(topic, b"", qos=1, retain=True))
        _wait_all(acks, 16, timeout)
    _wait_all(acks, 0, timeout)


class BundleFetcher:
    """Fetches one bundle into ``sink`` over ``link``; see the module docstring.

    ``digest`` and ``size`` come from the verified, signed directive. ``on_progress`` is
    called on the link's thread with ``(received_bytes, size)`` after each new chunk.
    """

    def __init__(
        self,
        link: Link,
        fleet: str,
        *,
        digest: str,
        size: int,
        sink: Sink,
        max_total: int = DEFAULT_MAX_BUNDLE,
        window: int = DEFAULT_WINDOW,
        max_refetch: int = DEFAULT_MAX_REFETCH,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if window < 1 or max_refetch < 0:
            raise ConfigError(
                f"expected window >= 1 and max_refetch >= 0, got {window}, {max_refetch}"
            )
        self._link = link
        self._fleet = fleet
        self._assembler = ChunkAssembler(digest, size, sink, max_total=max_total)
        self._meta_topic = bundle_meta_topic(fleet, digest)
        self._window = window
        self._max_refetch = max_refetch
        self._on_progress = on_progress
        self._lock = threading.RLock()
        self._done = threading.Event()
        self._error: EdgeopsError | None = None
        self._subscribed: set[int] = set()
        self._wildcard: str | None = None
        self._early: set[int] = set()
        self._retries: dict[int, int] = {}
        self._started = False
        self._forget_disconnect: Callable[[], None] | None = None
        self.deliveries = 0
        """Chunk messages handled, duplicates and bad ones included."""
        self.refetched = 0
        """Chunks requested again because their bytes did not match the meta."""
        self.stalls = 0
        """Times :meth:`wait` found the fetch stalled and asked the broker again."""

    @property
    def digest(self) -> str:
        return self._assembler.digest

    def start(self) -> None:
        """Subscribe to the meta (and, for a small bundle, to every chunk at once); the rest
        happens on the link's thread."""
        with self._lock:
            if self._started:
                return
            self._started = True
            if self._assembler.size <= self._window * DEFAULT_CHUNK_SIZE:
                self._wildcard = bundle_chunk_filter(self._fleet, self.digest)
        self._forget_disconnect = self._link.on_disconnect(self._handle_disconnect)
        self._link.subscribe(self._meta_topic, self._handle_meta)
        # Small bundles skip a round trip: the chunks are asked for right behind the meta,
        # which the broker therefore sends first; a chunk that still beats the meta is set
        # aside and asked for again. The lock is held across the subscribe so that a meta
        # handled meanwhile sees the wildcard in place; a meta already handled (a link that
        # delivers at once) has decided for itself and cleared or kept the wildcard.
        with self._lock:
            wildcard = self._wildcard
            if wildcard is not None and not self._done.is_set():
                self._link.subscribe(wildcard, self._handle_chunk)

    def wait(self, timeout: float, *, stall_s: float | None = None) -> None:
        """Block until the whole bundle is in the sink and its SHA-256 checked.

        TransportError if it does not complete within ``timeout`` (the fetch goes on; call
        ``wait`` again or :meth:`cancel`); the fetch's own error if it failed. With
        ``stall_s``, a fetch that received nothing (no meta, no chunk) for that long asks
        the broker again for what is missing (:meth:`request_missing`) instead of waiting
        out ``timeout``: a broker that dropped a queued message, or a subscription lost in
        a race, would otherwise hold the update until the timeout.
        """
        deadline = time.monotonic() + timeout
        seen = self._activity()
        while True:
            remaining = deadline - time.monotonic()
            slice_s = remaining if stall_s is None else min(stall_s, remaining)
            if self._done.wait(max(slice_s, 0.0)):
                break
            if time.monotonic() >= deadline:
                received, total = self.progress()
                raise TransportError(
                    f"bundle {self.digest[:12]}: {received} of {total or '?'} chunks "
                    f"after {timeout:g} s"
                )
            now = self._activity()
            if now == seen:
                self.stalls += 1
                self.request_missing()
            seen = now
        if self._error is not None:
            raise self._error

    def _activity(self) -> tuple[bool, int]:
        """What changes whenever the broker delivers something this fetch wants."""
        with self._lock:
            return self._assembler.meta is not None, self.deliveries

    def cancel(self) -> None:
        """Stop fetching and drop every subscription this fetcher holds."""
        with self._lock:
            indexes = sorted(self._subscribed)
            self._subscribed.clear()
            meta_pending = self._assembler.meta is None
            wildcard, self._wildcard = self._wildcard, None
            forget, self._forget_disconnect = self._forget_disconnect, None
        if forget is not None:
            forget()
        if meta_pending:
            self._link.unsubscribe(self._meta_topic)
        if wildcard is not None:
            self._link.unsubscribe(wildcard)
        for index in indexes:
            self._link.unsubscribe(bundle_chunk_topic(self._fleet, self.digest, index))

    def request_missing(self) -> None:
        """Ask the broker again for every chunk still missing (and the meta if it is).

        For a fetch that stalled without a disconnect, e.g. a broker that dropped queued
        messages: subscribing again to a held filter makes the broker resend its retained
        messages.
        """
        with self._lock:
            if self._done.is_set() or not self._started:
                return
            meta_pending = self._assembler.meta is None
            wildcard, self._wildcard = self._wildcard, None
            indexes = sorted(self._subscribed)
        if meta_pending:
            self._link.subscribe(self._meta_topic, self._handle_meta)
            return
        if wildcard is not None:
            # Ask for the missing chunks only, not the whole bundle again.
            self._link.unsubscribe(wildcard)
            self._fill_window()
            return
        for index in indexes:
            self._link.subscribe(
                bundle_chunk_topic(self._fleet, self.digest, index), self._handle_chunk
            )

    @property
    def done(self) -> bool:
        """True once the fetch completed or failed."""
        return self._done.is_set()

    @property
    def error(self) -> EdgeopsError | None:
        return self._error

    def progress(self) -> tuple[int, int]:
        """``(chunks received, chunk count)``; the count is 0 before the meta arrives."""
        with self._lock:
            meta = self._assembler.meta
            return self._assembler.received, 0 if meta is None else meta.chunk_count

    def missing(self) -> list[int]:
        """Chunk indexes still missing (empty before the meta arrives)."""
        with self._lock:
            return self._assembler.missing()

    # -- on the link's thread -------------------------------------------------------------

    def _handle_meta(self, message: Message) -> None:
        with self._lock:
            if self._done.is_set() or self._assembler.meta is not None:
                return
            try:
                meta = BundleMeta.from_bytes(message.payload)
                self._assembler.accept_meta(meta)
            except EdgeopsError as exc:
                self._fail(exc)
                return
        self._link.unsubscribe(self._meta_topic)
        with self._lock:
            wildcard = self._wildcard
            early, self._early = sorted(self._early), set()
        if meta.chunk_count > self._window:
            if wildcard is not None:
                # More chunks than a window after all: ask for them a window at a time.
                with self._lock:
                    self._wildcard = None
                self._link.unsubscribe(wildcard)
            self._fill_window()
        elif wildcard is None:
            with self._lock:
                self._wildcard = bundle_chunk_filter(self._fleet, self.digest)
            self._link.subscribe(self._wildcard, self._handle_chunk)
        else:
            for index in early:
                if index < meta.chunk_count:
                    self._link.subscribe(
                        bundle_chunk_topic(self._fleet, self.digest, index), self._handle_chunk
                    )
                    with self._lock:
                        self._subscribed.add(index)

    def _handle_disconnect(self, reason: str) -> None:
        # Runs before the link reconnects: trade the wildcard for the missing chunks' own
        # topics so that the reconnect asks the broker for those alone.
        with self._lock:
            wildcard, self._wildcard = self._wildcard, None
            if wildcard is None or self._done.is_set():
                return
        self._link.unsubscribe(wildcard)
        self._fill_window()

    def _fill_window(self) -> None:
        with self._lock:
            if self._done.is_set() or self._wildcard is not None:
                return
            # The first missing chunks not asked for yet, found without listing every missing
            # one: this runs after each chunk, so a full list made fetches quadratic.
            room = max(self._window - len(self._subscribed), 0)
            wanted = (i for i in self._assembler.iter_missing() if i not in self._subscribed)
            chosen = list(itertools.islice(wanted, room))
            self._subscribed.update(chosen)
        for index in chosen:
            self._link.subscribe(
                bundle_chunk_topic(self._fleet, self.digest, index), self._handle_chunk
            )

    def _handle_chunk(self, message: Message) -> None:
        try:
            topic = parse_topic(message.topic)
        except ProtocolError:
            return
        if topic.kind is not TopicKind.BUNDLE_CHUNK or topic.digest != self.digest:
            return
        index = topic.index
        assert index is not None
        refetch = False
        with self._lock:
            meta = self._assembler.meta
            if meta is None and not self._done.is_set():
                self._early.add(index)
                return
            if self._done.is_set() or meta is None or index >= meta.chunk_count:
                # Not a chunk of this bundle: nothing to fetch again, nothing to fail.
                return
            self.deliveries += 1
            try:
                new = self._assembler.add(index, message.payload)
            except OSError as exc:
                # The sink is the device's disk: a full one fails the fetch at once instead
                # of leaving it to stall until its timeout.
                self._fail(
                    StorageError(
                        f"cannot write chunk {index} of bundle {self.digest[:12]}: "
                        f"{exc.strerror or exc}"
                    )
                )
                return
            except InputError as exc:
                tries = self._retries.get(index, 0) + 1
                self._retries[index] = tries
                if tries > self._max_refetch:
                    self._fail(exc)
                    return
                self.refetched += 1
                refetch = True
                new = False
                self._subscribed.add(index)
            else:
                was_subscribed = index in self._subscribed
                self._subscribed.discard(index)
                received_bytes = self._assembler.received_bytes
        if refetch:
            # Subscribing again to the chunk's own topic makes the broker resend its retained
            # copy (and only that one, also under the wildcard).
            self._link.subscribe(message.topic, self._handle_chunk)
            return
        if was_subscribed:
            self._link.unsubscribe(message.topic)
        if not new:
            return
        if self._on_progress is not None:
            self._on_progress(received_bytes, self._assembler.size)
        with self._lock:
            complete = self._assembler.complete
            if complete:
                try:
                    self._assembler.finish()
                except EdgeopsError as exc:
                    self._fail(exc)
                    return
                self._done.set()
        if complete:
            self.cancel()
            return
        self._fill_window()

    def _fail(self, error: EdgeopsError) -> None:
        self._error = error
        self._done.set()
        self.cancel()


def fetch_bundle(
    link: Link,
    fleet: str,
    *,
    digest: str,
    size: int,
    path: Path,
    timeout: float,
    max_total: int = DEFAULT_MAX_BUNDLE,
) -> None:
    """Fetch a bundle into ``path`` and check it; the file is removed if the fetch fails."""
    with path.open("w+b") as sink:
        fetcher = BundleFetcher(
            link, fleet, digest=digest, size=size, sink=sink, max_total=max_total
        )
        fetcher.start()
        try:
            fetcher.wait(timeout)
        except BaseException:
            fetcher.cancel()
            path.unlink(missing_ok=True)
            raise


__all__ = [
    "DEFAULT_MAX_REFETCH",
    "DEFAULT_WINDOW",
    "BundleFetcher",
    "fetch_bundle",
    "publish_bundle",
    "unpublish_bundle",
]
