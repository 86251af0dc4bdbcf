"""Fan-out of a retained bundle to many subscribers, and the raw small-message receive rate.

    python benchmarks/mqtt_fanout.py [--subscribers 200] [--bundle-mb 3] [--chunk-kib 256]
                                     [--messages 30000]

Prints one JSON object. On a Mosquitto this script starts on a free loopback port:

* ``plain_paho_s`` — the bundle is published once as retained chunks; N plain paho clients,
  already connected, subscribe to the chunk wildcard at the same moment; the time until
  every client has every chunk (bytes only counted). The baseline the fleet's rollout
  target is a ratio of.
* ``fetcher_s`` — the same N clients as :class:`~edgeops.mqtt.PahoLink` with a
  :class:`~edgeops.mqtt.BundleFetcher` each, writing to a file, checking every chunk's and
  the whole bundle's SHA-256. ``fetcher_vs_plain`` is the ratio.
* ``plain_paho_cpu_s``, ``fetcher_cpu_s``, ``fetcher_cpu_vs_plain`` — CPU seconds of this
  process (every thread) over the same two timed windows: less sensitive than wall time to
  other work on a shared machine, and what an agent's fetch costs beyond receiving.
* ``fleet_publishes`` — how many messages the publisher sent for the bundle (one per chunk
  plus the meta, whatever N).
* ``large_fetch_s``, ``large_fetch_rss_growth_mb`` — one fetcher in a fresh process fetching
  a ``--large-mb`` bundle (windowed per-chunk topics) into a file: the time, and how much its
  peak RSS grew over the RSS before the fetch (memory must not grow with the bundle).
* ``raw_paho_msgs_per_s`` — 200-byte QoS 1 messages from a publisher in another process to
  one plain paho subscriber that counts them; ``link_msgs_per_s`` — the same into a
  :class:`~edgeops.mqtt.PahoLink` handler.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pwd
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edgeops.broker import MosquittoBroker
from edgeops.mqtt import BundleFetcher, Message, MqttSettings, PahoLink, publish_bundle
from edgeops.protocol import bundle_chunk_filter

FLEET = "bench"


def _broker_config() -> str:
    # Enough queued messages per client that a burst of small QoS 1 messages is not dropped
    # by the broker; a root run keeps its own user so files stay writable.
    user = pwd.getpwuid(os.getuid()).pw_name
    return (
        f"allow_anonymous true\nuser {user}\nmax_queued_messages 0\n"
        "max_inflight_messages 100\nmax_connections -1\n"
    )


def _connected_paho(broker: MosquittoBroker, client_id: str) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    ready = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: ready.set()
    client.connect(broker.host, broker.port, keepalive=60)
    client.loop_start()
    if not ready.wait(10):
        raise RuntimeError(f"{client_id} did not connect")
    return client


class ChunkCounts:
    """Chunk messages per plain subscriber, until each has all ``chunks`` of them."""

    def __init__(self, subscribers: int, chunks: int) -> None:
        self.chunks = chunks
        self.counts = [0] * subscribers
        self._complete = threading.Semaphore(0)

    def on_message_for(self, index: int) -> Any:
        """Subscriber ``index``'s paho ``on_message``: counts, nothing else."""

        def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
            self.counts[index] += 1
            if self.counts[index] == self.chunks:
                self._complete.release()

        return on_message

    def wait_all(self, timeout: float, what: str) -> None:
        """Until every subscriber has every chunk; RuntimeError naming ``what`` if one does
        not within ``timeout`` of the last."""
        for _ in self.counts:
            if not self._complete.acquire(timeout=timeout):
                raise RuntimeError(
                    f"{what} incomplete: {sum(self.counts)} of "
                    f"{self.chunks * len(self.counts)} chunks"
                )


