"""Output helpers shared by the commands: human text by default, JSON with ``--json``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import typer

JSON_OPTION_HELP = "Print machine-readable JSON instead of text."


def emit(data: Any, *, as_json: bool, human: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON when asked, else hand it to ``human`` to render."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        human(data)


def key_values(rows: dict[str, Any]) -> None:
    """Render a flat mapping as aligned ``key  value`` lines."""
    width = max((len(key) for key in rows), default=0)
    for key, value in rows.items():
        typer.echo(f"{key.ljust(width)}  {value}")
