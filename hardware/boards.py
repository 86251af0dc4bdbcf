"""Board profiles (data in ``boards.json``) and detection of the board the agent runs on.

A profile says what a board is (architectures, cores, RAM, thermal sensor) and how to run
models on it (preferred runtime, delegates, threads, recommended quantization).
:func:`detect_board` reads ``/proc/device-tree/model`` (Raspberry Pi, Jetson),
``/etc/nv_tegra_release`` (Jetson, even without a device tree) and ``platform.machine()``,
under a ``root`` folder so tests can use a fake one.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from edgeops.errors import ConfigError

_RUNTIMES = ("ai_edge_litert", "tflite_runtime", "onnxruntime")
_QUANTIZATIONS = ("float32", "float16", "dynamic", "int8")
# platform.machine() spellings of the same architecture
_MACHINE_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "armv8l": "armv7l", "armv6l": "armv7l"}


@dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """Keyword arguments for :func:`edgeops.agent.runtimes.load_model` on a board."""

    runtime: str
    threads: int
    delegates: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class BoardProfile:
    """One board. ``None`` for ``cores``, ``ram_mb`` or ``threads`` means "ask the machine"."""

    name: str
    description: str
    architectures: tuple[str, ...]
    cores: int | None
    ram_mb: int | None
    runtime: str
    delegates: tuple[str, ...]
    threads: int | None
    quantization: str
    thermal_path: str | None
    agent_memory_max_mb: int
    model_match: tuple[str, ...] = ()
    tegra_release: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.runtime not in _RUNTIMES:
            raise ConfigError(f"board {self.name}: expected a runtime in {_RUNTIMES}")
        if self.quantization not in _QUANTIZATIONS:
            raise ConfigError(f"board {self.name}: expected a quantization in {_QUANTIZATIONS}")
        if not self.architectures:
            raise ConfigError(f"board {self.name}: no architecture")

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> BoardProfile:
        """Build a profile from one entry of ``boards.json``."""
        try:
            return cls(
                name=value["name"],
                description=value["description"],
                architectures=tuple(value["architectures"]),
                cores=value["cores"],
                ram_mb=value["ram_mb"],
                runtime=value["runtime"],
                delegates=tuple(value["delegates"]),
                threads=value["threads"],
                quantization=value["quantization"],
                thermal_path=value["thermal_path"],
                agent_memory_max_mb=value["agent_memory_max_mb"],
                model_match=tuple(value.get("model_match", ())),
                tegra_release=tuple(value.get("tegra_release", ())),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"malformed board profile {value.get('name')!r}: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        """The profile as in ``boards.json``."""
        return {
            "name": self.name,
            "description": self.description,
            "architectures": list(self.architectures),
            "cores": self.cores,
            "ram_mb": self.ram_mb,
            "runtime": self.runtime,
            "delegates": list(self.delegates),
            "threads": self.threads,
            "quantization": self.quantization,
            "thermal_path": self.thermal_path,
            "agent_memory_max_mb": self.agent_memory_max_mb,
            "model_match": list(self.model_match),
            "tegra_release": list(self.tegra_release),
        }

    def thread_count(self) -> int:
        """``threads``, else the machine's CPU count."""
        return self.threads or os.cpu_count() or 1

    def load_options(self, model_path: Path, *, machine: str | None = None) -> LoadOptions:
        """How to load ``model_path`` here: runtime, threads and delegates.

        The profile's runtime and delegates apply to the model format they belong to; a
        ``.onnx`` bundle on a TFLite board runs on onnxruntime's CPU provider, a ``.tflite``
        bundle on a Jetson on LiteRT. On 32-bit Arm, ``ai_edge_litert`` (no armv7l
        wheels) becomes ``tflite_runtime``.
        """
        arch = normalize_machine(machine or platform.machine())
        onnx = model_path.suffix.lower() == ".onnx"
        if onnx:
            runtime = "onnxruntime"
            delegates = self.delegates if self.runtime == "onnxruntime" else ()
        else:
            runtime = self.runtime if self.runtime != "onnxruntime" else "ai_edge_litert"
            delegates = self.delegates if self.runtime != "onnxruntime" else ()
            if arch == "armv7l" and runtime == "ai_edge_litert":
                runtime = "tflite_runtime"
        return LoadOptions(runtime=runtime, threads=self.thread_count(), delegates=delegates)


