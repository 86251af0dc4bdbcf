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


@app.command("watch")
def watch_command(
    *,
    fleet: Annotated[
        Path, typer.Option("--fleet", envvar="EDGEOPS_FLEET", help=FLEET_OPTION_HELP)
    ] = Path("."),
    group: Annotated[str | None, typer.Option("--group", "-g", help="Only this group.")] = None,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.", min=0.2)] = 2.0,
    count: Annotated[int, typer.Option(help="Stop after this many refreshes (0: never).")] = 0,
) -> None:
    """``edgeops status``, refreshed until interrupted, with the active rollouts below."""
    import sys
    import time

    from edgeops.fleet.status import fleet_status, list_rollouts

    refreshes = 0
    while True:
        store = open_fleet_registry(fleet)
        try:
            status = fleet_status(store, group=group)
            rollouts = list_rollouts(store, active_only=True)
        finally:
            store.close()
        if sys.stdout.isatty():
            typer.echo("\x1b[2J\x1b[H", nl=False)  # clear the screen, cursor home
        typer.echo(time.strftime("%H:%M:%S") + f"  every {interval:g}s, Ctrl-C to stop")
        _print_status(status)
        for view in rollouts:
            waves = ", ".join(
                f"{'canary' if w['canary'] else w['index']}: {w['stage']}" for w in view.waves
            )
            typer.echo(f"rollout {view.rollout_id} ({view.group}) {view.status} · {waves}")
        refreshes += 1
        if count and refreshes >= count:
            return
        time.sleep(interval)


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


@device_app.command("show")
def show_command(
    device_id: Annotated[str, typer.Argument(help="The device.")],
    *,
    fleet: Annotated[
        Path, typer.Option("--fleet", envvar="EDGEOPS_FLEET", help=FLEET_OPTION_HELP)
    ] = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """One device: state, update history with reasons, recent health."""
    from edgeops.errors import ConfigError
    from edgeops.fleet.status import device_detail

    store = open_fleet_registry(fleet)
    try:
        detail = device_detail(store, device_id)
    finally:
        store.close()
    if detail is None:
        raise ConfigError(f"no device {device_id!r} in the registry")
    emit(detail.to_json(), as_json=as_json, human=_print_device)


def _print_device(data: dict[str, Any]) -> None:
    import time

    from edgeops.fleet.status import ago, aligned_lines

    now = time.time()
    device = data["device"]
    typer.echo(
        f"{device['device_id']} · group {device['group']} · "
        f"{'online' if device['online'] else 'offline'} · bundle {device['bundle'] or '-'} · "
        f"board {device['board'] or '-'} · agent {device['agent_version'] or '-'} · "
        f"last seen {ago(device['last_seen'], now)}" + (" · REVOKED" if device["revoked"] else "")
    )
    typer.echo("\nupdate history")
    rows: list[tuple[str, ...]] = [
        (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["ts"])),
            e["kind"],
            e["state"] or "-",
            (e["bundle"] or "-")[:12],
            str(e["directive_seq"] or "-"),
            e["reason"],
        )
        for e in data["events"]
    ]
    columns: tuple[str, ...] = ("time", "kind", "state", "bundle", "directive", "reason")
    for line in aligned_lines(columns, rows) if rows else ["no events"]:
        typer.echo(line)
    typer.echo("\nrecent health")
    rows = [
        (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t["ts"])),
            "-" if t["p95_ms"] is None else f"{t['p95_ms']:.1f}",
            "-" if t["error_rate"] is None else f"{t['error_rate'] * 100:.2f}%",
            "-" if t["drift"] is None else f"{t['drift']:.3f}",
            "-" if t["temp_c"] is None else f"{t['temp_c']:.0f}",
        )
        for t in data["health"]
    ]
    columns = ("time", "p95 ms", "errors", "drift", "temp °C")
    right = frozenset(columns[1:])
    for line in aligned_lines(columns, rows, right=right) if rows else ["no telemetry"]:
        typer.echo(line)
