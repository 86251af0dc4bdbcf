"""Board profiles, board detection and install assets (systemd unit, install script)."""
