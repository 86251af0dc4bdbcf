"""Scenario 5: a rogue publisher with broker rights (the fleet manager's ACL) overwrites
one retained chunk of a bundle that a device is about to fetch.

Two forms: the chunk alone (its SHA-256 no longer matches the bundle's meta), and the chunk
together with a meta rewritten to match it (every chunk checks out, the whole file does
not match the digest in the signed directive). The retained copy stays corrupt, so every
refetch gets the same bytes: the agent must give up on that download, not install.

Pass criterion: each time the update ends ``failed`` with an event whose reason names the
mismatch; nothing of the bundle is staged under its digest; the device stays committed on
its release and serves it; once the fleet republishes the chunks, a new directive for the
same bundle installs and the device serves it. (A chunk corrupted in transit once, which
a refetch cures, is covered in ``test_mqtt_link``.)
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from edgeops.mqtt import publish_bundle
from edgeops.protocol import BundleMeta, bundle_chunk_topic, bundle_meta_topic, split_chunks

from .rig import CHUNK_SIZE, FLEET, Devices, FaultRig, assert_serving

pytestmark = [pytest.mark.integration, pytest.mark.faults]

CORRUPT_INDEX = 1


@pytest.fixture
def rig(tmp_path):
    rig = FaultRig(tmp_path)
    rig.start()
    yield rig
    rig.stop()


def test_a_corrupted_retained_chunk_is_never_installed_and_the_update_fails_cleanly(rig, tmp_path):
    devices = Devices(rig, tmp_path / "devices")
    agent = devices.agent(devices.install("victim"))
    agent.start()
    link = rig.link
    assert link is not None
    try:
        v1 = devices.send("victim", 1)
        assert devices.wait_outcome("victim", v1).state == "committed"

        path, v2 = rig.bundle(2)
        meta = publish_bundle(link, FLEET, path, chunk_size=CHUNK_SIZE)
        assert len(meta.chunk_sha256) > CORRUPT_INDEX
        _, chunks = split_chunks(path, CHUNK_SIZE)
        good = list(chunks)[CORRUPT_INDEX]
        bad = bytes(b ^ 0xFF for b in good[:16]) + good[16:]
        chunk_topic = bundle_chunk_topic(FLEET, v2, CORRUPT_INDEX)

        def assert_untouched() -> None:
            assert agent.state.committed is not None
            assert agent.state.committed.digest == v1
            assert not agent.store.bundle_dir(v2).exists()
            assert_serving(agent, 1)

        # The chunk alone.
        link.publish(chunk_topic, bad, qos=1, retain=True).wait(5)
        event = devices.wait_outcome("victim", devices.send("victim", 2, publish=False))
        assert (event.kind, event.state) == ("update_result", "failed"), event
        assert "DigestMismatchError" in event.reason, event.reason
        assert f"chunk {CORRUPT_INDEX}" in event.reason, event.reason
        assert_untouched()

        # The chunk and a meta rewritten to vouch for it.
        hashes = list(meta.chunk_sha256)
        hashes[CORRUPT_INDEX] = hashlib.sha256(bad).hexdigest()
        forged = dataclasses.replace(meta, chunk_sha256=tuple(hashes))
        link.publish(bundle_meta_topic(FLEET, v2), forged.to_bytes(), qos=1, retain=True).wait(5)
        assert (
            BundleMeta.from_bytes(forged.to_bytes()).chunk_sha256[CORRUPT_INDEX]
            != (meta.chunk_sha256[CORRUPT_INDEX])
        )
        event = devices.wait_outcome("victim", devices.send("victim", 2, publish=False))
        assert (event.kind, event.state) == ("update_result", "failed"), event
        assert "DigestMismatchError" in event.reason, event.reason
        assert f"expected sha256 {v2[:16]}" in event.reason, event.reason
        assert_untouched()

        # Republished by the fleet: the same bundle installs.
        event = devices.wait_outcome("victim", devices.send("victim", 2))
        assert (event.kind, event.state) == ("update_result", "committed"), event
        assert_serving(agent, 2)
    finally:
        agent.stop()
