"""``edgeops fleet serve``: the fleet manager as a service (added to ``fleet_app``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgeops.cli.fleet import fleet_app
from edgeops.cli.status import FLEET_OPTION_HELP


@fleet_app.command("serve")
def serve_command(
    *,
    fleet: Annotated[
        Path, typer.Option("--fleet", envvar="EDGEOPS_FLEET", help=FLEET_OPTION_HELP)
    ] = Path("."),
    http: Annotated[
        str, typer.Option("--http", help="HOST:PORT for the API, dashboard and /metrics.")
    ] = "127.0.0.1:8080",
    share_group: Annotated[
        str | None,
        typer.Option(
            "--share-group",
            help="Share ingestion with other instances (MQTT 5 shared subscription).",
        ),
    ] = None,
    rollouts: Annotated[
        bool,
        typer.Option(
            "--rollouts/--no-rollouts",
            help="Drive the registry's rollouts (a lease lets one instance drive each).",
        ),
    ] = True,
    cert: Annotated[
        Path | None,
        typer.Option(
            "--cert",
            help="Manager certificate (default: the fleet's tls/manager.crt); a second "
            "instance needs its own, named in [broker] managers.",
        ),
    ] = None,
    key: Annotated[
        Path | None, typer.Option("--key", help="Its private key (default: tls/manager.key).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Ingest device reports, drive rollouts, serve the JSON API, a dashboard and
    Prometheus /metrics until SIGTERM or Ctrl-C."""
    import logging
    import signal
    import threading

    from edgeops.errors import ConfigError
    from edgeops.fleet.service import FleetService, ServiceConfig, parse_http_address

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise ConfigError(f"expected a log level debug, info, warning or error, got {log_level!r}")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = parse_http_address(http)
    config = ServiceConfig(
        fleet_dir=fleet,
        http_host=host,
        http_port=port,
        share_group=share_group,
        run_rollouts=rollouts,
        manager_cert=cert,
        manager_key=key,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    service = FleetService(config)
    service.start()
    typer.echo(f"edgeops fleet serve: {service.url} (fleet {service.fleet.name})", err=True)
    service.serve_until(stop)
    typer.echo("edgeops fleet serve: stopped", err=True)
