"""fleet init, key rotation and certificates, through the core and the CLI."""

from __future__ import annotations

import json
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from edgeops.cli import app
from edgeops.cli import commands as _commands  # noqa: F401 - registers the groups
from edgeops.errors import ConfigError
from edgeops.fleet.ca import issue_certificate
from edgeops.fleet.fleetdir import MANAGER_COMMON_NAME, FleetDir, init_fleet, rotate_key
from edgeops.trust import SigningKey, TrustedState

runner = CliRunner()


def test_init_writes_a_complete_fleet(tmp_path):
    fleet = init_fleet(tmp_path / "f", name="demo")
    assert FleetDir.open(fleet.path) == fleet
    assert fleet.broker_url == "mqtts://127.0.0.1:8883"
    root = fleet.trusted().root
    assert root.fleet == "demo"
    assert root.version == 1
    for role in ("root", "release", "deploy"):
        path = fleet.key_path(role)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert SigningKey.load(path).keyid in root.role(role).keyids
    for secret in (fleet.ca_key, fleet.server_key, fleet.manager_key):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(fleet.ca_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    server = x509.load_pem_x509_certificate(fleet.server_cert.read_bytes())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    server.verify_directly_issued_by(ca)
    manager = x509.load_pem_x509_certificate(fleet.manager_cert.read_bytes())
    cn = manager.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == MANAGER_COMMON_NAME


def test_init_refuses_existing_fleet(tmp_path):
    init_fleet(tmp_path / "f", name="demo")
    before = (tmp_path / "f" / "root.json").read_bytes()
    with pytest.raises(ConfigError, match="already holds a fleet"):
        init_fleet(tmp_path / "f", name="other")
    assert (tmp_path / "f" / "root.json").read_bytes() == before


def test_init_rejects_bad_name(tmp_path):
    with pytest.raises(ConfigError, match="expected a fleet name"):
        init_fleet(tmp_path / "f", name="a/b")


def test_encrypted_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEOPS_KEY_PASSPHRASE", "pw")
    fleet = init_fleet(tmp_path / "f", name="demo", passphrase="pw")
    assert b"ENCRYPTED" in fleet.key_path("release").read_bytes()
    assert b"ENCRYPTED" in fleet.ca_key.read_bytes()
    assert b"ENCRYPTED" not in fleet.server_key.read_bytes()  # Mosquitto reads it unattended
    assert fleet.signing_keys("release")[0].keyid in fleet.root().role("release").keyids
    key_pem, _cert_pem = issue_certificate(fleet.path, "dev-1")
    assert b"BEGIN PRIVATE KEY" in key_pem
    monkeypatch.delenv("EDGEOPS_KEY_PASSPHRASE")
    with pytest.raises(ConfigError, match="EDGEOPS_KEY_PASSPHRASE"):
        fleet.signing_keys("release")
    with pytest.raises(ConfigError, match="EDGEOPS_KEY_PASSPHRASE"):
        issue_certificate(fleet.path, "dev-2")


def test_issue_device_certificate(tmp_path):
    fleet = init_fleet(tmp_path / "f", name="demo")
    _key_pem, cert_pem = issue_certificate(fleet.path, "dev-7", kind="device")
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(fleet.ca_cert.read_bytes()))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-7"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    with pytest.raises(ConfigError, match="expected certificate kind"):
        issue_certificate(fleet.path, "x", kind="admin")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a fleet folder"):
        issue_certificate(tmp_path / "nowhere", "x")


@pytest.mark.parametrize("role", ["root", "release", "deploy"])
def test_rotate_each_role(tmp_path, role):
    fleet = init_fleet(tmp_path / "f", name="demo")
    old_root = fleet.root_bytes()
    old_key = fleet.signing_keys(role)[0]
    new = rotate_key(fleet, role)
    assert new.version == 2
    assert fleet.root_version_path(1).read_bytes() == old_root
    # A device that trusts version 1 accepts version 2, and the new key is the role's.
    state = TrustedState(old_root, now=new.expires.replace(year=new.expires.year - 1))
    state.update_root(fleet.root_bytes())
    assert state.root.role(role).keyids == (fleet.signing_keys(role)[0].keyid,)
    assert old_key.keyid not in state.root.role(role).keyids
    assert list((fleet.keys_dir / "retired").iterdir())


def test_cli_init_and_rotate(tmp_path):
    target = tmp_path / "f"
    result = runner.invoke(app, ["fleet", "init", str(target), "--name", "demo", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["root_version"] == 1
    result = runner.invoke(app, ["keys", "rotate", "deploy", "--fleet", str(target)])
    assert result.exit_code == 0, result.output
    assert "version 2" in result.output
    again = runner.invoke(app, ["fleet", "init", str(target), "--name", "demo"])
    assert again.exit_code == 1
    assert isinstance(again.exception, ConfigError)


def test_cli_help():
    for args in (["fleet", "init", "--help"], ["keys", "rotate", "--help"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0
        assert "Usage" in result.output


@pytest.mark.parametrize(
    ("url", "expected"),
    [("mqtts://broker.lan:8883", "broker.lan"), ("mqtts://192.168.1.10:8883", "192.168.1.10")],
)
def test_server_certificate_names_the_broker_url_host(tmp_path, url, expected):
    """A device on the LAN checks the broker's certificate against the host it was given."""
    fleet = init_fleet(tmp_path / "f", name="acme", broker_url=url)
    cert = x509.load_pem_x509_certificate(fleet.server_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    hosts = {str(n) for n in names.get_values_for_type(x509.DNSName)}
    hosts |= {str(n) for n in names.get_values_for_type(x509.IPAddress)}
    assert hosts == {"127.0.0.1", "localhost", expected}
