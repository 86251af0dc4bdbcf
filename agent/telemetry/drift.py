"""Model-level signals: input drift against a bundle's reference statistics, output summary.

At bundle creation, :func:`reference_stats` summarizes representative inputs (the
calibration or validation set) into a small JSON-ready dict stored in the bundle. On the
device, :class:`DriftMonitor` samples live requests and scores each input against it:

* **PSI** (population stability index) over the reference's fixed bins,
  ``Σ (live − ref) · ln(live / ref)`` over bin fractions. Rule of thumb: below 0.1 stable,
  0.1–0.25 moderate shift, above 0.25 a significant shift.
* **Mean shift** in reference standard deviations, and the **std ratio** live / reference.

Outputs are summarized (mean, std, min, max, and for class-score outputs the most frequent
top-1 classes) so the fleet can compare a new bundle's behaviour with the old one's.
Monitoring must cost little per request: only every ``sample_every``-th call is looked at,
and at most ``max_values`` elements of each tensor.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from edgeops.errors import InputError

if TYPE_CHECKING:
    import numpy as np

#: format of the dict :func:`reference_stats` returns
REFERENCE_VERSION = 1
# Bins with no mass would make ln(live / ref) infinite; the usual floor.
_PSI_FLOOR = 1e-4
_MAX_REFERENCE_VALUES = 1_000_000
_MAX_CLASSES = 1000


def _flat_sample(array: np.ndarray, limit: int, offset: int = 0) -> np.ndarray:
    import numpy as np

    flat = np.asarray(array).reshape(-1)
    if flat.size > limit:
        step = -(-flat.size // limit)  # ceil: an even stride over the whole tensor
        flat = flat[offset % step :: step]
    return flat.astype(np.float64, copy=False)


def reference_stats(
    samples: Mapping[str, np.ndarray | Sequence[np.ndarray]], *, bins: int = 16
) -> dict[str, Any]:
    """Per-input mean, std and a fixed-bin histogram of representative inputs.

    ``samples`` maps each input name to an array (or a list of arrays, e.g. one per
    calibration image). Bin edges span the reference's min..max; at scoring time values
    outside are counted in the outer bins, so a range shift shows as drift.
    """
    import numpy as np

    if bins < 2:
        raise ValueError(f"expected bins >= 2, got {bins}")
    inputs: dict[str, Any] = {}
    for name, value in samples.items():
        arrays = [value] if isinstance(value, np.ndarray) else list(value)
        if not arrays:
            raise InputError(f"reference statistics for {name!r}: no samples")
        per_array = max(1, _MAX_REFERENCE_VALUES // len(arrays))
        values = np.concatenate([_flat_sample(a, per_array) for a in arrays])
        if values.size == 0:
            raise InputError(f"reference statistics for {name!r}: the samples are empty")
        if not np.all(np.isfinite(values)):
            raise InputError(f"reference statistics for {name!r}: NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low == high:
            low, high = low - 0.5, high + 0.5
        counts, edges = np.histogram(values, bins=bins, range=(low, high))
        inputs[name] = {
            "count": int(values.size),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
            "bin_edges": [float(edge) for edge in edges],
            "histogram": [float(c) / values.size for c in counts],
        }
    return {"version": REFERENCE_VERSION, "inputs": inputs}


def psi(reference: Sequence[float], live: Sequence[float]) -> float:
    """Population stability index between two bin-fraction lists of equal length."""
    if len(reference) != len(live):
        raise ValueError(f"expected {len(reference)} bins, got {len(live)}")
    total = 0.0
    for ref, cur in zip(reference, live, strict=True):
        ref_f, cur_f = max(ref, _PSI_FLOOR), max(cur, _PSI_FLOOR)
        total += (cur_f - ref_f) * math.log(cur_f / ref_f)
    return total


class _Running:
    """Count, sum, sum of squares, min and max of a stream of values."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.squares = 0.0
        self.low = math.inf
        self.high = -math.inf

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        self.count += int(values.size)
        self.total += float(values.sum())
        self.squares += float(values @ values)
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    @property
    def mean(self) -> float:
        return self.total / self.count

    @property
    def std(self) -> float:
        return math.sqrt(max(self.squares / self.count - self.mean**2, 0.0))


