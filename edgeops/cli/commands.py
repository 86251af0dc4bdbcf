"""Registers every command group on the root app, in --help order."""

from __future__ import annotations
