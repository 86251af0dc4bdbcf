"""Fleet-manager broker identities: what fleet init issues, the CLI pool and its locks,
and fleets made before the pool existed."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import textwrap

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from edgeops.errors import ConfigError, StateError
from edgeops.fleet.broker_config import BrokerFiles, enroll_device, write_broker_config
from edgeops.fleet.enroll import enroll
from edgeops.fleet.fleetdir import (
    MANAGER_COMMON_NAME,
    FleetDir,
    cli_common_names,
    init_fleet,
    is_reserved_identity,
)
from edgeops.fleet.identity import (
    Identity,
    acquire_cli_identity,
    cli_identities,
    holder,
    lock_identity,
    lock_path,
    provision_cli_identities,
    try_lock,
)

CLI_NAMES = [f"edgeops-fleet-cli-{k}" for k in range(1, 5)]


@pytest.fixture
def fleet(tmp_path) -> FleetDir:
    fleet = init_fleet(tmp_path / "fleet", name="demo")
    write_broker_config(fleet.path)
    return fleet


def common_name(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_init_issues_a_certificate_per_cli_identity_and_the_acl_lists_them(fleet):
    assert list(cli_common_names()) == CLI_NAMES
    ca = x509.load_pem_x509_certificate(fleet.ca_cert.read_bytes())
    for identity in cli_identities(fleet):
        assert identity.cert is not None
        assert identity.key is not None
        assert common_name(identity.cert.read_bytes()) == identity.common_name
        x509.load_pem_x509_certificate(identity.cert.read_bytes()).verify_directly_issued_by(ca)
        assert stat.S_IMODE(identity.key.stat().st_mode) == 0o600
    acl = BrokerFiles.of(fleet.path).acl.read_text().splitlines()
    for name in (MANAGER_COMMON_NAME, *CLI_NAMES):
        at = acl.index(f"user {name}")
        assert acl[at + 1] == "topic readwrite edgeops/v1/demo/#"


def test_concurrent_holders_take_different_cli_identities_until_none_is_left(fleet):
    leases = [acquire_cli_identity(fleet) for _ in CLI_NAMES]
    assert [lease.common_name for lease in leases] == CLI_NAMES
    with pytest.raises(StateError, match=f"all 4 CLI broker identities.*pid {os.getpid()}"):
        acquire_cli_identity(fleet)
    leases[1].release()
    again = acquire_cli_identity(fleet)
    assert again.common_name == "edgeops-fleet-cli-2"
    for lease in [*leases, again]:
        lease.release()


def test_release_is_idempotent_and_frees_the_name(fleet):
    lease = acquire_cli_identity(fleet)
    lease.release()
    lease.release()
    assert not lease.held
    with acquire_cli_identity(fleet) as second:
        assert second.common_name == lease.common_name


def test_the_lock_is_dropped_when_the_holding_process_dies(fleet):
    # A child takes cli-1 and is killed without releasing it (a crashed push).
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from edgeops.fleet.fleetdir import FleetDir
        from edgeops.fleet.identity import acquire_cli_identity
        lease = acquire_cli_identity(FleetDir.open(Path({str(fleet.path)!r})))
        print(lease.common_name, flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "edgeops-fleet-cli-1"
        assert holder(fleet, "edgeops-fleet-cli-1") == f"pid {child.pid}"
        with acquire_cli_identity(fleet) as lease:
            assert lease.common_name == "edgeops-fleet-cli-2"
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    with acquire_cli_identity(fleet) as lease:
        assert lease.common_name == "edgeops-fleet-cli-1"


def test_a_second_holder_of_a_named_identity_is_refused(fleet):
    cert, key = fleet.identity_files(MANAGER_COMMON_NAME)
    identity = Identity(MANAGER_COMMON_NAME, cert, key)
    with lock_identity(fleet, identity):
        assert try_lock(fleet, identity) is None
        with pytest.raises(StateError, match="would evict it"):
            lock_identity(fleet, identity)
    assert lock_path(fleet, MANAGER_COMMON_NAME).exists()
    with lock_identity(fleet, identity) as lease:
        assert lease.held


def test_a_plain_mqtt_fleet_uses_the_names_without_certificates(tmp_path):
    fleet = init_fleet(tmp_path / "f", name="demo", broker_url="mqtt://127.0.0.1:1883")
    with acquire_cli_identity(fleet) as lease:
        assert lease.identity == Identity("edgeops-fleet-cli-1", None, None)


def make_old_fleet(fleet: FleetDir) -> None:
    """What a fleet folder made before the CLI pool holds: no CLI certificates."""
    for name in CLI_NAMES:
        for path in fleet.identity_files(name):
            path.unlink()


def test_an_older_fleet_gets_its_cli_identities_on_first_use_and_the_broker_reloads(fleet):
    make_old_fleet(fleet)
    reloads = []

    def reload(path):
        reloads.append(path)
        return True

    lease = acquire_cli_identity(fleet, reload=reload)
    assert lease.common_name == "edgeops-fleet-cli-1"
    assert reloads == [fleet.path]
    for name in CLI_NAMES:
        assert common_name(fleet.identity_files(name)[0].read_bytes()) == name
    assert "user edgeops-fleet-cli-4" in BrokerFiles.of(fleet.path).acl.read_text()
    lease.release()
    # Issued once: the next command finds them.
    assert provision_cli_identities(fleet, reload=lambda path: pytest.fail("reloaded")) is None


def test_without_a_broker_to_reload_an_older_fleet_connects_as_the_manager_once(fleet, caplog):
    make_old_fleet(fleet)
    with (
        caplog.at_level(logging.WARNING),
        acquire_cli_identity(fleet, reload=lambda path: False) as lease,
    ):
        assert lease.common_name == MANAGER_COMMON_NAME
        assert lease.identity.cert == fleet.manager_cert
    assert "reload every broker" in caplog.text
    assert "connecting as edgeops-fleet-manager" in caplog.text
    # The certificates exist from now on: the next command takes the pool.
    with acquire_cli_identity(fleet, reload=lambda path: False) as lease:
        assert lease.common_name == "edgeops-fleet-cli-1"


def test_an_older_fleet_with_an_encrypted_ca_key_and_no_passphrase_falls_back(
    tmp_path, monkeypatch, caplog
):
    monkeypatch.delenv("EDGEOPS_KEY_PASSPHRASE", raising=False)
    fleet = init_fleet(tmp_path / "f", name="demo", passphrase="correct horse")
    make_old_fleet(fleet)
    with (
        caplog.at_level(logging.WARNING),
        acquire_cli_identity(fleet, reload=lambda path: pytest.fail("reloaded")) as lease,
    ):
        assert lease.common_name == MANAGER_COMMON_NAME
    assert "EDGEOPS_KEY_PASSPHRASE" in caplog.text
    assert not fleet.identity_files("edgeops-fleet-cli-1")[0].exists()


def test_an_older_fleet_never_evicts_a_running_fleet_serve(fleet):
    make_old_fleet(fleet)
    cert, key = fleet.identity_files(MANAGER_COMMON_NAME)
    with (
        lock_identity(fleet, Identity(MANAGER_COMMON_NAME, cert, key)),
        pytest.raises(StateError, match="reload it"),
    ):
        acquire_cli_identity(fleet, reload=lambda path: False)


@pytest.mark.parametrize("name", [MANAGER_COMMON_NAME, "edgeops-fleet-cli-2", "edgeops-fleet-x"])
def test_device_enrollment_refuses_every_manager_name(fleet, tmp_path, name):
    assert is_reserved_identity(name)
    with pytest.raises(ConfigError, match="reserved"):
        enroll_device(fleet.path, name, group="lab")
    with pytest.raises(ConfigError, match="reserved"):
        enroll(fleet.path, name, group="lab", output=tmp_path / "boot.tar.gz", board="auto")
    assert not is_reserved_identity("cam-1")
