"""The agent daemon: wires the MQTT link, the updater, the runtimes, serving and telemetry.

One :class:`Agent` per device; it holds no global state, so a simulator can run hundreds in
one process. Its long-running parts are named threads (STYLE 9):

* ``edgeops-agent-<id>-updater`` — the only thread that touches the :class:`Updater`: it takes
  events from one queue (directives from the link, download results, its own action results),
  executes the actions in order, and measures the trial every ``trial_check_interval_s``;
* ``edgeops-agent-<id>-fetch`` — waits for a :class:`~edgeops.mqtt.BundleFetcher` to finish;
* ``edgeops-agent-<id>-telemetry`` — every ``telemetry_interval_s`` appends a sample to the
  on-disk queue and sends what is pending, acknowledging an entry only after its PUBACK;
* the link's network thread, and the inference API's server threads.

:func:`main` is the ``edgeops-agent`` console script (argparse; typer stays off this path).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgeops import __version__
from edgeops.agent.config import AgentConfig
from edgeops.agent.health import (
    Budgets,
    HealthResult,
    TestVector,
    TrialPolicy,
    TrialWindow,
    check_candidate,
    rss_mb,
)
from edgeops.agent.store import Store
from edgeops.agent.updater import (
    BEFORE_ACTIVATION,
    Activate,
    Activated,
    ActivationFailed,
    BundleRef,
    BundleRejected,
    BundleVerified,
    CheckHealth,
    Commit,
    DirectiveReceived,
    Discard,
    DownloadFailed,
    DownloadFinished,
    DownloadProgress,
    Event,
    Fetch,
    HealthChecked,
    LoadCommitted,
    Order,
    Persist,
    Phase,
    PublishState,
    Report,
    RollBack,
    RolledBack,
    Started,
    TrialMeasured,
    Updater,
    UpdaterAction,
    UpdaterState,
    Verify,
    progress_step,
)
from edgeops.errors import (
    ConfigError,
    EdgeopsError,
    InputError,
    ModelError,
    StateError,
    StorageError,
    TransportError,
)
from edgeops.fsutil import fsync_dir, json_bytes, write_synced

if TYPE_CHECKING:
    from edgeops.agent.runtimes import ModelRuntime
    from edgeops.agent.serving import ActiveModel, InferenceServer, ModelHolder
    from edgeops.agent.telemetry import DiskQueue, SystemProbe
    from edgeops.hardware.boards import BoardProfile
    from edgeops.mqtt import BundleFetcher, Link, Message
    from edgeops.trust import Directive, TrustedState

log = logging.getLogger(__name__)

#: How long a clean stop waits for the broker to acknowledge the offline state.
STOP_ACK_TIMEOUT_S = 3.0
#: A download that received nothing for this long asks the broker again for what is missing
#: (slow links still deliver a chunk well within it; a lost delivery never would).
DOWNLOAD_STALL_S = 15.0


# --------------------------------------------------------------------------- bundles


@dataclass(frozen=True, kw_only=True)
class StagedBundle:
    """A verified, unpacked bundle as the agent needs it; ``bundle.json`` in its folder.

    Paths are relative to the bundle's ``files/`` folder.
    """

    digest: str
    name: str
    version: str
    release: int
    model: str
    runtime: str = "auto"
    budgets: Budgets = field(default_factory=Budgets)
    test_vectors: str | None = None
    reference_stats: str | None = None

    def ref(self) -> BundleRef:
        return BundleRef(
            digest=self.digest, release_counter=self.release, version=self.version, name=self.name
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "name": self.name,
            "version": self.version,
            "release": self.release,
            "model": self.model,
            "runtime": self.runtime,
            "budgets": {
                "p95_latency_ms": self.budgets.p95_latency_ms,
                "memory_mb": self.budgets.memory_mb,
                "latency_runs": self.budgets.latency_runs,
            },
            "test_vectors": self.test_vectors,
            "reference_stats": self.reference_stats,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StagedBundle:
        try:
            budgets = data.get("budgets") or {}
            return cls(
                digest=str(data["digest"]),
                name=str(data["name"]),
                version=str(data["version"]),
                release=int(data["release"]),
                model=str(data["model"]),
                runtime=str(data.get("runtime", "auto")),
                budgets=Budgets(
                    p95_latency_ms=budgets.get("p95_latency_ms"),
                    memory_mb=budgets.get("memory_mb"),
                    latency_runs=int(budgets.get("latency_runs", 20)),
                ),
                test_vectors=data.get("test_vectors"),
                reference_stats=data.get("reference_stats"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError(f"malformed bundle record: {exc}") from exc


class BundleStager(Protocol):
    """Verifies a downloaded bundle file and unpacks it (``edgeops.bundle`` in production).

    Bad bundles raise an :class:`~edgeops.errors.InputError` naming the reason.
    ``digest_checked`` is true when this process fetched the file and its fetcher already
    checked the whole file's SHA-256 against ``digest`` (a stager may skip hashing it again;
    every other check still applies). A file found on disk, after a restart, never is.
    """

    def stage(
        self,
        path: Path,
        dest: Path,
        *,
        digest: str,
        size: int,
        trusted: TrustedState,
        board: str | None,
        last_release_counter: int | None,
        max_unpacked: int,
        latency_runs: int,
        digest_checked: bool = False,
    ) -> StagedBundle: ...

    def test_vectors(self, files: Path, staged: StagedBundle) -> list[TestVector]: ...

    def reference_stats(self, files: Path, staged: StagedBundle) -> Mapping[str, Any] | None: ...


ModelLoader = Callable[[Path, StagedBundle], "ModelRuntime"]


class LibraryStager:
    """The production :class:`BundleStager`, on :mod:`edgeops.bundle`.

    The verified manifest envelope is kept beside the unpacked files (``manifest.json``,
    one level above ``files/``) so that the test vectors can be read by their tensor names.
    The bundle file is read once (:func:`edgeops.bundle.verify_and_unpack`): members are
    hashed as they are written, and nothing is kept unless every check passed.
    """

    def stage(
        self,
        path: Path,
        dest: Path,
        *,
        digest: str,
        size: int,
        trusted: TrustedState,
        board: str | None,
        last_release_counter: int | None,
        max_unpacked: int,
        latency_runs: int,
        digest_checked: bool = False,
    ) -> StagedBundle:
        from edgeops.bundle import verify_and_unpack
        from edgeops.trust import BundleRef as SignedBundleRef

        # Only size and digest of ``expected`` are compared (mix-and-match, endless data).
        expected = SignedBundleRef(sha256=digest, size=size, name="-", version="-", release=1)
        verified = verify_and_unpack(
            path,
            dest,
            trusted,
            board=board,
            last_release_counter=last_release_counter,
            expected=expected,
            max_unpacked=max_unpacked,
            digest_checked=digest_checked,
        ).verified
        manifest = verified.manifest
        write_synced(dest.parent / "manifest.json", verified.manifest_bytes)
        budgets = manifest.budgets
        return StagedBundle(
            digest=digest,
            name=manifest.name,
            version=manifest.version,
            release=manifest.release,
            model=manifest.model,
            runtime=manifest.runtime,
            budgets=Budgets(
                p95_latency_ms=budgets.p95_latency_ms,
                memory_mb=budgets.memory_mb,
                latency_runs=latency_runs,
            ),
            test_vectors=manifest.test_vectors,
            reference_stats=manifest.reference_stats,
        )

    @staticmethod
    def _manifest(files: Path) -> Any:
        from edgeops.trust import Manifest
        from edgeops.trust.envelope import parse_envelope
        from edgeops.trust.verify import MAX_MANIFEST_BYTES

        try:
            data = (files.parent / "manifest.json").read_bytes()
        except OSError as exc:
            raise StateError(f"the kept manifest of {files.parent.name[:12]} is gone") from exc
        envelope = parse_envelope(data, expected_type="manifest", max_size=MAX_MANIFEST_BYTES)
        return Manifest.from_signed(envelope.signed)

    def test_vectors(self, files: Path, staged: StagedBundle) -> list[TestVector]:
        from edgeops.bundle import load_test_vectors

        if staged.test_vectors is None:
            return []
        vectors = load_test_vectors(files / staged.test_vectors, self._manifest(files))
        return [
            TestVector(inputs=v["inputs"], expected=v["expected"], atol=v["atol"], rtol=v["rtol"])
            for v in vectors
        ]

    def reference_stats(self, files: Path, staged: StagedBundle) -> Mapping[str, Any] | None:
        if staged.reference_stats is None:
            return None
        try:
            data = json.loads((files / staged.reference_stats).read_bytes())
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot read reference statistics: {exc}") from exc
        return data if isinstance(data, dict) else None


def order_from_directive(directive: Directive, config: AgentConfig) -> Order:
    """The updater's view of a verified directive; policy gaps filled from the config."""
    rollout = directive.rollout
    target = "device" if directive.target.kind == "device" else f"group/{directive.target.name}"
    policy = TrialPolicy(
        window_s=(
            rollout.trial_window_s if rollout.trial_window_s is not None else config.trial_window_s
        ),
        max_error_rate=(
            rollout.max_error_rate if rollout.max_error_rate is not None else config.max_error_rate
        ),
        max_p95_ms=(
            rollout.max_p95_latency_ms
            if rollout.max_p95_latency_ms is not None
            else config.max_p95_ms
        ),
        min_requests=config.min_requests,
    )
    return Order(
        target=target,
        sequence=directive.sequence,
        action=directive.action,
        bundle_digest=directive.bundle.sha256,
        bundle_size=directive.bundle.size,
        policy=policy,
    )


