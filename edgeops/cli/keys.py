"""``edgeops keys …``: role keys of the fleet's root of trust."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeops.cli.output import JSON_OPTION_HELP, emit, key_values

keys_app = typer.Typer(
    name="keys",
    help="Manage the signing keys of the fleet's root of trust.",
    no_args_is_help=True,
)


@keys_app.command("rotate")
def rotate(
    role: Annotated[
        str, typer.Argument(help="Role whose key to replace: root, release or deploy.")
    ],
    fleet_dir: Annotated[Path, typer.Option("--fleet", help="Fleet folder.")] = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """Replace ROLE's key with a new one: writes root version N+1, signed by the current
    root keys and the new root keys; root.N.json stays for devices to walk the chain."""
    from edgeops.fleet.fleetdir import FleetDir, rotate_key

    fleet = FleetDir.open(fleet_dir)
    new = rotate_key(fleet, role)
    result = {
        "fleet": fleet.name,
        "role": role,
        "root_version": new.version,
        "keyids": list(new.role(role).keyids),
        "root": str(fleet.root_path),
    }

    def human(data: dict[str, Any]) -> None:
        typer.echo(f"rotated the {role} key; root is now version {data['root_version']}")
        key_values({"new key": data["keyids"][0], "root": data["root"]})

    emit(result, as_json=as_json, human=human)
