"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from edgeops.broker import MosquittoBroker

# Property tests run on a shared 2-core machine and in CI next to brokers and agents: a
# busy core must not turn into a failed test. Deadlines and the too-slow check measure the
# machine, not the code; the examples and their assertions stay as each test sets them.
settings.register_profile("edgeops", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("edgeops")


@pytest.fixture
def mosquitto(tmp_path) -> Iterator[MosquittoBroker]:
    """A plain (anonymous, no TLS) Mosquitto on a free loopback port, for this test only."""
    with MosquittoBroker("allow_anonymous true\n", workdir=tmp_path / "broker") as broker:
        yield broker


@dataclass
class TlsFleet:
    """A fleet folder from ``fleet init`` and a Mosquitto that requires its client certs."""

    path: Path
    broker: MosquittoBroker

    def client_files(self, name: str) -> tuple[Path, Path]:
        """Issue a device certificate for ``name``; returns ``(certfile, keyfile)``."""
        from edgeops.fleet.ca import issue_certificate

        key_pem, cert_pem = issue_certificate(self.path, name, kind="device")
        folder = self.path / "clients"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.crt").write_bytes(cert_pem)
        (folder / f"{name}.key").write_bytes(key_pem)
        return folder / f"{name}.crt", folder / f"{name}.key"


@pytest.fixture
def tls_fleet(tmp_path) -> Iterator[TlsFleet]:
    """``fleet init`` into tmp_path, then Mosquitto with a TLS listener on a free port that
    requires a certificate from the fleet CA and takes the user name from its common name."""
    from edgeops.fleet.fleetdir import init_fleet

    fleet = init_fleet(tmp_path / "fleet", name="tls-test")
    config = (
        "listener {port} 127.0.0.1\n"
        f"cafile {fleet.ca_cert}\n"
        f"certfile {fleet.server_cert}\n"
        f"keyfile {fleet.server_key}\n"
        "require_certificate true\n"
        "use_identity_as_username true\n"
        "allow_anonymous false\n"
        # Started as root, Mosquitto drops to user "mosquitto", who cannot read tmp_path.
        f"user {pwd.getpwuid(os.getuid()).pw_name}\n"
    )
    with MosquittoBroker(config, workdir=tmp_path / "broker") as broker:
        yield TlsFleet(path=fleet.path, broker=broker)