# --------------------------------------------------------------------------- the agent


class _Stop:
    """Tells the updater thread to finish."""


@dataclass
class RollbackTiming:
    """When a failing trial measurement was taken and when the old model served again."""

    measured_at: float
    serving_at: float

    @property
    def seconds(self) -> float:
        return self.serving_at - self.measured_at


class Agent:
    """One device's agent. ``start()``, then ``stop()`` (or :func:`main` for a process).

    Every I/O dependency can be passed in (STYLE 2): the link (default: a TLS
    :class:`~edgeops.mqtt.PahoLink` from the config), the bundle stager (default:
    ``edgeops.bundle``), the model loader (default: ``load_model`` with the board profile's
    options), the clocks. ``holder`` is the in-process inference API.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        link: Link | None = None,
        stager: BundleStager | None = None,
        loader: ModelLoader | None = None,
        board: BoardProfile | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        crash: Callable[[], None] | None = None,
    ) -> None:
        from edgeops.agent.serving import ModelHolder

        self.config = config
        self.store = Store(config.state_dir)
        self._board = board
        self._link = link
        self._stager = stager
        self._loader = loader
        self._clock = clock
        self._wall = wall
        self._now = now
        self._crash = crash or _sigkill_self
        self.holder: ModelHolder = ModelHolder()
        self.server: InferenceServer | None = None
        self._events: queue.Queue[Event | _Stop] = queue.Queue()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._flush_now = threading.Event()
        self._flush_lock = threading.Lock()
        self._event_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._updater: Updater | None = None
        self._trusted: TrustedState | None = None
        self._telemetry: DiskQueue | None = None
        self._probe: SystemProbe | None = None
        self._fetcher: BundleFetcher | None = None
        # The bundle this process fetched and whose whole-file digest its fetcher checked;
        # memory only, so a file found on disk after a restart is hashed again.
        self._fetched_digest: str | None = None
        self._candidate: tuple[StagedBundle, ModelRuntime] | None = None
        self._kept: ActiveModel | None = None  # the previous model, loaded during a trial
        self._trial_started = 0.0
        self._last_measure = 0.0
        self._unsubscribe: list[Callable[[], None]] = []
        self.rollback_timings: list[RollbackTiming] = []
        self.events_sent = 0
        """Event messages handed to the link (for tests and the simulator)."""

    # ------------------------------------------------------------------ properties

    @property
    def device_id(self) -> str:
        return self.config.device_id

    @property
    def state(self) -> UpdaterState:
        """The updater's current state (what ``state.json`` holds)."""
        if self._updater is None:
            return self.store.load_state()
        return self._updater.state

    @property
    def phase(self) -> Phase:
        return self.state.phase

    @property
    def link(self) -> Link:
        if self._link is None:
            raise StateError("the agent is not started")
        return self._link

    @property
    def board(self) -> BoardProfile:
        if self._board is None:
            from edgeops.hardware.boards import detect_board, get_profile

            name = self.config.board
            self._board = detect_board() if name == "auto" else get_profile(name)
        return self._board

    @property
    def download_progress(self) -> tuple[int, int] | None:
        """``(chunks received, chunk count)`` of the bundle being fetched, else None."""
        fetcher = self._fetcher
        return None if fetcher is None else fetcher.progress()

    @property
    def telemetry_pending(self) -> int:
        """Telemetry entries on disk that the broker has not acknowledged yet."""
        return 0 if self._telemetry is None else len(self._telemetry)

    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the serving model in-process (the embedded-app API)."""
        return self.holder.infer(inputs)

    # ------------------------------------------------------------------ start / stop

    def start(self) -> None:
        """Resume from the state folder, serve, connect; returns once everything runs."""
        from edgeops.agent.telemetry import DiskQueue, SystemProbe
        from edgeops.protocol import agent_directive_filters
        from edgeops.trust import TrustedState

        config = self.config
        self.store.ensure()
        root = self.store.read_root()
        self._trusted = TrustedState(root, now=self._now())
        if self._trusted.root.fleet != config.fleet:
            raise ConfigError(
                f"expected a root for fleet {config.fleet!r}, got {self._trusted.root.fleet!r}"
            )
        state = self.store.load_state()
        self._updater = Updater(
            state, verify_directive=self._verify_directive, max_attempts=config.max_attempts
        )
        self._telemetry = DiskQueue(
            self.store.telemetry_dir,
            max_entries=config.caps.telemetry_max_entries,
            max_bytes=config.caps.telemetry_max_bytes,
        )
        thermal = self.board.thermal_path if self._board is not None else None
        self._probe = SystemProbe(
            state_dir=self.store.root, thermal_path=Path(thermal) if thermal else None
        )
        # Resume first (load the committed model, drop any candidate), then listen.
        self._execute(self._updater.handle(Started()))
        if config.api_enabled:
            self._start_api()
        if self._link is None:
            self._link = self._make_link()
        link = self._link
        link.set_will(self._will())
        self._unsubscribe.append(link.on_connect(self._on_connect))
        for topic_filter in agent_directive_filters(config.fleet, config.device_id, config.groups):
            link.subscribe(topic_filter, self._on_directive_message)
        self._spawn("updater", self._updater_loop)
        self._spawn("telemetry", self._telemetry_loop)
        link.connect()
        log.info("agent %s started in phase %s", config.device_id, self.phase.value)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop cleanly: answer requests under way, flush telemetry to disk, go offline."""
        if self._stopping.is_set():
            self._stopped.wait(timeout)
            return
        self._stopping.set()
        if self.server is not None:
            self.server.stop(timeout=timeout)
        self._events.put(_Stop())
        self._flush_now.set()
        fetcher = self._fetcher
        if fetcher is not None:
            fetcher.cancel()
        for thread in self._threads:
            thread.join(timeout)
        if self._telemetry is not None and self._probe is not None:
            try:
                self._sample_telemetry()  # the last window, on disk for the next start
            except EdgeopsError as exc:
                log.warning("last telemetry sample not stored: %s", exc)
        if self._link is not None:
            try:
                if self._link.connected:
                    self._flush_telemetry(timeout=STOP_ACK_TIMEOUT_S)
                    self._publish_state(online=False).wait(STOP_ACK_TIMEOUT_S)
            except TransportError as exc:
                log.warning("offline state not acknowledged: %s", exc)
            for remove in self._unsubscribe:
                remove()
            self._link.close()
        self._retire_kept()
        self.holder.close(drain_timeout=timeout)
        self._stopped.set()
        log.info("agent %s stopped", self.config.device_id)

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(
            target=target, name=f"edgeops-agent-{self.config.device_id}-{name}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def _start_api(self) -> None:
        from edgeops.agent.serving import ApiConfig, InferenceServer

        config = self.config
        self.server = InferenceServer(
            self.holder,
            ApiConfig(host=config.api_host, port=config.api_port, unix_socket=config.api_socket),
        )
        self.server.start()

    def _make_link(self) -> Link:
        from edgeops.mqtt import MqttSettings, PahoLink, TlsSettings

        config = self.config
        tls = None
        if config.broker_url.startswith("mqtts://"):
            tls = TlsSettings(
                cafile=config.tls_ca, certfile=config.tls_cert, keyfile=config.tls_key
            )
        settings = MqttSettings.from_url(
            config.broker_url,
            client_id=config.device_id,
            tls=tls,
            keepalive=config.keepalive,
            will=self._will(),
        )
        return PahoLink(settings)

    # ------------------------------------------------------------------ link callbacks

    def _on_connect(self, session_present: bool) -> None:
        # On the link's thread: publish (non-blocking) and wake the telemetry sender.
        self._publish_state(online=True)
        self._flush_now.set()

    def _on_directive_message(self, message: Message) -> None:
        from edgeops.protocol import TopicKind, check_directive_payload, parse_topic

        if not message.payload or self._stopping.is_set():
            return  # a cleared retained directive
        try:
            topic = parse_topic(message.topic)
            check_directive_payload(message.payload)
        except InputError as exc:
            self._publish_report(
                Report(kind="rejected", reason=f"{type(exc).__name__}: {exc}", figures={})
            )
            return
        if topic.kind is TopicKind.DEVICE_DIRECTIVE:
            target = "device"
        elif topic.kind is TopicKind.GROUP_DIRECTIVE:
            target = f"group/{topic.group}"
        else:
            return
        self._events.put(DirectiveReceived(target, message.payload))

    def _verify_directive(self, raw: bytes, target: str, last_sequence: int | None) -> Order:
        assert self._trusted is not None
        directive = self._trusted.verify_directive(
            raw,
            device_id=self.config.device_id,
            groups=self.config.groups,
            last_sequence=last_sequence,
            now=self._now(),
        )
        return order_from_directive(directive, self.config)

    # ------------------------------------------------------------------ the updater thread

    def post(self, event: Event) -> None:
        """Queue an event for the updater thread (thread-safe)."""
        self._events.put(event)

    def _updater_loop(self) -> None:
        interval = self.config.trial_check_interval_s
        while True:
            in_trial = self._updater is not None and self._updater.phase is Phase.TRIAL
            try:
                # Idle, the thread sleeps until an event comes (no periodic wake-ups).
                item = self._events.get(timeout=interval if in_trial else None)
            except queue.Empty:
                item = None
            if isinstance(item, _Stop):
                return
            try:
                if item is not None:
                    self._handle(item)
                if (
                    self._updater is not None
                    and self._updater.phase is Phase.TRIAL
                    and self._clock() - self._last_measure >= interval
                ):
                    self._handle(self._measure_trial())
            except Exception:
                # A bug must not kill the updater thread silently; the state on disk is
                # consistent (write-ahead), so the next start resumes from it.
                log.exception("updater step failed on %r", item)

    def _handle(self, event: Event) -> None:
        assert self._updater is not None
        before = self._updater.state
        try:
            actions = self._updater.handle(event)
        except StateError as exc:
            log.warning("ignored %s: %s", type(event).__name__, exc)
            return
        if actions and isinstance(actions[0], Persist):
            try:
                self._run_action(actions[0])
            except StorageError as exc:
                self._write_ahead_failed(before, actions[0].state, exc)
                return
            actions = actions[1:]
        self._execute(actions)

    def _write_ahead_failed(
        self, before: UpdaterState, wanted: UpdaterState, exc: StorageError
    ) -> None:
        # Found with a full state disk: the transition is dropped, not half-done, and the
        # fleet hears why instead of waiting for a device that silently stays put.
        assert self._updater is not None
        self._updater.restore(before)
        reason = f"StorageError: {exc}"
        log.error("cannot persist phase %s: %s", wanted.phase.value, exc)
        if before.phase in BEFORE_ACTIVATION:
            # Mid-update: give the candidate up (which frees its files). If that state
            # cannot be written either, the disk keeps the transient phase, from which a
            # restart drops the candidate the same way.
            for action in self._updater.give_up(reason):
                try:
                    follow_up = self._run_action(action)
                except StorageError as again:
                    if not isinstance(action, Persist):
                        raise
                    log.error("cannot persist phase %s: %s", action.state.phase.value, again)
                    continue
                if follow_up is not None:
                    self._handle(follow_up)
            return
        # Nothing was under way (the retained directive is handled afresh after the next
        # reconnect), or the model already switched (a restart resumes from the disk).
        candidate = wanted.candidate
        self._publish_report(
            Report(
                kind="update_result",
                state=Phase.FAILED.value,
                directive_seq=None if candidate is None else candidate.order.sequence,
                bundle_digest=None if candidate is None else candidate.order.bundle_digest,
                reason=reason,
                figures={"phase": wanted.phase.value},
            )
        )

    def _measure_trial(self) -> TrialMeasured:
        now = self._clock()
        self._last_measure = now
        active = self.holder.active
        if active is None:
            return TrialMeasured(
                TrialWindow(elapsed_s=now - self._trial_started, requests=0, errors=0)
            )
        snap = active.metrics.snapshot()
        return TrialMeasured(
            TrialWindow(
                elapsed_s=now - self._trial_started,
                requests=snap.requests,
                errors=snap.errors,
                p95_ms=snap.p95_ms,
            )
        )

    # ------------------------------------------------------------------ actions

    def _execute(self, actions: list[UpdaterAction]) -> None:
        for action in actions:
            follow_up = self._run_action(action)
            if follow_up is not None:
                # Results of our own actions go first, before anything queued meanwhile.
                self._handle(follow_up)

    def _run_action(self, action: UpdaterAction) -> Event | None:
        match action:
            case Persist():
                self.store.save_state(action.state)
                if self.config.crash_at == action.state.phase.value:
                    log.warning("test hook: killing the agent in phase %s", self.config.crash_at)
                    self._crash()
                return None
            case Report():
                self._publish_report(action)
                return None
            case PublishState():
                if self._link is not None:
                    self._link.set_will(self._will())
                    if self._link.connected:
                        self._publish_state(online=True)
                return None
            case LoadCommitted():
                self._load_committed(action.bundle)
                release_free_memory()
                return None
            case Fetch():
                return self._fetch(action)
            case Verify():
                return self._verify(action)
            case CheckHealth():
                return self._check_health(action)
            case Activate():
                return self._activate(action)
            case RollBack():
                return self._roll_back(action)
            case Commit():
                self._retire_kept()
                self.store.prune(set(action.keep))
                release_free_memory()
                return None
            case Discard():
                self._discard(action.digest)
                return None
        raise StateError(f"unknown action {action!r}")  # pragma: no cover

    # -- fetch

    def _fetch(self, action: Fetch) -> Event | None:
        from edgeops.mqtt import BundleFetcher

        if action.size > self.config.caps.max_bundle_bytes:
            return DownloadFailed(
                f"bundle of {action.size} bytes over the cap of "
                f"{self.config.caps.max_bundle_bytes}",
                transient=False,
            )
        path = self.store.download_path(action.digest)
        self.store.downloads_dir.mkdir(parents=True, exist_ok=True)
        self._fetched_digest = None  # the file is written afresh
        sink = path.open("w+b")
        last_step = 0

        def on_progress(received: int, total: int) -> None:
            # The updater acts only when the reported step changes: one event per step, not
            # one per chunk, for the updater thread to wake up to.
            nonlocal last_step
            step = progress_step(received, total)
            if step > last_step:
                last_step = step
                self._events.put(DownloadProgress(received, total))

        fetcher = BundleFetcher(
            self.link,
            self.config.fleet,
            digest=action.digest,
            size=action.size,
            sink=sink,
            max_total=self.config.caps.max_bundle_bytes,
            on_progress=on_progress,
        )
        self._fetcher = fetcher

        def wait() -> None:
            try:
                fetcher.wait(self.config.download_timeout_s, stall_s=DOWNLOAD_STALL_S)
                try:
                    # Flushed so that a full disk shows here, but not synced: the download
                    # is read back by this process only, and a restart mid-update discards
                    # it (the staged files are synced instead).
                    sink.flush()
                except OSError as exc:
                    raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
                self._fetched_digest = action.digest
                event: Event = DownloadFinished()
            except StorageError as exc:
                # A full disk does not heal on reconnect: fail, and free the partial file.
                fetcher.cancel()
                event = DownloadFailed(f"StorageError: {exc}", transient=False)
            except TransportError as exc:
                fetcher.cancel()
                event = DownloadFailed(str(exc), transient=True)
            except InputError as exc:
                fetcher.cancel()
                event = DownloadFailed(f"{type(exc).__name__}: {exc}", transient=False)
            finally:
                with contextlib.suppress(OSError):  # a full disk fails the last flush too
                    sink.close()
                self._fetcher = None
            if not self._stopping.is_set():
                self._events.put(event)

        fetcher.start()
        self._spawn(f"fetch-{action.digest[:8]}", wait)
        return None

    # -- verify and stage

    def _verify(self, action: Verify) -> Event:
        assert self._trusted is not None
        stager = self._get_stager()
        path = self.store.download_path(action.digest)
        # Unpack beside the kept bundles, then rename: a crash mid-unpack leaves only a
        # staging folder, never a half-written bundle under its digest.
        staging = self.store.staging_dir(action.digest)
        shutil.rmtree(staging, ignore_errors=True)
        self._trusted.now = self._now()
        digest_checked, self._fetched_digest = self._fetched_digest == action.digest, None
        try:
            staged = stager.stage(
                path,
                staging / "files",
                digest=action.digest,
                size=action.size,
                trusted=self._trusted,
                board=self.board.name,
                last_release_counter=action.last_release_counter,
                max_unpacked=self.config.caps.max_unpacked_bytes,
                latency_runs=self.config.latency_runs,
                digest_checked=digest_checked,
            )
        except (EdgeopsError, OSError) as exc:
            # StorageError included: a bundle that cannot be read back is not installable.
            shutil.rmtree(staging, ignore_errors=True)
            return BundleRejected(f"{type(exc).__name__}: {exc}")
        write_synced(staging / "bundle.json", json_bytes(staged.to_json()))
        try:
            # One sync for every entry the stage made in the folder (files/, manifest.json,
            # bundle.json), before the rename publishes it.
            fsync_dir(staging)
        except OSError as exc:
            raise StorageError(f"cannot write {staging}: {exc.strerror or exc}") from exc
        self.store.install_staging(action.digest)
        path.unlink(missing_ok=True)
        return BundleVerified(staged.ref())

    def _get_stager(self) -> BundleStager:
        if self._stager is None:
            self._stager = LibraryStager()
        return self._stager

    def _staged(self, digest: str) -> StagedBundle:
        path = self.store.bundle_dir(digest) / "bundle.json"
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise StateError(f"bundle {digest[:12]} has no readable bundle.json: {exc}") from exc
        return StagedBundle.from_json(data)

    def _load(self, staged: StagedBundle) -> ModelRuntime:
        path = self.store.files_dir(staged.digest) / staged.model
        if self._loader is not None:
            return self._loader(path, staged)
        from edgeops.agent.runtimes import load_model

        options = self.board.load_options(path)
        runtime = options.runtime if self.config.runtime == "auto" else self.config.runtime
        return load_model(
            path, runtime=runtime, threads=options.threads, delegates=options.delegates
        )

    # -- health check

    def _check_health(self, action: CheckHealth) -> Event:
        digest = action.bundle.digest
        try:
            staged = self._staged(digest)
            before = rss_mb()
            runtime = self._load(staged)
        except (ModelError, StateError) as exc:
            return HealthChecked(ok=False, reason=f"cannot load the model: {exc}")
        added = max(rss_mb() - before, 0.0)
        try:
            vectors = self._get_stager().test_vectors(self.store.files_dir(digest), staged)
            result = check_candidate(runtime, vectors, staged.budgets, memory_added_mb=added)
        except (InputError, StateError) as exc:
            result = HealthResult(ok=False, reason=f"{type(exc).__name__}: {exc}")
        if not result.ok:
            runtime.close()
            return HealthChecked(ok=False, reason=result.reason, figures=result.figures)
        self._candidate = (staged, runtime)
        return HealthChecked(ok=True, figures=result.figures)

    # -- activation, rollback

    def _model_info(self, staged: StagedBundle) -> Any:
        from edgeops.agent.serving import ModelInfo

        name = self.config.model_name or staged.name
        return ModelInfo(name=name, version=staged.version or "1", bundle_digest=staged.digest)

    def _drift(self, staged: StagedBundle) -> Any:
        from edgeops.agent.telemetry import DriftMonitor

        try:
            reference = self._get_stager().reference_stats(
                self.store.files_dir(staged.digest), staged
            )
        except InputError as exc:
            log.warning("bundle %s: reference statistics unusable: %s", staged.digest[:12], exc)
            return None
        return DriftMonitor(reference) if reference else None

    def _activate(self, action: Activate) -> Event:
        candidate = self._candidate
        if candidate is None or candidate[0].digest != action.bundle.digest:
            return ActivationFailed("the checked model is no longer loaded")
        staged, runtime = candidate
        self._candidate = None
        try:
            old = self.holder.swap(
                runtime, self._model_info(staged), drift=self._drift(staged), close_old=False
            )
        except (ValueError, EdgeopsError) as exc:
            runtime.close()
            return ActivationFailed(str(exc))
        self._retire_kept()
        self._kept = old
        self._trial_started = self._last_measure = self._clock()
        return Activated()

    def _roll_back(self, action: RollBack) -> Event:
        measured_at = self._last_measure
        target = action.to
        kept = self._kept
        try:
            if target is None:
                self.holder.swap(None)
            elif kept is not None and kept.info.bundle_digest == target.digest:
                # The old model is still loaded: swap back at once, then drain the new one.
                failing = self.holder.restore(kept, close_old=False)
                self._kept = None
                self.rollback_timings.append(RollbackTiming(measured_at, self._clock()))
                if failing is not None:
                    self.holder.retire(failing)
            else:
                self._retire_kept()
                staged = self._staged(target.digest)
                self.holder.swap(
                    self._load(staged), self._model_info(staged), drift=self._drift(staged)
                )
        except (EdgeopsError, ValueError) as exc:
            return RolledBack(ok=False, reason=str(exc))
        return RolledBack()

    def _retire_kept(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            # StateError: it is the active model again (restored); nothing to close.
            with contextlib.suppress(StateError):
                self.holder.retire(kept)

    def _load_committed(self, bundle: BundleRef | None) -> None:
        if self._candidate is not None:
            self._candidate[1].close()
            self._candidate = None
        active = self.holder.active
        if bundle is None:
            if active is not None:
                self.holder.swap(None)
            return
        if active is not None and active.info.bundle_digest == bundle.digest:
            return
        try:
            staged = self._staged(bundle.digest)
            self.holder.swap(
                self._load(staged), self._model_info(staged), drift=self._drift(staged)
            )
        except EdgeopsError as exc:
            # The device stays up (telemetry, directives) without a model; say why.
            log.error("cannot load the committed bundle %s: %s", bundle.digest[:12], exc)
            self._publish_report(
                Report(
                    kind="update_result",
                    state=Phase.FAILED.value,
                    bundle_digest=bundle.digest,
                    reason=f"cannot load the committed bundle: {exc}",
                )
            )

    def _discard(self, digest: str) -> None:
        if self._candidate is not None and self._candidate[0].digest == digest:
            self._candidate[1].close()
            self._candidate = None
        state = self.state
        kept = {b.digest for b in (state.committed, state.previous) if b is not None}
        if digest not in kept:
            self.store.remove_bundle(digest)

    # ------------------------------------------------------------------ messages

    def _bundle_message(self, bundle: BundleRef | None) -> Any:
        from edgeops.protocol import BundleRef as WireBundle

        if bundle is None:
            return None
        return WireBundle(
            name=bundle.name or "bundle",
            version=bundle.version or str(bundle.release_counter),
            digest=bundle.digest,
            release=bundle.release_counter,
        )

    def _state_message(self, *, online: bool) -> bytes:
        from edgeops.protocol import StateMessage

        state = self.state
        return StateMessage(
            online=online,
            ts=self._wall(),
            bundle=self._bundle_message(state.committed),
            previous=self._bundle_message(state.previous),
            agent_version=__version__,
            board=self._board.name if self._board is not None else self.config.board,
            update=state.phase.value,
        ).to_bytes()

    def _will(self) -> Any:
        from edgeops.mqtt import Will
        from edgeops.protocol import state_topic

        return Will(
            topic=state_topic(self.config.fleet, self.config.device_id),
            payload=self._state_message(online=False),
            qos=1,
            retain=True,
        )

    def _publish_state(self, *, online: bool) -> Any:
        from edgeops.protocol import state_topic

        return self.link.publish(
            state_topic(self.config.fleet, self.config.device_id),
            self._state_message(online=online),
            qos=1,
            retain=True,
        )

    def _publish_report(self, report: Report) -> None:
        from edgeops.protocol import EventMessage, events_topic

        if self._link is None:
            log.info("event before the link exists: %s %s", report.kind, report.reason)
            return
        reason = report.reason
        if len(reason) > 1000:
            reason = reason[:997] + "..."
        with self._event_lock:  # the link thread reports malformed directives too
            seq = self.store.next_event_seq()
        message = EventMessage(
            seq=seq,
            kind=report.kind,
            ts=self._wall(),
            directive_seq=report.directive_seq,
            bundle_digest=report.bundle_digest,
            state=report.state,
            reason=reason,
            figures=dict(report.figures),
        )
        log.info("event %s state=%s %s", report.kind, report.state, reason)
        try:
            self._link.publish(
                events_topic(self.config.fleet, self.config.device_id),
                message.to_bytes(),
                qos=1,
            )
            self.events_sent += 1
        except TransportError as exc:
            log.warning("event %s not sent: %s", report.kind, exc)

    # ------------------------------------------------------------------ telemetry

    def _telemetry_loop(self) -> None:
        interval = self.config.telemetry_interval_s
        next_sample = self._clock() + interval
        while not self._stopping.is_set():
            self._flush_now.wait(max(0.0, next_sample - self._clock()))
            if self._stopping.is_set():
                return
            try:
                if self._clock() >= next_sample:
                    next_sample = self._clock() + interval
                    self._sample_telemetry()
                self._flush_now.clear()
                self._flush_telemetry()
            except EdgeopsError as exc:
                log.warning("telemetry: %s", exc)

    def _sample_telemetry(self) -> None:
        from edgeops.agent.telemetry import collect_sample

        assert self._telemetry is not None
        assert self._probe is not None
        sample = collect_sample(holder=self.holder, probe=self._probe, now=self._wall())
        self._telemetry.append(json.dumps(sample.to_obj()).encode("utf-8"))

    def _flush_telemetry(self, timeout: float = 10.0) -> int:
        """Send what the disk queue holds, oldest first; ack each entry on its PUBACK."""
        from edgeops.protocol import TelemetryMessage, TelemetrySample, telemetry_topic

        queue_ = self._telemetry
        link = self._link
        if queue_ is None or link is None or not link.connected:
            return 0
        sent = 0
        topic = telemetry_topic(self.config.fleet, self.config.device_id)
        with self._flush_lock:
            while True:
                batch = queue_.pending(64)
                if not batch:
                    return sent
                acks = []
                for seq, payload in batch:
                    try:
                        sample = TelemetrySample.from_obj(json.loads(payload))
                    except (ValueError, InputError):
                        queue_.ack(seq)  # unreadable entry: never sendable, do not block
                        continue
                    message = TelemetryMessage(seq=seq, samples=(sample,), dropped=queue_.dropped)
                    acks.append((seq, link.publish(topic, message.to_bytes(), qos=1)))
                for seq, ack in acks:
                    try:
                        ack.wait(timeout)
                    except TransportError:
                        return sent  # the rest stays queued for the next connection
                    queue_.ack(seq)
                    sent += 1

    def telemetry_now(self) -> None:
        """Take a telemetry sample and send what is pending (tests, the simulator)."""
        self._sample_telemetry()
        self._flush_telemetry()


def release_free_memory() -> None:
    """Give freed heap pages back to the kernel (glibc ``malloc_trim``).

    Verifying, unpacking and health-checking a bundle allocates and frees tens of MB (test
    vectors, the old model's arenas); glibc keeps that heap mapped, so without a trim the
    resident size of an idle agent keeps the high-water mark of its last update. A no-op
    where the C library has no ``malloc_trim`` (musl, macOS).
    """
    import ctypes

    try:
        # The symbols this process already has (libc's included): ctypes.util.find_library
        # would run `ldconfig -p` in a child process and leave subprocess imported for good.
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _sigkill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """The ``edgeops-agent`` console script."""
    parser = argparse.ArgumentParser(
        prog="edgeops-agent", description="Run the edgeops agent on this device."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="agent.toml to run with")
    source.add_argument(
        "--bootstrap",
        type=Path,
        help="bootstrap archive from `edgeops device enroll`; unpacked into --state-dir once",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("STATE_DIRECTORY", "/var/lib/edgeops")),
        help="where --bootstrap unpacks (default: $STATE_DIRECTORY or /var/lib/edgeops)",
    )
    parser.add_argument("--log-level", default=os.environ.get("EDGEOPS_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return run(config_path=args.config, bootstrap=args.bootstrap, state_dir=args.state_dir)
    except EdgeopsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


#: glibc's ``mallopt`` parameter for the arena cap (``M_ARENA_MAX`` in malloc.h).
_M_ARENA_MAX = -8
#: What :func:`run` caps glibc's malloc arenas at, as ``MALLOC_ARENA_MAX=2`` would.
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for threads created from now on; ``True`` if it was set.

    glibc gives each thread that allocates its own arena (up to 8 per core), and memory freed
    in one arena cannot serve another, so an agent with a handful of threads keeps several
    partly empty heaps (decision 0006 has the figures). The systemd unit sets
    ``MALLOC_ARENA_MAX``, which glibc reads at start; this does the same for an agent started
    another way. A ``MALLOC_ARENA_MAX`` already in the environment wins; on a libc without
    ``mallopt`` (musl) nothing changes.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


#: Thread-count variables OpenBLAS reads when numpy loads it (the first wins).
_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def limit_blas_threads() -> bool:
    """Ask numpy's OpenBLAS for one thread; ``True`` if ``OPENBLAS_NUM_THREADS`` was set.

    OpenBLAS starts a thread per core when numpy is imported (LiteRT imports numpy), and the
    agent does no linear algebra. Only an agent that has not imported numpy yet is affected;
    a thread count already in the environment wins.
    """
    if any(name in os.environ for name in _BLAS_THREAD_VARIABLES):
        return False
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    return True


def run(
    *,
    config_path: Path | None = None,
    bootstrap: Path | None = None,
    state_dir: Path | None = None,
    ready: Callable[[Agent], None] | None = None,
) -> int:
    """Run one agent in this process until SIGTERM or SIGINT; returns the exit code."""
    # Before the agent's threads exist, so that none of them gets an arena of its own.
    limit_malloc_arenas()
    limit_blas_threads()  # before a model load imports numpy
    if bootstrap is not None:
        from edgeops.agent.enroll import install_bootstrap

        if state_dir is None:
            raise ConfigError("--bootstrap needs a state folder")
        config_path = install_bootstrap(bootstrap, state_dir)
    if config_path is None:
        raise ConfigError("expected --config FILE or --bootstrap FILE")
    config = AgentConfig.load(config_path, environ=os.environ)
    agent = Agent(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        agent.start()
        if ready is not None:
            ready(agent)
        stop.wait()
    finally:
        agent.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


__all__ = [
    "Agent",
    "BundleStager",
    "ModelLoader",
    "RollbackTiming",
    "StagedBundle",
    "main",
    "order_from_directive",
    "run",
]


if __name__ == "__main__":
    sys.exit(main())
