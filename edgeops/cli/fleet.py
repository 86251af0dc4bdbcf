"""``edgeops fleet …``: the fleet folder (init here; enrollment, status and serve are added
to the same ``fleet_app`` by their modules)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeops.cli.output import JSON_OPTION_HELP, emit, key_values

fleet_app = typer.Typer(
    name="fleet",
    help="Create and run a fleet: trust root, CA, devices, rollouts.",
    no_args_is_help=True,
)


@fleet_app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the fleet in.")],
    name: Annotated[str, typer.Option("--name", help="Fleet name (used in MQTT topics).")],
    broker_url: Annotated[
        str, typer.Option("--broker-url", help="Broker the devices and the fleet connect to.")
    ] = "mqtts://127.0.0.1:8883",
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """Write a new fleet folder: root.json, Ed25519 keys per role, the fleet CA, broker
    and fleet-manager certificates, and edgeops.toml.

    Keys are encrypted when EDGEOPS_KEY_PASSPHRASE is set. Refuses an existing fleet.
    """
    from edgeops.fleet.broker_config import write_broker_config
    from edgeops.fleet.fleetdir import fleet_summary, init_fleet
    from edgeops.trust.keys import env_passphrase

    fleet = init_fleet(directory, name=name, broker_url=broker_url, passphrase=env_passphrase())
    broker_files = write_broker_config(fleet.path)
    summary = {**fleet_summary(fleet), "mosquitto_config": str(broker_files.config)}

    def human(data: dict[str, Any]) -> None:
        typer.echo(f"created fleet {data['fleet']!r} in {data['path']}")
        key_values(
            {
                "root": f"version {data['root_version']}, expires {data['root_expires']}",
                "broker": data["broker_url"],
                "ca": data["ca_cert"],
                "run the broker": f"mosquitto -c {data['mosquitto_config']}",
                "encrypted keys": "yes" if env_passphrase() else "no (set EDGEOPS_KEY_PASSPHRASE)",
            }
        )

    emit(summary, as_json=as_json, human=human)
