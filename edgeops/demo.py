"""``edgeops demo``: the whole story on one machine, with the real parts only.

:class:`Demo` composes what the other modules do; it decides nothing they decide:

1. a throwaway fleet (:func:`~edgeops.fleet.fleetdir.init_fleet`: keys, root, CA) and its
   broker — the fleet's own generated Mosquitto config (TLS client certificates, per-device
   ACL) on a free port through :class:`~edgeops.broker.MosquittoBroker`, or a broker given
   by URL;
2. ``devices`` simulated devices (:class:`~edgeops.fleet.simulate.Simulator`): enrolled,
   each a real agent on its own certificate;
3. the real YOLOv8n (:func:`edgeops.assets.yolov8n_onnx`) converted to int8, calibrated on
   real photos (:func:`edgeops.assets.photos`) and validated on the held-out ones
   (:func:`edgeops.converters.report.report_for`);
4. a signed bundle of it (:func:`~edgeops.bundle.create_bundle`, test vectors from held-out
   photos, the report's key figures in the manifest) pushed with a canary and waves
   (:class:`~edgeops.fleet.push.Push`): every device verifies, health-checks, trials and
   commits it;
5. a broken release: 1.1, which every device serves :data:`SLOW_MS` ms slower per request
   (the simulator's fault injection, through the device's model loader: what a model too
   heavy for its board looks like from the fleet). It passes the device's health check and
   trial; the canary's p95 against its own p95 on 1.0 breaks the rollout's gate, the
   rollout aborts, the canary gets a rollback directive and no other device ever gets the
   release;
6. the fleet service (:class:`~edgeops.fleet.service.FleetService`: dashboard, JSON API,
   ``/metrics``) until ``stop`` is set.

Each outcome is checked against the devices' own records (``state.json``: what each runs,
the last directive each accepted), not against what the fleet side believes. Output goes
through a :class:`DemoView` (the CLI's renders with rich; :class:`NullView` prints nothing).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgeops.errors import ConfigError, EdgeopsError

if TYPE_CHECKING:
    from edgeops.broker import MosquittoBroker
    from edgeops.fleet.fleetdir import FleetDir
    from edgeops.fleet.push import PushResult
    from edgeops.fleet.rollout import RolloutPolicy
    from edgeops.fleet.rollout.runner import RolloutRunner
    from edgeops.fleet.service import FleetService
    from edgeops.fleet.simulate import Simulator
    from edgeops.fleet.status import FleetStatus

DEFAULT_DEVICES = 12
MAX_DEVICES = 200
GROUP = "demo"
DEVICE_PREFIX = "dev"
MODEL_NAME = "yolov8n"
INPUT = "images"
INPUT_SHAPE = (1, 3, 320, 320)
#: Held-out photos the bundle carries as test vectors (each 1.2 MB of float32 input).
TEST_VECTOR_PHOTOS = 3
#: How long the canary may take to be back on the good release after the abort.
ROLLBACK_WAIT_S = 30.0
#: The broken release (a fresh fleet signs 1 then 2) and what the devices add to it.
BROKEN_RELEASE = 2
SLOW_MS = 500.0

MOSQUITTO_MISSING = (
    "Mosquitto is not installed, and the demo runs the fleet's own broker config (TLS client "
    "certificates, per-device ACL) on it. Install it with `sudo apt-get install mosquitto` "
    "(Debian/Ubuntu; ./scripts/demo does this), `brew install mosquitto` (macOS), or pass "
    "--broker mqtt://HOST:PORT to use a broker that already runs (without the fleet's TLS "
    "and ACL)."
)


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    """What ``edgeops demo`` runs (validated on creation)."""

    devices: int = DEFAULT_DEVICES
    workdir: Path | None = None
    broker_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    wait: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= MAX_DEVICES:
            raise ConfigError(f"expected --devices between 1 and {MAX_DEVICES}, got {self.devices}")
        if self.broker_url is not None and not self.broker_url.startswith(("mqtt://", "mqtts://")):
            raise ConfigError(
                f"expected --broker mqtt://HOST:PORT or mqtts://HOST:PORT, got {self.broker_url!r}"
            )
        if not 0 <= self.http_port <= 65535:
            raise ConfigError(f"expected an HTTP port in 0..65535, got {self.http_port}")


@dataclass(frozen=True)
class Check:
    """One expected outcome of the story and whether it happened."""

    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class DemoResult:
    """What happened (``--json`` prints :meth:`to_json`)."""

    workdir: Path
    fleet_dir: Path | None = None
    broker_url: str = ""
    embedded_broker: bool = False
    dashboard_url: str | None = None
    checks: list[Check] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    conversion: dict[str, Any] = field(default_factory=dict)
    pushes: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(check.ok for check in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "workdir": str(self.workdir),
            "fleet": None if self.fleet_dir is None else str(self.fleet_dir),
            "broker_url": self.broker_url,
            "embedded_broker": self.embedded_broker,
            "dashboard_url": self.dashboard_url,
            "checks": [check.to_json() for check in self.checks],
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "conversion": self.conversion,
            "pushes": self.pushes,
            "notes": self.notes,
        }


class DemoView(Protocol):
    """How the demo shows itself (headings, lines, the report, the live rollout)."""

    def step(self, number: int, title: str) -> None: ...

    def say(self, text: str) -> None: ...

    def check(self, check: Check) -> None: ...

    def conversion(self, summary: Mapping[str, Any], report: Mapping[str, Any]) -> None: ...

    def rollout_begin(self, runner: RolloutRunner) -> None: ...

    def rollout_tick(self, runner: RolloutRunner) -> None: ...

    def rollout_end(self, result: PushResult) -> None: ...

    def fleet_status(self, status: FleetStatus) -> None: ...

    def finished(self, result: DemoResult, *, serving: bool) -> None: ...


class NullView:
    """A :class:`DemoView` that shows nothing (``--json``, tests)."""

    def step(self, number: int, title: str) -> None:
        pass

    def say(self, text: str) -> None:
        pass

    def check(self, check: Check) -> None:
        pass

    def conversion(self, summary: Mapping[str, Any], report: Mapping[str, Any]) -> None:
        pass

    def rollout_begin(self, runner: RolloutRunner) -> None:
        pass

    def rollout_tick(self, runner: RolloutRunner) -> None:
        pass

    def rollout_end(self, result: PushResult) -> None:
        pass

    def fleet_status(self, status: FleetStatus) -> None:
        pass

    def finished(self, result: DemoResult, *, serving: bool) -> None:
        pass


def demo_policy() -> RolloutPolicy:
    """A canary of one, then a quarter, half and all of the group, each wave soaked for
    two seconds; any failed device, 5 % live errors or a p95 50 % above the device's own
    on the previous release aborts. The soak and timeouts are a demo's, not production's."""
    from edgeops.fleet.rollout import RolloutPolicy

    return RolloutPolicy(
        canary_count=1,
        waves=(25.0, 50.0, 100.0),
        soak_s=2.0,
        max_failures_percent=0.0,
        max_error_rate_percent=5.0,
        max_p95_regression_percent=50.0,
        wave_timeout_s=60.0,
    )


def _wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _short(digest: str | None) -> str:
    return "-" if digest is None else digest[:12]


class Demo:
    """The story; :meth:`run` it once. Everything it started is stopped on return."""

    def __init__(self, options: DemoOptions, view: DemoView | None = None) -> None:
        self.options = options
        self.view: DemoView = view or NullView()
        workdir = options.workdir
        if workdir is None:
            workdir = Path(tempfile.mkdtemp(prefix="edgeops-demo-"))
        self.workdir = workdir.resolve()
        self.result = DemoResult(workdir=self.workdir)
        self.fleet: FleetDir | None = None
        self.broker: MosquittoBroker | None = None
        self.sim: Simulator | None = None
        self.service: FleetService | None = None
        self.bundles: dict[str, Path] = {}
        self.digests: dict[str, str] = {}
        self.canaries: dict[str, list[str]] = {}

    # ------------------------------------------------------------------ the story

    def run(self, stop: threading.Event | None = None) -> DemoResult:
        """Run every step; then serve the dashboard until ``stop`` is set (with
        ``options.wait``). Stops the service, the agents and the broker on the way out."""
        try:
            self._timed("fleet", self.fleet_and_broker)
            self._timed("devices", self.start_devices)
            self._timed("convert", self.convert)
            self._timed("push", self.push_good)
            self._timed("broken_push", self.push_broken)
            self._timed("serve", self.serve)
            self.result.seconds["story"] = sum(self.result.seconds.values())
            serving = self.options.wait and self.service is not None
            self.view.finished(self.result, serving=serving)
            if serving:
                stop = stop or threading.Event()
                while not stop.wait(0.5):
                    pass
        finally:
            self.close()
        return self.result

    def fleet_and_broker(self) -> None:
        """Step 1: the fleet folder, its devices' enrollment and the broker."""
        from edgeops.broker import MosquittoBroker, find_mosquitto, free_port
        from edgeops.fleet.broker_config import BrokerFiles, write_broker_config
        from edgeops.fleet.fleetdir import init_fleet
        from edgeops.fleet.simulate import Simulator

        options = self.options
        self.view.step(1, "A throwaway fleet and its broker")
        embedded = options.broker_url is None
        if embedded:
            if find_mosquitto() is None:
                raise ConfigError(MOSQUITTO_MISSING)
            port = free_port()
            url = f"mqtts://127.0.0.1:{port}"
            name = "demo"
        else:
            assert options.broker_url is not None
            url = options.broker_url
            # A broker shared with other runs keeps their retained messages: a fleet name
            # of its own keeps this run's topics apart.
            name = f"demo-{secrets.token_hex(3)}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        fleet = init_fleet(self.workdir / "fleet", name=name, broker_url=url)
        self.fleet = fleet
        self.result.fleet_dir = fleet.path
        self.result.broker_url = url
        self.result.embedded_broker = embedded
        files = write_broker_config(fleet.path)
        self.view.say(
            f"fleet {name!r} in {fleet.path}: Ed25519 root, release and deploy keys, a CA, "
            "broker and fleet-manager certificates"
        )
        self.sim = Simulator(
            fleet.path,
            devices=options.devices,
            group=GROUP,
            prefix=DEVICE_PREFIX,
            workdir=self.workdir / "devices",
            # The real detector takes milliseconds per request: no added base delay, and a
            # request every 0.2 s per device keeps a dozen devices within two cores.
            base_delay_s=0.0,
            # Measured here (two shared cores, a dozen agents in one process): a device's
            # p95 on the int8 model ranges from 6 to 500 ms, so the float32 export (4x the
            # int8 latency alone) does not stand out reliably; half a second does.
            slow_rate=1.0,
            slow_delay_s=SLOW_MS / 1000.0,
            faults_from_release=BROKEN_RELEASE,
            request_interval_s=0.2,
            telemetry_interval_s=1.0,
            trial_window_s=2.0,
            min_requests=5,
        )
        # Enrolled before the broker starts, so it reads every device's ACL block at start.
        self.sim.enroll()
        self.view.say(
            f"enrolled {options.devices} devices in group {GROUP!r}: a certificate each "
            "from the fleet CA, a registry entry, an ACL block"
        )
        if embedded:
            config = files.config.read_text(encoding="utf-8")
            # MosquittoBroker owns the listener's port line through its {port} placeholder.
            config = config.replace(f"\nlistener {port}", "\nlistener {port}")
            self.broker = MosquittoBroker(config, port=port, workdir=fleet.path / "broker")
            self.broker.start()
            self.view.say(
                f"Mosquitto on {url} with the fleet's generated config ({files.config.name}): "
                "TLS 1.2+, a client certificate required, its CN as user and client id, "
                "per-device ACL, CRL"
            )
        else:
            if url.startswith("mqtts://"):
                given = (
                    f"it must trust this fleet's CA ({BrokerFiles.of(fleet.path).ca_cert}); "
                    "the fleet's per-device ACL and CRL are not applied there"
                )
            else:
                given = (
                    "plain MQTT: no TLS, no client certificates, no per-device ACL (the "
                    "embedded broker has all three); directives and bundles are still signed "
                    "and checked by every device"
                )
            self.result.notes.append(f"broker {url}: {given}")
            self.view.say(f"broker {url} (given): {given}")

    def start_devices(self) -> None:
        """Step 2: a real agent per device, over TLS with its own certificate."""
        sim = self._sim()
        self.view.step(2, f"{len(sim.devices)} simulated devices")
        sim.start()
        sim.wait_connected(timeout=30.0)
        self.view.say(
            f"{len(sim.agents)} agents connected over TLS in {sim.start_seconds:.1f} s, each "
            "with its own certificate and state folder: each verifies signed directives, "
            "fetches bundles, health-checks them on LiteRT, serves a request every 0.2 s "
            "and reports telemetry"
        )

    def convert(self) -> None:
        """Step 3: YOLOv8n to int8, calibrated on real photos, and its report."""
        import numpy as np

        from edgeops import assets
        from edgeops.converters import calibration
        from edgeops.converters.pipeline import ConvertOptions, convert
        from edgeops.converters.report import report_for

        self.view.step(3, "Convert YOLOv8n to int8 with calibration and a validation report")
        self.view.say(
            f"YOLOv8n (the nudenet wheel) and photos (the scikit-image wheel) from PyPI, "
            f"downloaded once into {assets.cache_dir()}"
        )
        source = assets.yolov8n_onnx()
        photos = assets.photos()
        self.view.say(
            f"model {source.name}: {source.stat().st_size / 1e6:.1f} MB ONNX, input "
            f"{INPUT} {'x'.join(map(str, INPUT_SHAPE))}; {len(photos)} photos"
        )
        samples = calibration.load_samples(
            photos, {INPUT: INPUT_SHAPE}, preprocess=calibration.YOLOV8
        )
        models = self.workdir / "models"
        int8_path = models / f"{MODEL_NAME}-int8.tflite"
        result = convert(
            source,
            int8_path,
            ConvertOptions(
                quantize="int8",
                input_shapes={INPUT: INPUT_SHAPE},
                calibration_samples=samples,
                progress=self.options.progress,
            ),
        )
        report = report_for(result, source=source)
        summary = result.summary()
        self.view.conversion(summary, report.to_dict())
        self.result.conversion = {
            "source": str(source),
            "output": str(int8_path),
            "calibration_samples": result.calibration_count,
            "holdout_samples": len(result.holdout),
            "key_figures": report.key_figures(),
            "seconds": summary["seconds"],
        }
        # Test vectors: held-out photos (never seen by calibration), in the model's NHWC.
        held_out = result.holdout[:TEST_VECTOR_PHOTOS]
        if not held_out:
            raise EdgeopsError("the conversion held out no photos for test vectors")
        nhwc = INPUT in result.nhwc_inputs
        stacked = np.stack(
            [s[INPUT].transpose(0, 2, 3, 1) if nhwc else s[INPUT] for s in held_out]
        ).astype(np.float32)
        test_inputs = models / "test_inputs.npz"
        np.savez(test_inputs, **{INPUT: stacked})  # type: ignore[arg-type]
        # The devices' steady load: the held-out photos in turn, so their input drift is measured
        # against data like the reference statistics, not against noise.
        self._sim().load_inputs = [{INPUT: sample} for sample in stacked]

        fleet = self._fleet()
        keys = fleet.signing_keys("release")
        from edgeops import __version__
        from edgeops.bundle import create_bundle
        from edgeops.bundle.create import file_digest

        _, source_sha = file_digest(source)
        for kind, model, version, figures in (
            ("good", int8_path, "1.0", report.to_dict()),
            ("broken", int8_path, "1.1", report.to_dict()),
        ):
            release = fleet.last_release() + 1
            output = self.workdir / "bundles" / f"{MODEL_NAME}-{version}.bundle"
            output.parent.mkdir(parents=True, exist_ok=True)
            create_bundle(
                model,
                name=MODEL_NAME,
                version=version,
                release=release,
                signing_keys=keys,
                output=output,
                test_inputs=test_inputs,
                report=figures,
                source_sha256=source_sha,
                converter_version=__version__,
            )
            fleet.record_release(release, name=MODEL_NAME, version=version)
            if kind == "broken" and release != BROKEN_RELEASE:
                raise EdgeopsError(
                    f"expected the broken bundle to be release {BROKEN_RELEASE} of a new "
                    f"fleet, got {release}"
                )
            self.bundles[kind] = output
        good = self.bundles["good"]
        self.view.say(
            f"signed {good.name} ({good.stat().st_size / 1e6:.1f} MB, release key): the int8 "
            f"model, {len(held_out)} held-out photos as test vectors with the outputs the "
            "devices must reproduce, their input statistics for drift, the report's key "
            "figures in the manifest"
        )

    def push_good(self) -> None:
        """Step 4: the int8 release to every device, canary first, gated wave by wave."""
        sim = self._sim()
        self.view.step(4, "Push the signed int8 bundle: a canary, then waves")
        outcome = self._push("good", "yolov8n-1.0")
        digest = outcome.bundle
        self.digests["good"] = digest
        everywhere = _wait_for(
            lambda: all(sim.running_bundle(d) == digest for d in sim.agents), 10.0
        )
        running = sum(1 for d in sim.agents if sim.running_bundle(d) == digest)
        self._check(
            "rollout succeeded",
            outcome.succeeded,
            f"rollout {outcome.rollout_id} {outcome.status}: {outcome.reason or '-'}",
        )
        self._check(
            "committed on all devices",
            everywhere and running == len(sim.devices),
            f"{running}/{len(sim.devices)} devices run {_short(digest)} (their state.json)",
        )
        from edgeops.fleet.simulate import _rss_bytes

        per_agent = sim.measure_rss() / 2**20
        self.view.say(
            f"{per_agent:.1f} MB resident per agent serving YOLOv8n int8 "
            f"({_rss_bytes() / 2**20:.0f} MB this whole process)"
        )

    def push_broken(self) -> None:
        """Step 5: the slow release; the canary's p95 breaks the gate, the fleet rolls it
        back, nobody else ever gets it."""
        sim = self._sim()
        self.view.step(5, "Push a broken release: 1.1 serves half a second slower")
        self.view.say(
            f"{self.bundles['broken'].name} (release {BROKEN_RELEASE}): the simulated devices "
            f"serve it {SLOW_MS:.0f} ms slower per request (fault injected in their model "
            "loader, as a model too heavy for the board would be). Its outputs are right, so "
            "it passes the device's health check and trial: the rollout's p95 gate (each "
            "device against its own p95 on 1.0) has to stop it"
        )
        good = self.digests["good"]
        outcome = self._push("broken", "yolov8n-1.1")
        broken = outcome.bundle
        self.digests["broken"] = broken
        canary = self.canaries["broken"]
        others = [d for d in sim.agents if d not in canary]

        def last_directive(device_id: str) -> str | None:
            record = sim.agents[device_id].state.records.get("device")
            return None if record is None else record.bundle_digest

        back = _wait_for(
            lambda: all(
                sim.running_bundle(d) == good and last_directive(d) == good for d in canary
            ),
            ROLLBACK_WAIT_S,
        )
        self._check(
            "broken bundle aborted",
            outcome.status == "aborted",
            f"rollout {outcome.rollout_id} {outcome.status}: {outcome.reason or '-'}",
        )
        self._check(
            "canary rolled back",
            bool(canary) and back and sorted(outcome.rolled_back) == sorted(canary),
            f"rollback directive sent to {', '.join(outcome.rolled_back) or 'nobody'}; "
            f"{', '.join(canary)} runs {_short(sim.running_bundle(canary[0]) if canary else None)}"
            f" again (1.0)",
        )
        untouched = [d for d in others if last_directive(d) != broken]
        self._check(
            "no other device got it",
            len(untouched) == len(others) and all(sim.running_bundle(d) == good for d in others),
            f"{len(untouched)}/{len(others)} other devices never accepted a directive for "
            f"{_short(broken)} and run 1.0",
        )

    def serve(self) -> None:
        """Step 6: ``edgeops fleet serve`` in this process: dashboard, API, /metrics."""
        from edgeops.fleet.service import FleetService, ServiceConfig

        fleet = self._fleet()
        self.view.step(6, "The fleet service: dashboard, JSON API, /metrics")
        options = self.options
        config = ServiceConfig(
            fleet_dir=fleet.path, http_host=options.http_host, http_port=options.http_port
        )
        service = FleetService(config)
        try:
            service.start()
        except ConfigError as exc:
            if options.http_port == 0 or "cannot listen" not in str(exc):
                raise
            self.view.say(f"{exc}; taking a free port instead")
            config = dataclasses.replace(config, http_port=0)
            service = FleetService(config)
            service.start()
        self.service = service
        url = service.url
        self.result.dashboard_url = f"{url}/"
        answered = self._get_json(f"{url}/api/fleet")
        self._check(
            "dashboard serving",
            answered is not None,
            f"{url}/ (JSON API {url}/api/fleet, Prometheus {url}/metrics)",
        )
        self._fleet_view()

    def _fleet_view(self) -> None:
        """The registry, now fed by the service from the devices' retained states, must
        tell what the devices' own records told: everyone online on the good release."""
        from edgeops.fleet.registry import open_registry
        from edgeops.fleet.status import fleet_status

        good = self.digests.get("good")
        store = open_registry(self._fleet().path)
        try:
            latest = fleet_status(store, group=GROUP)

            def agrees() -> bool:
                nonlocal latest
                latest = fleet_status(store, group=GROUP)
                return all(d.online and d.bundle == good for d in latest.devices)

            agreed = _wait_for(agrees, 10.0, interval=0.25)
            # States are retained and arrive at once; the health columns come with the
            # next telemetry (each device sends one a second, dropped by the broker while
            # no fleet manager listened): two intervals refresh them.
            time.sleep(2.0)
            latest = fleet_status(store, group=GROUP)
        finally:
            store.close()
        self.view.fleet_status(latest)
        self.view.say(
            "drift is the PSI of the requests a device sampled in its last 1 s window (every "
            "10th request: one photo at a time here) against the statistics of the bundle's "
            "3 test photos, so it reads high; the demo's rollouts have no drift gate"
        )
        on_good = sum(1 for d in latest.devices if d.online and d.bundle == good)
        self._check(
            "the fleet's view agrees",
            agreed and len(latest.devices) == len(self._sim().devices),
            f"{on_good}/{len(latest.devices)} devices online on 1.0 in the registry",
        )

    # ------------------------------------------------------------------ helpers

    def close(self) -> None:
        """Stop the service, then the agents (their offline state needs the broker), then
        the broker. Safe to call twice."""
        service, self.service = self.service, None
        if service is not None:
            service.stop()
        if self.sim is not None:
            self.sim.stop()
        broker, self.broker = self.broker, None
        if broker is not None:
            broker.stop()

    def _push(self, kind: str, rollout_id: str) -> PushResult:
        from edgeops.fleet.push import Push

        fleet = self._fleet()
        with Push(
            fleet.path,
            self.bundles[kind],
            group=GROUP,
            policy=demo_policy(),
            rollout_id=rollout_id,
            on_tick=self.view.rollout_tick,
        ) as push:
            runner = push.prepare()
            self.canaries[kind] = [
                d for wave in runner.controller.waves if wave.canary for d in wave.devices
            ]
            self.view.rollout_begin(runner)
            outcome: PushResult | None = None
            try:
                outcome = push.run()
            finally:
                if outcome is None:
                    outcome = push.result()
                self.view.rollout_end(outcome)
            for _, note in runner.controller.log:
                self.view.say(f"  · {note}")
        data = outcome.to_json()
        data["log"] = [note for _, note in runner.controller.log]
        self.result.pushes[kind] = data
        return outcome

    def _get_json(self, url: str) -> Any:
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except (OSError, ValueError):
            return None

    def _check(self, name: str, ok: bool, detail: str) -> None:
        check = Check(name, ok, detail)
        self.result.checks.append(check)
        self.view.check(check)

    def _timed(self, name: str, step: Callable[[], None]) -> None:
        began = time.monotonic()
        try:
            step()
        finally:
            self.result.seconds[name] = time.monotonic() - began

    def _fleet(self) -> FleetDir:
        if self.fleet is None:
            raise EdgeopsError("the fleet was not created")
        return self.fleet

    def _sim(self) -> Simulator:
        if self.sim is None:
            raise EdgeopsError("the simulated devices were not set up")
        return self.sim


__all__ = [
    "DEFAULT_DEVICES",
    "Check",
    "Demo",
    "DemoOptions",
    "DemoResult",
    "DemoView",
    "NullView",
    "demo_policy",
]
