"""Which broker identity a fleet-manager process connects as, so that none evicts another.

The fleet's broker takes the client id from the client certificate's CN
(``use_username_as_clientid``) and, like every MQTT broker, disconnects the older session
when a client connects with a client id already in use (MQTT 3.1.1 §3.1.4). Two processes on
one certificate would knock each other off in a reconnect loop, so each process connects
with a name of its own, all of them fleet managers in the ACL:

``edgeops-fleet-manager`` (``tls/manager.crt``)
    ``edgeops fleet serve``; a second instance passes ``--cert``/``--key`` of a name listed
    in ``[broker] managers``.
``edgeops-fleet-cli-1`` … ``-4`` (``tls/edgeops-fleet-cli-K.crt``)
    ``edgeops push`` and every other command that connects (:func:`manager_link`): a
    process takes the first free one.

A process owns a name while it holds an exclusive, non-blocking ``flock`` on
``DIR/locks/NAME.lock``; the kernel drops it when the process exits, also on SIGKILL, so a
crashed push never keeps a name. The lock file holds the owner's pid, for the error message
when every name is taken. Locks are per machine: processes on other machines that share
the fleet folder over the network need names of their own (``[broker] managers``).

Fleets created before the CLI pool existed have only ``tls/manager.crt``. The first CLI
command that connects issues the pool from the fleet CA, rewrites the broker files (the ACL
lists the new names) and sends SIGHUP to a Mosquitto running from the fleet folder. When no
such broker could be signalled (it runs elsewhere, or as another user), that one command
connects as ``edgeops-fleet-manager`` — only if no ``fleet serve`` holds it — and warns that
the broker must reload its ACL before the next command.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeops.errors import ConfigError, EdgeopsError, StateError
from edgeops.fleet.fleetdir import MANAGER_COMMON_NAME, FleetDir, cli_common_names

if TYPE_CHECKING:
    from edgeops.mqtt import Link
    from edgeops.mqtt.link import Ack, ConnectCallback, DisconnectCallback, MessageHandler
    from edgeops.mqtt.settings import Will

log = logging.getLogger(__name__)

# Mosquitto applies SIGHUP on its next main-loop turn; a connection made a moment later
# could still be checked against the old ACL, and a refused publish is silent in MQTT 3.1.1.
_RELOAD_GRACE_S = 0.5


@dataclass(frozen=True)
class Identity:
    """A fleet-manager certificate: its CN (the client id) and files (None without TLS)."""

    common_name: str
    cert: Path | None
    key: Path | None


class IdentityLease:
    """An identity this process holds (the lock file stays locked until :meth:`release`)."""

    def __init__(self, identity: Identity, fd: int, lock_path: Path) -> None:
        self.identity = identity
        self.lock_path = lock_path
        self._fd: int | None = fd

    @property
    def common_name(self) -> str:
        return self.identity.common_name

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the name back (closing the file drops the lock). Idempotent."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> IdentityLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_path(fleet: FleetDir, common_name: str) -> Path:
    """The lock file of ``common_name`` in the fleet folder."""
    return fleet.locks_dir / f"{common_name}.lock"


def _open_lock_file(path: Path) -> int:
    """Open (creating it and its folder) a lock file; ConfigError says which one failed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot open the lock file {path}: {exc.strerror or exc}") from exc


def try_lock(fleet: FleetDir, identity: Identity) -> IdentityLease | None:
    """Take ``identity`` if no process holds it; None when one does."""
    path = lock_path(fleet, identity.common_name)
    fd = _open_lock_file(path)
    try:
        # flock, not fcntl record locks: record locks are per process, so two links in one
        # process (a test, the demo) would both "get" the same name.
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as exc:
        os.close(fd)
        raise ConfigError(f"cannot lock {path}: {exc.strerror or exc}") from exc
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return IdentityLease(identity, fd, path)


def holder(fleet: FleetDir, common_name: str) -> str:
    """Who holds ``common_name``, for messages: ``pid N`` or ``another process``."""
    try:
        pid = int(lock_path(fleet, common_name).read_text().strip())
    except (OSError, ValueError):
        return "another process"
    return f"pid {pid}"


def lock_identity(fleet: FleetDir, identity: Identity) -> IdentityLease:
    """Take ``identity`` or raise :class:`StateError` naming the process that holds it."""
    lease = try_lock(fleet, identity)
    if lease is None:
        raise StateError(
            f"{identity.common_name} is connected from {holder(fleet, identity.common_name)} "
            "on this machine; a second process with the same certificate would evict it from "
            "the broker (a second fleet serve needs its own --cert/--key, listed in "
            "[broker] managers)"
        )
    return lease


def _uses_tls(fleet: FleetDir) -> bool:
    return fleet.broker_url.startswith("mqtts://")


def cli_identities(fleet: FleetDir) -> list[Identity]:
    """The CLI pool, in the order processes take it."""
    tls = _uses_tls(fleet)
    out = []
    for name in cli_common_names():
        cert, key = fleet.identity_files(name)
        out.append(Identity(name, cert if tls else None, key if tls else None))
    return out


