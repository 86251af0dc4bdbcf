"""``edgeops status``: the fleet at a glance, from the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeops.cli import app
from edgeops.cli.output import JSON_OPTION_HELP, emit

FLEET_OPTION_HELP = "The fleet folder (edgeops fleet init wrote it)."


def open_fleet_registry(fleet: Path) -> Any:
    """The registry of the fleet folder ``fleet``; a clear error when it is not one."""
    from edgeops.errors import ConfigError
    from edgeops.fleet.registry import open_registry

    if not fleet.is_dir():
        raise ConfigError(f"expected a fleet folder at {fleet}, found none (edgeops fleet init)")
    return open_registry(fleet)


@app.command("status")
def status_command(
    *,
    fleet: Annotated[
        Path, typer.Option("--fleet", envvar="EDGEOPS_FLEET", help=FLEET_OPTION_HELP)
    ] = Path("."),
    group: Annotated[str | None, typer.Option("--group", "-g", help="Only this group.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """Every device: online, bundle, version, p95 latency, error rate, drift, temperature,
    last seen; a one-line fleet summary on top."""
    from edgeops.fleet.status import fleet_status

    store = open_fleet_registry(fleet)
    try:
        status = fleet_status(store, group=group)
    finally:
        store.close()
    emit(status.to_json() if as_json else status, as_json=as_json, human=_print_status)


def make_console() -> Any:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        # Piped output (less, grep, a CI log) gets whole rows, not ellipses at 80 columns.
        console = Console(width=240)
    return console


def _print_status(status: Any) -> None:
    import sys

    from edgeops.fleet.status import (
        NUMERIC_COLUMNS,
        STATUS_COLUMNS,
        aligned_lines,
        status_table_rows,
        summary_line,
    )

    styled = sys.stdout.isatty()
    typer.echo(summary_line(status))
    if not status.devices:
        typer.echo("no devices enrolled")
        return
    lines = aligned_lines(STATUS_COLUMNS, status_table_rows(status), right=NUMERIC_COLUMNS)
    typer.echo(typer.style(lines[0], bold=True) if styled else lines[0])
    for text, device in zip(lines[1:], status.devices, strict=True):
        # Offline devices fade so the eye lands on the live fleet.
        typer.echo(typer.style(text, dim=True) if styled and not device.online else text)


# ``edgeops device revoke`` lives here until the device command group (enroll, show) exists;
# it then moves there unchanged.
device_app = typer.Typer(name="device", help="Enrolled devices.", no_args_is_help=True)
app.add_typer(device_app)


@device_app.command("revoke")
def revoke_command(
    device_id: Annotated[str, typer.Argument(help="The device to shut out.")],
    *,
    fleet: Annotated[
        Path, typer.Option("--fleet", envvar="EDGEOPS_FLEET", help=FLEET_OPTION_HELP)
    ] = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """Revoke DEVICE_ID: its certificates onto the CRL, it out of the ACL, broker reloaded.

    A broker running from the fleet folder gets SIGHUP and rereads both.
    """
    from edgeops.errors import ConfigError
    from edgeops.fleet.broker_config import revoke_device

    if not fleet.is_dir():
        raise ConfigError(f"expected a fleet folder at {fleet}, found none (edgeops fleet init)")
    result = revoke_device(fleet, device_id)
    data = {
        "device_id": result.device_id,
        "revoked_serials": list(result.serials),
        "broker_reloaded": result.reloaded,
    }

    def human(_: Any) -> None:
        typer.echo(
            f"revoked {device_id}: {len(result.serials)} certificate(s) on the CRL; "
            + (
                "the broker reloaded it"
                if result.reloaded
                else "no running broker found: start it, or send it SIGHUP, to apply"
            )
        )

    emit(data, as_json=as_json, human=human)
