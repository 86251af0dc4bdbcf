"""The fleet folder: what ``edgeops fleet init`` writes and every fleet command reads.

::

    DIR/
      edgeops.toml              fleet name, broker URL, paths (relative to DIR)
      root.json                 the current root of trust (signed envelope)
      root.N.json               every root version, so a device can walk the chain
      releases.json             the last release counter handed out
      keys/root.key             Ed25519 private keys, one per role, mode 0600
      keys/release.key          (encrypted when EDGEOPS_KEY_PASSPHRASE is set)
      keys/deploy.key
      keys/retired/             keys replaced by ``edgeops keys rotate``
      ca/ca.key  ca/ca.crt      the fleet CA (EC P-256)
      tls/server.key/.crt       the broker's certificate (127.0.0.1, localhost, the URL's host)
      tls/manager.key/.crt      the fleet manager's client certificate (``fleet serve``)
      tls/edgeops-fleet-cli-K.key/.crt
                                the CLI's fleet-manager certificates, K = 1..CLI_IDENTITY_COUNT
                                (``edgeops push`` and other commands that connect)
      locks/NAME.lock           held (flock) by the process connected as NAME
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeops.errors import ConfigError
from edgeops.fsutil import atomic_write_bytes, atomic_write_json
from edgeops.trust import (
    Root,
    SigningKey,
    TrustedState,
    new_root,
    rotated_root,
    sign_metadata,
)
from edgeops.trust.envelope import parse_envelope
from edgeops.trust.keys import env_passphrase
from edgeops.trust.metadata import ROLES, utcnow

CONFIG_NAME = "edgeops.toml"
DEFAULT_BROKER_URL = "mqtts://127.0.0.1:8883"
#: Common name of the fleet manager's client certificate; the ACL grants it the fleet's
#: topics, so enrollment must refuse it as a device id.
MANAGER_COMMON_NAME = "edgeops-fleet-manager"
#: How many CLI processes may be connected at once (``edgeops push`` to two groups, ...).
#: The broker evicts a session when another connects with the same client id, and the
#: client id is the certificate's CN: each concurrent process needs a name of its own.
CLI_IDENTITY_COUNT = 4
CLI_COMMON_NAME_PREFIX = "edgeops-fleet-cli-"
#: Names starting with this are fleet-manager identities, never device ids.
RESERVED_PREFIX = "edgeops-fleet-"
# The fleet name is part of every MQTT topic: no '/', '+', '#' or spaces.
_FLEET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def cli_common_names(count: int = CLI_IDENTITY_COUNT) -> tuple[str, ...]:
    """The CNs of the CLI's fleet-manager certificates, in the order processes take them."""
    return tuple(f"{CLI_COMMON_NAME_PREFIX}{k}" for k in range(1, count + 1))


#: Every fleet-manager identity ``edgeops fleet init`` issues; all are in the ACL.
BUILTIN_MANAGERS = (MANAGER_COMMON_NAME, *cli_common_names())


def is_reserved_identity(name: str) -> bool:
    """Whether ``name`` belongs to the fleet manager (enrollment refuses it as a device id:
    the ACL grants the fleet's topics to the certificate's CN)."""
    return name.startswith(RESERVED_PREFIX)


def _toml_str(value: str) -> str:
    # A JSON string is a valid TOML basic string for the characters a path or name holds.
    return json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True)
