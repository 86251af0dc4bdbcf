"""``edgeops push BUNDLE``: roll a bundle out to a group and wait for the outcome."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeops.cli import app
from edgeops.cli.output import JSON_OPTION_HELP, emit
from edgeops.cli.status import FLEET_OPTION_HELP, make_console

_COLUMNS = (
    ("pending", "pending"),
    ("waiting", "sent"),
    ("downloading", "downloading"),
    ("testing", "testing"),
    ("committed", "committed"),
    ("rolled_back", "rolled back"),
    ("failed", "failed"),
    ("silent", "silent"),
)


def _policy(
    *,
    canary: str | None,
    waves: str | None,
    soak: str | None,
    max_failures: str | None,
    max_error_rate: str | None,
    max_p95_regression: str | None,
    max_drift: float | None,
    wave_timeout: str | None,
) -> Any:
    from edgeops.errors import ConfigError
    from edgeops.fleet.rollout import RolloutPolicy, parse_duration, parse_percent, parse_waves

    fields: dict[str, Any] = {}
    if canary is not None:
        if canary.strip().endswith("%"):
            fields["canary_percent"] = parse_percent(canary)
        else:
            try:
                fields["canary_count"] = int(canary)
            except ValueError:
                raise ConfigError(
                    f"--canary: expected a count or a share like 5%, got {canary!r}"
                ) from None
    if waves is not None:
        fields["waves"] = parse_waves(waves)
    if soak is not None:
        fields["soak_s"] = parse_duration(soak)
    if wave_timeout is not None:
        fields["wave_timeout_s"] = parse_duration(wave_timeout)
    if max_failures is not None:
        fields["max_failures_percent"] = parse_percent(max_failures)
    if max_error_rate is not None:
        fields["max_error_rate_percent"] = parse_percent(max_error_rate)
    if max_p95_regression is not None:
        fields["max_p95_regression_percent"] = parse_percent(max_p95_regression)
    if max_drift is not None:
        fields["max_drift"] = max_drift
    return RolloutPolicy(**fields)


def progress_table(runner: Any) -> Any:
    """The live table: one row per wave, a column per device phase."""
    import time

    from rich.table import Table

    controller = runner.controller
    table = Table(
        title=f"rollout {controller.rollout_id} · {controller.status.value}",
        box=None,
        pad_edge=False,
        header_style="bold",
    )
    table.add_column("wave")
    table.add_column("stage")
    table.add_column("devices", justify="right")
    for _, label in _COLUMNS:
        table.add_column(label, justify="right")
    for wave in controller.progress(now=time.time()):
        table.add_row(
            "canary" if wave.canary else str(wave.index),
            wave.stage.value,
            str(wave.devices),
            *(str(wave.counts.get(key, 0)) for key, _ in _COLUMNS),
        )
    return table


def _summary(result: dict[str, Any]) -> None:
    console = make_console()
    status = result["status"]
    style = "green" if status == "succeeded" else "red" if status == "aborted" else "yellow"
    console.print(
        f"[{style}]rollout {result['rollout_id']} {status}[/]: {result['reason'] or '-'}",
        highlight=False,
    )
    for wave in result["waves"]:
        counts = wave["counts"]
        label = "canary" if wave["canary"] else f"wave {wave['index']}"
        parts = ", ".join(f"{counts[k]} {name}" for k, name in _COLUMNS if counts.get(k))
        console.print(f"  {label}: {wave['stage']} ({wave['devices']} devices: {parts or '-'})")
    if result["rolled_back"]:
        console.print(f"  rollback directives sent to {len(result['rolled_back'])} devices")
    if result["no_previous_bundle"]:
        console.print(
            f"  {len(result['no_previous_bundle'])} devices keep the new bundle: it was the "
            "group's first, there is no previous one to roll back to"
        )
    publishes = result["publishes"]
    console.print(
        f"  {publishes['chunks']} bundle publishes, {publishes['directives']} directives, "
        f"{result['elapsed_s']:.1f} s",
        highlight=False,
    )


@app.command("push")
def push_command(
    bundle: Annotated[Path, typer.Argument(help="The signed bundle file (edgeops bundle create).")],
    *,
    fleet: Annotated[
        Path, typer.Option("--fleet", envvar="EDGEOPS_FLEET", help=FLEET_OPTION_HELP)
    ] = Path("."),
    group: Annotated[str, typer.Option("--group", help="The group to roll out to.")] = "default",
    canary: Annotated[
        str | None,
        typer.Option("--canary", help="Canary wave: a device count (2) or a share (5%)."),
    ] = None,
    waves: Annotated[
        str | None, typer.Option("--waves", help="Cumulative wave shares, e.g. 10%,50%,100%.")
    ] = None,
    soak: Annotated[
        str | None, typer.Option("--soak", help="Health-watched wait after each wave, e.g. 5m.")
    ] = None,
    max_failures: Annotated[
        str | None,
        typer.Option("--max-failures", help="Failed or rolled-back share of a wave that aborts."),
    ] = None,
    max_error_rate: Annotated[
        str | None, typer.Option("--max-error-rate", help="Mean live error rate that aborts.")
    ] = None,
    max_p95_regression: Annotated[
        str | None,
        typer.Option(
            "--max-p95-regression",
            help="p95 latency increase over the previous bundle that aborts.",
        ),
    ] = None,
    max_drift: Annotated[
        float | None, typer.Option("--max-drift", help="Mean input drift (PSI) that aborts.")
    ] = None,
    wave_timeout: Annotated[
        str | None,
        typer.Option("--wave-timeout", help="When devices still silent count as failed, e.g. 30m."),
    ] = None,
    rollout_id: Annotated[
        str | None, typer.Option("--id", help="Rollout id (default: name-version-time).")
    ] = None,
    detach: Annotated[
        bool,
        typer.Option("--detach", help="Publish and record the rollout, leave it to fleet serve."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """Verify BUNDLE, publish it once, and roll it out wave by wave with health gates.

    Exits 0 when every wave passed, 1 when a gate aborted the rollout (the devices already
    updated are sent back to the previous bundle). Running the same push again continues
    an unfinished rollout of this bundle and group.
    """
    from rich.live import Live

    from edgeops.fleet.push import Push

    policy = _policy(
        canary=canary,
        waves=waves,
        soak=soak,
        max_failures=max_failures,
        max_error_rate=max_error_rate,
        max_p95_regression=max_p95_regression,
        max_drift=max_drift,
        wave_timeout=wave_timeout,
    )
    console = make_console()
    with Push(fleet, bundle, group=group, policy=policy, rollout_id=rollout_id) as push:
        runner = push.prepare()
        if push.resumed and not as_json:
            rid = runner.controller.rollout_id
            console.print(f"continuing unfinished rollout {rid}")
            if runner.status.value == "paused":
                console.print(f"it is paused: waiting for `edgeops rollout resume {rid}`")
        if detach:
            emit(push.result(detached=True).to_json(), as_json=as_json, human=_detached)
            return
        live = None if as_json else Live(progress_table(runner), console=console)
        if live is not None:
            push.on_tick = lambda r: live.update(progress_table(r))
            live.start()
        try:
            outcome = push.run()
        except KeyboardInterrupt:
            outcome = push.interrupt()
            if live is not None:
                live.stop()
            rid = outcome.rollout_id
            typer.echo(
                f"interrupted: rollout {rid} is {outcome.status} in the registry. Resume with "
                f"`edgeops rollout resume {rid}`, then run this push again (or `edgeops fleet "
                "serve`) to drive it.",
                err=True,
            )
            raise typer.Exit(130) from None
        finally:
            if live is not None:
                live.stop()
                if not console.is_terminal:
                    console.line()  # a terminal moves past the table itself; a pipe does not
    emit(outcome.to_json(), as_json=as_json, human=_summary)
    if not outcome.succeeded:
        raise typer.Exit(1)


def _detached(result: dict[str, Any]) -> None:
    typer.echo(
        f"rollout {result['rollout_id']} recorded for group {result['group']} "
        f"({result['publishes']['chunks']} bundle publishes); `edgeops fleet serve` runs it. "
        f"Follow it with `edgeops rollout status {result['rollout_id']}`."
    )