def plain_paho_fanout(
    broker: MosquittoBroker,
    digest: str,
    chunks: int,
    subscribers: int,
    *,
    cpu: list[float] | None = None,
) -> float:
    """Seconds until every subscriber has every chunk; ``cpu`` gets the process CPU seconds
    of that window appended."""
    clients = [_connected_paho(broker, f"plain-{i}") for i in range(subscribers)]
    counts = ChunkCounts(subscribers, chunks)
    for index, client in enumerate(clients):
        client.on_message = counts.on_message_for(index)
    started, cpu_started = time.perf_counter(), time.process_time()
    for client in clients:
        client.subscribe(bundle_chunk_filter(FLEET, digest), qos=1)
    counts.wait_all(120, "plain fan-out")
    elapsed = time.perf_counter() - started
    if cpu is not None:
        cpu.append(time.process_time() - cpu_started)
    for client in clients:
        client.disconnect()
        client.loop_stop()
    return elapsed


def fetcher_fanout(
    broker: MosquittoBroker,
    digest: str,
    size: int,
    subscribers: int,
    folder: Path,
    *,
    cpu: list[float] | None = None,
) -> float:
    links = []
    for i in range(subscribers):
        link = PahoLink(MqttSettings(host=broker.host, port=broker.port, client_id=f"dev-{i}"))
        link.connect(timeout=10)
        links.append(link)
    sinks = [(folder / f"dev-{i}.bundle").open("w+b") for i in range(subscribers)]
    fetchers = [
        BundleFetcher(link, FLEET, digest=digest, size=size, sink=sink)
        for link, sink in zip(links, sinks, strict=True)
    ]
    started, cpu_started = time.perf_counter(), time.process_time()
    for fetcher in fetchers:
        fetcher.start()
    for fetcher in fetchers:
        fetcher.wait(120)
    elapsed = time.perf_counter() - started
    if cpu is not None:
        cpu.append(time.process_time() - cpu_started)
    for sink in sinks:
        sink.close()
    for link in links:
        link.close()
    return elapsed


def _peak_rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _fetch_large(host: str, port: int, digest: str, size: int, path: str, out: Any) -> None:
    link = PahoLink(MqttSettings(host=host, port=port, client_id="large"))
    link.connect(timeout=10)
    before = _peak_rss_mb()
    started = time.perf_counter()
    with open(path, "w+b") as sink:
        fetcher = BundleFetcher(link, FLEET, digest=digest, size=size, sink=sink)
        fetcher.start()
        fetcher.wait(120)
    elapsed = time.perf_counter() - started
    link.close()
    out.put((elapsed, _peak_rss_mb() - before))


def large_fetch(broker: MosquittoBroker, megabytes: int, folder: Path) -> tuple[float, float, int]:
    path = folder / "large.bundle"
    path.write_bytes(random.Random(2).randbytes(megabytes * 1024 * 1024))
    publisher = PahoLink(MqttSettings(host=broker.host, port=broker.port, client_id="fleet-l"))
    publisher.connect(timeout=10)
    meta = publish_bundle(publisher, FLEET, path)
    publisher.close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    target = str(folder / "large.fetched")
    worker = ctx.Process(
        target=_fetch_large,
        args=(broker.host, broker.port, meta.digest, meta.total_size, target, out),
    )
    worker.start()
    elapsed, growth = out.get(timeout=180)
    worker.join(30)
    if Path(target).read_bytes() != path.read_bytes():
        raise RuntimeError("the large bundle arrived different")
    return elapsed, growth, meta.chunk_count


def _publish_small(host: str, port: int, count: int, start: Any) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="small-pub", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(100)
    client.connect(host, port)
    client.loop_start()
    start.wait()
    payload = b"x" * 200
    info = None
    for i in range(count):
        info = client.publish(f"edgeops/v1/{FLEET}/dev/d{i % 100}/telemetry", payload, qos=1)
    if info is not None:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()


def _receive_rate(broker: MosquittoBroker, count: int, subscribe: Any) -> float:
    done = threading.Event()
    times: list[float] = []

    def on_one() -> None:
        times.append(time.perf_counter())
        if len(times) == count:
            done.set()

    closer = subscribe(on_one)
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    publisher = ctx.Process(target=_publish_small, args=(broker.host, broker.port, count, start))
    publisher.start()
    time.sleep(0.5)
    start.set()
    finished = done.wait(120)
    publisher.join(120)
    closer()
    if not finished:
        raise RuntimeError(f"received {len(times)} of {count} small messages")
    return (count - 1) / (times[-1] - times[0])


