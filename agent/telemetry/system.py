"""System probes of the agent's own process and board, from ``/proc`` and ``statvfs``.

No psutil: the figures the telemetry needs are a few lines of ``/proc`` each, and every
dependency lands on a 1 GB board. ``proc_root`` and the thermal path are parameters so
tests point them at fake files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class SystemSample:
    """One reading. ``None`` where the board has no such sensor or the read failed."""

    cpu_percent: float | None
    rss_bytes: int | None
    temperature_c: float | None
    disk_free_bytes: int | None
    disk_total_bytes: int | None

    def to_json(self) -> dict[str, float | int | None]:
        """A JSON-ready dict with the same keys."""
        return asdict(self)


def read_rss_bytes(proc_root: Path = Path("/proc"), pid: str = "self") -> int | None:
    """Resident set size from ``/proc/<pid>/status`` (``VmRSS``, in kB there)."""
    try:
        text = (proc_root / pid / "status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                return int(fields[1]) * 1024
    return None


def read_temperature_c(path: Path | None) -> float | None:
    """A sysfs thermal zone reading (millidegrees Celsius) in degrees; ``None`` if absent."""
    if path is None:
        return None
    try:
        raw = path.read_text().strip()
        value = float(raw)
    except (OSError, ValueError):
        return None
    # Most zones report millidegrees; a few old drivers report whole degrees.
    return value / 1000.0 if abs(value) > 200 else value


def read_disk(folder: Path) -> tuple[int, int] | None:
    """Bytes free to unprivileged users and total bytes on ``folder``'s filesystem."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize


def _process_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


class SystemProbe:
    """Reads the agent process's CPU and RSS, the board temperature and the state disk.

    ``cpu_percent`` is the process's CPU time over wall time since the previous
    :meth:`sample` (100 = one full core), ``None`` on the first call.
    """

    def __init__(
        self,
        *,
        state_dir: Path,
        thermal_path: Path | None = None,
        proc_root: Path = Path("/proc"),
        clock: Callable[[], float] = time.monotonic,
        cpu_seconds: Callable[[], float] = _process_cpu_seconds,
    ) -> None:
        self._state_dir = state_dir
        self._thermal_path = thermal_path
        self._proc_root = proc_root
        self._clock = clock
        self._cpu_seconds = cpu_seconds
        self._last: tuple[float, float] | None = None

    def sample(self) -> SystemSample:
        """Take one reading (cheap: a few small file reads and one ``statvfs``)."""
        now, cpu = self._clock(), self._cpu_seconds()
        cpu_percent: float | None = None
        if self._last is not None:
            wall = now - self._last[0]
            if wall > 0:
                cpu_percent = max(cpu - self._last[1], 0.0) / wall * 100.0
        self._last = (now, cpu)
        disk = read_disk(self._state_dir)
        return SystemSample(
            cpu_percent=cpu_percent,
            rss_bytes=read_rss_bytes(self._proc_root),
            temperature_c=read_temperature_c(self._thermal_path),
            disk_free_bytes=disk[0] if disk else None,
            disk_total_bytes=disk[1] if disk else None,
        )
