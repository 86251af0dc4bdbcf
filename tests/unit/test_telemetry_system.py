"""SystemProbe on fake /proc and thermal files."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeops.agent.telemetry import SystemProbe
from edgeops.agent.telemetry.system import read_rss_bytes, read_temperature_c


def fake_proc(root: Path, rss_kb: int) -> Path:
    (root / "self").mkdir(parents=True)
    (root / "self" / "status").write_text(
        f"Name:\tpython\nVmPeak:\t  999 kB\nVmRSS:\t  {rss_kb} kB\nThreads:\t3\n"
    )
    return root


def test_rss_from_status(tmp_path: Path) -> None:
    assert read_rss_bytes(fake_proc(tmp_path / "proc", 41_000)) == 41_000 * 1024
    assert read_rss_bytes(tmp_path / "nowhere") is None


def test_real_rss_is_plausible() -> None:
    rss = read_rss_bytes()
    assert rss is not None
    assert 1 << 20 < rss < 1 << 40


@pytest.mark.parametrize(("raw", "expected"), [("48312\n", 48.312), ("45", 45.0), ("-5000", -5.0)])
def test_temperature_millidegrees_or_degrees(tmp_path: Path, raw: str, expected: float) -> None:
    sensor = tmp_path / "temp"
    sensor.write_text(raw)
    assert read_temperature_c(sensor) == pytest.approx(expected)


def test_temperature_absent_or_garbled(tmp_path: Path) -> None:
    assert read_temperature_c(None) is None
    assert read_temperature_c(tmp_path / "missing") is None
    (tmp_path / "bad").write_text("hot")
    assert read_temperature_c(tmp_path / "bad") is None


def test_probe_cpu_percent_from_cpu_time_over_wall_time(tmp_path: Path) -> None:
    wall = iter([10.0, 12.0, 14.0])
    cpu = iter([1.0, 1.5, 1.5])
    sensor = tmp_path / "temp"
    sensor.write_text("51000")
    probe = SystemProbe(
        state_dir=tmp_path,
        thermal_path=sensor,
        proc_root=fake_proc(tmp_path / "proc", 2048),
        clock=lambda: next(wall),
        cpu_seconds=lambda: next(cpu),
    )
    first = probe.sample()
    assert first.cpu_percent is None
    assert first.rss_bytes == 2048 * 1024
    assert first.temperature_c == pytest.approx(51.0)
    assert first.disk_free_bytes is not None
    assert first.disk_total_bytes is not None
    assert 0 < first.disk_free_bytes <= first.disk_total_bytes
    assert probe.sample().cpu_percent == pytest.approx(25.0)
    assert probe.sample().cpu_percent == pytest.approx(0.0)


def test_probe_without_sensor_or_disk(tmp_path: Path) -> None:
    sample = SystemProbe(state_dir=tmp_path / "gone").sample()
    assert sample.temperature_c is None
    assert sample.disk_free_bytes is None
    assert set(sample.to_json()) == {
        "cpu_percent",
        "rss_bytes",
        "temperature_c",
        "disk_free_bytes",
        "disk_total_bytes",
    }
