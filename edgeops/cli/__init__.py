"""The ``edgeops`` command line.

The CLI is thin (fastapi-cli's ``cli.py`` is the model): each command parses its options
and calls the core. The core raises :class:`~edgeops.errors.EdgeopsError`; :func:`main`
turns that into one line on stderr and exit code 1. Command modules import the core lazily
inside each command, so ``edgeops --help`` stays fast and a board never loads what it
does not run.
"""

from __future__ import annotations

import sys

import typer

from edgeops import __version__
from edgeops.errors import EdgeopsError

app = typer.Typer(
    name="edgeops",
    help="Convert a model, sign it, push it to a fleet of small devices and keep it healthy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"edgeops {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version_callback,
        is_eager=True,
        help="Print the edgeops version and exit.",
    ),
) -> None:
    """Convert a model, sign it, push it to a fleet of small devices and keep it healthy."""


def _register() -> None:
    # Each module adds its commands to ``app``; the import order is the --help order.
    from edgeops.cli import commands  # noqa: F401


def main() -> None:
    """Entry point of the ``edgeops`` script."""
    _register()
    try:
        app()
    except EdgeopsError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


__all__ = ["app", "main"]
