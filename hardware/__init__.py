"""Board profiles, board detection and install assets (systemd unit, install script).

* :func:`detect_board`, :func:`get_profile`, :func:`load_profiles` — profiles are data in
  ``boards.json`` (Raspberry Pi 3/4/5, Jetson Nano / Orin Nano, generic x86_64, aarch64 and
  armv7l); :meth:`BoardProfile.load_options` turns one into ``load_model`` arguments.
* :func:`asset_path` — ``assets/edgeops-agent.service`` and ``assets/install.sh``;
  :func:`unit_environment` — the variables the unit starts the agent with.

Only the standard library is imported.
"""

from __future__ import annotations

from edgeops.hardware.boards import (
    BoardProfile,
    LoadOptions,
    asset_path,
    detect_board,
    get_profile,
    load_profiles,
    normalize_machine,
    unit_environment,
)

__all__ = [
    "BoardProfile",
    "LoadOptions",
    "asset_path",
    "detect_board",
    "get_profile",
    "load_profiles",
    "normalize_machine",
    "unit_environment",
]