class FleetDir:
    """A fleet folder and its configuration (``edgeops.toml``)."""

    path: Path
    name: str
    broker_url: str

    @classmethod
    def open(cls, path: Path) -> FleetDir:
        """Read an existing fleet folder; raises :class:`ConfigError` when it is not one."""
        path = Path(path)
        config_path = path / CONFIG_NAME
        try:
            config = tomllib.loads(config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"{path} is not a fleet folder (no {CONFIG_NAME}); run 'edgeops fleet init'"
            ) from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {config_path}: {exc}") from exc
        try:
            name = config["fleet"]["name"]
            broker_url = config["broker"]["url"]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{config_path}: missing {exc}") from exc
        if not isinstance(name, str) or not isinstance(broker_url, str):
            raise ConfigError(f"{config_path}: fleet.name and broker.url must be strings")
        return cls(path=path, name=name, broker_url=broker_url)

    # -- paths
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def root_path(self) -> Path:
        return self.path / "root.json"

    def root_version_path(self, version: int) -> Path:
        return self.path / f"root.{version}.json"

    @property
    def keys_dir(self) -> Path:
        return self.path / "keys"

    def key_path(self, role: str) -> Path:
        return self.keys_dir / f"{role}.key"

    @property
    def releases_path(self) -> Path:
        return self.path / "releases.json"

    @property
    def ca_key(self) -> Path:
        return self.path / "ca" / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.path / "ca" / "ca.crt"

    @property
    def server_key(self) -> Path:
        return self.path / "tls" / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.path / "tls" / "server.crt"

    @property
    def manager_key(self) -> Path:
        return self.path / "tls" / "manager.key"

    @property
    def manager_cert(self) -> Path:
        return self.path / "tls" / "manager.crt"

    def identity_files(self, common_name: str) -> tuple[Path, Path]:
        """``(cert, key)`` of a fleet-manager identity ``edgeops fleet init`` issues."""
        if common_name == MANAGER_COMMON_NAME:
            return self.manager_cert, self.manager_key
        return self.path / "tls" / f"{common_name}.crt", self.path / "tls" / f"{common_name}.key"

    @property
    def locks_dir(self) -> Path:
        return self.path / "locks"

    # -- trust
    def root_bytes(self) -> bytes:
        """The bytes of the current ``root.json``."""
        try:
            return self.root_path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read {self.root_path}: {exc.strerror or exc}") from exc

    def root(self) -> Root:
        """The current root (parsed, not verified; see :meth:`trusted`)."""
        envelope = parse_envelope(self.root_bytes(), expected_type="root", max_size=512 * 1024)
        return Root.from_signed(envelope.signed)

    def root_chain(self) -> list[bytes]:
        """Every root version from 1 to the current, in order."""
        current = self.root().version
        return [self.root_version_path(v).read_bytes() for v in range(1, current + 1)]

    def trusted(self, now: dt.datetime | None = None) -> TrustedState:
        """A :class:`TrustedState` that starts at root version 1 and walks the chain."""
        chain = self.root_chain()
        state = TrustedState(chain[0], now=now or utcnow())
        state.update_root_chain(chain[1:])
        return state

    def signing_keys(self, role: str, passphrase: str | None = None) -> list[SigningKey]:
        """The private keys of ``role`` (``passphrase`` defaults to EDGEOPS_KEY_PASSPHRASE)."""
        if role not in ROLES:
            raise ConfigError(f"expected a role among {', '.join(ROLES)}, got {role!r}")
        key = SigningKey.load(
            self.key_path(role), passphrase if passphrase is not None else env_passphrase()
        )
        root = self.root()
        if key.keyid not in root.role(role).keyids:
            raise ConfigError(
                f"{self.key_path(role)} (key {key.keyid[:16]}) is not a {role} key of "
                f"root version {root.version}"
            )
        return [key]

    # -- release counters
    def last_release(self) -> int:
        """The last release counter handed out (0 before the first bundle)."""
        try:
            data = json.loads(self.releases_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {self.releases_path}: {exc}") from exc
        value = data.get("last_release") if isinstance(data, dict) else None
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"{self.releases_path}: expected last_release >= 0, got {value!r}")
        return value

    def record_release(self, release: int, *, name: str, version: str) -> None:
        """Remember ``release`` as the last counter handed out."""
        last = self.last_release()
        if release <= last:
            raise ConfigError(
                f"expected release counter > {last} (the last one this fleet signed), "
                f"got {release}; devices would refuse it"
            )
        atomic_write_json(
            self.releases_path,
            {"last_release": release, "name": name, "version": version},
        )


def _write_config(path: Path, name: str, broker_url: str) -> None:
    text = f"""# edgeops fleet configuration; paths are relative to this folder.
[fleet]
name = {_toml_str(name)}

[broker]
url = {_toml_str(broker_url)}

[paths]
root = "root.json"
keys = "keys"
ca_cert = "ca/ca.crt"
ca_key = "ca/ca.key"
server_cert = "tls/server.crt"
server_key = "tls/server.key"
manager_cert = "tls/manager.crt"
manager_key = "tls/manager.key"
"""
    atomic_write_bytes(path, text.encode("utf-8"))


