"""The daemon's own modules stay light: importing them (what ``edgeops-agent`` does before
it reads its config) loads no host-only library, and numpy, paho and the runtimes only once
an agent starts; verifying a root, a directive and a bundle never loads ``cryptography``
(decision 0006). Fresh interpreters, since this process has imported everything."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

HOST_ONLY = {"onnx", "onnxruntime", "typer", "rich", "PIL"}
LAZY = {"numpy", "paho", "ai_edge_litert", "tflite_runtime"}


def loaded_after(module: str) -> set[str]:
    code = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize(
    "module",
    [
        "edgeops.agent.daemon",
        "edgeops.agent.updater",
        "edgeops.agent.health",
        "edgeops.agent.store",
        "edgeops.agent.config",
        "edgeops.agent.enroll",
    ],
)
def test_agent_modules_import_nothing_heavy(module):
    loaded = loaded_after(module)
    assert "edgeops" in loaded
    assert loaded.isdisjoint(HOST_ONLY | LAZY), sorted(loaded & (HOST_ONLY | LAZY))


# Runs in the fresh interpreter: the daemon's own verification path on real signed files.
VERIFY_AS_THE_AGENT = """
import json, sys
from datetime import datetime, timezone
from pathlib import Path

from edgeops.agent.daemon import LibraryStager
from edgeops.trust.verify import TrustedState

folder = Path(sys.argv[1])
meta = json.loads((folder / "meta.json").read_text())
trusted = TrustedState((folder / "root.json").read_bytes(), now=datetime.now(timezone.utc))
directive = trusted.verify_directive(
    (folder / "directive.json").read_bytes(), device_id="dev-1", last_sequence=None
)
assert directive.bundle.sha256 == meta["digest"], directive.bundle
staged = LibraryStager().stage(
    folder / "model.bundle",
    folder / "staged" / "files",
    digest=meta["digest"],
    size=meta["size"],
    trusted=trusted,
    board=None,
    last_release_counter=None,
    max_unpacked=1 << 20,
    latency_runs=1,
)
assert staged.digest == meta["digest"]
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_verifying_a_directive_and_a_bundle_leaves_cryptography_out(tmp_path: Path):
    from edgeops.agent.runtimes.testing import tflite_add_model
    from edgeops.bundle import create_bundle
    from edgeops.trust import BundleRef
    from edgeops.trust.testing import MemoryFleet

    fleet = MemoryFleet("imports")
    model = tmp_path / "add.tflite"
    model.write_bytes(tflite_add_model())
    bundle = tmp_path / "model.bundle"
    create_bundle(
        model,
        name="add",
        version="1",
        release=1,
        signing_keys=fleet.keys["release"],
        output=bundle,
    )
    data = bundle.read_bytes()
    digest, size = hashlib.sha256(data).hexdigest(), len(data)
    ref = BundleRef(sha256=digest, size=size, name="add", version="1", release=1)
    (tmp_path / "root.json").write_bytes(fleet.root_bytes)
    (tmp_path / "directive.json").write_bytes(fleet.sign(fleet.directive(bundle=ref)))
    (tmp_path / "meta.json").write_text(json.dumps({"digest": digest, "size": size}))
    (tmp_path / "staged").mkdir()

    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(VERIFY_AS_THE_AGENT), str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert {"edgeops", "hashlib"} <= loaded  # the check is real: the verify path did run
    assert "cryptography" not in loaded
    assert loaded.isdisjoint(HOST_ONLY), sorted(loaded & HOST_ONLY)
