"""Telemetry ingestion into the registry, against the raw paho receive rate.

Three figures from one run on one machine:

* ``registry_msgs_per_s`` — encoded telemetry messages decoded and written by the
  :class:`~edgeops.fleet.ingest.Ingestor` into a SQLite registry file (WAL), duplicates
  included (target >= 10,000/s);
* ``raw_paho_msgs_per_s`` — the same messages published at QoS 1 through a local Mosquitto
  to one paho subscriber that only counts them;
* ``mqtt_ingest_msgs_per_s`` — the same again with the subscriber feeding the Ingestor;
  ``ingest_vs_raw`` is its ratio to the raw rate (target >= 0.5);
* ``link_ingest_msgs_per_s`` — the fleet manager's own path, an ``edgeops.mqtt.PahoLink``
  (MQTT 5) subscribed with ``Ingestor.attach``; ``link_ingest_vs_raw`` its ratio to the raw
  MQTT 3.1.1 rate, ``link_ingest_vs_raw_v5`` to a raw paho subscriber on MQTT 5.

Usage: ``python benchmarks/fleet_ingest.py [--messages 50000] [--devices 1000]
[--postgres DSN]``; prints JSON. With ``--postgres``, also the registry rate on PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgeops.broker import MosquittoBroker
from edgeops.fleet.ingest import Ingestor
from edgeops.fleet.registry import RegistryStore, SqliteStore
from edgeops.protocol import TelemetryMessage, TelemetrySample, telemetry_topic

FLEET = "bench"
DIGEST = "c" * 64


def make_messages(count: int, devices: int, duplicate_share: float) -> list[tuple[str, bytes]]:
    """``count`` telemetry messages round-robin over ``devices``; a share are replays."""
    out: list[tuple[str, bytes]] = []
    seqs = [0] * devices
    replay_every = int(1 / duplicate_share) if duplicate_share > 0 else 0
    for i in range(count):
        device = i % devices
        if replay_every and i % replay_every == replay_every - 1 and seqs[device] > 0:
            seq = seqs[device]  # the same seq again: a replay after a reconnect
        else:
            seqs[device] += 1
            seq = seqs[device]
        sample = TelemetrySample(
            ts=1_800_000_000.0 + i * 0.001,
            window_s=10.0,
            requests=120,
            errors=i % 3,
            latency_p50_ms=8.0,
            latency_p95_ms=12.5 + (i % 7),
            latency_p99_ms=20.0,
            cpu_percent=35.0,
            rss_mb=180.0,
            temperature_c=52.0,
            disk_free_mb=900.0,
            bundle_digest=DIGEST,
            drift=0.05,
        )
        payload = TelemetryMessage(seq=seq, samples=(sample,)).to_bytes()
        out.append((telemetry_topic(FLEET, f"dev-{device:05d}"), payload))
    return out


def new_store(folder: Path, devices: int, postgres: str | None = None) -> RegistryStore:
    store: RegistryStore
    if postgres:
        from edgeops.fleet.registry.postgres import PostgresStore

        store = PostgresStore(postgres, schema=f"edgeops_bench_{os.getpid()}")
    else:
        store = SqliteStore(folder / "registry.sqlite")
    for d in range(devices):
        store.add_device(f"dev-{d:05d}", group="bench", board="rpi4", now=1.0)
    return store


def registry_rate(
    messages: list[tuple[str, bytes]], devices: int, folder: Path, postgres: str | None = None
) -> dict[str, float]:
    store = new_store(folder, devices, postgres)
    ingest = Ingestor(store, fleet=FLEET)
    start = time.perf_counter()
    for topic, payload in messages:
        ingest.submit(topic, payload)
    ingest.flush()
    elapsed = time.perf_counter() - start
    if postgres:
        store.drop_schema()  # type: ignore[attr-defined]
    store.close()
    prefix = "postgres" if postgres else "registry"
    return {
        f"{prefix}_msgs_per_s": len(messages) / elapsed,
        f"{prefix}_seconds": elapsed,
        f"{prefix}_written": ingest.stats.written,
        f"{prefix}_duplicates_dropped": ingest.stats.duplicates,
    }


def _publish_all(host: str, port: int, messages: list[tuple[str, bytes]]) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}")
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect(host, port)
    pub.loop_start()
    infos = [pub.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(60)
    pub.loop_stop()
    pub.disconnect()


def start_publisher(broker: MosquittoBroker, messages: list[tuple[str, bytes]]) -> Any:
    """Publish from another process, as devices do: the subscriber under test does not
    share its interpreter lock with the publisher."""
    process = multiprocessing.get_context("fork").Process(
        target=_publish_all, args=(broker.host, broker.port, messages), daemon=True
    )
    process.start()
    return process


def mqtt_rate(
    broker: MosquittoBroker,
    messages: list[tuple[str, bytes]],
    handle: Callable[[str, bytes], object],
    finish: Callable[[], object] = lambda: None,
    timeout: float = 300.0,
    protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
) -> tuple[float, int]:
    """Publish ``messages`` at QoS 1 and time their arrival at one subscriber."""
    total = len(messages)
    received = 0
    first: list[float] = []
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        nonlocal received
        if not first:
            first.append(time.perf_counter())
        handle(message.topic, bytes(message.payload))
        received += 1
        if received == total:
            done.set()

    sub = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"sub-{time.monotonic_ns()}", protocol=protocol
    )
    sub.on_message = on_message
    sub.on_subscribe = lambda *args: subscribed.set()
    sub.connect(broker.host, broker.port)
    sub.subscribe(f"edgeops/v1/{FLEET}/dev/+/telemetry", qos=1)
    sub.loop_start()
    assert subscribed.wait(10), "subscription was not acknowledged"

    start = time.perf_counter()
    publisher = start_publisher(broker, messages)
    finished = done.wait(timeout)
    finish()
    end_all = time.perf_counter()
    publisher.join(60)
    sub.loop_stop()
    sub.disconnect()
    if not finished:
        raise SystemExit(f"only {received} of {total} messages arrived in {timeout:.0f} s")
    # From the first publish to the last message handled (and, for ingest, written).
    return total / (end_all - start), received


def link_rate(
    broker: MosquittoBroker, messages: list[tuple[str, bytes]], folder: Path, devices: int
) -> tuple[float, Ingestor]:
    """The product path: a PahoLink subscribed by ``Ingestor.attach``, writing the registry."""
    from edgeops.mqtt import MqttSettings, PahoLink

    store = new_store(folder, devices)
    ingest = Ingestor(store, fleet=FLEET)
    link = PahoLink(MqttSettings(host=broker.host, port=broker.port, client_id="bench-manager"))
    link.connect(timeout=10)
    for ack in ingest.attach(link):
        ack.wait(10)
    total = len(messages)
    start = time.perf_counter()
    publisher = start_publisher(broker, messages)
    deadline = time.monotonic() + 300
    while ingest.stats.received < total and time.monotonic() < deadline:
        time.sleep(0.005)
    ingest.flush()
    elapsed = time.perf_counter() - start
    publisher.join(60)
    link.close()
    store.close()
    if ingest.stats.received < total:
        raise SystemExit(f"only {ingest.stats.received} of {total} messages arrived")
    return total / elapsed, ingest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of replays")
    parser.add_argument(
        "--postgres", metavar="DSN", help="also measure the PostgreSQL registry at this DSN"
    )
    args = parser.parse_args()

    messages = make_messages(args.messages, args.devices, args.duplicates)
    result: dict[str, object] = {
        "benchmark": "fleet_ingest",
        "messages": args.messages,
        "devices": args.devices,
        "duplicate_share": args.duplicates,
        "payload_bytes": len(messages[0][1]),
    }
    with tempfile.TemporaryDirectory(prefix="edgeops-bench-") as tmp:
        folder = Path(tmp)
        (folder / "direct").mkdir()
        result.update(registry_rate(messages, args.devices, folder / "direct"))
        if args.postgres:
            result.update(registry_rate(messages, args.devices, folder, args.postgres))

        config = "allow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\n"
        with MosquittoBroker(config, workdir=folder / "broker") as broker:
            raw, _ = mqtt_rate(broker, messages, lambda topic, payload: None)
            # The fleet manager's link speaks MQTT 5 (shared subscriptions); paho parses
            # v5 packets (properties) more slowly, so the raw rate is taken for both.
            raw_v5, _ = mqtt_rate(
                broker, messages, lambda topic, payload: None, protocol=mqtt.MQTTv5
            )
            (folder / "mqtt").mkdir()
            store = new_store(folder / "mqtt", args.devices)
            ingest = Ingestor(store, fleet=FLEET)
            rate, _ = mqtt_rate(
                broker,
                messages,
                ingest.submit,
                finish=ingest.flush,
            )
            store.close()
            (folder / "link").mkdir()
            via_link, linked = link_rate(broker, messages, folder / "link", args.devices)
    result.update(
        {
            "raw_paho_msgs_per_s": raw,
            "mqtt_ingest_msgs_per_s": rate,
            "mqtt_ingest_written": ingest.stats.written,
            "mqtt_ingest_duplicates_dropped": ingest.stats.duplicates,
            "link_ingest_msgs_per_s": via_link,
            "link_ingest_written": linked.stats.written,
            "ingest_vs_raw": rate / raw,
            "raw_paho_v5_msgs_per_s": raw_v5,
            "link_ingest_vs_raw": via_link / raw,
            "link_ingest_vs_raw_v5": via_link / raw_v5,
            "target_registry_msgs_per_s": 10_000,
            "target_ingest_vs_raw": 0.5,
        }
    )
    result["meets_targets"] = (
        result["registry_msgs_per_s"] >= 10_000  # type: ignore[operator]
        and result["ingest_vs_raw"] >= 0.5  # type: ignore[operator]
        and result["link_ingest_vs_raw"] >= 0.5  # type: ignore[operator]
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
