"""agent.toml parsing, the state folder and the bootstrap archive (files only, no network)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from edgeops.agent.config import CRASH_ENV, AgentConfig, render_toml
from edgeops.agent.enroll import MEMBERS, build_bootstrap, install_bootstrap, read_bootstrap
from edgeops.agent.store import Store
from edgeops.agent.updater import BundleRef, Phase, UpdaterState
from edgeops.errors import ArchiveError, ConfigError, StateError

MINIMAL = """
[device]
id = "cam-01"
fleet = "acme"
groups = ["cams", "lobby"]
[broker]
url = "mqtts://broker:8883"
ca = "tls/ca.crt"
cert = "tls/device.crt"
key = "/etc/edgeops/device.key"
"""


def test_config_reads_toml_with_paths_relative_to_the_file(tmp_path):
    (tmp_path / "agent.toml").write_text(MINIMAL)
    config = AgentConfig.load(tmp_path / "agent.toml")
    assert config.device_id == "cam-01"
    assert config.groups == ("cams", "lobby")
    assert config.tls_ca == tmp_path / "tls" / "ca.crt"
    assert config.tls_key == Path("/etc/edgeops/device.key")
    assert config.state_dir == tmp_path
    assert config.crash_at is None
    assert config.api_port == 8321


def test_rendered_toml_reads_back(tmp_path):
    text = render_toml(
        device_id="d1", fleet="f", broker_url="mqtt://127.0.0.1:1883", groups=("g",), tls=False
    )
    config = AgentConfig.from_toml(text, base_dir=tmp_path)
    assert (config.device_id, config.fleet, config.groups, config.tls_cert) == (
        "d1",
        "f",
        ("g",),
        None,
    )


def test_the_crash_hook_comes_from_the_environment(tmp_path):
    config = AgentConfig.from_toml(MINIMAL, base_dir=tmp_path, environ={CRASH_ENV: "trial"})
    assert config.crash_at == "trial"
    with pytest.raises(ConfigError, match="expected an update phase"):
        AgentConfig.from_toml(MINIMAL, base_dir=tmp_path, environ={CRASH_ENV: "napping"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (MINIMAL + "[agent]\ntelemetry_interval = 5\n", "unknown key"),
        (MINIMAL + "[extras]\nx = 1\n", "unknown section"),
        (MINIMAL.replace('id = "cam-01"', 'id = "cam/01"'), "device id"),
        (MINIMAL.replace("mqtts://broker:8883", "http://broker"), "broker.url"),
        (MINIMAL + "[update]\nmax_attempts = 0\n", "max_attempts"),
        ("[device]\nfleet = 'f'\n[broker]\nurl = 'mqtt://h'\n", "id is required"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_configs_are_refused_with_the_reason(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        AgentConfig.from_toml(text, base_dir=tmp_path)


def test_store_round_trips_state_and_starts_fresh(tmp_path):
    store = Store(tmp_path / "s")
    store.ensure()
    assert store.load_state() == UpdaterState()
    state = UpdaterState(
        phase=Phase.COMMITTED, committed=BundleRef(digest="a" * 64, release_counter=3)
    )
    store.save_state(state)
    assert store.load_state() == state
    assert not list(store.root.glob(".state.json.*"))  # no temp file left behind


def test_store_refuses_a_corrupted_state_file(tmp_path):
    store = Store(tmp_path)
    store.state_path.write_text("{ torn")
    with pytest.raises(StateError, match="not valid JSON"):
        store.load_state()


def test_event_sequence_numbers_grow_across_instances(tmp_path, monkeypatch):
    from edgeops.agent import store as store_module
    from edgeops.fsutil import atomic_write_bytes as real_write

    writes: list[bytes] = []

    def counting_write(path: Path, data: bytes, **kw: object) -> None:
        writes.append(data)
        real_write(path, data)

    monkeypatch.setattr(store_module, "atomic_write_bytes", counting_write)
    store = Store(tmp_path)
    assert [store.next_event_seq() for _ in range(3)] == [0, 1, 2]
    assert writes == [f"{store_module.EVENT_SEQ_BLOCK}\n".encode()]  # one reservation
    # A restart (or a kill -9) resumes past the reserved block: a gap, never a reuse.
    again = Store(tmp_path)
    assert [again.next_event_seq() for _ in range(2)] == [
        store_module.EVENT_SEQ_BLOCK,
        store_module.EVENT_SEQ_BLOCK + 1,
    ]
    assert len(writes) == 2


def test_event_sequence_reserves_the_next_block_when_one_is_used_up(tmp_path, monkeypatch):
    from edgeops.agent import store as store_module

    monkeypatch.setattr(store_module, "EVENT_SEQ_BLOCK", 3)
    store = Store(tmp_path)
    assert [store.next_event_seq() for _ in range(7)] == list(range(7))
    assert store.events_seq_path.read_text() == "9\n"  # blocks 0-2, 3-5, 6-8
    assert Store(tmp_path).next_event_seq() == 9


def test_an_old_exact_event_counter_is_read_as_the_next_free_number(tmp_path):
    (tmp_path / "events.seq").write_text("5\n")  # written by an agent before reservations
    assert Store(tmp_path).next_event_seq() == 5


def test_digests_must_be_hex_before_they_become_paths(tmp_path):
    with pytest.raises(StateError):
        Store(tmp_path).bundle_dir("../../etc")


def test_staging_is_installed_by_rename_and_prune_keeps_only_what_is_named(tmp_path):
    store = Store(tmp_path)
    store.ensure()
    for digest in ("a" * 64, "b" * 64, "c" * 64):
        staging = store.staging_dir(digest)
        (staging / "files").mkdir(parents=True)
        (staging / "files" / "model.tflite").write_bytes(b"m")
        store.install_staging(digest)
        assert store.has_bundle(digest)
    store.download_path("d" * 64).write_bytes(b"partial")
    removed = store.prune({"a" * 64, "c" * 64})
    assert sorted(removed) == sorted(["b" * 64, "d" * 64 + ".part"])
    assert sorted(p.name for p in store.bundles_dir.iterdir()) == ["a" * 64, "c" * 64]


def members() -> dict[str, bytes]:
    return {name: f"content of {name}".encode() for name in MEMBERS}


def test_bootstrap_round_trip_installs_once_with_a_private_key(tmp_path):
    archive = tmp_path / "boot.tgz"
    archive.write_bytes(build_bootstrap(members()))
    config = install_bootstrap(archive, tmp_path / "state")
    assert config.read_bytes() == b"content of agent.toml\n"
    assert (tmp_path / "state" / "tls" / "device.key").stat().st_mode & 0o777 == 0o600
    config.write_bytes(b"edited on the device")
    install_bootstrap(archive, tmp_path / "state")
    assert config.read_bytes() == b"edited on the device"


def _tar(add) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        add(tar)
    return buffer.getvalue()


def test_bootstrap_archives_with_extra_or_unsafe_members_are_refused():
    def with_traversal(tar: tarfile.TarFile) -> None:
        for name, data in members().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("../../etc/cron.d/x")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))

    with pytest.raises(ArchiveError, match="unexpected member"):
        read_bootstrap(_tar(with_traversal))

    def with_link(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("root.json")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)

    with pytest.raises(ArchiveError, match="not a regular file"):
        read_bootstrap(_tar(with_link))

    def partial(tar: tarfile.TarFile) -> None:
        data = json.dumps({}).encode()
        info = tarfile.TarInfo("root.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with pytest.raises(ArchiveError, match="lacks"):
        read_bootstrap(_tar(partial))
    with pytest.raises(ArchiveError, match="not a readable"):
        read_bootstrap(b"garbage")


def test_agent_run_needs_exactly_one_of_config_and_bootstrap(tmp_path):
    from typer.testing import CliRunner

    from edgeops.cli import app
    from edgeops.cli import commands as _commands  # noqa: F401 - registers the commands

    result = CliRunner().invoke(app, ["agent", "run"])
    assert isinstance(result.exception, ConfigError)
    assert "exactly one of --config FILE or --bootstrap FILE" in str(result.exception)
    result = CliRunner().invoke(app, ["agent", "run", "--config", str(tmp_path / "missing.toml")])
    assert isinstance(result.exception, ConfigError)
    assert "cannot read agent config" in str(result.exception)


def test_an_installed_config_keeps_working_when_copied_elsewhere(tmp_path):
    text = render_toml(device_id="d1", fleet="f", broker_url="mqtts://broker:8883")
    files = members()
    files["agent.toml"] = text.encode()
    archive = tmp_path / "boot.tgz"
    archive.write_bytes(build_bootstrap(files))
    state = tmp_path / "var-lib-edgeops"
    installed = install_bootstrap(archive, state)
    etc = tmp_path / "etc-edgeops"
    etc.mkdir()
    (etc / "agent.toml").write_bytes(installed.read_bytes())
    config = AgentConfig.load(etc / "agent.toml")
    assert config.state_dir == state.resolve()
    assert config.tls_key == state.resolve() / "tls" / "device.key"
    assert config.tls_ca == state.resolve() / "tls" / "ca.crt"


def test_event_numbers_keep_growing_while_the_counter_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from edgeops.agent import store as store_module
    from edgeops.errors import StorageError

    monkeypatch.setattr(store_module, "EVENT_SEQ_BLOCK", 2)
    store = Store(tmp_path)
    assert store.next_event_seq() == 0  # reserves 0-1
    from edgeops.fsutil import atomic_write_bytes as real_write

    attempts: list[bytes] = []

    def full_disk(path: Path, data: bytes, **kw: object) -> None:
        attempts.append(data)
        raise StorageError(f"cannot write {path}") from OSError(errno.ENOSPC, "No space")

    monkeypatch.setattr(store_module, "atomic_write_bytes", full_disk)
    # 1 is reserved already; 2 and 3 go out although their reservations fail.
    assert [store.next_event_seq() for _ in range(3)] == [1, 2, 3]
    assert attempts == [b"4\n", b"5\n"]
    monkeypatch.setattr(store_module, "atomic_write_bytes", real_write)
    assert store.next_event_seq() == 4  # reserves 4-5
    assert Store(tmp_path).next_event_seq() == 6
