"""``edgeops rollout list|status|pause|resume|abort``: rollouts as the registry has them.

Pause, resume and abort do not touch MQTT: they queue a request in the registry, and the
process running the rollout (``edgeops push`` or ``edgeops fleet serve``) acts on it at its
next step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeops.cli import app
from edgeops.cli.output import JSON_OPTION_HELP, emit
from edgeops.cli.status import FLEET_OPTION_HELP, make_console, open_fleet_registry

rollout_app = typer.Typer(
    name="rollout",
    help="List rollouts, show one, or pause, resume or abort it.",
    no_args_is_help=True,
)
app.add_typer(rollout_app)

FleetOption = Annotated[
    Path, typer.Option("--fleet", envvar="EDGEOPS_FLEET", help=FLEET_OPTION_HELP)
]
JsonOption = Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)]


@rollout_app.command("list")
def list_command(
    *,
    fleet: FleetOption = Path("."),
    active: Annotated[bool, typer.Option(help="Only running and paused rollouts.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Rollouts, newest first."""
    from edgeops.fleet.status import list_rollouts

    store = open_fleet_registry(fleet)
    try:
        views = list_rollouts(store, active_only=active)
    finally:
        store.close()
    emit([v.to_json() for v in views], as_json=as_json, human=_print_list)


def _print_list(views: list[dict[str, Any]]) -> None:
    from rich.table import Table

    console = make_console()
    if not views:
        console.print("no rollouts")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("id", "group", "bundle", "status", "waves", "created", "reason"):
        table.add_column(column, no_wrap=column != "reason")
    for view in views:
        waves = view["waves"]
        passed = sum(1 for w in waves if w["stage"] == "passed")
        table.add_row(
            view["rollout_id"],
            view["group"],
            view["bundle"][:12],
            view["status"],
            f"{passed}/{len(waves)}",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(view["created"])),
            view["reason"],
        )
    console.print(table, highlight=False)


@rollout_app.command("status")
def status_command(
    rollout_id: Annotated[
        str | None, typer.Argument(help="Rollout id; default: the newest active one.")
    ] = None,
    *,
    fleet: FleetOption = Path("."),
    as_json: JsonOption = False,
) -> None:
    """One rollout: its waves with per-phase counts, and each device's phase."""
    from edgeops.errors import ConfigError
    from edgeops.fleet.status import rollout_status

    store = open_fleet_registry(fleet)
    try:
        view = rollout_status(store, rollout_id)
    finally:
        store.close()
    if view is None:
        raise ConfigError(f"no rollout {rollout_id!r}" if rollout_id else "no rollouts yet")
    emit(view.to_json(), as_json=as_json, human=_print_status)


_PHASES = ("pending", "waiting", "downloading", "testing", "committed", "rolled_back", "failed")


def _print_status(view: dict[str, Any]) -> None:
    from rich.table import Table

    console = make_console()
    line = f"rollout {view['rollout_id']} · group {view['group']} · {view['status']}"
    if view["reason"]:
        line += f" · {view['reason']}"
    if view["pending_requests"]:
        line += f" · requested: {', '.join(view['pending_requests'])}"
    console.print(line, highlight=False)
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("wave")
    table.add_column("stage")
    table.add_column("devices", justify="right")
    for phase in (*_PHASES, "silent"):
        table.add_column(phase.replace("_", " "), justify="right")
    for wave in view["waves"]:
        counts = wave["counts"]
        table.add_row(
            "canary" if wave["canary"] else str(wave["index"]),
            wave["stage"],
            str(wave["devices"]),
            *(str(counts.get(phase, 0)) for phase in (*_PHASES, "silent")),
        )
    console.print(table, highlight=False)


def _request(action: str, rollout_id: str, fleet: Path, reason: str, as_json: bool) -> None:
    store = open_fleet_registry(fleet)
    try:
        request = store.add_rollout_request(rollout_id, action, reason=reason, now=time.time())
    finally:
        store.close()
    emit(
        {"rollout_id": rollout_id, "request": action, "request_id": request.request_id},
        as_json=as_json,
        human=lambda _: typer.echo(
            f"{action} requested for rollout {rollout_id}; the process running it acts on "
            "its next step"
        ),
    )


@rollout_app.command("pause")
def pause_command(
    rollout_id: Annotated[str, typer.Argument(help="Rollout id.")],
    *,
    fleet: FleetOption = Path("."),
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Start no further wave; the running wave is still watched and can still abort."""
    _request("pause", rollout_id, fleet, reason, as_json)


@rollout_app.command("resume")
def resume_command(
    rollout_id: Annotated[str, typer.Argument(help="Rollout id.")],
    *,
    fleet: FleetOption = Path("."),
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Carry on with a paused rollout."""
    _request("resume", rollout_id, fleet, reason, as_json)


@rollout_app.command("abort")
def abort_command(
    rollout_id: Annotated[str, typer.Argument(help="Rollout id.")],
    *,
    fleet: FleetOption = Path("."),
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "aborted by hand",
    as_json: JsonOption = False,
) -> None:
    """Stop the rollout and roll back every device already sent the bundle."""
    _request("abort", rollout_id, fleet, reason, as_json)
