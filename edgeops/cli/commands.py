"""Registers every command group on the root app, in --help order."""

from __future__ import annotations

from edgeops.cli import (
    app,
    convert,  # noqa: F401 - edgeops convert
    demo,  # noqa: F401 - edgeops demo
    device,  # noqa: F401 - edgeops device enroll (on the device group of status)
    fleet_serve,  # noqa: F401 - edgeops fleet serve (on fleet_app)
    push,  # noqa: F401 - edgeops push
    rollout,  # noqa: F401 - edgeops rollout list|status|pause|resume|abort
    simulate,  # noqa: F401 - edgeops simulate
    status,  # noqa: F401 - edgeops status
)
from edgeops.cli.agent import agent_app
from edgeops.cli.bundle import bundle_app
from edgeops.cli.fleet import fleet_app
from edgeops.cli.keys import keys_app

app.add_typer(fleet_app, name="fleet")
app.add_typer(keys_app, name="keys")
app.add_typer(bundle_app, name="bundle")
app.add_typer(agent_app, name="agent")
