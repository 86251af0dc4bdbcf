"""Enrollment: everything a new device needs, in one bootstrap archive.

:func:`enroll` issues the device's certificate from the fleet CA (CN = device id), records
the device in the registry and the broker ACL, and writes an archive with the key, the
certificate, the CA certificate, the current ``root.json`` and an ``agent.toml``
(:mod:`edgeops.agent.enroll` describes the layout). The archive holds a private key: it is
written with mode 0600.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeops.errors import ConfigError
from edgeops.fsutil import atomic_write_bytes

DEFAULT_GROUP = "default"


@dataclass(frozen=True)
class Enrollment:
    """What :func:`enroll` wrote."""

    device_id: str
    fleet: str
    group: str
    board: str
    broker_url: str
    archive: Path


def enroll(
    fleet_dir: Path,
    device_id: str,
    *,
    output: Path,
    group: str = DEFAULT_GROUP,
    board: str = "auto",
    broker_url: str | None = None,
    register: bool = True,
) -> Enrollment:
    """Issue the device's identity and write its bootstrap archive to ``output``.

    ``broker_url`` defaults to the fleet's; ``register=False`` skips the registry and ACL
    (a broker without the fleet's generated configuration).
    """
    from edgeops.agent.config import render_toml
    from edgeops.agent.enroll import build_bootstrap
    from edgeops.fleet.ca import issue_certificate
    from edgeops.fleet.fleetdir import FleetDir, is_reserved_identity
    from edgeops.protocol.topics import validate_id

    fleet = FleetDir.open(fleet_dir)
    try:
        validate_id(device_id, "device id")
        validate_id(group, "group")
    except Exception as exc:
        raise ConfigError(str(exc)) from exc
    if is_reserved_identity(device_id):
        raise ConfigError(f"device id {device_id!r} is reserved for the fleet manager")
    if board != "auto":
        from edgeops.hardware.boards import get_profile

        get_profile(board)  # a typo fails here, not on the device
    url = broker_url or fleet.broker_url
    key_pem, cert_pem = issue_certificate(fleet.path, device_id, kind="device")
    try:
        ca_pem = fleet.ca_cert.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the fleet CA certificate: {exc}") from exc
    agent_toml = render_toml(
        device_id=device_id,
        fleet=fleet.name,
        broker_url=url,
        groups=(group,),
        board=board,
        tls=url.startswith("mqtts://"),
    )
    archive = build_bootstrap(
        {
            "agent.toml": agent_toml.encode("utf-8"),
            "root.json": fleet.root_bytes(),
            "tls/ca.crt": ca_pem,
            "tls/device.crt": cert_pem,
            "tls/device.key": key_pem,
        }
    )
    if register:
        from edgeops.fleet.broker_config import enroll_device

        enroll_device(
            fleet.path,
            device_id,
            group=group,
            board=None if board == "auto" else board,
            cert_pem=cert_pem,
        )
    atomic_write_bytes(Path(output), archive, mode=0o600)
    return Enrollment(
        device_id=device_id,
        fleet=fleet.name,
        group=group,
        board=board,
        broker_url=url,
        archive=Path(output),
    )


__all__ = ["DEFAULT_GROUP", "Enrollment", "enroll"]
