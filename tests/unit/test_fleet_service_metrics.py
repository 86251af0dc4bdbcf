"""Prometheus exposition of the fleet service: format rules, escaping, values."""

from __future__ import annotations

import math
import re

from edgeops.fleet.ingest import IngestStats
from edgeops.fleet.registry import DeviceRecord, RolloutRecord, WaveRecord
from edgeops.fleet.service.metrics import (
    Family,
    escape_help,
    escape_label,
    fleet_families,
    format_value,
    ingest_families,
    render,
    rollout_families,
)

# One sample line of the text format 0.0.4: name, optional labels with escaped values, value.
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{{{_LABEL}(?:,{_LABEL})*\}})? (\S+)$")


def parse(text: str) -> dict[str, tuple[str, str, list[tuple[str, float]]]]:
    """Families by name: (type, help, [(labels text, value)]), checking the line grammar and
    that HELP and TYPE come once, before the family's samples."""
    assert text.endswith("\n")
    families: dict[str, tuple[str, str, list[tuple[str, float]]]] = {}
    helps: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in helps, f"second HELP for {name}"
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("gauge", "counter"), line
            assert name in helps, f"TYPE before HELP: {line}"
            assert name not in families, f"second TYPE: {line}"
            families[name] = (kind, helps[name], [])
            current = name
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, labels, value = match.groups()
            assert name == current, f"{name} sample outside its family"
            families[name][2].append((labels or "", float(value)))
    return families


def test_label_values_and_help_are_escaped() -> None:
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert escape_help('line "one"\\\nline two') == 'line "one"\\\\\\nline two'
    family = Family("edgeops_x", "gauge", "x")
    family.add(1, device='cam"1\\\n')
    text = render([family])
    assert 'edgeops_x{device="cam\\"1\\\\\\n"} 1' in text
    parse(text)


def test_values_use_the_format_spelling() -> None:
    assert format_value(3) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(math.nan) == "NaN"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert float(format_value(1e-7)) == 1e-7


def test_fleet_gauges_per_device_in_base_units_and_none_means_no_sample() -> None:
    devices = [
        DeviceRecord(
            device_id="cam-1",
            group="lab",
            online=True,
            p95_ms=25.0,
            error_rate=0.02,
            drift=0.1,
            temp_c=51.5,
            last_seen=1000.0,
        ),
        DeviceRecord(device_id="cam-2", group="yard", online=False),
    ]
    families = parse(render(fleet_families(devices)))
    assert families["edgeops_devices"][2] == [("", 2.0)]
    assert families["edgeops_devices_online"][2] == [("", 1.0)]
    assert families["edgeops_device_online"][2] == [
        ('{device="cam-1",group="lab"}', 1.0),
        ('{device="cam-2",group="yard"}', 0.0),
    ]
    assert families["edgeops_device_latency_p95_seconds"][2] == [
        ('{device="cam-1",group="lab"}', 0.025)
    ]
    assert families["edgeops_device_error_ratio"][2] == [('{device="cam-1",group="lab"}', 0.02)]
    assert families["edgeops_device_temperature_celsius"][2] == [
        ('{device="cam-1",group="lab"}', 51.5)
    ]
    assert all(kind == "gauge" for kind, _, _ in families.values())


def test_ingest_counters_end_in_total() -> None:
    stats = IngestStats(received=10, malformed=1, written=8, duplicates=2, batches=3)
    families = parse(render(ingest_families(stats, pending=4)))
    assert families["edgeops_ingest_received_total"] == (
        "counter",
        "Messages received from the broker.",
        [("", 10.0)],
    )
    assert families["edgeops_ingest_duplicates_total"][2] == [("", 2.0)]
    assert families["edgeops_ingest_pending"][0] == "gauge"
    assert families["edgeops_ingest_pending"][2] == [("", 4.0)]
    for name, (kind, _, _) in families.items():
        assert (kind == "counter") == name.endswith("_total")


def test_rollout_status_one_series_per_status_and_devices_per_phase() -> None:
    record = RolloutRecord(
        rollout_id="r1",
        group="lab",
        bundle="b" * 64,
        previous_bundle=None,
        status="aborted",
        created=1.0,
        updated=2.0,
        waves=(
            WaveRecord(
                index=0, canary=True, stage="passed", devices=("a",), counts={"committed": 1}
            ),
            WaveRecord(
                index=1,
                canary=False,
                stage="failed",
                devices=("b", "c"),
                counts={"committed": 1, "rolled_back": 1},
            ),
        ),
    )
    families = parse(render(rollout_families([record], driven=0)))
    status = dict(families["edgeops_rollout_status"][2])
    assert status['{status="aborted",rollout="r1",group="lab"}'] == 1.0
    assert status['{status="running",rollout="r1",group="lab"}'] == 0.0
    assert sum(status.values()) == 1.0
    phases = dict(families["edgeops_rollout_devices"][2])
    assert phases['{phase="committed",rollout="r1",group="lab"}'] == 2.0
    assert phases['{phase="rolled_back",rollout="r1",group="lab"}'] == 1.0
    assert families["edgeops_rollout_waves_passed"][2] == [('{rollout="r1",group="lab"}', 1.0)]
    assert families["edgeops_rollouts_active"][2] == [("", 0.0)]
