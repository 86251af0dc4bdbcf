"""The real objects the fuzz targets start from: a fleet made by ``init_fleet``, a bundle made
by ``create_bundle``, directives and a rotated root signed with the fleet's own keys.

Mutating genuine objects gets the fuzzer past the first checks (a random byte string is
almost never a tar header or a JSON envelope); signing mutated ``signed`` parts with the
fleet's keys gets it past the signatures to the schema readers behind them.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import io
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeops.trust.keys import SigningKey
from edgeops.trust.metadata import Manifest, RolloutPolicy
from edgeops.trust.verify import TrustedState

FLEET_NAME = "fuzz-fleet"
DEVICE_ID = "pi-0001"
GROUP = "cameras"
BOARD = "raspberrypi4"


@dataclass(frozen=True)
class World:
    """Everything a target needs, built once per process under ``workdir``."""

    workdir: Path
    root_v1: bytes
    root_v2: bytes
    keys: dict[str, list[SigningKey]]
    bundle: bytes
    bundle_path: Path
    manifest: Manifest
    manifest_bytes: bytes
    directives: tuple[bytes, ...]
    agent_toml: str
    now: dt.datetime

    def trusted(self) -> TrustedState:
        """A device that trusts root v1 and has walked to v2 (as after a rotation)."""
        state = TrustedState(self.root_v1, now=self.now)
        state.update_root(self.root_v2)
        return state


@functools.cache
def world() -> World:
    """Build the fleet, keys, bundle and directives (about a second, once per process)."""
    import numpy as np

    from edgeops.agent.config import render_toml
    from edgeops.agent.runtimes.testing import tflite_add_model
    from edgeops.bundle import create_bundle, verify_bundle
    from edgeops.fleet.fleetdir import FleetDir, init_fleet, rotate_key
    from edgeops.trust.issue import create_directive, sign_metadata
    from edgeops.trust.metadata import utcnow

    workdir = Path(tempfile.mkdtemp(prefix="edgeops-fuzz-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    fleet_path = workdir / "fleet"
    init_fleet(fleet_path, name=FLEET_NAME)
    fleet = FleetDir.open(fleet_path)
    root_v1 = (fleet_path / "root.1.json").read_bytes()
    rotate_key(fleet, "deploy")
    root_v2 = (fleet_path / "root.2.json").read_bytes()
    keys = {role: fleet.signing_keys(role) for role in ("root", "release", "deploy")}

    model = workdir / "model.tflite"
    model.write_bytes(tflite_add_model())
    inputs = workdir / "inputs.npz"
    buffer = io.BytesIO()
    np.savez(buffer, x=np.arange(8, dtype=np.float32).reshape(2, 1, 4))
    inputs.write_bytes(buffer.getvalue())
    labels = workdir / "labels.txt"
    labels.write_text("background\nperson\n")
    bundle_path = workdir / "model.bundle"
    create_bundle(
        model,
        name="adder",
        version="1.0.0",
        release=3,
        signing_keys=keys["release"],
        output=bundle_path,
        test_inputs=inputs,
        boards=(BOARD,),
        extra_files={"labels.txt": labels},
    )
    now = utcnow()
    state = TrustedState(root_v1, now=now)
    state.update_root(root_v2)
    verified = verify_bundle(bundle_path, state)
    ref = verified.ref()
    directives = (
        sign_metadata(
            create_directive(fleet=FLEET_NAME, bundle=ref, sequence=4, device=DEVICE_ID),
            keys["deploy"],
        ),
        sign_metadata(
            create_directive(
                fleet=FLEET_NAME,
                bundle=ref,
                sequence=9,
                group=GROUP,
                rollout=RolloutPolicy(
                    rollout_id="r-1",
                    wave=2,
                    trial_window_s=60.0,
                    max_error_rate=0.05,
                    max_p95_latency_ms=40.0,
                    max_drift=0.3,
                ),
            ),
            keys["deploy"],
        ),
        sign_metadata(
            create_directive(
                fleet=FLEET_NAME, bundle=ref, sequence=5, device=DEVICE_ID, action="rollback"
            ),
            keys["deploy"],
        ),
    )
    agent_toml = render_toml(
        device_id=DEVICE_ID,
        fleet=FLEET_NAME,
        broker_url="mqtts://broker.example:8883",
        groups=(GROUP,),
        board=BOARD,
        state_dir="/var/lib/edgeops",
    )
    return World(
        workdir=workdir,
        root_v1=root_v1,
        root_v2=root_v2,
        keys=keys,
        bundle=bundle_path.read_bytes(),
        bundle_path=bundle_path,
        manifest=verified.manifest,
        manifest_bytes=verified.manifest_bytes,
        directives=directives,
        agent_toml=agent_toml,
        now=now,
    )


def signed_part(envelope: bytes) -> bytes:
    """The ``signed`` object of an envelope, as JSON (a seed for the re-signing targets)."""
    value: Any = json.loads(envelope)["signed"]
    return json.dumps(value, sort_keys=True).encode()
