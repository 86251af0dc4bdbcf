"""``edgeops simulate``: N real agents of a fleet in this process, for demos and tests."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from edgeops.cli import app
from edgeops.cli.output import JSON_OPTION_HELP, emit, key_values
from edgeops.cli.status import FLEET_OPTION_HELP

#: ``--switch-interval-ms``: measured with ``benchmarks/fleet_rollout.py`` (200 agents in one
#: process), a 3 MB rollout took 15-50 % less time than with Python's default of 5 ms, in
#: paired runs.
DEFAULT_SWITCH_INTERVAL_MS = 50.0


@app.command("simulate")
def simulate_command(
    *,
    fleet: Annotated[
        Path, typer.Option("--fleet", envvar="EDGEOPS_FLEET", help=FLEET_OPTION_HELP)
    ] = Path("."),
    devices: Annotated[int, typer.Option("--devices", help="How many devices to run.")] = 10,
    group: Annotated[str, typer.Option("--group", help="Their group (enrolled into it).")] = "sim",
    prefix: Annotated[str, typer.Option("--prefix", help="Device ids are PREFIX-000…")] = "sim",
    fail_rate: Annotated[
        float,
        typer.Option(
            "--fail-rate", help="Share (0-1) of devices whose new bundles fail health checks."
        ),
    ] = 0.0,
    trial_fail_rate: Annotated[
        float,
        typer.Option(
            "--trial-fail-rate",
            help="Share (0-1) of devices whose new bundles pass the health check but fail "
            "every live request (the trial rolls them back).",
        ),
    ] = 0.0,
    slow_model: Annotated[
        bool, typer.Option("--slow-model", help="New bundles serve slower on every device.")
    ] = False,
    slow_ms: Annotated[
        float, typer.Option("--slow-ms", help="Latency added by --slow-model, per request.")
    ] = 20.0,
    offline: Annotated[
        float, typer.Option("--offline", help="Share (0-1) of devices that never connect.")
    ] = 0.0,
    board: Annotated[
        str | None, typer.Option("--board", help="Board profile (default: this machine's).")
    ] = None,
    faults_from_release: Annotated[
        int | None,
        typer.Option(
            "--faults-from-release",
            help="First bundle release the faults hit (default: newer than what each runs).",
        ),
    ] = None,
    telemetry_interval: Annotated[
        float, typer.Option("--telemetry-interval", help="Seconds between telemetry samples.")
    ] = 2.0,
    trial_window: Annotated[
        float, typer.Option("--trial-window", help="Seconds a new bundle is on trial.")
    ] = 5.0,
    request_interval: Annotated[
        float, typer.Option("--request-interval", help="Seconds between a device's requests.")
    ] = 0.05,
    duration: Annotated[
        float | None, typer.Option("--duration", help="Stop after this many seconds.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Which devices get which fault.")] = 0,
    first: Annotated[
        int, typer.Option("--first", help="Index of the first device (PREFIX-FIRST…).")
    ] = 0,
    processes: Annotated[
        int,
        typer.Option(
            "--processes",
            help="Run the devices in this many processes (about 340 fit in one).",
        ),
    ] = 1,
    switch_interval_ms: Annotated[
        float,
        typer.Option(
            "--switch-interval-ms",
            help="How long one thread may hold the interpreter lock before another is let "
            "in (Python's default is 5). Every agent here has its own threads, and each "
            "thread that waits for the lock wakes up once per interval to ask for it: with "
            "hundreds of agents in one process, a longer interval leaves more CPU to the "
            "agents.",
        ),
    ] = DEFAULT_SWITCH_INTERVAL_MS,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """Enroll DEVICES devices (once) and run a real agent for each until Ctrl-C.

    Each device verifies and installs what the fleet pushes, serves steady inference on
    its model and reports telemetry, over TLS with its own certificate.
    """
    import signal
    import sys
    import threading

    from edgeops.errors import ConfigError
    from edgeops.fleet.simulate import Simulator

    if processes < 1 or processes > devices:
        raise ConfigError(f"--processes: expected 1 to {devices}, got {processes}")
    if not 0 < switch_interval_ms <= 1000:
        raise ConfigError(f"--switch-interval-ms: expected 0 to 1000, got {switch_interval_ms:g}")
    options = {
        "group": group,
        "prefix": prefix,
        "board": board,
        "fail_rate": fail_rate,
        "trial_fail_rate": trial_fail_rate,
        "slow_rate": 1.0 if slow_model else 0.0,
        "slow_delay_s": slow_ms / 1000.0,
        "offline": offline,
        "faults_from_release": faults_from_release,
        "telemetry_interval_s": telemetry_interval,
        "trial_window_s": trial_window,
        "request_interval_s": request_interval,
        "seed": seed,
    }
    if processes > 1:
        # Enroll every device here, once (each enrollment rewrites the ACL), then let each
        # child run its slice of the already enrolled devices.
        Simulator(fleet, devices=devices, first=first, **options).enroll()  # type: ignore[arg-type]
        _run_children(
            fleet,
            devices=devices,
            first=first,
            processes=processes,
            duration=duration,
            child_args=[
                *("--group", group, "--prefix", prefix, "--fail-rate", str(fail_rate)),
                *("--trial-fail-rate", str(trial_fail_rate)),
                *("--slow-ms", str(slow_ms), "--offline", str(offline), "--seed", str(seed)),
                *("--telemetry-interval", str(telemetry_interval)),
                *("--trial-window", str(trial_window)),
                *("--request-interval", str(request_interval)),
                *("--switch-interval-ms", str(switch_interval_ms)),
                *(["--slow-model"] if slow_model else []),
                *(["--board", board] if board else []),
                *(
                    ["--faults-from-release", str(faults_from_release)]
                    if faults_from_release is not None
                    else []
                ),
                *(["--json"] if as_json else []),
            ],
        )
        return
    # This process exists to run the agents: the interpreter's setting is ours to choose.
    sys.setswitchinterval(switch_interval_ms / 1000.0)
    # The same options as the children get: one process or many simulate the same fleet.
    sim = Simulator(fleet, devices=devices, first=first, **options)  # type: ignore[arg-type]
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with sim:
            summary = {
                "devices": len(sim.devices),
                "running": len(sim.agents),
                "offline": sorted(d for d, s in sim.devices.items() if s.offline),
                "faulty": sorted(d for d, s in sim.devices.items() if s.faulty),
                "trial_faulty": sorted(d for d, s in sim.devices.items() if s.trial_faulty),
                "slow": sorted(d for d, s in sim.devices.items() if s.slow),
                "group": group,
                "start_s": round(sim.start_seconds, 2),
                "rss_per_agent_mb": round(sim.rss_per_agent_bytes / 2**20, 2),
                "switch_interval_ms": round(sys.getswitchinterval() * 1000, 3),
            }
            emit(summary, as_json=as_json, human=_print)
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait(duration)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_children(
    fleet: Path,
    *,
    devices: int,
    first: int,
    processes: int,
    duration: float | None,
    child_args: list[str],
) -> None:
    """One ``edgeops simulate`` per slice; SIGTERM / Ctrl-C here stops them all."""
    import signal
    import subprocess
    import sys
    import threading

    base, extra = divmod(devices, processes)
    children: list[subprocess.Popen[bytes]] = []
    start = first
    for index in range(processes):
        count = base + (1 if index < extra else 0)
        command = [sys.executable, "-m", "edgeops", "simulate", "--fleet", str(fleet)]
        command += ["--devices", str(count), "--first", str(start), *child_args]
        if duration is not None:
            command += ["--duration", str(duration)]
        children.append(subprocess.Popen(command))
        start += count
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.is_set() and any(c.poll() is None for c in children):
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait(60)
        signal.signal(signal.SIGTERM, previous)
    failed = [c.returncode for c in children if c.returncode not in (0, -signal.SIGTERM)]
    if failed:
        raise typer.Exit(1)


def _print(summary: dict[str, object]) -> None:
    key_values({k: (", ".join(v) if isinstance(v, list) else v) or "-" for k, v in summary.items()})
    typer.echo("running; Ctrl-C stops every device (offline state retained)")
