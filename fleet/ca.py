"""The fleet certificate authority: an EC P-256 X.509 CA and the certificates it issues.

MQTT runs over TLS with a certificate per device. EC P-256 is what every OpenSSL that a
Mosquitto or a board ships with accepts for TLS (Ed25519 certificates are not universally
supported in TLS 1.2 stacks). The broker maps a client certificate's common name to the
MQTT user name (``use_identity_as_username``), so the common name is the device id.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeops.errors import ConfigError
from edgeops.trust.keys import env_passphrase

CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=825)
CertKind = Literal["device", "manager", "server"]


def _private_pem(key: ec.EllipticCurvePrivateKey, passphrase: str | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
        if passphrase
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def create_ca(
    fleet: str, *, now: dt.datetime | None = None, passphrase: str | None = None
) -> tuple[bytes, bytes]:
    """A new self-signed CA for ``fleet``; returns ``(key_pem, cert_pem)``."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeops"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"edgeops fleet CA {fleet}"),
        ]
    )
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _private_pem(key, passphrase), cert.public_bytes(serialization.Encoding.PEM)


def sign_leaf(
    ca_key_pem: bytes,
    ca_cert_pem: bytes,
    common_name: str,
    *,
    kind: CertKind,
    passphrase: str | None = None,
    now: dt.datetime | None = None,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> tuple[bytes, bytes]:
    """A new EC P-256 key and a certificate for it signed by the CA; ``(key_pem, cert_pem)``.

    ``server`` certificates carry ``hosts`` as subject alternative names and the serverAuth
    usage; ``device`` and ``manager`` certificates carry clientAuth.
    """
    if kind not in ("device", "manager", "server"):
        raise ConfigError(f"expected certificate kind device, manager or server, got {kind!r}")
    if not common_name or len(common_name) > 64:
        raise ConfigError(f"expected a common name of 1 to 64 characters, got {common_name!r}")
    now = now or dt.datetime.now(dt.UTC)
    password = passphrase.encode("utf-8") if passphrase else None
    try:
        ca_key = serialization.load_pem_private_key(ca_key_pem, password=password)
    except TypeError as exc:
        raise ConfigError(
            "the fleet CA key is encrypted: set EDGEOPS_KEY_PASSPHRASE to its passphrase"
        ) from exc
    except ValueError as exc:
        raise ConfigError("cannot read the fleet CA key: wrong passphrase?") from exc
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"expected an EC CA key, got {type(ca_key).__name__}")
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if kind == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeops"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, kind),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + LEAF_LIFETIME, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if kind == "server":
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return _private_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def issue_certificate(
    fleet_dir: Path,
    common_name: str,
    *,
    kind: CertKind = "device",
    passphrase: str | None = None,
) -> tuple[bytes, bytes]:
    """Issue a certificate from the CA of the fleet folder ``fleet_dir``.

    Returns ``(key_pem, cert_pem)``; the key is not encrypted (the agent and Mosquitto read
    it unattended) and is not written anywhere — the caller stores it with mode 0600.
    ``passphrase`` unlocks an encrypted CA key; by default ``EDGEOPS_KEY_PASSPHRASE``.
    """
    from edgeops.fleet.fleetdir import FleetDir

    fleet = FleetDir.open(fleet_dir)
    try:
        ca_key_pem = fleet.ca_key.read_bytes()
        ca_cert_pem = fleet.ca_cert.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the fleet CA in {fleet.path}: {exc}") from exc
    return sign_leaf(
        ca_key_pem,
        ca_cert_pem,
        common_name,
        kind=kind,
        passphrase=passphrase if passphrase is not None else env_passphrase(),
    )


__all__ = ["CertKind", "create_ca", "issue_certificate", "sign_leaf"]
