"""The dashboard page in headless Chromium (Debian's ``chromium``), served by a real
``fleet serve`` HTTP server from a registry filled through the Ingestor.

Two checks: the DOM after the page's scripts ran (``--dump-dom``: every chart has one
series per device with one point per sample that device sent, the tiles and the rollout
show the registry's figures), and a screenshot (the chart regions hold coloured pixels,
not a blank canvas).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from edgeops.fleet.fleetdir import MANAGER_COMMON_NAME, init_fleet
from edgeops.fleet.registry import open_registry
from edgeops.fleet.rollout import RolloutPolicy
from edgeops.fleet.rollout.runner import RolloutRunner
from edgeops.fleet.service import FleetService, ServiceConfig
from edgeops.fleet.service.testing import NEW_DIGEST, DemoFleet, RecordingSink, populate
from edgeops.mqtt.fake import FakeBroker

pytestmark = pytest.mark.integration

FLEET = "dash"
CHARTS = {"chart-p95": "latency_p95_ms", "chart-errors": "errors", "chart-drift": "drift"}
SAMPLES = 30


def chromium() -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    assert binary, "chromium is not installed (scripts/test installs it: ensure_chromium)"
    return binary


def run_chromium(tmp_path: Path, url: str, *extra: str) -> str:
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    result = subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            "--virtual-time-budget=5000",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Dom(HTMLParser):
    """The elements of a dumped page: (tag, attributes, ancestor svg id, ancestor series)."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], str | None, str | None]] = []
        self._stack: list[tuple[str, dict[str, str]]] = []
        self.text: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        svg = next((a.get("id") for t, a in reversed(self._stack) if t == "svg"), None)
        series = next(
            (a.get("data-device") for t, a in reversed(self._stack) if a.get("class") == "series"),
            None,
        )
        self.elements.append((tag, values, svg, series))
        # HTML void elements have no end tag; SVG elements in a dumped DOM always do.
        if tag not in ("br", "meta", "link", "input", "img", "hr"):
            self._stack.append((tag, values))

    def handle_endtag(self, tag: str) -> None:
        while self._stack:
            open_tag, _ = self._stack.pop()
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if data.strip() and self._stack and self._stack[-1][1].get("class") == "value":
            tile = next(
                (a["data-tile"] for _, a in reversed(self._stack) if "data-tile" in a), None
            )
            self.text.append((data.strip(), tile))

    def find(self, tag: str, **attrs: str) -> list[dict[str, str]]:
        return [
            a
            for t, a, _, _ in self.elements
            if t == tag and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]


def saturated(image: Any) -> int:
    """Pixels whose channels differ by more than 60: colours, not white or greys."""
    import numpy as np

    pixels = np.asarray(image, dtype=np.int16)
    return int(((pixels.max(axis=2) - pixels.min(axis=2)) > 60).sum())


@pytest.fixture
def served(tmp_path) -> Iterator[tuple[str, DemoFleet]]:
    fleet = init_fleet(tmp_path / "fleet", name=FLEET)
    store = open_registry(fleet.path)
    demo = populate(store, fleet=FLEET, now=time.time(), devices=5, samples=SAMPLES)
    RolloutRunner.start(
        store,
        RecordingSink(),
        rollout_id="r-dash",
        group="lab",
        bundle=NEW_DIGEST,
        policy=RolloutPolicy(canary_count=1, waves=(50.0, 100.0), soak_s=600, wave_timeout_s=900),
    )
    store.close()
    service = FleetService(
        ServiceConfig(fleet_dir=fleet.path, http_port=0, tick_interval_s=0.1),
        link=FakeBroker().link(MANAGER_COMMON_NAME),
    )
    service.start()
    try:
        yield service.url, demo
    finally:
        service.stop()


def test_charts_render_every_sample_and_the_screenshot_is_not_blank(served, tmp_path) -> None:
    from PIL import Image

    url, demo = served
    dom = Dom()
    dom.feed(run_chromium(tmp_path, url + "/", "--dump-dom"))
    assert dom.find("body", data_ready="1"), "the page's scripts did not finish a refresh"

    tiles = {tile: text for text, tile in dom.text if tile}
    assert tiles.get("devices") == "5"
    assert tiles.get("online") == "4"
    assert tiles.get("offline") == "1"

    rects = {}
    for chart_id, field in CHARTS.items():
        (svg,) = dom.find("svg", id=chart_id)
        rects[chart_id] = [int(v) for v in svg["data-rect"].split(",")]
        groups = [a for t, a, s, _ in dom.elements if s == chart_id and a.get("class") == "series"]
        assert sorted(g["data-device"] for g in groups) == sorted(demo.devices)
        for device_id in demo.devices:
            expected = sum(
                1 for sample in demo.samples[device_id] if getattr(sample, field) is not None
            )
            assert expected == SAMPLES
            points = [
                a
                for t, a, s, series in dom.elements
                if t == "circle" and s == chart_id and series == device_id
            ]
            paths = [
                a
                for t, a, s, series in dom.elements
                if t == "path" and s == chart_id and series == device_id
            ]
            assert len(points) == expected, (chart_id, device_id)
            assert len(paths) == 1
            # One move and then a line to each further point: the series is unbroken.
            assert len(re.findall(r"[ML]", paths[0]["d"])) == expected
        assert int(svg["data-points"]) == SAMPLES * len(demo.devices)

    rollout = dom.find("div", data_rollout="r-dash")
    assert rollout
    assert rollout[0]["data-status"] == "running"
    assert len(dom.find("tr", data_device="cam-03")) == 1

    png = tmp_path / "dashboard.png"
    run_chromium(tmp_path, url + "/", f"--screenshot={png}")
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 900)
    for chart_id, (left, top, width, height) in rects.items():
        assert width > 200
        assert height > 100
        assert top + height <= 900, f"{chart_id} is below the fold"
        region = image.crop((left, top, left + width, top + height))
        # Series lines and points are saturated colours; background, grid and axis text
        # are white and greys.
        coloured = saturated(region)
        assert coloured > 0.02 * width * height, (chart_id, coloured)

    # Control: the same count on the header's left corner, which has no chart, is tiny.
    header = image.crop((600, 0, 1000, 50))
    assert saturated(header) == 0
