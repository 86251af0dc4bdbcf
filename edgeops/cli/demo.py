"""``edgeops demo``: the whole story on this machine (the logic is :mod:`edgeops.demo`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeops.cli import app
from edgeops.cli.output import JSON_OPTION_HELP
from edgeops.demo import NullView


class RichView:
    """The demo on a terminal: step headings, the conversion report, live rollout tables."""

    def __init__(self) -> None:
        from edgeops.cli.status import make_console

        self.console = make_console()
        self._live: Any = None

    def step(self, number: int, title: str) -> None:
        self.console.print()
        self.console.rule(f"[bold]{number}. {title}", align="left")

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def check(self, check: Any) -> None:
        mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
        self.console.print(f"{mark} {check.name}: {check.detail}", highlight=False)

    def conversion(self, summary: Mapping[str, Any], report: Mapping[str, Any]) -> None:
        from edgeops.cli.convert import _renderer

        seconds = summary["seconds"].get("total", 0.0)
        self.say(
            f"converted in {seconds:.1f} s: {summary['op_count']} TFLite ops, "
            f"{summary['calibration_samples']} photos for calibration, "
            f"{summary['holdout_samples']} held out for validation"
        )
        render = _renderer()
        if render is not None:
            render(report)

    def rollout_begin(self, runner: Any) -> None:
        from rich.live import Live

        from edgeops.cli.push import progress_table

        self._live = Live(progress_table(runner), console=self.console, refresh_per_second=4)
        self._live.start()

    def rollout_tick(self, runner: Any) -> None:
        from edgeops.cli.push import progress_table

        if self._live is not None:
            self._live.update(progress_table(runner))

    def rollout_end(self, result: Any) -> None:
        from edgeops.cli.push import _summary

        live, self._live = self._live, None
        if live is not None:
            live.stop()
            if not self.console.is_terminal:
                self.console.print()  # a log gets the last table without a line end
        _summary(result.to_json())

    def fleet_status(self, status: Any) -> None:
        from edgeops.cli.status import _print_status

        self.say("the fleet as the service's registry sees it (edgeops status):")
        _print_status(status)

    def finished(self, result: Any, *, serving: bool) -> None:
        self.console.print()
        failed = [check for check in result.checks if not check.ok]
        if failed:
            names = ", ".join(c.name for c in failed)
            self.say(f"[red]the demo did not go as expected[/]: {names}")
        else:
            self.say(
                f"[green]demo complete[/] in {result.seconds.get('story', 0.0):.0f} s: "
                f"{len(result.checks)} checks passed"
            )
        self.say(f"fleet, devices, bundles and broker log are in {result.workdir}")
        if serving:
            self.say(
                f"[bold]dashboard: {result.dashboard_url}[/]  (the devices keep serving and "
                "reporting; Ctrl-C stops the service, the devices and the broker)"
            )


class JsonView(NullView):
    """``--json``: nothing on stdout but the result; where the dashboard is, on stderr."""

    def finished(self, result: Any, *, serving: bool) -> None:
        if serving:
            typer.echo(
                f"dashboard: {result.dashboard_url} (Ctrl-C stops; the JSON result follows)",
                err=True,
            )


@app.command("demo")
def demo_command(
    *,
    devices: Annotated[
        int, typer.Option("--devices", help="How many simulated devices to run.")
    ] = 12,
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Where the fleet, devices and bundles go (kept)."),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(
            "--broker",
            help="Use this running broker (mqtt://HOST:PORT) instead of starting Mosquitto "
            "with the fleet's own TLS and ACL config.",
        ),
    ] = None,
    http: Annotated[
        str, typer.Option("--http", help="HOST:PORT for the dashboard, API and /metrics.")
    ] = "127.0.0.1:8080",
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Exit after the story instead of serving.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """Convert a real YOLOv8n to int8, sign it, push it to simulated devices in a canary
    and waves, push a broken release and watch the gates abort and roll it back, then
    serve the dashboard until Ctrl-C.

    Real and local: the fleet's keys and CA, Mosquitto with TLS client certificates, one
    agent per device running the converted model. The one simulated fault: the devices
    serve the broken release 500 ms slower. Exits 0 when every step went as expected.
    """
    import json
    import signal
    import threading

    from edgeops.demo import Demo, DemoOptions
    from edgeops.fleet.service import parse_http_address

    host, port = parse_http_address(http)
    options = DemoOptions(
        devices=devices,
        workdir=workdir,
        broker_url=broker,
        http_host=host,
        http_port=port,
        wait=not no_wait,
        progress=not as_json,
    )
    view: Any = JsonView() if as_json else RichView()
    demo = Demo(options, view)
    if not as_json:
        view.say(f"edgeops demo in {demo.workdir}")
    stop = threading.Event()

    def on_sigterm(signum: int, frame: object) -> None:
        stop.set()
        if demo.result.dashboard_url is None:
            # Mid-story: unwind like Ctrl-C, so everything started is stopped.
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = demo.run(stop)
    except KeyboardInterrupt:
        if options.wait and demo.result.dashboard_url is not None:
            result = demo.result  # Ctrl-C is how the serving ends
        else:
            typer.echo(f"interrupted; the fleet stays in {demo.workdir}", err=True)
            raise typer.Exit(130) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, sort_keys=True, default=str))
    elif options.wait:
        view.say("stopped")
    if not result.ok:
        raise typer.Exit(1)
