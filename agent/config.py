"""The agent's configuration: ``agent.toml``, read with :mod:`tomllib` into a frozen object.

::

    [device]
    id = "cam-01"               # also the MQTT client id and the certificate's CN
    fleet = "acme"
    groups = ["cams"]
    board = "auto"              # a board profile name, or "auto" to detect it

    [broker]
    url = "mqtts://broker.example:8883"
    ca = "tls/ca.crt"           # paths are relative to the folder of agent.toml
    cert = "tls/device.crt"
    key = "tls/device.key"

    [agent]
    state_dir = "."             # slots, state.json, root.json, telemetry queue
    telemetry_interval_s = 30

    [api]
    enabled = true
    host = "127.0.0.1"
    port = 8321                 # 0: any free port
    unix_socket = ""            # a path: serve there instead of TCP

    [update]
    max_attempts = 3            # the loop guard
    trial_window_s = 60         # defaults where the directive's policy sets none
    max_error_rate = 0.05
    min_requests = 20
    trial_check_interval_s = 0.2

    [caps]
    max_bundle_mb = 512
    max_unpacked_mb = 1024
    telemetry_max_entries = 10000
    telemetry_max_mb = 16

Every field is validated on creation; unknown keys are refused so that a typo does not
silently fall back to a default.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeops.errors import ConfigError

DEFAULT_API_PORT = 8321
#: The test hook: the agent SIGKILLs itself right after persisting this update phase.
CRASH_ENV = "EDGEOPS_TEST_CRASH_AT"

_SECTIONS: dict[str, frozenset[str]] = {
    "device": frozenset({"id", "fleet", "groups", "board"}),
    "broker": frozenset({"url", "ca", "cert", "key", "keepalive"}),
    "agent": frozenset({"state_dir", "telemetry_interval_s", "model_name", "runtime"}),
    "api": frozenset({"enabled", "host", "port", "unix_socket"}),
    "update": frozenset(
        {
            "max_attempts",
            "trial_window_s",
            "max_error_rate",
            "max_p95_ms",
            "min_requests",
            "trial_check_interval_s",
            "download_timeout_s",
            "latency_runs",
        }
    ),
    "caps": frozenset(
        {"max_bundle_mb", "max_unpacked_mb", "telemetry_max_entries", "telemetry_max_mb"}
    ),
    "test": frozenset({"crash_at"}),
}


@dataclass(frozen=True, kw_only=True)
class Caps:
    """Bounds on what the outside world can make the agent store."""

    max_bundle_bytes: int = 512 * 2**20
    max_unpacked_bytes: int = 1024 * 2**20
    telemetry_max_entries: int = 10_000
    telemetry_max_bytes: int = 16 * 2**20

    def __post_init__(self) -> None:
        for name in (
            "max_bundle_bytes",
            "max_unpacked_bytes",
            "telemetry_max_entries",
            "telemetry_max_bytes",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"caps.{name}: expected >= 1, got {getattr(self, name)}")


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """Everything one agent needs; many can live in one process (a simulator)."""

    device_id: str
    fleet: str
    broker_url: str
    state_dir: Path
    groups: tuple[str, ...] = ()
    board: str = "auto"
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    keepalive: int = 30
    telemetry_interval_s: float = 30.0
    model_name: str | None = None
    runtime: str = "auto"
    api_enabled: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = DEFAULT_API_PORT
    api_socket: Path | None = None
    max_attempts: int = 3
    trial_window_s: float = 60.0
    max_error_rate: float = 0.05
    max_p95_ms: float | None = None
    min_requests: int = 20
    trial_check_interval_s: float = 0.2
    download_timeout_s: float = 600.0
    latency_runs: int = 20
    caps: Caps = field(default_factory=Caps)
    crash_at: str | None = None

    def __post_init__(self) -> None:
        from edgeops.protocol.topics import validate_id

        try:
            validate_id(self.device_id, "device id")
            validate_id(self.fleet, "fleet")
            for group in self.groups:
                validate_id(group, "group")
        except Exception as exc:  # ProtocolError: an InputError, but a config mistake here
            raise ConfigError(str(exc)) from exc
        if not self.broker_url.startswith(("mqtt://", "mqtts://")):
            raise ConfigError(
                f"broker.url: expected mqtt://host:port or mqtts://host:port, got "
                f"{self.broker_url!r}"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("broker: a client certificate needs both cert and key")
        for name in ("telemetry_interval_s", "trial_check_interval_s", "download_timeout_s"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ConfigError(f"{name}: expected a positive number of seconds, got {value}")
        if self.max_attempts < 1:
            raise ConfigError(f"update.max_attempts: expected >= 1, got {self.max_attempts}")
        if not 0 <= self.api_port < 65536:
            raise ConfigError(f"api.port: expected 0-65535, got {self.api_port}")
        if self.crash_at is not None:
            from edgeops.agent.updater import Phase

            if self.crash_at not in {p.value for p in Phase}:
                raise ConfigError(f"test.crash_at: expected an update phase, got {self.crash_at!r}")

    # ------------------------------------------------------------------ reading

    @classmethod
    def load(cls, path: Path, *, environ: Mapping[str, str] | None = None) -> AgentConfig:
        """Read ``agent.toml``; relative paths are taken from its folder."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read agent config {path}: {exc.strerror or exc}") from exc
        return cls.from_toml(text, base_dir=Path(path).resolve().parent, environ=environ)

    @classmethod
    def from_toml(
        cls, text: str, *, base_dir: Path, environ: Mapping[str, str] | None = None
    ) -> AgentConfig:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"agent config is not valid TOML: {exc}") from exc
        return cls.from_mapping(data, base_dir=base_dir, environ=environ)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any],
        *,
        base_dir: Path,
        environ: Mapping[str, str] | None = None,
    ) -> AgentConfig:
        for section, value in data.items():
            if section not in _SECTIONS:
                raise ConfigError(f"agent config: unknown section [{section}]")
            if not isinstance(value, Mapping):
                raise ConfigError(f"agent config: [{section}] must be a table")
            unknown = set(value) - _SECTIONS[section]
            if unknown:
                raise ConfigError(
                    f"agent config: unknown key(s) in [{section}]: {', '.join(sorted(unknown))}"
                )

        def get(section: str, key: str, default: Any = None) -> Any:
            return data.get(section, {}).get(key, default)

        def path(section: str, key: str, default: str | None = None) -> Path | None:
            value = get(section, key, default)
            if value in (None, ""):
                return None
            if not isinstance(value, str):
                raise ConfigError(f"{section}.{key}: expected a path string, got {value!r}")
            try:
                candidate = Path(value).expanduser()
            except RuntimeError as exc:  # "~name/..." for a user that does not exist
                raise ConfigError(f"{section}.{key}: cannot expand {value!r}: {exc}") from exc
            return candidate if candidate.is_absolute() else base_dir / candidate

        required = {
            ("device", "id"),
            ("device", "fleet"),
            ("broker", "url"),
        }
        for section, key in sorted(required):
            if get(section, key) in (None, ""):
                raise ConfigError(f"agent config: [{section}] {key} is required")
        groups = get("device", "groups", [])
        if isinstance(groups, str):
            groups = [groups]
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ConfigError(f"device.groups: expected a list of names, got {groups!r}")
        env = environ if environ is not None else {}
        crash_at = env.get(CRASH_ENV) or get("test", "crash_at")
        mb = 2**20
        defaults = Caps()
        try:
            caps = Caps(
                max_bundle_bytes=int(get("caps", "max_bundle_mb", defaults.max_bundle_bytes / mb))
                * mb,
                max_unpacked_bytes=int(
                    get("caps", "max_unpacked_mb", defaults.max_unpacked_bytes / mb)
                )
                * mb,
                telemetry_max_entries=int(
                    get("caps", "telemetry_max_entries", defaults.telemetry_max_entries)
                ),
                telemetry_max_bytes=int(
                    get("caps", "telemetry_max_mb", defaults.telemetry_max_bytes / mb)
                )
                * mb,
            )
            p95 = get("update", "max_p95_ms")
            return cls(
                device_id=str(get("device", "id")),
                fleet=str(get("device", "fleet")),
                groups=tuple(groups),
                board=str(get("device", "board", "auto")),
                broker_url=str(get("broker", "url")),
                tls_ca=path("broker", "ca"),
                tls_cert=path("broker", "cert"),
                tls_key=path("broker", "key"),
                keepalive=int(get("broker", "keepalive", 30)),
                state_dir=path("agent", "state_dir", ".") or base_dir,
                telemetry_interval_s=float(get("agent", "telemetry_interval_s", 30.0)),
                model_name=get("agent", "model_name"),
                runtime=str(get("agent", "runtime", "auto")),
                api_enabled=bool(get("api", "enabled", True)),
                api_host=str(get("api", "host", "127.0.0.1")),
                api_port=int(get("api", "port", DEFAULT_API_PORT)),
                api_socket=path("api", "unix_socket"),
                max_attempts=int(get("update", "max_attempts", 3)),
                trial_window_s=float(get("update", "trial_window_s", 60.0)),
                max_error_rate=float(get("update", "max_error_rate", 0.05)),
                max_p95_ms=None if p95 is None else float(p95),
                min_requests=int(get("update", "min_requests", 20)),
                trial_check_interval_s=float(get("update", "trial_check_interval_s", 0.2)),
                download_timeout_s=float(get("update", "download_timeout_s", 600.0)),
                latency_runs=int(get("update", "latency_runs", 20)),
                caps=caps,
                crash_at=crash_at or None,
            )
        except (TypeError, ValueError, OverflowError) as exc:
            # OverflowError: int() of a TOML float that is infinite (port = 8e499; found
            # by fuzzing)
            raise ConfigError(f"agent config: {exc}") from exc

    # ------------------------------------------------------------------ writing