def raw_paho_rate(broker: MosquittoBroker, count: int) -> float:
    def subscribe(on_one: Any) -> Any:
        client = _connected_paho(broker, "raw-sub")
        client.on_message = lambda c, u, m: on_one()
        client.subscribe(f"edgeops/v1/{FLEET}/dev/+/telemetry", qos=1)
        time.sleep(0.2)
        return lambda: (client.disconnect(), client.loop_stop())

    return _receive_rate(broker, count, subscribe)


def link_rate(broker: MosquittoBroker, count: int) -> float:
    def subscribe(on_one: Any) -> Any:
        link = PahoLink(MqttSettings(host=broker.host, port=broker.port, client_id="link-sub"))
        link.connect(timeout=10)

        def handler(message: Message) -> None:
            on_one()

        link.subscribe(f"edgeops/v1/{FLEET}/dev/+/telemetry", handler).wait(10)
        return link.close

    return _receive_rate(broker, count, subscribe)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--bundle-mb", type=float, default=3.0)
    parser.add_argument("--chunk-kib", type=int, default=256)
    parser.add_argument("--messages", type=int, default=30000)
    parser.add_argument("--large-mb", type=int, default=64)
    args = parser.parse_args()

    bundle = random.Random(1).randbytes(int(args.bundle_mb * 1024 * 1024))
    folder = Path(tempfile.mkdtemp(prefix="edgeops-fanout-"))
    try:
        with MosquittoBroker(_broker_config(), workdir=folder / "broker") as broker:
            publisher = PahoLink(
                MqttSettings(host=broker.host, port=broker.port, client_id="fleet")
            )
            publisher.connect(timeout=10)
            started = time.perf_counter()
            meta = publish_bundle(publisher, FLEET, bundle, chunk_size=args.chunk_kib * 1024)
            publish_s = time.perf_counter() - started
            publisher.close()
            fleet_publishes = meta.chunk_count + 1

            cpu: list[float] = []
            plain = plain_paho_fanout(
                broker, meta.digest, meta.chunk_count, args.subscribers, cpu=cpu
            )
            fetched = fetcher_fanout(
                broker, meta.digest, meta.total_size, args.subscribers, folder, cpu=cpu
            )
            plain_cpu, fetcher_cpu = cpu
            for path in folder.glob("dev-*.bundle"):
                if path.read_bytes() != bundle:
                    raise RuntimeError(f"{path.name} differs from the bundle")
                path.unlink()
            large_s, large_growth, large_chunks = large_fetch(broker, args.large_mb, folder)
            raw = raw_paho_rate(broker, args.messages)
            via_link = link_rate(broker, args.messages)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    total_mb = args.subscribers * len(bundle) / 1e6
    print(
        json.dumps(
            {
                "subscribers": args.subscribers,
                "bundle_bytes": len(bundle),
                "chunk_size": meta.chunk_size,
                "chunks": meta.chunk_count,
                "fleet_publishes": fleet_publishes,
                "publish_s": round(publish_s, 4),
                "plain_paho_s": round(plain, 3),
                "plain_paho_mb_per_s": round(total_mb / plain, 1),
                "fetcher_s": round(fetched, 3),
                "fetcher_mb_per_s": round(total_mb / fetched, 1),
                "fetcher_vs_plain": round(fetched / plain, 3),
                "plain_paho_cpu_s": round(plain_cpu, 3),
                "fetcher_cpu_s": round(fetcher_cpu, 3),
                "fetcher_cpu_vs_plain": round(fetcher_cpu / plain_cpu, 3),
                "large_bundle_mb": args.large_mb,
                "large_chunks": large_chunks,
                "large_fetch_s": round(large_s, 3),
                "large_fetch_rss_growth_mb": round(large_growth, 1),
                "small_messages": args.messages,
                "raw_paho_msgs_per_s": round(raw),
                "link_msgs_per_s": round(via_link),
                "link_vs_raw": round(via_link / raw, 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
