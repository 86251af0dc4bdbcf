"""``edgeops demo`` without running the story: options, the missing-broker message, the
outcome's verdict. The story itself runs in tests/integration/test_demo.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeops.cli import app
from edgeops.cli import commands as _commands  # noqa: F401 - registers the commands
from edgeops.demo import Check, Demo, DemoOptions, DemoResult, demo_policy
from edgeops.errors import ConfigError


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"devices": 0}, "--devices between 1 and"),
        ({"devices": 10_000}, "--devices between 1 and"),
        ({"broker_url": "tcp://localhost:1883"}, "--broker mqtt://HOST:PORT"),
        ({"http_port": 70_000}, "HTTP port"),
    ],
)
def test_options_are_checked_on_creation(fields, message):
    with pytest.raises(ConfigError, match=message):
        DemoOptions(**fields)


def test_without_mosquitto_it_says_how_to_install_it_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr("edgeops.broker.find_mosquitto", lambda: None)
    demo = Demo(DemoOptions(workdir=tmp_path / "demo", wait=False))
    with pytest.raises(ConfigError, match=r"apt-get install mosquitto.*--broker mqtt://"):
        demo.run()
    assert not (tmp_path / "demo" / "fleet").exists()


def test_the_cli_turns_a_missing_broker_into_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr("edgeops.broker.find_mosquitto", lambda: None)
    result = CliRunner().invoke(app, ["demo", "--no-wait", "--workdir", str(tmp_path / "d")])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)


def test_ok_only_when_there_are_checks_and_all_passed():
    result = DemoResult(workdir=Path("/tmp/x"))
    assert not result.ok
    result.checks.append(Check("a", True, ""))
    assert result.ok
    result.checks.append(Check("b", False, "went wrong"))
    assert not result.ok
    assert result.to_json()["checks"][1] == {"name": "b", "ok": False, "detail": "went wrong"}


def test_the_policy_gates_every_wave_on_health():
    policy = demo_policy()
    assert policy.canary_count == 1
    assert policy.waves[-1] == 100.0
    assert policy.max_failures_percent == 0.0
    assert policy.max_p95_regression_percent is not None


def test_close_before_anything_started_is_harmless(tmp_path):
    demo = Demo(DemoOptions(workdir=tmp_path, wait=False))
    demo.close()
    demo.close()
