"""``edgeops agent run``: the device daemon in the foreground (same as ``edgeops-agent``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

agent_app = typer.Typer(name="agent", help="The device agent.", no_args_is_help=True)


@agent_app.command("run")
def run_command(
    *,
    config: Annotated[Path | None, typer.Option("--config", help="agent.toml to run with.")] = None,
    bootstrap: Annotated[
        Path | None,
        typer.Option("--bootstrap", help="Bootstrap archive, unpacked into --state-dir once."),
    ] = None,
    state_dir: Annotated[
        Path,
        typer.Option("--state-dir", envvar="STATE_DIRECTORY", help="Where --bootstrap unpacks."),
    ] = Path("/var/lib/edgeops"),
) -> None:
    """Run the agent until SIGTERM: updates, inference API, telemetry."""
    import logging

    from edgeops.agent.daemon import run
    from edgeops.errors import ConfigError

    if (config is None) == (bootstrap is None):
        raise ConfigError("expected exactly one of --config FILE or --bootstrap FILE")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    raise typer.Exit(run(config_path=config, bootstrap=bootstrap, state_dir=state_dir))
