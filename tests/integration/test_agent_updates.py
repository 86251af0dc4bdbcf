"""Updates end to end: real signed bundles over a real Mosquitto (TLS, the fleet's ACL),
real LiteRT models, the agent in-process or as a subprocess that ``kill -9`` interrupts.

Bundles are built with ``edgeops.bundle.create_bundle`` from tiny real TFLite models
(``y = x + c``) and published with ``publish_bundle``, as ``edgeops push`` does.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeops.agent.config import AgentConfig
from edgeops.agent.daemon import Agent
from edgeops.agent.enroll import install_bootstrap
from edgeops.agent.runtimes.testing import tflite_add_model
from edgeops.agent.updater import Phase
from edgeops.bundle import create_bundle
from edgeops.mqtt import publish_bundle
from edgeops.trust import (
    Budgets,
    BundleRef,
    FileEntry,
    RolloutPolicy,
    SigningKey,
    sign_metadata,
)

from .test_agent_fleet import FleetRig, wait_event, wait_for

pytestmark = pytest.mark.integration

FLEET = "demo"
X = np.ones((1, 4), dtype=np.float32)


class Bundles:
    """Real bundles signed with the fleet's release key."""

    def __init__(self, rig: FleetRig, folder: Path) -> None:
        self.rig = rig
        self.folder = folder
        folder.mkdir(exist_ok=True)
        self.key = SigningKey.load(rig.dir.key_path("release"))
        inputs = folder / "inputs.npz"
        np.savez(inputs, x=np.stack([X, X * 2, X * 3]))
        self.inputs = inputs

    def build(self, release: int, constant: float, **options: Any) -> Path:
        model = self.folder / f"add{constant}.tflite"
        model.write_bytes(tflite_add_model(constant=constant))
        output = self.folder / f"adder-{release}-{constant}.bundle"
        create_bundle(
            model,
            name="adder",
            version=f"{release}.0",
            release=release,
            signing_keys=[self.key],
            output=output,
            test_inputs=self.inputs,
            **options,
        )
        return output

    def with_foreign_vectors(self, release: int, model_of: Path, vectors_of: Path) -> Path:
        """A correctly signed bundle whose test vectors were recorded on another model."""
        members = {}
        manifest: dict[str, Any] = {}
        for source in (model_of, vectors_of):
            with tarfile.open(source) as tar:
                for member in tar.getmembers():
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    data = extracted.read()
                    if member.name == "manifest.json" and source == model_of:
                        manifest = json.loads(data)["signed"]
                    if (source == model_of and member.name == "model.tflite") or (
                        source == vectors_of and member.name == "test_vectors.npz"
                    ):
                        members[member.name] = data
        import hashlib

        from edgeops.trust import Manifest

        parsed = Manifest.from_signed(manifest)
        entries = tuple(
            FileEntry(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())
            for name, data in members.items()
        )
        forged = dataclasses.replace(
            parsed,
            release=release,
            version=f"{release}.0",
            files=entries,
            reference_stats=None,
        )
        envelope = sign_metadata(forged, [self.key])
        output = self.folder / f"foreign-vectors-{release}.bundle"
        with tarfile.open(output, "w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in [("manifest.json", envelope), *members.items()]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return output

    def push(
        self,
        device_id: str,
        bundle: Path,
        *,
        action: str = "install",
        window_s: float = 0.3,
        **policy: Any,
    ) -> str:
        assert self.rig.link is not None
        meta = publish_bundle(self.rig.link, FLEET, bundle, chunk_size=4096)
        payload = self.rig.directive(
            device_id,
            action=action,
            bundle=BundleRef(
                sha256=meta.digest, size=meta.total_size, name="adder", version="-", release=1
            ),
            rollout=RolloutPolicy(trial_window_s=window_s, **policy),
        )
        self.rig.publish_directive(device_id, payload)
        return meta.digest


@pytest.fixture
def rig(tmp_path):
    rig = FleetRig(tmp_path)
    rig.start()
    yield rig
    rig.stop()


@pytest.fixture
def bundles(rig, tmp_path):
    return Bundles(rig, tmp_path / "bundles")


def start_agent(rig: FleetRig, tmp_path: Path, device_id: str = "dev-1", **changes: Any) -> Agent:
    archive = rig.enroll(device_id, tmp_path)
    config = AgentConfig.load(install_bootstrap(archive, tmp_path / device_id))
    settings: dict[str, Any] = {"api_port": 0, "telemetry_interval_s": 3600.0, "min_requests": 5}
    settings.update(changes)
    agent = Agent(dataclasses.replace(config, **settings))
    agent.start()
    return agent


def result_for(rig: FleetRig, device_id: str, digest: str, state: str) -> bool:
    return any(
        e.kind in ("update_result", "rolled_back", "loop_guard")
        and e.state == state
        and e.bundle_digest == digest
        for e in rig.events(device_id)
    )


def install(rig: FleetRig, bundles: Bundles, agent: Agent, bundle: Path, **kw: Any) -> str:
    digest = bundles.push(agent.device_id, bundle, **kw)
    wait_for(lambda: result_for(rig, agent.device_id, digest, "committed"), what="committed")
    return digest


def test_a_new_bundle_is_committed_and_serves(rig, bundles, tmp_path):
    agent = start_agent(rig, tmp_path)
    try:
        first = install(rig, bundles, agent, bundles.build(1, 1.0))
        assert agent.infer({"x": X})["y"].tolist() == [[2.0] * 4]
        second = install(rig, bundles, agent, bundles.build(2, 10.0))
        assert agent.infer({"x": X})["y"].tolist() == [[11.0] * 4]
        state = agent.state
        assert state.committed is not None
        assert state.committed.digest == second
        assert state.previous is not None
        assert state.previous.digest == first
        wait_for(lambda: (s := rig.state("dev-1")) is not None and s.update == "committed")
        published = rig.state("dev-1")
        assert published is not None
        assert published.bundle is not None
        assert published.bundle.digest == second
        assert published.previous is not None
        assert published.previous.digest == first
    finally:
        agent.stop()


def test_failing_test_vectors_are_never_activated(rig, bundles, tmp_path):
    agent = start_agent(rig, tmp_path)
    try:
        good_one = bundles.build(1, 1.0)
        first = install(rig, bundles, agent, good_one)
        other = bundles.build(2, 10.0)
        forged = bundles.with_foreign_vectors(3, model_of=other, vectors_of=good_one)
        bad = bundles.push("dev-1", forged)
        wait_for(lambda: result_for(rig, "dev-1", bad, "failed"), what="failed")
        (event,) = [
            e for e in rig.events("dev-1") if e.bundle_digest == bad and e.state == "failed"
        ]
        assert "health check failed: test vector 0: output 'y'" in event.reason
        assert not any(
            e.bundle_digest == bad and e.state == "activating" for e in rig.events("dev-1")
        )
        active = agent.holder.active
        assert active is not None
        assert active.info.bundle_digest == first
        assert agent.infer({"x": X})["y"].tolist() == [[2.0] * 4]
    finally:
        agent.stop()


def test_a_bundle_over_its_latency_budget_fails_the_health_check(rig, bundles, tmp_path):
    agent = start_agent(rig, tmp_path)
    try:
        slow = bundles.build(1, 1.0, budgets=Budgets(p95_latency_ms=1e-6))
        digest = bundles.push("dev-1", slow)
        wait_for(lambda: result_for(rig, "dev-1", digest, "failed"), what="failed")
        (event,) = [
            e for e in rig.events("dev-1") if e.bundle_digest == digest and e.state == "failed"
        ]
        assert "p95 latency" in event.reason
        assert "budget" in event.reason
        assert agent.holder.active is None
    finally:
        agent.stop()


def test_a_failing_trial_rolls_back_with_the_reason_and_figures(rig, bundles, tmp_path):
    agent = start_agent(rig, tmp_path)
    try:
        first = install(rig, bundles, agent, bundles.build(1, 1.0))
        # Any real latency is over a 1 ns p95 limit: the trial must fail on live figures.
        digest = bundles.push(
            "dev-1", bundles.build(2, 10.0), window_s=30.0, max_p95_latency_ms=1e-6
        )
        wait_for(lambda: agent.phase is Phase.TRIAL, what="trial")
        for _ in range(20):
            agent.infer({"x": X})
        event = wait_event(rig, "dev-1", "rolled_back")
        assert event.bundle_digest == digest
        assert event.reason.startswith("trial failed: p95 latency")
        assert event.state == "rolled_back"
        progress = [e for e in rig.events("dev-1") if e.state == "rolling_back"]
        assert progress
        assert progress[0].figures["requests"] >= 5
        assert agent.infer({"x": X})["y"].tolist() == [[2.0] * 4]
        active = agent.holder.active
        assert active is not None
        assert active.info.bundle_digest == first
        assert agent.rollback_timings[-1].seconds < 1.0
    finally:
        agent.stop()


def test_a_bundle_for_another_board_is_rejected(rig, bundles, tmp_path):
    agent = start_agent(rig, tmp_path)
    try:
        digest = bundles.push("dev-1", bundles.build(1, 1.0, boards=["rpi4"]))
        wait_for(lambda: result_for(rig, "dev-1", digest, "failed"), what="failed")
        (event,) = [
            e for e in rig.events("dev-1") if e.bundle_digest == digest and e.state == "failed"
        ]
        assert "WrongTargetError" in event.reason
        assert "rpi4" in event.reason
        assert not agent.store.bundle_dir(digest).exists()
    finally:
        agent.stop()


def test_a_replayed_directive_and_an_older_release_are_rejected(rig, bundles, tmp_path):
    agent = start_agent(rig, tmp_path)
    try:
        old_bundle = bundles.build(1, 1.0)
        install(rig, bundles, agent, old_bundle)
        replayed_sequence = rig.sequence
        install(rig, bundles, agent, bundles.build(2, 10.0))
        # Replay: a directive with a sequence the device has already passed.
        rig.sequence = replayed_sequence - 1
        replay = rig.directive(
            "dev-1",
            bundle=BundleRef(sha256="cd" * 32, size=100, name="adder", version="1", release=1),
        )
        rig.publish_directive("dev-1", replay)
        event = wait_event(rig, "dev-1", "rejected")
        assert "RollbackAttackError" in event.reason
        assert "expected directive sequence >" in event.reason
        # A fresh directive naming an older release: the manifest's counter is refused.
        rig.sequence = 50
        older = bundles.push("dev-1", old_bundle)
        wait_for(lambda: result_for(rig, "dev-1", older, "failed"), what="older release failed")
        (failed,) = [
            e for e in rig.events("dev-1") if e.bundle_digest == older and e.state == "failed"
        ]
        assert "expected release counter > 2, got 1" in failed.reason
        assert agent.infer({"x": X})["y"].tolist() == [[11.0] * 4]
    finally:
        agent.stop()


def test_continuous_inference_sees_no_failure_during_an_update_and_a_rollback(
    rig, bundles, tmp_path
):
    import threading

    agent = start_agent(rig, tmp_path)
    results: list[float] = []
    failures: list[str] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                results.append(float(agent.infer({"x": X})["y"][0, 0]))
            except Exception as exc:  # any failure at all is what this test counts
                failures.append(repr(exc))

    try:
        install(rig, bundles, agent, bundles.build(1, 1.0))
        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        install(rig, bundles, agent, bundles.build(2, 10.0))  # update under load
        bad = bundles.push("dev-1", bundles.build(3, 20.0), window_s=30.0, max_p95_latency_ms=1e-6)
        wait_for(lambda: result_for(rig, "dev-1", bad, "rolled_back"), what="rolled back")
        time.sleep(0.2)
        stop.set()
        thread.join(5)
        assert failures == []
        # Every answer came from one of the three models, and the load saw all of them.
        assert set(results) <= {2.0, 11.0, 21.0}
        assert {2.0, 11.0, 21.0} <= set(results)
        assert results[-1] == 11.0
    finally:
        stop.set()
        agent.stop()


def test_a_rollback_directive_returns_to_the_previous_bundle(rig, bundles, tmp_path):
    agent = start_agent(rig, tmp_path)
    try:
        first = install(rig, bundles, agent, bundles.build(1, 1.0))
        install(rig, bundles, agent, bundles.build(2, 10.0))
        # The fleet aborts its rollout: a signed rollback naming the previous bundle.
        payload = rig.directive(
            "dev-1",
            action="rollback",
            bundle=BundleRef(sha256=first, size=1, name="adder", version="1.0", release=1),
        )
        rig.publish_directive("dev-1", payload)
        event = wait_event(rig, "dev-1", "rolled_back")
        assert event.bundle_digest == first
        assert agent.infer({"x": X})["y"].tolist() == [[2.0] * 4]
        state = agent.state
        assert state.committed is not None
        assert state.committed.digest == first
    finally:
        agent.stop()


def test_a_broker_restart_mid_download_resumes_and_completes(rig, bundles, tmp_path):
    from edgeops.protocol import bundle_chunk_topic, split_chunks

    agent = start_agent(rig, tmp_path)
    try:
        model = tmp_path / "big.tflite"
        model.write_bytes(tflite_add_model(constant=3.0))
        big = tmp_path / "big.bundle"
        padding = tmp_path / "labels.txt"
        padding.write_bytes(os.urandom(1024 * 1024))
        create_bundle(
            model,
            name="adder",
            version="1.0",
            release=1,
            signing_keys=[bundles.key],
            output=big,
            test_inputs=bundles.inputs,
            extra_files={"labels.txt": padding},
        )
        assert rig.link is not None
        chunk_size = 16 * 1024
        meta = publish_bundle(rig.link, FLEET, big, chunk_size=chunk_size)
        _, chunks = split_chunks(big, chunk_size)
        second_half = list(enumerate(chunks))[meta.chunk_count // 2 :]
        # The second half is not on the broker yet: the fetch must stop half way.
        for index, _chunk in second_half:
            rig.link.publish(
                bundle_chunk_topic(FLEET, meta.digest, index), b"", qos=1, retain=True
            ).wait(5)
        payload = rig.directive(
            "dev-1",
            bundle=BundleRef(
                sha256=meta.digest, size=meta.total_size, name="adder", version="1", release=1
            ),
            rollout=RolloutPolicy(trial_window_s=0.2),
        )
        rig.publish_directive("dev-1", payload)
        half = (meta.chunk_count // 2, meta.chunk_count)
        wait_for(lambda: agent.download_progress == half, what="first half fetched")
        rig.stop()
        time.sleep(0.5)
        rig.start()  # retained chunks persist (the fleet's broker config enables persistence)
        assert rig.link is not None
        for index, chunk in second_half:
            rig.link.publish(
                bundle_chunk_topic(FLEET, meta.digest, index), chunk, qos=1, retain=True
            ).wait(5)
        wait_for(
            lambda: result_for(rig, "dev-1", meta.digest, "committed"), timeout=60, what="commit"
        )
        assert agent.infer({"x": X})["y"].tolist() == [[4.0] * 4]
        assert agent.phase is Phase.COMMITTED
    finally:
        agent.stop()