def init_fleet(
    path: Path,
    *,
    name: str,
    broker_url: str = DEFAULT_BROKER_URL,
    passphrase: str | None = None,
    now: dt.datetime | None = None,
    root_lifetime: dt.timedelta = dt.timedelta(days=365),
) -> FleetDir:
    """Create a fleet folder: keys, root.json, CA, broker and manager certificates, config.

    Refuses a folder that already holds a fleet (or any file ``init`` would write).
    """
    from edgeops.fleet.ca import CertKind, create_ca, sign_leaf

    path = Path(path)
    if not _FLEET_NAME.fullmatch(name):
        raise ConfigError(
            "expected a fleet name of letters, digits, '.', '_' or '-' (at most 64, starting "
            f"with a letter or digit), got {name!r}"
        )
    if (path / CONFIG_NAME).exists() or (path / "root.json").exists() or (path / "keys").exists():
        raise ConfigError(f"{path} already holds a fleet; refusing to overwrite it")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} exists and is not a folder")
    now = now or utcnow()
    fleet = FleetDir(path=path, name=name, broker_url=broker_url)

    keys = {role: SigningKey.generate() for role in ROLES}
    for role, key in keys.items():
        key.save(fleet.key_path(role), passphrase)
    fleet.keys_dir.chmod(0o700)
    root = new_root(
        fleet=name,
        role_keys={role: [key.public_key] for role, key in keys.items()},
        expires=now + root_lifetime,
    )
    root_data = sign_metadata(root, [keys["root"]], pretty=True)
    atomic_write_bytes(fleet.root_version_path(1), root_data)
    atomic_write_bytes(fleet.root_path, root_data)

    ca_key, ca_cert = create_ca(name, now=now, passphrase=passphrase)
    atomic_write_bytes(fleet.ca_key, ca_key, mode=0o600)
    atomic_write_bytes(fleet.ca_cert, ca_cert)
    leaves: list[tuple[CertKind, str, Path, Path]] = [
        ("server", "localhost", fleet.server_key, fleet.server_cert)
    ]
    for manager in BUILTIN_MANAGERS:
        cert_path, key_path = fleet.identity_files(manager)
        leaves.append(("manager", manager, key_path, cert_path))
    from edgeops.mqtt.settings import parse_mqtt_url

    # Devices check the broker's certificate against the host in the URL they are given, so
    # a broker reached over the LAN (mqtts://broker.lan:8883) needs that name in its SANs.
    url_host = parse_mqtt_url(broker_url)[0]
    hosts = tuple(dict.fromkeys(("127.0.0.1", "localhost", url_host)))
    for kind, common_name, key_path, cert_path in leaves:
        leaf_key, leaf_cert = sign_leaf(
            ca_key,
            ca_cert,
            common_name,
            kind=kind,
            passphrase=passphrase,
            now=now,
            hosts=hosts,
        )
        atomic_write_bytes(key_path, leaf_key, mode=0o600)
        atomic_write_bytes(cert_path, leaf_cert)
    # The config goes last: its presence marks a complete fleet folder.
    _write_config(fleet.config_path, name, broker_url)
    return fleet


def rotate_key(
    fleet: FleetDir,
    role: str,
    *,
    passphrase: str | None = None,
    now: dt.datetime | None = None,
    root_lifetime: dt.timedelta = dt.timedelta(days=365),
) -> Root:
    """Replace ``role``'s key: root version N+1 signed by the old and the new root keys.

    The new root is verified against the current one before anything is replaced; the old
    key moves to ``keys/retired/``; ``root.N.json`` files stay for devices to walk.
    """
    if role not in ROLES:
        raise ConfigError(f"expected a role among {', '.join(ROLES)}, got {role!r}")
    now = now or utcnow()
    passphrase = passphrase if passphrase is not None else env_passphrase()
    old_root = fleet.root()
    old_root_keys = fleet.signing_keys("root", passphrase)
    old_key = fleet.signing_keys(role, passphrase)[0]
    new_key = SigningKey.generate()
    new = rotated_root(
        old_root, role=role, new_public_keys=[new_key.public_key], expires=now + root_lifetime
    )
    signers = list(old_root_keys)
    if role == "root":
        signers.append(new_key)
    data = sign_metadata(new, signers, pretty=True)
    # Check the rotation exactly as a device will before touching any file.
    state = fleet.trusted(now)
    state.update_root(data)

    retired = fleet.keys_dir / "retired" / f"{role}.{old_root.version}.{old_key.keyid[:16]}.key"
    atomic_write_bytes(retired, fleet.key_path(role).read_bytes(), mode=0o600)
    new_key.save(fleet.key_path(role), passphrase)
    atomic_write_bytes(fleet.root_version_path(new.version), data)
    atomic_write_bytes(fleet.root_path, data)
    return new


def fleet_summary(fleet: FleetDir) -> dict[str, Any]:
    """A JSON-able description of the fleet folder (for ``--json`` output)."""
    root = fleet.root()
    return {
        "fleet": fleet.name,
        "path": str(fleet.path),
        "broker_url": fleet.broker_url,
        "root_version": root.version,
        "root_expires": root.to_signed()["expires"],
        "roles": {
            role: {"keyids": list(spec.keyids), "threshold": spec.threshold}
            for role, spec in root.roles.items()
        },
        "ca_cert": str(fleet.ca_cert),
        "server_cert": str(fleet.server_cert),
        "manager_cert": str(fleet.manager_cert),
        "cli_certs": [str(fleet.identity_files(name)[0]) for name in cli_common_names()],
    }


__all__ = [
    "BUILTIN_MANAGERS",
    "CLI_COMMON_NAME_PREFIX",
    "CLI_IDENTITY_COUNT",
    "CONFIG_NAME",
    "DEFAULT_BROKER_URL",
    "MANAGER_COMMON_NAME",
    "RESERVED_PREFIX",
    "FleetDir",
    "cli_common_names",
    "fleet_summary",
    "init_fleet",
    "is_reserved_identity",
    "rotate_key",
]
