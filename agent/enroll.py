"""Install a bootstrap archive (from ``edgeops device enroll``) into the agent's state folder.

The archive is a gzip tar holding exactly these regular files::

    agent.toml        the agent's configuration (paths relative to itself)
    root.json         the fleet's root of trust, trusted on first use
    tls/ca.crt        the fleet CA, to check the broker's certificate
    tls/device.crt    this device's certificate (CN = device id)
    tls/device.key    its private key (installed with mode 0600)

It is installed once: a state folder that already has ``agent.toml`` keeps its own files
(the root may have rotated since, and the updater's state must not be reset).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from edgeops.errors import ArchiveError, ConfigError
from edgeops.fsutil import atomic_write_bytes

#: Member name -> file mode. Anything else in the archive is refused.
MEMBERS: dict[str, int] = {
    "agent.toml": 0o644,
    "root.json": 0o644,
    "tls/ca.crt": 0o644,
    "tls/device.crt": 0o644,
    "tls/device.key": 0o600,
}
MAX_ARCHIVE_BYTES = 4 * 1024 * 1024
MAX_MEMBER_BYTES = 1024 * 1024


def read_bootstrap(data: bytes) -> dict[str, bytes]:
    """The members of a bootstrap archive; anything unexpected raises ArchiveError."""
    if len(data) > MAX_ARCHIVE_BYTES:
        raise ArchiveError(
            f"expected a bootstrap archive of at most {MAX_ARCHIVE_BYTES} bytes, got {len(data)}"
        )
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
            for info in archive:
                if info.name not in MEMBERS:
                    raise ArchiveError(
                        f"unexpected member {info.name!r} in the bootstrap archive "
                        f"(expected {', '.join(MEMBERS)})"
                    )
                if not info.isfile():
                    raise ArchiveError(f"bootstrap member {info.name!r} is not a regular file")
                if info.size > MAX_MEMBER_BYTES:
                    raise ArchiveError(f"bootstrap member {info.name!r} is {info.size} bytes")
                if info.name in members:
                    raise ArchiveError(f"bootstrap member {info.name!r} appears twice")
                extracted = archive.extractfile(info)
                assert extracted is not None  # a regular file
                members[info.name] = extracted.read(MAX_MEMBER_BYTES + 1)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ArchiveError(f"not a readable bootstrap archive: {exc}") from exc
    missing = sorted(set(MEMBERS) - set(members))
    if missing:
        raise ArchiveError(f"bootstrap archive lacks {', '.join(missing)}")
    return members


def install_bootstrap(archive: Path, state_dir: Path) -> Path:
    """Unpack ``archive`` into ``state_dir`` the first time; returns its ``agent.toml``."""
    config_path = Path(state_dir) / "agent.toml"
    if config_path.exists():
        return config_path
    try:
        data = Path(archive).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read bootstrap archive {archive}: {exc.strerror}") from exc
    members = read_bootstrap(data)
    # agent.toml goes last: its presence is what marks the folder as installed.
    for name, mode in MEMBERS.items():
        if name != "agent.toml":
            atomic_write_bytes(Path(state_dir) / name, members[name], mode=mode)
    text = _absolute_paths(members["agent.toml"].decode("utf-8"), Path(state_dir).resolve())
    atomic_write_bytes(config_path, text.encode("utf-8"), mode=MEMBERS["agent.toml"])
    return config_path


def _absolute_paths(text: str, state_dir: Path) -> str:
    """Pin the state folder and TLS paths that enrollment wrote relative to this folder.

    The installed ``agent.toml`` then still works when it is copied elsewhere, e.g. to
    ``/etc/edgeops/agent.toml`` where the systemd unit reads it (ProtectSystem=strict keeps
    ``/etc`` read-only, so the state must stay in the state folder).
    """

    def quoted(path: Path) -> str:
        return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'

    replacements = {
        'state_dir = "."': f"state_dir = {quoted(state_dir)}",
        'ca = "tls/ca.crt"': f"ca = {quoted(state_dir / 'tls' / 'ca.crt')}",
        'cert = "tls/device.crt"': f"cert = {quoted(state_dir / 'tls' / 'device.crt')}",
        'key = "tls/device.key"': f"key = {quoted(state_dir / 'tls' / 'device.key')}",
    }
    lines = [replacements.get(line.strip(), line) for line in text.splitlines()]
    return "\n".join(lines) + "\n"


def build_bootstrap(members: dict[str, bytes]) -> bytes:
    """The archive bytes for ``members`` (used by the fleet's enrollment)."""
    unknown = set(members) ^ set(MEMBERS)
    if unknown:
        raise ArchiveError(f"a bootstrap archive holds exactly {', '.join(MEMBERS)}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, mode in MEMBERS.items():
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            info.mode = mode
            archive.addfile(info, io.BytesIO(members[name]))
    return buffer.getvalue()


__all__ = ["MEMBERS", "build_bootstrap", "install_bootstrap", "read_bootstrap"]
