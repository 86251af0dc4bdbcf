"""``edgeops device enroll``: a new device's bootstrap archive.

Added to the ``device`` group that ``edgeops.cli.status`` defines (revoke, show).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeops.cli.output import JSON_OPTION_HELP, emit
from edgeops.cli.status import FLEET_OPTION_HELP, device_app


@device_app.command("enroll")
def enroll_command(
    device_id: Annotated[str, typer.Argument(help="The new device's id (its certificate CN).")],
    *,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Where to write the bootstrap archive.")
    ],
    fleet: Annotated[
        Path, typer.Option("--fleet", envvar="EDGEOPS_FLEET", help=FLEET_OPTION_HELP)
    ] = Path("."),
    group: Annotated[str, typer.Option("--group", help="The device's group.")] = "default",
    board: Annotated[
        str, typer.Option("--board", help="Board profile name, or auto to detect on the device.")
    ] = "auto",
    broker: Annotated[
        str | None,
        typer.Option("--broker", help="Broker URL for the device (default: the fleet's)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """Issue DEVICE_ID's certificate and write its bootstrap archive (holds a private key).

    On the device: edgeops-agent --bootstrap FILE (or edgeops agent run --bootstrap FILE).
    """
    from edgeops.errors import ConfigError
    from edgeops.fleet.enroll import enroll

    if not fleet.is_dir():
        raise ConfigError(f"expected a fleet folder at {fleet}, found none (edgeops fleet init)")
    result = enroll(fleet, device_id, output=output, group=group, board=board, broker_url=broker)
    data = {
        "device_id": result.device_id,
        "fleet": result.fleet,
        "group": result.group,
        "board": result.board,
        "broker_url": result.broker_url,
        "archive": str(result.archive),
    }

    def human(_: Any) -> None:
        typer.echo(
            f"enrolled {device_id} in {result.fleet} (group {group}); bootstrap archive "
            f"{result.archive} (mode 0600, holds the device key)"
        )

    emit(data, as_json=as_json, human=human)
