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
    from rich.table import Table

    from edgeops.fleet.status import STATUS_COLUMNS, status_table_rows, summary_line

    console = make_console()
    console.print(summary_line(status), highlight=False)
    if not status.devices:
        console.print("no devices enrolled", style="dim")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in STATUS_COLUMNS:
        numeric = column in ("p95 ms", "errors", "drift", "temp °C")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    for row, device in zip(status_table_rows(status), status.devices, strict=True):
        table.add_row(*row, style=None if device.online else "dim")
    console.print(table, highlight=False)