def provision_cli_identities(
    fleet: FleetDir, *, reload: Callable[[Path], bool] | None = None
) -> bool | None:
    """Issue the CLI certificates a fleet folder lacks, put them in the broker files and
    reload a broker running from the folder.

    Returns None when nothing was missing, else whether a broker was signalled to reload.
    Concurrent callers are serialized by ``locks/provision.lock``.
    """
    from edgeops.fleet.broker_config import reload_broker, write_broker_config
    from edgeops.fleet.ca import issue_certificate
    from edgeops.fsutil import atomic_write_bytes

    fd = _open_lock_file(fleet.locks_dir / "provision.lock")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocking: another process may be issuing them
        missing = [i for i in cli_identities(fleet) if i.cert is not None and not i.cert.exists()]
        if not missing:
            return None
        # The ACL first (it lists the built-in names whether or not their certificates
        # exist), the certificates after: a certificate on disk means the ACL has its name.
        write_broker_config(fleet.path)
        for identity in missing:
            assert identity.cert is not None
            assert identity.key is not None
            key_pem, cert_pem = issue_certificate(fleet.path, identity.common_name, kind="manager")
            atomic_write_bytes(identity.key, key_pem, mode=0o600)
            atomic_write_bytes(identity.cert, cert_pem)
        reloaded = (reload or reload_broker)(fleet.path)
        log.warning(
            "fleet %s: issued the CLI's broker identities %s; the ACL lists them%s",
            fleet.name,
            ", ".join(i.common_name for i in missing),
            " and the broker reloaded it"
            if reloaded
            else "; reload every broker serving this fleet (kill -HUP, or copy mosquitto.acl "
            "to it first)",
        )
        if reloaded:
            time.sleep(_RELOAD_GRACE_S)
        return reloaded
    finally:
        os.close(fd)


def acquire_cli_identity(
    fleet: FleetDir, *, reload: Callable[[Path], bool] | None = None
) -> IdentityLease:
    """The first free CLI identity, held until the lease is released or the process exits.

    Raises :class:`StateError` when every one is in use. An older fleet folder gets its pool
    first (:func:`provision_cli_identities`; see the module docstring for the fallback).
    """
    if _uses_tls(fleet):
        try:
            reloaded = provision_cli_identities(fleet, reload=reload)
        except (EdgeopsError, OSError) as exc:
            # An encrypted CA key without EDGEOPS_KEY_PASSPHRASE, a read-only folder, ...
            log.warning(
                "fleet %s: cannot issue the CLI's broker identities (an encrypted CA key needs "
                "EDGEOPS_KEY_PASSPHRASE): %s",
                fleet.name,
                exc,
            )
            reloaded = False
        if reloaded is False:
            return _fallback(fleet)
    pool = cli_identities(fleet)
    for identity in pool:
        lease = try_lock(fleet, identity)
        if lease is not None:
            return lease
    holders = ", ".join(f"{i.common_name} ({holder(fleet, i.common_name)})" for i in pool)
    raise StateError(
        f"all {len(pool)} CLI broker identities of fleet {fleet.name} are in use by other "
        f"edgeops commands on this machine: {holders}; wait for one to finish"
    )


def _fallback(fleet: FleetDir) -> IdentityLease:
    cert, key = fleet.identity_files(MANAGER_COMMON_NAME)
    lease = try_lock(fleet, Identity(MANAGER_COMMON_NAME, cert, key))
    if lease is None:
        raise StateError(
            f"{MANAGER_COMMON_NAME} is connected from {holder(fleet, MANAGER_COMMON_NAME)} "
            "(fleet serve) and the broker has not loaded the CLI identities yet: reload it "
            "(kill -HUP its pid) and run the command again"
        )
    log.warning(
        "fleet %s: connecting as %s, the CLI identities are not usable yet; a fleet serve "
        "started while this command runs would be evicted",
        fleet.name,
        MANAGER_COMMON_NAME,
    )
    return lease


def manager_link(fleet: FleetDir) -> LeasedLink:
    """A link to the fleet's broker as a free CLI identity (not connected); closing the
    link gives the identity back."""
    from edgeops.mqtt import MqttSettings, PahoLink, TlsSettings

    lease = acquire_cli_identity(fleet)
    identity = lease.identity
    tls = None
    if identity.cert is not None and identity.key is not None:
        tls = TlsSettings(cafile=fleet.ca_cert, certfile=identity.cert, keyfile=identity.key)
    try:
        link = PahoLink(
            MqttSettings.from_url(fleet.broker_url, client_id=identity.common_name, tls=tls)
        )
    except BaseException:
        lease.release()
        raise
    return LeasedLink(link, lease)


class LeasedLink:
    """A :class:`~edgeops.mqtt.Link` that holds its identity's lock until closed."""

    def __init__(self, link: Link, lease: IdentityLease) -> None:
        self.link = link
        self.lease = lease

    @property
    def client_id(self) -> str:
        return self.link.client_id

    @property
    def connected(self) -> bool:
        return self.link.connected

    def connect(self, timeout: float | None = None) -> None:
        if not self.lease.held:
            raise StateError(f"the link as {self.lease.common_name} was closed")
        self.link.connect(timeout)

    def close(self) -> None:
        try:
            self.link.close()
        finally:
            # After the link is down: the next holder must not connect while we still are.
            self.lease.release()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> Ack:
        return self.link.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 1) -> Ack:
        return self.link.subscribe(topic_filter, handler, qos=qos)

    def unsubscribe(self, topic_filter: str) -> None:
        self.link.unsubscribe(topic_filter)

    def set_will(self, will: Will | None) -> None:
        self.link.set_will(will)

    def on_connect(self, callback: ConnectCallback) -> Callable[[], None]:
        return self.link.on_connect(callback)

    def on_disconnect(self, callback: DisconnectCallback) -> Callable[[], None]:
        return self.link.on_disconnect(callback)


__all__ = [
    "Identity",
    "IdentityLease",
    "LeasedLink",
    "acquire_cli_identity",
    "cli_identities",
    "holder",
    "lock_identity",
    "lock_path",
    "manager_link",
    "provision_cli_identities",
    "try_lock",
]
