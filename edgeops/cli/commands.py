"""Registers every command group on the root app, in --help order."""

from __future__ import annotations

from edgeops.cli import (
    convert,  # noqa: F401 - edgeops convert
    rollout,  # noqa: F401 - edgeops rollout list|status|pause|resume|abort
    status,  # noqa: F401 - edgeops status
)
