"""A fleet of simulated devices in one process: real agents, real TLS, real models.

:class:`Simulator` enrolls ``devices`` devices in a fleet folder (certificate from the fleet
CA, registry entry, broker ACL: :func:`edgeops.fleet.enroll.enroll`), installs each one's
bootstrap archive into its own state folder and runs a real
:class:`~edgeops.agent.daemon.Agent` per device: MQTT over TLS with the device's own
certificate, signed directives checked against the fleet root, bundles fetched from the
retained chunks, verified, health-checked on their test vectors and put on trial. Only the
inference API (HTTP) is off; requests go through the in-process API instead, from one load
thread per device, so the telemetry the devices send carries real latencies.

Faults are injected on the device side, through the agent's model loader (the one place a
device turns a bundle into a runtime), and only into bundles of release
``faults_from_release`` or later (default: any bundle newer than the one the device runs
when the simulation starts), so the model a device starts with stays healthy and a push of
a new bundle meets the fault:

* ``fail_rate`` — that share of devices computes wrong outputs with the new bundle: its
  health check (the bundle's own test vectors) fails, as on a device with a broken
  accelerator, and the device reports the update as failed;
* ``trial_fail_rate`` — that share of devices passes the health check with the new bundle
  but fails every live request once it serves it (a fault the test vectors do not cover,
  such as inputs from a camera the bundle never saw): the trial's error rate rolls the
  device back on its own, and the rollout's error gate sees it;
* ``slow_rate`` (``--slow-model`` is 1.0) — that share serves the new bundle
  ``slow_delay_s`` slower (a real sleep inside ``run``), which the rollout's p95 gate sees;
* ``offline`` — that share is enrolled but never connects.

Every model also takes ``base_delay_s`` per request (a sleep after the real run): the tiny
model runs in microseconds here, where scheduling noise alone moves its p95 by multiples,
while a board takes milliseconds; the base delay gives the p95 gate a stable baseline to
compare against, as on real hardware.

Which devices get which fault is drawn with ``seed``, or named with ``faulty_devices`` /
``trial_faulty_devices`` / ``slow_devices`` / ``offline_devices``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeops.errors import ConfigError, EdgeopsError

if TYPE_CHECKING:
    import numpy as np

    from edgeops.agent.daemon import Agent, StagedBundle
    from edgeops.agent.runtimes import ModelRuntime, TensorSpec

log = logging.getLogger(__name__)

DEFAULT_GROUP = "sim"
DEFAULT_PREFIX = "sim"

#: Set on the simulator's load threads: their requests are the device's live traffic, as
#: opposed to the agent's own health-check runs of the bundle's test vectors.
_live = threading.local()


class SimulatedRuntime:
    """A :class:`~edgeops.agent.runtimes.ModelRuntime` that runs the real model, then
    sleeps ``delay_s`` and/or shifts every output by one (wrong answers the bundle's test
    vectors catch); with ``fail_live`` it raises :class:`~edgeops.errors.ModelError` on
    live requests (the simulator's load) while the agent's own checks still pass."""

    def __init__(
        self, runtime: ModelRuntime, *, corrupt: bool, delay_s: float, fail_live: bool = False
    ) -> None:
        self._runtime = runtime
        self.corrupt = corrupt
        self.delay_s = delay_s
        self.fail_live = fail_live

    @property
    def name(self) -> str:
        return self._runtime.name

    @property
    def version(self) -> str:
        return self._runtime.version

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self._runtime.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return self._runtime.outputs

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.fail_live and getattr(_live, "request", False):
            from edgeops.errors import ModelError

            raise ModelError("simulated fault: the model fails on live inputs")
        result = self._runtime.run(inputs)
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        if self.corrupt:
            result = {name: (value + 1).astype(value.dtype) for name, value in result.items()}
        return result

    def close(self) -> None:
        self._runtime.close()


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimulatedDevice:
    """One simulated device and the faults it was given."""

    device_id: str
    state_dir: Path
    faulty: bool = False
    trial_faulty: bool = False
    slow: bool = False
    offline: bool = False


def _rss_bytes() -> int:
    from edgeops.agent.telemetry.system import read_rss_bytes

    return read_rss_bytes() or 0


def _pick(
    ids: list[str], share: float, rng: random.Random, named: Collection[str] | None
) -> set[str]:
    if named is not None:
        unknown = set(named) - set(ids)
        if unknown:
            raise ConfigError(f"not simulated devices: {', '.join(sorted(unknown))}")
        return set(named)
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"expected a share between 0 and 1, got {share}")
    return set(rng.sample(ids, round(len(ids) * share)))


class Simulator:
    """``devices`` real agents of ``fleet_dir`` in this process; ``start()`` / ``stop()``
    or a ``with`` block.

    Devices are ``{prefix}-000``, ``{prefix}-001``…, or from ``{prefix}-{first}`` on (one
    process holds about 340 agents: paho's network loop uses ``select()``, blind past file
    descriptor 1024; ``edgeops simulate --processes`` runs slices side by side). One already
    enrolled (its state folder under ``workdir`` holds an ``agent.toml``) is reused as it
    is, so a second run continues with the bundles the devices installed in the first.
    """

    def __init__(
        self,
        fleet_dir: Path,
        *,
        devices: int,
        first: int = 0,
        group: str = DEFAULT_GROUP,
        prefix: str = DEFAULT_PREFIX,
        board: str | None = None,
        workdir: Path | None = None,
        fail_rate: float = 0.0,
        trial_fail_rate: float = 0.0,
        slow_rate: float = 0.0,
        slow_delay_s: float = 0.02,
        base_delay_s: float = 0.005,
        offline: float = 0.0,
        faulty_devices: Collection[str] | None = None,
        trial_faulty_devices: Collection[str] | None = None,
        slow_devices: Collection[str] | None = None,
        offline_devices: Collection[str] | None = None,
        faults_from_release: int | None = None,
        request_interval_s: float = 0.05,
        telemetry_interval_s: float = 1.0,
        trial_window_s: float = 2.0,
        min_requests: int = 5,
        latency_runs: int = 5,
        load_inputs: Sequence[Mapping[str, np.ndarray]] = (),
        seed: int = 0,
    ) -> None:
        from edgeops.fleet.fleetdir import FleetDir

        if devices < 1:
            raise ConfigError(f"expected at least 1 device, got {devices}")
        if slow_delay_s < 0 or base_delay_s < 0 or request_interval_s <= 0:
            raise ConfigError(
                "slow_delay_s and base_delay_s must be >= 0 and request_interval_s > 0"
            )
        self.fleet = FleetDir.open(fleet_dir)
        self.group = group
        self.board = board
        self.workdir = Path(workdir) if workdir is not None else self.fleet.path / "simulator"
        self.slow_delay_s = slow_delay_s
        self.base_delay_s = base_delay_s
        self.faults_from_release = faults_from_release
        self.request_interval_s = request_interval_s
        self.telemetry_interval_s = telemetry_interval_s
        self.trial_window_s = trial_window_s
        self.min_requests = min_requests
        self.latency_runs = latency_runs
        # Requests cycle through these samples (when their names, shapes and dtypes fit
        # the model), else repeat uniform noise, whose input drift against real data is
        # large.
        self.load_inputs = [dict(sample) for sample in load_inputs]
        if first < 0:
            raise ConfigError(f"expected a first device index >= 0, got {first}")
        ids = [f"{prefix}-{i:03d}" for i in range(first, first + devices)]
        # Seeded per slice, so that processes running slices of one fleet draw differently.
        rng = random.Random(seed * 1_000_003 + first)
        faulty = _pick(ids, fail_rate, rng, faulty_devices)
        slow = _pick(ids, slow_rate, rng, slow_devices)
        down = _pick(ids, offline, rng, offline_devices)
        # Drawn last, so that the other faults fall on the same devices as before it existed.
        trial_faulty = _pick(ids, trial_fail_rate, rng, trial_faulty_devices)
        self.devices: dict[str, SimulatedDevice] = {
            d: SimulatedDevice(
                device_id=d,
                state_dir=self.workdir / d,
                faulty=d in faulty,
                trial_faulty=d in trial_faulty,
                slow=d in slow,
                offline=d in down,
            )
            for d in ids
        }
        self.agents: dict[str, Agent] = {}
        self.rss_before = 0
        self.rss_after = 0
        self.start_seconds = 0.0
        self._fault_floor: dict[str, int] = {}
        self._stop = threading.Event()
        self._load_threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ views

    @property
    def online_ids(self) -> list[str]:
        return [d for d, sim in self.devices.items() if not sim.offline]

    @property
    def rss_per_agent_bytes(self) -> int:
        """Resident memory the running agents added to this process, per agent."""
        running = len(self.agents)
        return max(self.rss_after - self.rss_before, 0) // running if running else 0

    def measure_rss(self) -> int:
        """Take the process's resident size now (e.g. once every agent loaded a model);
        :attr:`rss_per_agent_bytes` then reports against it. Returns the new per-agent
        figure."""
        self.rss_after = _rss_bytes()
        return self.rss_per_agent_bytes

    def running_bundle(self, device_id: str) -> str | None:
        """The committed bundle digest of a running agent (its ``state.json``)."""
        committed = self.agents[device_id].state.committed
        return None if committed is None else committed.digest

    # ------------------------------------------------------------------ start / stop

    def enroll(self) -> None:
        """Enroll the devices not enrolled yet and install their bootstrap archives."""
        from edgeops.agent.enroll import install_bootstrap
        from edgeops.fleet.enroll import enroll

        board = self._board_name()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sim in self.devices.values():
            if (sim.state_dir / "agent.toml").is_file():
                continue
            archive = self.workdir / f"{sim.device_id}.bootstrap.tgz"
            enroll(self.fleet.path, sim.device_id, output=archive, group=self.group, board=board)
            install_bootstrap(archive, sim.state_dir)
            archive.unlink()

    def start(self) -> None:
        """Enroll what is missing, then start every online device's agent and its load."""
        from edgeops.agent.config import AgentConfig
        from edgeops.agent.daemon import Agent
        from edgeops.hardware.boards import get_profile

        self.enroll()
        profile = get_profile(self._board_name())
        self.rss_before = _rss_bytes()
        began = time.monotonic()
        try:
            for device_id in self.online_ids:
                sim = self.devices[device_id]
                config = AgentConfig.load(sim.state_dir / "agent.toml")
                config = dataclasses.replace(
                    config,
                    api_enabled=False,
                    telemetry_interval_s=self.telemetry_interval_s,
                    trial_window_s=self.trial_window_s,
                    min_requests=self.min_requests,
                    latency_runs=self.latency_runs,
                )
                agent = Agent(config, loader=self._loader(sim), board=profile)
                committed = agent.state.committed
                self._fault_floor[device_id] = (
                    self.faults_from_release
                    if self.faults_from_release is not None
                    else (committed.release_counter + 1 if committed else 0)
                )
                agent.start()
                self.agents[device_id] = agent
            for device_id, agent in self.agents.items():
                thread = threading.Thread(
                    target=self._load_loop,
                    args=(agent,),
                    name=f"edgeops-sim-{device_id}-load",
                    daemon=True,
                )
                thread.start()
                self._load_threads.append(thread)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        self.rss_after = _rss_bytes()

    def wait_connected(self, timeout: float = 30.0) -> None:
        """Wait until every started agent's link is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(a.link.connected for a in self.agents.values()):
                return
            time.sleep(0.05)
        down = [d for d, a in self.agents.items() if not a.link.connected]
        raise ConfigError(f"{len(down)} simulated devices did not connect: {down[:5]}")

    def stop(self) -> None:
        """Stop the load, then every agent (offline state retained, telemetry on disk)."""
        self._stop.set()
        for thread in self._load_threads:
            thread.join(5)
        self._load_threads.clear()
        agents = list(self.agents.values())
        stoppers = [threading.Thread(target=a.stop, daemon=True) for a in agents]
        # Stopping waits for the broker's acknowledgement of the offline state: in
        # parallel, so a large simulation stops in seconds.
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join(15)
        self.agents.clear()

    def __enter__(self) -> Simulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ internals

    def _board_name(self) -> str:
        if self.board is None:
            from edgeops.hardware.boards import detect_board

            self.board = detect_board().name
        return self.board

    def _loader(self, sim: SimulatedDevice) -> Any:
        def load(path: Path, staged: StagedBundle) -> ModelRuntime:
            from edgeops.agent.runtimes import load_model

            runtime = load_model(path, threads=1)
            hit = staged.release >= self._fault_floor.get(sim.device_id, 0)
            delay = self.base_delay_s + (self.slow_delay_s if hit and sim.slow else 0.0)
            if delay <= 0 and not (hit and (sim.faulty or sim.trial_faulty)):
                return runtime
            return SimulatedRuntime(
                runtime,
                corrupt=hit and sim.faulty,
                delay_s=delay,
                fail_live=hit and sim.trial_faulty,
            )

        return load

    def _load_loop(self, agent: Agent) -> None:
        import numpy as np

        _live.request = True

        inputs: dict[str, Any] | None = None
        cycle: list[dict[str, Any]] = []
        sent = 0
        specs: tuple[Any, ...] = ()
        rng = np.random.default_rng(abs(hash(agent.device_id)) % 2**32)
        while not self._stop.wait(self.request_interval_s):
            active = agent.holder.active
            if active is None:
                continue
            if active.inputs != specs or inputs is None:
                specs = active.inputs
                inputs = {
                    s.name: rng.random(tuple(max(d, 1) for d in s.shape)).astype(s.dtype)
                    for s in specs
                }
                cycle = [
                    {s.name: given[s.name] for s in specs}
                    for given in self.load_inputs
                    if all(
                        s.name in given
                        and given[s.name].shape == s.shape
                        and given[s.name].dtype == np.dtype(s.dtype)
                        for s in specs
                    )
                ]
            if cycle:
                inputs = cycle[sent % len(cycle)]
                sent += 1
            # A failing request is counted by the holder (error or rejection): part of the load.
            with contextlib.suppress(EdgeopsError):
                agent.infer(inputs)


__all__ = ["DEFAULT_GROUP", "SimulatedDevice", "SimulatedRuntime", "Simulator"]
