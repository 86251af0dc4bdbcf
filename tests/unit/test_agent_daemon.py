"""The daemon on fakes: FakeBroker link, a fake bundle stager, fake runtimes, real trust."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeops.agent.config import AgentConfig
from edgeops.agent.daemon import Agent, StagedBundle
from edgeops.agent.health import Budgets, TestVector
from edgeops.agent.runtimes import TensorSpec
from edgeops.agent.runtimes.testing import FakeRuntime
from edgeops.agent.updater import BundleVerified, Phase, Verify
from edgeops.errors import DigestMismatchError, ModelError, RollbackAttackError
from edgeops.mqtt import FakeBroker, publish_bundle
from edgeops.protocol import (
    EventMessage,
    StateMessage,
    device_directive_topic,
    events_topic,
    state_topic,
)
from edgeops.trust import BundleRef as SignedBundleRef
from edgeops.trust import RolloutPolicy
from edgeops.trust.testing import MemoryFleet

FLEET = "test-fleet"
DEVICE = "dev-1"


def fake_bundle(
    *,
    release: int,
    constant: float,
    vector_constant: float | None = None,
    fail_above: float | None = None,
) -> bytes:
    """A stand-in bundle file: JSON the fake stager reads (the real format is edgeops.bundle)."""
    return json.dumps(
        {
            "name": "adder",
            "version": f"{release}.0",
            "release": release,
            "constant": constant,
            "vector_constant": constant if vector_constant is None else vector_constant,
            "fail_above": fail_above,
        }
    ).encode()


class FakeStager:
    """Checks the file's digest and size and the release floor, 'unpacks' it as JSON.

    ``digest_checked`` says what the agent told it for each stage, in order.
    """

    def __init__(self) -> None:
        self.digest_checked: list[bool] = []

    def stage(
        self,
        path: Path,
        dest: Path,
        *,
        digest: str,
        size: int,
        trusted: Any,
        board: str | None,
        last_release_counter: int | None,
        max_unpacked: int,
        latency_runs: int,
        digest_checked: bool = False,
    ) -> StagedBundle:
        self.digest_checked.append(digest_checked)
        data = path.read_bytes()
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise DigestMismatchError(f"expected bundle sha256 {digest}")
        spec = json.loads(data)
        if last_release_counter is not None and spec["release"] <= last_release_counter:
            raise RollbackAttackError(
                f"expected release counter > {last_release_counter}, got {spec['release']}"
            )
        dest.mkdir(parents=True)
        (dest / "model.json").write_bytes(data)
        return StagedBundle(
            digest=digest,
            name=spec["name"],
            version=spec["version"],
            release=spec["release"],
            model="model.json",
            budgets=Budgets(latency_runs=latency_runs),
            test_vectors="model.json",
        )

    def test_vectors(self, files: Path, staged: StagedBundle) -> list[TestVector]:
        spec = json.loads((files / "model.json").read_bytes())
        x = np.ones((1, 4), dtype=np.float32)
        return [TestVector(inputs={"x": x}, expected={"y": x + spec["vector_constant"]})]

    def reference_stats(self, files: Path, staged: StagedBundle) -> Mapping[str, Any] | None:
        return None


def fake_loader(path: Path, staged: StagedBundle) -> FakeRuntime:
    spec = json.loads(path.read_bytes())
    limit = spec["fail_above"]

    def fn(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if limit is not None and float(arrays["x"].max()) > limit:
            raise ModelError("fake model fault on large inputs")
        return {"y": arrays["x"] + spec["constant"]}

    return FakeRuntime(
        inputs=[TensorSpec(name="x", shape=(1, 4), dtype="float32")],
        outputs=[TensorSpec(name="y", shape=(1, 4), dtype="float32")],
        fn=fn,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what or predicate}")


def wait_event(rig: Rig, kind: str, state: str | None = None) -> EventMessage:
    """The first event of ``kind`` (and ``state``), once the agent has published it."""
    found: list[EventMessage] = []

    def seen() -> bool:
        found[:] = [
            e for e in rig.events() if e.kind == kind and (state is None or e.state == state)
        ]
        return bool(found)

    wait_for(seen, what=f"event {kind} {state}")
    return found[0]


class Rig:
    """A fleet, a fake broker and one agent on fakes."""

    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.fleet = MemoryFleet(FLEET)
        self.broker = FakeBroker()
        self.publisher = self.broker.link("fleet-manager")
        self.publisher.connect()
        self.sequence = 0
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        (state_dir / "root.json").write_bytes(self.fleet.root_bytes)
        settings: dict[str, Any] = {
            "device_id": DEVICE,
            "fleet": FLEET,
            "broker_url": "mqtt://127.0.0.1:1883",
            "state_dir": state_dir,
            "groups": ("cams",),
            "board": "generic-x86_64",
            "api_enabled": False,
            "telemetry_interval_s": 3600.0,
            "trial_check_interval_s": 0.02,
            "min_requests": 5,
        }
        settings.update(config)
        self.config = AgentConfig(**settings)
        self.agent = self.new_agent()

    def new_agent(self) -> Agent:
        return Agent(
            self.config,
            link=self.broker.link(DEVICE),
            stager=FakeStager(),
            loader=fake_loader,
        )

    def push(
        self,
        bundle: bytes,
        *,
        action: str = "install",
        window_s: float = 0.2,
        device: str = DEVICE,
        release: int = 1,
        **policy: Any,
    ) -> str:
        meta = publish_bundle(self.publisher, FLEET, bundle, chunk_size=1024)
        self.sequence += 1
        directive = self.fleet.directive(
            device=device,
            sequence=self.sequence,
            action=action,
            bundle=SignedBundleRef(
                sha256=meta.digest,
                size=len(bundle),
                name="adder",
                version=f"{release}.0",
                release=release,
            ),
            rollout=RolloutPolicy(trial_window_s=window_s, **policy),
        )
        self.publisher.publish(
            device_directive_topic(FLEET, DEVICE), self.fleet.sign(directive), retain=True
        )
        return meta.digest

    def events(self) -> list[EventMessage]:
        return [
            EventMessage.from_bytes(m.payload)
            for m in self.broker.publishes_to(events_topic(FLEET, DEVICE))
        ]

    def state_message(self) -> StateMessage:
        return StateMessage.from_bytes(self.broker.retained[state_topic(FLEET, DEVICE)].payload)


@pytest.fixture
def rig(tmp_path):
    rig = Rig(tmp_path)
    yield rig
    rig.agent.stop(timeout=2)


def committed_on(rig: Rig, digest: str) -> bool:
    """Committed, and the actions after the commit (report, retained state) are done."""
    state = rig.agent.state
    reported = any(
        e.kind == "update_result" and e.state == "committed" and e.bundle_digest == digest
        for e in rig.events()
    )
    return reported and state.committed is not None and state.committed.digest == digest


def install_first(rig: Rig) -> str:
    digest = rig.push(fake_bundle(release=1, constant=1.0), release=1, window_s=0.05)
    wait_for(lambda: committed_on(rig, digest), what="first bundle committed")
    return digest


def test_a_new_bundle_is_fetched_checked_activated_and_committed(rig):
    rig.agent.start()
    first = install_first(rig)
    x = np.ones((1, 4), dtype=np.float32)
    assert rig.agent.infer({"x": x})["y"].tolist() == [[2.0] * 4]
    second = rig.push(fake_bundle(release=2, constant=5.0), release=2)
    wait_for(lambda: committed_on(rig, second), what="second bundle committed")
    assert rig.agent.infer({"x": x})["y"].tolist() == [[6.0] * 4]
    state = rig.agent.state
    assert state.previous is not None
    assert state.previous.digest == first
    # On disk: exactly the committed and the previous bundle, nothing half-written.
    assert {p.name for p in rig.agent.store.bundles_dir.iterdir()} == {first, second}
    wait_for(lambda: rig.state_message().update == "committed", what="retained state")
    published = rig.state_message()
    assert published.online
    assert published.bundle is not None
    assert published.bundle.digest == second
    results = [e for e in rig.events() if e.kind == "update_result"]
    assert [(e.state, e.bundle_digest) for e in results] == [
        ("committed", first),
        ("committed", second),
    ]
    phases = [e.state for e in rig.events() if e.directive_seq == 2 and e.state]
    assert phases[:5] == ["downloading", "verifying", "staged", "testing", "activating"]


def test_only_a_download_this_process_checked_skips_the_whole_file_hash(rig):
    rig.agent.start()
    install_first(rig)
    stager = rig.agent._stager
    assert isinstance(stager, FakeStager)
    # The fetcher checked the whole file's SHA-256 as it assembled it.
    assert stager.digest_checked == [True]
    # A bundle file this process did not fetch (left on disk across a restart, say) is
    # hashed again.
    bundle = fake_bundle(release=2, constant=3.0)
    digest = hashlib.sha256(bundle).hexdigest()
    rig.agent.store.download_path(digest).write_bytes(bundle)
    event = rig.agent._verify(Verify(digest, len(bundle), 1))
    assert isinstance(event, BundleVerified)
    assert stager.digest_checked == [True, False]


def test_failing_test_vectors_never_activate_and_the_old_model_keeps_serving(rig):
    rig.agent.start()
    first = install_first(rig)
    bad = rig.push(fake_bundle(release=2, constant=5.0, vector_constant=7.0), release=2)
    result = wait_event(rig, "update_result", "failed")
    assert rig.agent.phase is Phase.FAILED
    active = rig.agent.holder.active
    assert active is not None
    assert active.info.bundle_digest == first
    assert "health check failed: test vector 0" in result.reason
    assert result.bundle_digest == bad
    assert not rig.agent.store.bundle_dir(bad).exists()


def test_a_failing_trial_rolls_back_with_the_reason(rig):
    rig.agent.start()
    first = install_first(rig)
    x_bad = np.full((1, 4), 100.0, dtype=np.float32)
    flaky = rig.push(
        fake_bundle(release=2, constant=5.0, fail_above=50.0),
        release=2,
        window_s=30.0,
        max_error_rate=0.1,
    )
    wait_for(lambda: rig.agent.phase is Phase.TRIAL, what="trial")
    failures = 0
    for _ in range(10):
        try:
            rig.agent.infer({"x": x_bad})
        except ModelError:
            failures += 1
    assert failures == 10
    event = wait_event(rig, "rolled_back")
    assert rig.agent.phase is Phase.ROLLED_BACK
    active = rig.agent.holder.active
    assert active is not None
    assert active.info.bundle_digest == first
    assert rig.agent.infer({"x": x_bad})["y"].tolist() == [[101.0] * 4]
    assert event.bundle_digest == flaky
    assert "trial failed: error rate 1.000 > 0.100" in event.reason
    (timing,) = rig.agent.rollback_timings
    assert 0 <= timing.seconds < 1.0


def test_a_directive_for_another_device_is_rejected_and_changes_nothing(rig):
    rig.agent.start()
    first = install_first(rig)
    before = rig.agent.state
    directive = rig.fleet.directive(
        device="dev-2",
        sequence=9,
        bundle=SignedBundleRef(sha256="ab" * 32, size=10, name="x", version="1", release=5),
    )
    rig.publisher.publish(
        device_directive_topic(FLEET, DEVICE), rig.fleet.sign(directive), retain=True
    )
    event = wait_event(rig, "rejected")
    assert "WrongTargetError" in event.reason
    assert "dev-2" in event.reason
    assert rig.agent.state == before
    assert rig.agent.holder.active is not None
    assert rig.agent.holder.active.info.bundle_digest == first


def test_a_restart_resumes_on_the_committed_bundle_and_ignores_the_retained_directive(rig):
    rig.agent.start()
    first = install_first(rig)
    rig.agent.stop(timeout=2)
    assert not rig.state_message().online  # clean stop: offline state published
    rig.agent = rig.new_agent()
    rig.agent.start()
    wait_for(lambda: rig.agent.holder.active is not None, what="model loaded")
    assert rig.agent.holder.active.info.bundle_digest == first
    wait_for(lambda: rig.state_message().online, what="online again")
    time.sleep(0.1)
    assert [e.kind for e in rig.events()].count("update_result") == 1


def test_telemetry_is_queued_on_disk_and_acknowledged_after_the_broker_ack(rig):
    rig.agent.start()
    install_first(rig)
    rig.broker.stop()
    rig.agent.telemetry_now()
    rig.agent.telemetry_now()
    queue = rig.agent._telemetry
    assert queue is not None
    assert len(queue) == 2  # nothing acknowledged while the broker is away
    rig.broker.start()
    wait_for(lambda: len(queue) == 0, what="telemetry flushed after reconnect")
    seqs = [
        json.loads(m.payload)["seq"]
        for m in rig.broker.publishes_to(f"edgeops/v1/{FLEET}/dev/{DEVICE}/telemetry")
    ]
    assert len(seqs) == 2
    assert seqs[0] + 1 == seqs[1]  # one message per queued sample, oldest first


def test_many_agents_run_side_by_side_in_one_process(tmp_path):
    broker = FakeBroker()
    fleet = MemoryFleet(FLEET)
    agents = []
    for i in range(5):
        state_dir = tmp_path / f"dev-{i}"
        state_dir.mkdir()
        (state_dir / "root.json").write_bytes(fleet.root_bytes)
        config = AgentConfig(
            device_id=f"dev-{i}",
            fleet=FLEET,
            broker_url="mqtt://127.0.0.1:1883",
            state_dir=state_dir,
            board="generic-x86_64",
            api_enabled=False,
            telemetry_interval_s=3600.0,
        )
        agents.append(
            Agent(config, link=broker.link(f"dev-{i}"), stager=FakeStager(), loader=fake_loader)
        )
    threads = [threading.Thread(target=a.start) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert broker.connected_clients() == sorted(f"dev-{i}" for i in range(5))
        for i in range(5):
            state = StateMessage.from_bytes(broker.retained[state_topic(FLEET, f"dev-{i}")].payload)
            assert state.online
    finally:
        for agent in agents:
            agent.stop(timeout=2)


def test_a_group_directive_installs_with_its_own_sequence(rig):
    from edgeops.protocol import group_directive_topic

    rig.agent.start()
    first = install_first(rig)  # device directive, sequence 1
    bundle = fake_bundle(release=2, constant=3.0)
    meta = publish_bundle(rig.publisher, FLEET, bundle, chunk_size=1024)
    directive = rig.fleet.directive(
        group="cams",
        sequence=1,  # the group's own counter: not a replay of the device's sequence 1
        bundle=SignedBundleRef(
            sha256=meta.digest, size=len(bundle), name="adder", version="2.0", release=2
        ),
        rollout=RolloutPolicy(trial_window_s=0.05),
    )
    rig.publisher.publish(
        group_directive_topic(FLEET, "cams"), rig.fleet.sign(directive), retain=True
    )
    wait_for(lambda: committed_on(rig, meta.digest), what="group bundle committed")
    state = rig.agent.state
    assert state.records["group/cams"].sequence == 1
    assert state.previous is not None
    assert state.previous.digest == first


def test_malloc_arenas_are_capped_unless_the_environment_says(monkeypatch):
    import platform

    from edgeops.agent.daemon import limit_malloc_arenas

    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False  # glibc read the variable at start; it wins
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    assert limit_malloc_arenas() is (platform.libc_ver()[0] == "glibc")
