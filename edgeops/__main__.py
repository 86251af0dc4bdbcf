"""``python -m edgeops`` runs the CLI."""

from edgeops.cli import main

main()
