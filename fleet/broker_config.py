"""Mosquitto set-up from the fleet folder: config, ACL and certificate revocation list.

``write_broker_config(fleet_dir)`` writes three files that make ``mosquitto -c
DIR/mosquitto.conf`` serve the fleet as it is:

``mosquitto.conf``
    One TLS listener (port from edgeops.toml, default 8883) that requires a client
    certificate from the fleet CA, takes the certificate's CN as the username
    (``use_identity_as_username``) *and* as the client id (``use_username_as_clientid``), checks
    the CRL, and keeps retained messages (bundle chunks, directives) in ``DIR/broker/data``
    across restarts. Every path is absolute.
``mosquitto.acl``
    Pattern rules that give every device (``%u`` = its CN) its own topics: write
    ``dev/%u/state|events|telemetry``, read ``dev/%u/directive``. Group directives and the
    bundle topics need a per-device block: a device's group is not in its certificate, so
    ``user <id>`` blocks (from the registry) grant ``group/<g>/directive`` and
    ``bundle/#`` read. Fleet-manager identities get ``readwrite`` on ``edgeops/v1/<fleet>/#``.
``ca/crl.pem``
    An X.509 CRL signed by the fleet CA listing every revoked certificate (from the
    registry). Always written, also when empty, because Mosquitto with ``crlfile`` rejects
    every client if the file is missing; valid for :data:`CRL_VALIDITY_DAYS` and re-signed on
    every change.

Why the client id is the CN: Mosquitto disconnects an existing session when another client
connects with the same client id. Without ``use_username_as_clientid`` any device could
knock any other offline by reusing its id; with it, the broker ignores the id a client sends
and uses its certificate's CN, so only the holder of a device's key can take its session.
The cost: two processes must not share a certificate. ``edgeops fleet init`` therefore issues
one for ``fleet serve`` (``edgeops-fleet-manager``) and a small pool for the CLI
(``edgeops-fleet-cli-1..4``) that processes take with a lock file
(:mod:`edgeops.fleet.identity`); all of them, plus the extra names in ``[broker] managers``
(a second ``fleet serve``, a bridge), get the fleet's topics in the ACL. Mosquitto's
``user`` lines match the CONNECT username, which here is the CN.

Mosquitto reads the ACL and the CRL at start and again on ``SIGHUP``
(``kill -HUP $(cat DIR/broker/mosquitto.pid)``): enrolling or revoking a device rewrites the
files and :func:`reload_broker` sends the signal when the broker runs from this folder. A
revoked device that is still connected keeps its connection until it reconnects; restart the
broker to cut it at once.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeops.errors import ConfigError, StorageError
from edgeops.fleet.fleetdir import BUILTIN_MANAGERS, is_reserved_identity
from edgeops.fsutil import atomic_write_bytes
from edgeops.trust.keys import env_passphrase

DEFAULT_PORT = 8883
# The CNs of the fleet-manager certificates ``edgeops fleet init`` issues.
DEFAULT_MANAGERS = BUILTIN_MANAGERS
CRL_VALIDITY_DAYS = 365
TOPIC_ROOT = "edgeops/v1"

_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(kind: str, value: str) -> str:
    """A fleet, group or device name safe inside a topic and an ACL line."""
    if not _NAME.match(value):
        raise ConfigError(
            f"expected a {kind} name of letters, digits, '.', '_' or '-' (at most 64, not "
            f"starting with a punctuation mark), got {value!r}"
        )
    return value


@dataclass(frozen=True, kw_only=True)
class BrokerFiles:
    """Where a fleet folder keeps its broker set-up (all absolute).

    The CA and the broker's certificate are where edgeops.toml's ``[paths]`` says (as
    ``edgeops fleet init`` wrote them); the generated files sit beside edgeops.toml.
    """

    root: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    @property
    def config(self) -> Path:
        return self.root / "mosquitto.conf"

    @property
    def acl(self) -> Path:
        return self.root / "mosquitto.acl"

    @property
    def crl(self) -> Path:
        return self.root / "ca" / "crl.pem"

    @property
    def data_dir(self) -> Path:
        return self.root / "broker" / "data"

    @property
    def pid_file(self) -> Path:
        return self.root / "broker" / "mosquitto.pid"

    @classmethod
    def of(cls, fleet_dir: Path) -> BrokerFiles:
        """The files of ``fleet_dir``, with the ``[paths]`` of its edgeops.toml."""
        root = Path(fleet_dir).resolve()
        paths = read_fleet_settings(root).get("paths", {})

        def path(key: str, default: str) -> Path:
            value = paths.get(key, default)
            if not isinstance(value, str):
                raise ConfigError(f"edgeops.toml: paths.{key} must be a string")
            return (root / value).resolve()

        return cls(
            root=root,
            ca_cert=path("ca_cert", "ca/ca.crt"),
            ca_key=path("ca_key", "ca/ca.key"),
            server_cert=path("server_cert", "tls/server.crt"),
            server_key=path("server_key", "tls/server.key"),
        )


@dataclass(frozen=True, kw_only=True)
class BrokerSettings:
    """What the generated mosquitto.conf says."""

    fleet: str
    port: int = DEFAULT_PORT
    bind: str | None = None
    managers: tuple[str, ...] = DEFAULT_MANAGERS
    user: str = "mosquitto"

    def __post_init__(self) -> None:
        check_name("fleet", self.fleet)
        if not 0 < self.port < 65536:
            raise ConfigError(f"expected a TCP port in 1..65535, got {self.port}")
        if not self.managers:
            raise ConfigError("expected at least one fleet-manager identity")
        for manager in self.managers:
            check_name("fleet-manager", manager)
        if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", self.user):
            raise ConfigError(f"expected a system user name, got {self.user!r}")


def _max_packet_size() -> int:
    from edgeops.protocol import MAX_CHUNK_SIZE, META_MAX_BYTES, TELEMETRY_MAX_BYTES

    return max(MAX_CHUNK_SIZE, META_MAX_BYTES, TELEMETRY_MAX_BYTES) + 64 * 1024


def render_config(settings: BrokerSettings, files: BrokerFiles) -> str:
    """The text of mosquitto.conf."""
    listener = f"listener {settings.port}"
    if settings.bind:
        listener += f" {settings.bind}"
    return "\n".join(
        [
            f"# Mosquitto for edgeops fleet {settings.fleet!r}; written by edgeops, rewritten",
            "# on enrollment and revocation. Reload the ACL and CRL with SIGHUP.",
            "per_listener_settings false",
            # Started as root, Mosquitto drops to the user named here; the fleet folder's
            # owner can read the server key and write the persistence folder.
            f"user {settings.user}",
            "allow_anonymous false",
            f"acl_file {files.acl}",
            "persistence true",
            f"persistence_location {files.data_dir}/",
            "autosave_interval 60",
            f"pid_file {files.pid_file}",
            "log_dest stderr",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            # The largest message the protocol allows (a bundle chunk or its meta) plus
            # room for the topic and MQTT headers; anything bigger is not ours.
            f"max_packet_size {_max_packet_size()}",
            "max_queued_messages 10000",
            "",
            listener,
            "protocol mqtt",
            f"cafile {files.ca_cert}",
            f"certfile {files.server_cert}",
            f"keyfile {files.server_key}",
            f"crlfile {files.crl}",
            "tls_version tlsv1.2",
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "",
        ]
    )


def render_acl(
    fleet: str, devices: Iterable[tuple[str, str]], managers: Sequence[str] = DEFAULT_MANAGERS
) -> str:
    """The text of mosquitto.acl for ``devices`` given as ``(device_id, group)`` pairs."""
    check_name("fleet", fleet)
    base = f"{TOPIC_ROOT}/{fleet}"
    lines = [
        f"# ACL for edgeops fleet {fleet!r}; written by edgeops from the registry.",
        "# %u is the client certificate's CN (use_identity_as_username).",
        f"pattern write {base}/dev/%u/state",
        f"pattern write {base}/dev/%u/events",
        f"pattern write {base}/dev/%u/telemetry",
        f"pattern read {base}/dev/%u/directive",
        "",
    ]
    manager_set = set(managers)
    for manager in managers:
        check_name("fleet-manager", manager)
        lines += [f"user {manager}", f"topic readwrite {base}/#", ""]
    for device_id, group in sorted(devices):
        check_name("device", device_id)
        check_name("group", group)
        if device_id in manager_set:
            raise ConfigError(f"device id {device_id!r} is reserved for the fleet manager")
        lines += [
            f"user {device_id}",
            f"topic read {base}/group/{group}/directive",
            f"topic read {base}/bundle/#",
            "",
        ]
    return "\n".join(lines)


def build_crl(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    revoked: Iterable[tuple[str, float]],
    *,
    now: float,
    validity_days: int = CRL_VALIDITY_DAYS,
    passphrase: str | None = None,
) -> bytes:
    """A PEM X.509 CRL signed by the CA, listing ``(serial_hex, revoked_at)`` pairs.

    ``passphrase`` unlocks an encrypted CA key (``EDGEOPS_KEY_PASSPHRASE`` for the fleet's).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
        ca_key = serialization.load_pem_private_key(
            ca_key_pem, password=passphrase.encode() if passphrase else None
        )
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the fleet CA certificate or key: {exc}") from exc
    if not isinstance(
        ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    ):
        raise ConfigError(f"unsupported fleet CA key type {type(ca_key).__name__}")
    issued = datetime.datetime.fromtimestamp(now, datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(issued - datetime.timedelta(minutes=5))  # tolerate small clock skew
        .next_update(issued + datetime.timedelta(days=validity_days))
    )
    for serial_hex, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(int(serial_hex, 16))
            .revocation_date(datetime.datetime.fromtimestamp(when, datetime.UTC))
            .build()
        )
    algorithm = None if isinstance(ca_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    crl = builder.sign(ca_key, algorithm)
    return crl.public_bytes(serialization.Encoding.PEM)


def certificate_serial(cert_pem: bytes) -> tuple[str, str, float]:
    """``(serial_hex, common_name, not_after)`` of a PEM certificate."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ConfigError(f"cannot read certificate: {exc}") from exc
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ConfigError("the certificate has no common name")
    cn = names[0].value
    common_name = cn if isinstance(cn, str) else cn.decode()
    return f"{cert.serial_number:x}", common_name, cert.not_valid_after_utc.timestamp()


def read_fleet_settings(fleet_dir: Path) -> dict[str, Any]:
    """The fleet's edgeops.toml as a dict (empty when the file is missing)."""
    path = Path(fleet_dir) / "edgeops.toml"
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc


def settings_for(
    fleet_dir: Path, *, port: int | None = None, bind: str | None = None
) -> BrokerSettings:
    """Broker settings from the fleet folder's edgeops.toml, overridden by arguments.

    The port is ``[broker] port`` when set, else the port of ``[broker] url`` (the address
    devices and the fleet manager use), else 8883. The listener binds ``[broker] bind``, or
    the URL's host when that is a loopback address, else every interface. The fleet-manager
    identities are the built-in ones (:data:`DEFAULT_MANAGERS`) and ``[broker] managers``.
    """
    data = read_fleet_settings(fleet_dir)
    fleet_section = data.get("fleet", {})
    broker_section = data.get("broker", {})
    name = fleet_section.get("name") or Path(fleet_dir).resolve().name
    if port is None:
        port = broker_section.get("port")
    url_host = None
    if isinstance(broker_section.get("url"), str):
        from edgeops.mqtt.settings import parse_mqtt_url

        url_host, url_port, _ = parse_mqtt_url(broker_section["url"])
        if port is None:
            port = url_port
    if bind is None:
        bind = broker_section.get("bind")
    if bind is None and url_host in _LOOPBACK:
        # Clients are told to reach the broker on this machine only: listen only there.
        bind = "127.0.0.1" if url_host == "localhost" else url_host
    extra = broker_section.get("managers", ())
    if isinstance(extra, str) or not all(isinstance(name, str) for name in extra):
        raise ConfigError(
            f"edgeops.toml: expected [broker] managers as a list of names, got {extra!r}"
        )
    # ``[broker] managers`` adds names (a second fleet serve, a bridge): the built-in
    # identities stay, so a list written before the CLI pool existed keeps push working.
    managers = tuple(dict.fromkeys((*DEFAULT_MANAGERS, *extra)))
    return BrokerSettings(
        user=str(broker_section.get("user") or _owner(Path(fleet_dir))),
        fleet=str(name),
        port=int(port if port is not None else DEFAULT_PORT),
        bind=bind,
        managers=managers,
    )


def _check_server_key(path: Path) -> None:
    # Mosquitto would stop at start-up to ask for the passphrase on its terminal, which a
    # service never answers: refuse now with the reason instead.
    try:
        head = path.read_bytes()[:64]
    except OSError as exc:
        raise ConfigError(f"cannot read the broker key {path}: {exc.strerror or exc}") from exc
    if b"ENCRYPTED" in head:
        raise ConfigError(
            f"the broker key {path} is encrypted; Mosquitto needs it in the clear "
            "(re-issue it without a passphrase, mode 0600)"
        )


def _owner(folder: Path) -> str:
    import pwd

    try:
        return pwd.getpwuid(folder.stat().st_uid).pw_name
    except (OSError, KeyError):
        return "mosquitto"


def write_broker_config(
    fleet_dir: Path, *, port: int | None = None, bind: str | None = None, now: float | None = None
) -> BrokerFiles:
    """Write mosquitto.conf, mosquitto.acl and the CRL for ``fleet_dir`` from its
    edgeops.toml, CA and registry; returns where they are."""
    import time

    from edgeops.fleet.registry import open_registry

    files = BrokerFiles.of(fleet_dir)
    settings = settings_for(fleet_dir, port=port, bind=bind)
    for needed in (files.ca_cert, files.ca_key):
        if not needed.is_file():
            raise ConfigError(f"{needed} is missing: run `edgeops fleet init` first")
    store = open_registry(files.root)
    try:
        devices = [(d.device_id, d.group) for d in store.list_devices()]
        revoked = [(c.serial, c.revoked or 0.0) for c in store.revoked_certificates()]
    finally:
        store.close()
    try:
        files.data_dir.mkdir(parents=True, exist_ok=True)
        ca_cert = files.ca_cert.read_bytes()
        ca_key = files.ca_key.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot prepare the broker folder: {exc}") from exc
    _check_server_key(files.server_key)
    crl = build_crl(
        ca_cert,
        ca_key,
        revoked,
        now=time.time() if now is None else now,
        passphrase=env_passphrase(),
    )
    atomic_write_bytes(files.crl, crl)
    atomic_write_bytes(files.acl, render_acl(settings.fleet, devices, settings.managers).encode())
    atomic_write_bytes(files.config, render_config(settings, files).encode())
    return files


def reload_broker(fleet_dir: Path) -> bool:
    """Send SIGHUP to the Mosquitto running from ``fleet_dir`` (its pid file), so it
    rereads the ACL and CRL. ``False`` when no such broker runs."""
    files = BrokerFiles.of(fleet_dir)
    try:
        pid = int(files.pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    # A stale pid file may name an unrelated process by now: signal only a mosquitto.
    if b"mosquitto" not in cmdline:
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class RevokeResult:
    """What :func:`revoke_device` did."""

    device_id: str
    serials: tuple[str, ...]
    reloaded: bool


def enroll_device(
    fleet_dir: Path,
    device_id: str,
    *,
    group: str,
    board: str | None = None,
    cert_pem: bytes | None = None,
    now: float | None = None,
) -> BrokerFiles:
    """Record an enrolled device (and the certificate issued to it) in the registry, then
    rewrite the ACL so it may read its group's directives, and reload a running broker."""
    import time

    from edgeops.fleet.registry import CertificateRecord, open_registry

    check_name("device", device_id)
    check_name("group", group)
    when = time.time() if now is None else now
    settings = settings_for(fleet_dir)
    if device_id in settings.managers or is_reserved_identity(device_id):
        raise ConfigError(f"device id {device_id!r} is reserved for the fleet manager")
    cert: CertificateRecord | None = None
    if cert_pem is not None:
        serial, common_name, not_after = certificate_serial(cert_pem)
        if common_name != device_id:
            raise ConfigError(
                f"expected a certificate for {device_id!r}, got one for {common_name!r}"
            )
        cert = CertificateRecord(
            serial=serial, subject=device_id, kind="device", issued=when, not_after=not_after
        )
    store = open_registry(BrokerFiles.of(fleet_dir).root)
    try:
        store.add_device(device_id, group=group, board=board, now=when)
        if cert is not None:
            store.add_certificate(cert)
    finally:
        store.close()
    files = write_broker_config(fleet_dir, now=when)
    reload_broker(fleet_dir)
    return files


def revoke_device(fleet_dir: Path, device_id: str, *, now: float | None = None) -> RevokeResult:
    """Revoke a device: mark it and its certificates revoked in the registry, re-sign the
    CRL, drop it from the ACL and reload a running broker."""
    import time

    from edgeops.fleet.registry import open_registry

    when = time.time() if now is None else now
    store = open_registry(BrokerFiles.of(fleet_dir).root)
    try:
        serials = store.revoke_device(device_id, now=when)
    finally:
        store.close()
    write_broker_config(fleet_dir, now=when)
    return RevokeResult(device_id, tuple(serials), reload_broker(fleet_dir))


__all__ = [
    "CRL_VALIDITY_DAYS",
    "DEFAULT_MANAGERS",
    "DEFAULT_PORT",
    "BrokerFiles",
    "BrokerSettings",
    "RevokeResult",
    "build_crl",
    "certificate_serial",
    "check_name",
    "enroll_device",
    "read_fleet_settings",
    "reload_broker",
    "render_acl",
    "render_config",
    "revoke_device",
    "settings_for",
    "write_broker_config",
]
