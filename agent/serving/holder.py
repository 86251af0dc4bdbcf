"""The active model, swapped with zero downtime.

:class:`ModelHolder` owns the model the device serves. Every request enters through
:meth:`ModelHolder.use`, which counts it in flight on the model it got. :meth:`ModelHolder.swap`
replaces the model in one step under a lock, so the next request already goes to the new
one, then waits for the requests still running on the old model to finish before closing it:
no request ever sees a closed model, none waits for a load.

The holder also does the per-request bookkeeping that must not differ between the HTTP API
and the in-process API: input validation, the latency/error metrics window, drift sampling.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edgeops.agent.runtimes.base import ModelRuntime, TensorSpec, validate_inputs
from edgeops.agent.telemetry.metrics import MetricsWindow
from edgeops.errors import InferenceInputError, StateError

if TYPE_CHECKING:
    import numpy as np

    from edgeops.agent.telemetry.drift import DriftMonitor

log = logging.getLogger(__name__)

_PLATFORMS = {
    "ai_edge_litert": "tflite",
    "tflite_runtime": "tflite",
    "onnxruntime": "onnxruntime_onnx",
}


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What the device says about the model it serves.

    ``name`` is the name apps use (``/v2/models/{name}``); ``version`` the bundle's version
    label or release counter; ``bundle_digest`` the SHA-256 of the bundle file.
    """

    name: str
    version: str = "1"
    bundle_digest: str | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"expected a model name without '/', got {self.name!r}")
        if not self.version or "/" in self.version:
            raise ValueError(f"expected a model version without '/', got {self.version!r}")


class ActiveModel:
    """A runtime with its :class:`ModelInfo`, its drift monitor and its own metrics.

    ``metrics`` counts only this model's requests since it became active (what a trial
    after activation judges); the holder's window counts all requests (for telemetry).
    """

    def __init__(
        self,
        runtime: ModelRuntime,
        info: ModelInfo,
        *,
        drift: DriftMonitor | None,
        holder_metrics: MetricsWindow,
        clock: Callable[[], float],
    ) -> None:
        self.runtime = runtime
        self.info = info
        self.drift = drift
        self.metrics = MetricsWindow()
        self._holder_metrics = holder_metrics
        self._clock = clock
        self.inflight = 0

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        """The model's inputs."""
        return self.runtime.inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        """The model's outputs."""
        return self.runtime.outputs

    @property
    def platform(self) -> str:
        """The Open Inference Protocol platform name (``tflite``, ``onnxruntime_onnx``)."""
        return _PLATFORMS.get(self.runtime.name, self.runtime.name)

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate, run, and account one request (metrics, drift).

        Raises :class:`InferenceInputError` for the caller's bad input (counted as
        rejected) and :class:`~edgeops.errors.ModelError` when the model fails (counted
        as an error).
        """
        try:
            arrays = validate_inputs(self.runtime.inputs, inputs)
        except InferenceInputError:
            self.metrics.record_rejected()
            self._holder_metrics.record_rejected()
            raise
        start = self._clock()
        try:
            result = self.runtime.run(arrays)
        except InferenceInputError:
            self.metrics.record_rejected()
            self._holder_metrics.record_rejected()
            raise
        except Exception:
            elapsed = self._clock() - start
            self.metrics.record(elapsed, ok=False)
            self._holder_metrics.record(elapsed, ok=False)
            raise
        elapsed = self._clock() - start
        self.metrics.record(elapsed)
        self._holder_metrics.record(elapsed)
        if self.drift is not None:
            self.drift.observe(arrays, result)
        return result


class ModelHolder:
    """Holds the active model; see the module docstring.

    ::

        holder = ModelHolder()
        holder.swap(load_model(path), ModelInfo(name="detector", version="7"))
        outputs = holder.infer({"images": frame})          # the in-process API
        with holder.use() as model:                         # or hold the model for a while
            outputs = model.run({"images": frame})
    """

    def __init__(
        self,
        *,
        metrics: MetricsWindow | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.metrics = metrics or MetricsWindow()
        self._clock = clock
        self._cond = threading.Condition()
        self._active: ActiveModel | None = None

    @property
    def active(self) -> ActiveModel | None:
        """The model new requests go to, or ``None`` before the first :meth:`swap`."""
        return self._active

    @property
    def ready(self) -> bool:
        """Whether a model is loaded."""
        return self._active is not None

    @contextmanager
    def use(self) -> Iterator[ActiveModel]:
        """Hold the active model for one request; it is not closed before this exits.

        Raises :class:`StateError` when no model is loaded.
        """
        with self._cond:
            model = self._active
            if model is None:
                raise StateError("no model is loaded yet")
            model.inflight += 1
        try:
            yield model
        finally:
            with self._cond:
                model.inflight -= 1
                if model.inflight == 0:
                    self._cond.notify_all()

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the active model on ``inputs`` (the in-process inference API)."""
        with self.use() as model:
            return model.run(inputs)

    def swap(
        self,
        runtime: ModelRuntime | None,
        info: ModelInfo | None = None,
        *,
        drift: DriftMonitor | None = None,
        close_old: bool = True,
        drain_timeout: float = 30.0,
    ) -> ActiveModel | None:
        """Make ``runtime`` the active model at once; return the previous one.

        With ``close_old`` (the default) this waits until the previous model has no
        request in flight (at most ``drain_timeout`` seconds) and closes it. With
        ``close_old=False`` the previous model stays loaded, e.g. so that an updater can
        swap back to it within milliseconds if the new one fails its trial; the caller
        closes it later with :meth:`retire`. ``runtime=None`` unloads.
        """
        new: ActiveModel | None = None
        if runtime is not None:
            if info is None:
                raise ValueError("a model needs its ModelInfo")
            new = ActiveModel(
                runtime, info, drift=drift, holder_metrics=self.metrics, clock=self._clock
            )
        with self._cond:
            old, self._active = self._active, new
        if old is not None:
            log.info(
                "model %s %s replaced by %s",
                old.info.name,
                old.info.version,
                f"{new.info.name} {new.info.version}" if new else "nothing",
            )
            if close_old:
                self.retire(old, drain_timeout=drain_timeout)
        return old

    def restore(
        self, previous: ActiveModel, *, close_old: bool = True, drain_timeout: float = 30.0
    ) -> ActiveModel | None:
        """Make a model kept by ``swap(..., close_old=False)`` active again (a rollback).

        Same runtime, info and drift monitor; its metrics window starts afresh.
        """
        return self.swap(
            previous.runtime,
            previous.info,
            drift=previous.drift,
            close_old=close_old,
            drain_timeout=drain_timeout,
        )

    def retire(self, model: ActiveModel, *, drain_timeout: float = 30.0) -> bool:
        """Close a model that is no longer active once its requests are done.

        Returns whether it drained in time; it is closed either way (the TFLite runtimes
        take their run lock to close, so a request still running finishes first).
        """
        active = self._active
        if active is not None and (model is active or model.runtime is active.runtime):
            raise StateError("cannot retire the active model; swap it out first")
        with self._cond:
            drained = self._cond.wait_for(lambda: model.inflight == 0, timeout=drain_timeout)
        if not drained:
            log.warning(
                "model %s %s still had %d request(s) after %.1f s; closing it anyway",
                model.info.name,
                model.info.version,
                model.inflight,
                drain_timeout,
            )
        model.runtime.close()
        return drained

    def close(self, *, drain_timeout: float = 30.0) -> None:
        """Unload the active model (waiting for its requests, as :meth:`swap` does)."""
        self.swap(None, drain_timeout=drain_timeout)