def render_toml(
    *,
    device_id: str,
    fleet: str,
    broker_url: str,
    groups: tuple[str, ...] = (),
    board: str = "auto",
    tls: bool = True,
    state_dir: str = ".",
    api_host: str = "127.0.0.1",
    api_port: int = DEFAULT_API_PORT,
    telemetry_interval_s: float = 30.0,
) -> str:
    """The ``agent.toml`` that enrollment writes (TLS files under ``tls/`` beside it)."""

    def q(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "# Written by `edgeops device enroll`; paths are relative to this file.",
        "[device]",
        f"id = {q(device_id)}",
        f"fleet = {q(fleet)}",
        "groups = [" + ", ".join(q(g) for g in groups) + "]",
        f"board = {q(board)}",
        "",
        "[broker]",
        f"url = {q(broker_url)}",
    ]
    if tls:
        lines += ['ca = "tls/ca.crt"', 'cert = "tls/device.crt"', 'key = "tls/device.key"']
    lines += [
        "",
        "[agent]",
        f"state_dir = {q(state_dir)}",
        f"telemetry_interval_s = {telemetry_interval_s}",
        "",
        "[api]",
        f"host = {q(api_host)}",
        f"port = {api_port}",
        "",
    ]
    return "\n".join(lines)


__all__ = ["CRASH_ENV", "DEFAULT_API_PORT", "AgentConfig", "Caps", "render_toml"]
