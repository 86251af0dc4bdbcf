"""The systemd unit and the install script, checked by systemd-analyze and shellcheck."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeops.errors import ConfigError
from edgeops.hardware import asset_path, unit_environment

UNIT = asset_path("edgeops-agent.service")
INSTALL = asset_path("install.sh")


def parse_unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(path)
    return parser


def test_unit_has_restart_policy_memory_limit_and_hardening() -> None:
    unit = parse_unit(UNIT)
    service = unit["Service"]
    assert service["ExecStart"] == (
        "/opt/edgeops/venv/bin/edgeops-agent --config /etc/edgeops/agent.toml"
    )
    assert service["Type"] in {"simple", "notify"}
    assert service["Restart"] == "on-failure"
    assert int(service["RestartSec"]) > 0
    assert service["MemoryMax"].endswith("M")
    assert service["StateDirectory"] == "edgeops"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
    }.items():
        assert service[key] == value, key
    assert service["User"] == "edgeops"
    assert "MALLOC_ARENA_MAX=2" in service["Environment"].split()
    assert "PYTHONOPTIMIZE=2" in service["Environment"].split()
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def verify_unit(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False
    )


def runnable_copy(tmp_path: Path, text: str) -> Path:
    # verify checks that ExecStart exists; the venv is not installed on a test machine.
    copy = tmp_path / "edgeops-agent.service"
    copy.write_text(text.replace("/opt/edgeops/venv/bin/edgeops-agent", sys.executable))
    return copy


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze absent; the configparser test above still checks the unit",
)
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    result = verify_unit(runnable_copy(tmp_path, UNIT.read_text()))
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze absent; the configparser test above still checks the unit",
)
def test_systemd_analyze_catches_a_misspelt_key(tmp_path: Path) -> None:
    # proves the check above can fail: verify warns (exit 0) on unknown keys
    broken = UNIT.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilege=yes")
    result = verify_unit(runnable_copy(tmp_path, broken))
    assert "Unknown key 'NoNewPrivilege'" in result.stderr


def shellcheck() -> str:
    found = shutil.which("shellcheck")
    assert found, "shellcheck is missing: scripts/test installs it (apt-get install shellcheck)"
    return found


def test_install_script_passes_shellcheck() -> None:
    result = subprocess.run(
        [shellcheck(), "--severity=style", str(INSTALL)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_install_script_is_strict_and_executable() -> None:
    text = INSTALL.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(INSTALL, os.X_OK)


def dry_run(machine: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), "--dry-run", *args],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "EDGEOPS_MACHINE": machine},
    )


def test_install_picks_tflite_runtime_on_32bit_arm() -> None:
    result = dry_run("armv7l", "--source", "/tmp/edgeops-0.1.0-py3-none-any.whl")
    assert result.returncode == 0, result.stderr
    pip_line = next(line for line in result.stdout.splitlines() if "[agent]" in line)
    assert "/tmp/edgeops-0.1.0-py3-none-any.whl[agent]" in pip_line
    assert "tflite-runtime==2.14.*" in pip_line
    assert "numpy<2" in pip_line
    assert "systemctl enable edgeops-agent.service" in result.stdout
    assert "edgeops-agent.service.d/memory.conf with MemoryMax" in result.stdout


def test_install_uses_litert_from_the_extra_on_64bit() -> None:
    result = dry_run("aarch64")
    assert result.returncode == 0, result.stderr
    pip_line = next(line for line in result.stdout.splitlines() if "edgeops[agent]" in line)
    assert "tflite-runtime" not in pip_line


def test_install_refuses_unknown_machine_and_option() -> None:
    assert dry_run("mips").returncode == 1
    bad = dry_run("aarch64", "--frobnicate")
    assert bad.returncode == 2
    assert "unknown option --frobnicate" in bad.stderr


def test_unknown_asset_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no install asset"):
        asset_path("nope.service")


def test_unit_environment_reads_the_units_variables() -> None:
    env = unit_environment()
    assert env["MALLOC_ARENA_MAX"] == "2"
    assert env["PYTHONOPTIMIZE"] == "2"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_install_script_compiles_the_venv_for_the_units_optimization_level() -> None:
    text = INSTALL.read_text()
    assert '-OO -m compileall -q "$VENV/lib"' in text
