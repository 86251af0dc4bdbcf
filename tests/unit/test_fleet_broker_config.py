"""Generated Mosquitto config, ACL and CRL, checked as text and parsed X.509."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgeops.errors import ConfigError
from edgeops.fleet.broker_config import (
    DEFAULT_MANAGERS,
    BrokerFiles,
    BrokerSettings,
    build_crl,
    render_acl,
    render_config,
    settings_for,
)


def make_ca() -> tuple[bytes, bytes, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unit CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, cert


def acl_rules(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_acl_gives_devices_only_their_own_topics_and_their_group():
    text = render_acl("demo", [("cam-2", "lab"), ("cam-1", "field")])
    rules = acl_rules(text)
    assert rules[:4] == [
        "pattern write edgeops/v1/demo/dev/%u/state",
        "pattern write edgeops/v1/demo/dev/%u/events",
        "pattern write edgeops/v1/demo/dev/%u/telemetry",
        "pattern read edgeops/v1/demo/dev/%u/directive",
    ]
    # fleet serve's identity and the CLI pool, each with the fleet's topics.
    assert (
        "edgeops-fleet-manager",
        *(f"edgeops-fleet-cli-{k}" for k in range(1, 5)),
    ) == DEFAULT_MANAGERS
    assert rules[4:14] == [
        line
        for name in DEFAULT_MANAGERS
        for line in (f"user {name}", "topic readwrite edgeops/v1/demo/#")
    ]
    assert rules[14:] == [
        "user cam-1",
        "topic read edgeops/v1/demo/group/field/directive",
        "topic read edgeops/v1/demo/bundle/#",
        "user cam-2",
        "topic read edgeops/v1/demo/group/lab/directive",
        "topic read edgeops/v1/demo/bundle/#",
    ]
    # Devices write only their own state, events and telemetry; never a directive.
    device_rules = [r for r in rules if r not in rules[4:14]]
    writes = [r for r in device_rules if r.split()[1] in ("write", "readwrite")]
    assert all(r.endswith(("/%u/state", "/%u/events", "/%u/telemetry")) for r in writes)


@pytest.mark.parametrize("bad", ["a/b", "a+", "#", "", "-x", "x" * 65, "a b"])
def test_names_that_could_escape_a_topic_are_refused(bad):
    with pytest.raises(ConfigError):
        render_acl("demo", [(bad, "lab")])
    with pytest.raises(ConfigError):
        render_acl("demo", [("ok", bad)])


@pytest.mark.parametrize("name", ["edgeops-fleet-manager", "edgeops-fleet-cli-3"])
def test_a_device_cannot_take_a_managers_name(name):
    with pytest.raises(ConfigError, match="reserved"):
        render_acl("demo", [(name, "lab")])


def test_managers_in_edgeops_toml_must_be_a_list_of_names(tmp_path):
    (tmp_path / "edgeops.toml").write_text('[broker]\nmanagers = "fm-a"\n')
    with pytest.raises(ConfigError, match="list of names"):
        settings_for(tmp_path)


def test_config_requires_certificates_and_uses_the_cn_as_username_and_client_id(tmp_path):
    files = BrokerFiles.of(tmp_path)
    text = render_config(BrokerSettings(fleet="demo", port=18883, bind="127.0.0.1"), files)
    lines = text.splitlines()
    for expected in (
        "listener 18883 127.0.0.1",
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "persistence true",
        f"cafile {files.ca_cert}",
        f"crlfile {files.crl}",
        f"acl_file {files.acl}",
    ):
        assert expected in lines
    paths = [line.split(" ", 1)[1] for line in lines if line.split(" ")[0].endswith("file")]
    assert paths
    assert all(Path(p.rstrip("/")).is_absolute() for p in paths)


def test_settings_come_from_edgeops_toml_and_arguments_win(tmp_path):
    (tmp_path / "edgeops.toml").write_text(
        '[fleet]\nname = "plant-7"\n[broker]\nport = 9883\nmanagers = ["fm-a", "fm-b"]\n'
    )
    settings = settings_for(tmp_path)
    # [broker] managers adds names; the identities fleet init issues stay in the ACL.
    assert (settings.fleet, settings.port) == ("plant-7", 9883)
    assert settings.managers == (*DEFAULT_MANAGERS, "fm-a", "fm-b")
    assert settings_for(tmp_path, port=1234).port == 1234


def test_crl_is_signed_by_the_ca_and_lists_the_revoked_serials():
    ca_pem, key_pem, ca_cert = make_ca()
    now = datetime.datetime.now(datetime.UTC).timestamp()
    crl = x509.load_pem_x509_crl(build_crl(ca_pem, key_pem, [("1f2e", now)], now=now))
    public = ca_cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert crl.is_signature_valid(public)
    assert crl.issuer == ca_cert.subject
    assert [r.serial_number for r in crl] == [0x1F2E]
    assert crl.next_update_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)
    empty = x509.load_pem_x509_crl(build_crl(ca_pem, key_pem, [], now=now))
    assert len(empty) == 0


def test_files_and_port_follow_the_fleet_folders_edgeops_toml(tmp_path):
    (tmp_path / "edgeops.toml").write_text(
        '[fleet]\nname = "plant"\n[broker]\nurl = "mqtts://broker.local:9993"\n'
        '[paths]\nca_cert = "pki/ca.pem"\nserver_key = "tls/srv.key"\n'
    )
    files = BrokerFiles.of(tmp_path)
    assert files.ca_cert == tmp_path.resolve() / "pki" / "ca.pem"
    assert files.server_key == tmp_path.resolve() / "tls" / "srv.key"
    assert files.server_cert == tmp_path.resolve() / "tls" / "server.crt"
    assert settings_for(tmp_path).port == 9993


def test_a_loopback_broker_url_binds_the_listener_to_loopback(tmp_path):
    (tmp_path / "edgeops.toml").write_text('[broker]\nurl = "mqtts://127.0.0.1:8883"\n')
    assert settings_for(tmp_path).bind == "127.0.0.1"
    (tmp_path / "edgeops.toml").write_text('[broker]\nurl = "mqtts://fleet.example:8883"\n')
    assert settings_for(tmp_path).bind is None
