"""Registers every command group on the root app, in --help order."""

from __future__ import annotations

from edgeops.cli import convert  # noqa: F401 - edgeops convert