class DriftMonitor:
    """Scores sampled live inputs against :func:`reference_stats` and summarizes outputs.

    Thread-safe; :meth:`observe` is meant to be called on every request and returns at
    once for the requests it does not sample.
    """

    def __init__(
        self,
        reference: Mapping[str, Any],
        *,
        sample_every: int = 10,
        max_values: int = 4096,
    ) -> None:
        if reference.get("version") != REFERENCE_VERSION:
            raise InputError(
                f"expected reference statistics version {REFERENCE_VERSION}, "
                f"got {reference.get('version')!r}"
            )
        if sample_every < 1 or max_values < 1:
            raise ValueError("sample_every and max_values must be >= 1")
        self._reference: dict[str, Any] = dict(reference["inputs"])
        for name, stats in self._reference.items():
            edges, hist = stats.get("bin_edges", []), stats.get("histogram", [])
            if len(edges) < 3 or len(edges) != len(hist) + 1:
                raise InputError(f"reference statistics for {name!r}: malformed histogram")
        self._sample_every = sample_every
        self._max_values = max_values
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget what was observed (a new window, or a new bundle)."""
        with self._lock:
            self._calls = 0
            self._sampled = 0
            self._counts: dict[str, list[int]] = {
                n: [0] * (len(s["histogram"])) for n, s in self._reference.items()
            }
            self._input_stats: dict[str, _Running] = {n: _Running() for n in self._reference}
            self._output_stats: dict[str, _Running] = {}
            self._classes: dict[str, Counter[int]] = {}

    def observe(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None = None,
    ) -> bool:
        """Account one request; returns whether it was sampled."""
        with self._lock:
            self._calls += 1
            if (self._calls - 1) % self._sample_every:
                return False
            self._sampled += 1
            offset = self._calls
        import numpy as np

        # The numpy work happens outside the lock; only the tallies are merged under it.
        # Extreme live values may overflow a sum of squares to inf: a score, not an error.
        with np.errstate(over="ignore", invalid="ignore"):
            return self._observe_sampled(inputs, outputs, offset)

    def _observe_sampled(
        self,
        inputs: Mapping[str, np.ndarray],
        outputs: Mapping[str, np.ndarray] | None,
        offset: int,
    ) -> bool:
        import numpy as np

        partial: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, stats in self._reference.items():
            if name not in inputs:
                continue
            values = _flat_sample(inputs[name], self._max_values, offset)
            values = values[np.isfinite(values)]
            edges = stats["bin_edges"]
            clipped = np.clip(values, edges[0], edges[-1])
            counts, _ = np.histogram(clipped, bins=np.asarray(edges))
            partial[name] = (values, counts)
        out_partial: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        for name, array in (outputs or {}).items():
            values = _flat_sample(array, self._max_values, offset)
            top1 = None
            if array.ndim == 2 and 2 <= array.shape[-1] <= _MAX_CLASSES:
                top1 = np.argmax(array, axis=-1)
            out_partial[name] = (values[np.isfinite(values)], top1)
        with self._lock:
            for name, (values, counts) in partial.items():
                self._input_stats[name].add(values)
                tally = self._counts[name]
                for i, count in enumerate(counts.tolist()):
                    tally[i] += int(count)
            for name, (values, top1) in out_partial.items():
                self._output_stats.setdefault(name, _Running()).add(values)
                if top1 is not None:
                    self._classes.setdefault(name, Counter()).update(int(c) for c in top1)
        return True

    def score(self) -> dict[str, Any]:
        """Drift per input and the output summary since the last :meth:`reset`.

        ``{"requests", "sampled", "inputs": {name: {"psi", "mean_shift_sigma", "std_ratio",
        "mean", "std", "values"}}, "outputs": {name: {"mean", "std", "min", "max", "values",
        "top_classes"}}}``; an input with no sampled value yet has ``None`` scores.
        """
        with self._lock:
            report_inputs: dict[str, Any] = {}
            for name, stats in self._reference.items():
                running = self._input_stats[name]
                tally = self._counts[name]
                total = sum(tally)
                if not running.count or not total:
                    report_inputs[name] = {
                        "psi": None,
                        "mean_shift_sigma": None,
                        "std_ratio": None,
                        "mean": None,
                        "std": None,
                        "values": 0,
                    }
                    continue
                ref_std = stats["std"] or 1e-12
                report_inputs[name] = {
                    "psi": psi(stats["histogram"], [c / total for c in tally]),
                    "mean_shift_sigma": abs(running.mean - stats["mean"]) / ref_std,
                    "std_ratio": running.std / ref_std,
                    "mean": running.mean,
                    "std": running.std,
                    "values": running.count,
                }
            report_outputs: dict[str, Any] = {}
            for name, running in self._output_stats.items():
                if not running.count:
                    continue
                entry: dict[str, Any] = {
                    "mean": running.mean,
                    "std": running.std,
                    "min": running.low,
                    "max": running.high,
                    "values": running.count,
                }
                classes = self._classes.get(name)
                if classes:
                    seen = sum(classes.values())
                    entry["top_classes"] = [
                        [label, count / seen] for label, count in classes.most_common(5)
                    ]
                report_outputs[name] = entry
            return {
                "requests": self._calls,
                "sampled": self._sampled,
                "inputs": report_inputs,
                "outputs": report_outputs,
            }