def normalize_machine(machine: str) -> str:
    """``platform.machine()`` as the architecture names the profiles use."""
    lowered = machine.lower()
    return _MACHINE_ALIASES.get(lowered, lowered)


@cache
def load_profiles() -> dict[str, BoardProfile]:
    """Every shipped profile by name (read once from the package's ``boards.json``)."""
    data = json.loads(_boards_text())
    if data.get("version") != 1:
        raise ConfigError(f"expected boards.json version 1, got {data.get('version')!r}")
    profiles = [BoardProfile.from_json(entry) for entry in data["boards"]]
    return {profile.name: profile for profile in profiles}


def get_profile(name: str) -> BoardProfile:
    """The profile called ``name``; :class:`ConfigError` names the known ones otherwise."""
    profiles = load_profiles()
    if name not in profiles:
        raise ConfigError(f"unknown board {name!r}; known boards: {sorted(profiles)}")
    return profiles[name]


def _read_text(path: Path) -> str | None:
    try:
        # device-tree strings end with a NUL byte
        return path.read_bytes().decode("utf-8", "replace").strip("\x00 \n")
    except OSError:
        return None


def detect_board(root: Path | str = "/", *, machine: str | None = None) -> BoardProfile:
    """The profile of the board under ``root`` (``machine`` defaults to this machine's).

    Order: a device-tree model naming a known board; then a Jetson's L4T release file;
    then the generic profile of the CPU architecture. Raises :class:`ConfigError` for an
    architecture no profile covers.
    """
    base = Path(root)
    arch = normalize_machine(machine or platform.machine())
    profiles = load_profiles()
    model = _read_text(base / "proc" / "device-tree" / "model")
    if model:
        # The longest match wins: "Jetson Orin Nano" must not be taken for "Jetson Nano".
        best: tuple[int, BoardProfile] | None = None
        for profile in profiles.values():
            for pattern in profile.model_match:
                if pattern in model and (best is None or len(pattern) > best[0]):
                    best = (len(pattern), profile)
        if best is not None:
            return best[1]
    tegra = _read_text(base / "etc" / "nv_tegra_release")
    if tegra:
        # "# R32 (release), REVISION: 7.1, ..." — the L4T major release names the family
        for profile in profiles.values():
            if any(tegra.startswith(f"# {release} ") for release in profile.tegra_release):
                return profile
    generic = profiles.get(f"generic-{arch}")
    if generic is None:
        raise ConfigError(
            f"no board profile for machine {arch!r}; pass one of {sorted(profiles)} explicitly"
        )
    return generic


def _boards_text() -> str:
    # Read beside this module when the package is on disk (always, outside a zip import):
    # importlib.resources imports zipfile and importlib.readers, 0.45 MB of RSS in an agent
    # that only needs the file at start.
    here = Path(__file__).with_name("boards.json")
    if here.is_file():
        return here.read_text()
    from importlib import resources

    return resources.files("edgeops.hardware").joinpath("boards.json").read_text()


def unit_environment() -> dict[str, str]:
    """The ``Environment=`` variables of the packaged systemd unit: how the agent runs on a
    board (benchmarks and process tests start it with them, to measure what ships)."""
    values: dict[str, str] = {}
    for line in asset_path("edgeops-agent.service").read_text(encoding="utf-8").splitlines():
        key, sep, rest = line.strip().partition("=")
        if sep and key == "Environment":
            for item in rest.split():
                name, _, value = item.partition("=")
                values[name] = value
    return values


def asset_path(name: str) -> Path:
    """A file shipped in ``edgeops/hardware/assets`` (the systemd unit, the install script)."""
    from importlib import resources

    path = Path(str(resources.files("edgeops.hardware").joinpath("assets", name)))
    if not path.is_file():
        raise ConfigError(f"no install asset named {name!r}")
    return path
