"""Making a bundle: manifest, test vectors, reference statistics, archive, signature.

Host side. numpy and the model runtimes are imported inside the functions, so importing
:mod:`edgeops.bundle` on a board costs nothing of them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeops.bundle.archive import BLOCK, MANIFEST_NAME, MAX_MEMBERS
from edgeops.errors import ConfigError, ModelError, StorageError
from edgeops.trust.issue import sign_metadata
from edgeops.trust.keys import SigningKey
from edgeops.trust.metadata import (
    Budgets,
    FileEntry,
    Lineage,
    Manifest,
    TensorInfo,
    check_member_path,
    utcnow,
)

if TYPE_CHECKING:
    import numpy as np

TEST_VECTORS_NAME = "test_vectors.npz"
REFERENCE_STATS_NAME = "reference_stats.json"
#: Runtime floors written when the caller names none: the oldest each runtime layer supports.
DEFAULT_MIN_VERSIONS = {"litert": "1.2", "tflite_runtime": "2.14", "onnxruntime": "1.17"}
MAX_REPORT_BYTES = 64 * 1024
MAX_TEST_SAMPLES = 64


def file_digest(path: Path) -> tuple[int, str]:
    """Size and SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    size = 0
    try:
        with Path(path).open("rb") as fileobj:
            while block := fileobj.read(BLOCK):
                digest.update(block)
                size += len(block)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return size, digest.hexdigest()


def _runtime_for(model: Path) -> str:
    suffix = model.suffix.lower()
    if suffix == ".tflite":
        return "litert"
    if suffix == ".onnx":
        return "onnxruntime"
    raise ConfigError(f"expected a .tflite or .onnx model, got {model.name!r}")


@dataclass(frozen=True)
class _Loaded:
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    expected: list[dict[str, np.ndarray]]
    samples: list[dict[str, np.ndarray]]


def _tensor_info(spec: Any) -> TensorInfo:
    return TensorInfo(
        name=str(spec.name),
        shape=tuple(int(d) for d in spec.shape),
        dtype=str(spec.dtype),
        scale=None if spec.scale is None else float(spec.scale),
        zero_point=None if spec.zero_point is None else int(spec.zero_point),
    )


def _split_samples(
    arrays: Mapping[str, np.ndarray], inputs: tuple[TensorInfo, ...]
) -> list[dict[str, np.ndarray]]:
    """Test inputs are keyed by input name (``arr_0`` works for a one-input model); an
    array with one more axis than the input holds several samples along axis 0."""
    import numpy as np

    keyed = dict(arrays)
    if len(inputs) == 1 and inputs[0].name not in keyed and list(keyed) == ["arr_0"]:
        keyed = {inputs[0].name: keyed["arr_0"]}
    missing = [t.name for t in inputs if t.name not in keyed]
    if missing:
        raise ConfigError(
            f"test inputs: expected arrays named {', '.join(t.name for t in inputs)}, "
            f"missing {', '.join(missing)} (got {', '.join(sorted(keyed))})"
        )
    per_input: dict[str, list[np.ndarray]] = {}
    for spec in inputs:
        array = np.asarray(keyed[spec.name])
        if array.dtype != np.dtype(spec.dtype):
            raise ConfigError(
                f"test inputs: expected {spec.name!r} as {spec.dtype}, got {array.dtype}"
            )
        if array.ndim == len(spec.shape) + 1:
            per_input[spec.name] = list(array)
        elif array.ndim == len(spec.shape):
            per_input[spec.name] = [array]
        else:
            raise ConfigError(
                f"test inputs: expected {spec.name!r} with shape {list(spec.shape)} (or a stack "
                f"of those), got {list(array.shape)}"
            )
    counts = {len(v) for v in per_input.values()}
    if len(counts) != 1:
        raise ConfigError("test inputs: every input needs the same number of samples")
    count = counts.pop()
    if count > MAX_TEST_SAMPLES:
        raise ConfigError(f"test inputs: expected at most {MAX_TEST_SAMPLES} samples, got {count}")
    return [{name: values[i] for name, values in per_input.items()} for i in range(count)]


def _load_and_run(model: Path, test_inputs: Path | None) -> _Loaded:
    from edgeops.agent.runtimes import load_model

    runtime = load_model(model, runtime="auto", threads=1)
    try:
        inputs = tuple(_tensor_info(t) for t in runtime.inputs)
        outputs = tuple(_tensor_info(t) for t in runtime.outputs)
        samples: list[dict[str, np.ndarray]] = []
        expected: list[dict[str, np.ndarray]] = []
        if test_inputs is not None:
            import numpy as np

            try:
                with np.load(test_inputs, allow_pickle=False) as npz:
                    arrays = {key: npz[key] for key in npz.files}
            except (OSError, ValueError) as exc:
                raise ConfigError(f"cannot read test inputs {test_inputs}: {exc}") from exc
            samples = _split_samples(arrays, inputs)
            for sample in samples:
                result = runtime.run(sample)
                expected.append({t.name: np.asarray(result[t.name]) for t in outputs})
    finally:
        runtime.close()
    return _Loaded(inputs=inputs, outputs=outputs, expected=expected, samples=samples)


def _write_test_vectors(path: Path, loaded: _Loaded, *, atol: float | None, rtol: float) -> None:
    import numpy as np

    integer_out = any(np.dtype(t.dtype).kind in "iu" for t in loaded.outputs)
    arrays: dict[str, np.ndarray] = {
        # One quantization step for integer outputs: kernels may round differently.
        "atol": np.asarray(atol if atol is not None else (1.0 if integer_out else 1e-3)),
        "rtol": np.asarray(rtol),
    }
    for spec in loaded.inputs:
        arrays[f"input:{spec.name}"] = np.stack([s[spec.name] for s in loaded.samples])
    for spec in loaded.outputs:
        arrays[f"output:{spec.name}"] = np.stack([e[spec.name] for e in loaded.expected])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    path.write_bytes(buffer.getvalue())


def _write_reference_stats(path: Path, loaded: _Loaded) -> None:
    from edgeops.agent.telemetry.drift import reference_stats

    samples = {t.name: [s[t.name] for s in loaded.samples] for t in loaded.inputs}
    stats = reference_stats(samples)
    path.write_text(json.dumps(stats, sort_keys=True, allow_nan=False), encoding="utf-8")


def _read_report(report: Path | Mapping[str, Any] | None) -> tuple[Lineage, dict[str, Any]]:
    if report is None:
        return Lineage(), {}
    if isinstance(report, Mapping):
        data: Any = dict(report)
    else:
        try:
            raw = Path(report).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read report {report}: {exc.strerror or exc}") from exc
        if len(raw) > 16 * 1024 * 1024:
            raise ConfigError(f"report {report} is larger than 16 MB")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ConfigError(f"report {report} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError("a conversion report must be a JSON object")
    # The manifest keeps the report's key figures, not its whole per-op detail.
    # ``edgeops convert --report`` nests the validation report (and its key figures) under
    # "validation"; a bare ConversionReport.to_dict() has them at the top.
    validation = data.get("validation")
    nested = validation.get("key_figures") if isinstance(validation, dict) else None
    figures = data.get("key_figures", nested if nested is not None else data)
    if len(json.dumps(figures, default=str)) > MAX_REPORT_BYTES:
        raise ConfigError(f"report key figures exceed {MAX_REPORT_BYTES} bytes")
    try:
        figures = json.loads(json.dumps(figures, allow_nan=False))
    except ValueError as exc:
        raise ConfigError(f"report figures must be finite JSON: {exc}") from exc
    return (
        Lineage(
            source_sha256=data.get("source_sha256"),
            converter_version=data.get("converter_version"),
            report=figures,
        ),
        data,
    )


def _tar_info(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = int(mtime)
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def create_bundle(
    model: Path,
    *,
    name: str,
    version: str,
    release: int,
    signing_keys: Sequence[SigningKey],
    output: Path,
    test_inputs: Path | None = None,
    boards: Sequence[str] = (),
    runtime: str | None = None,
    runtime_min_version: str | None = None,
    budgets: Budgets | None = None,
    report: Path | Mapping[str, Any] | None = None,
    source_sha256: str | None = None,
    converter_version: str | None = None,
    extra_files: Mapping[str, Path] | None = None,
    atol: float | None = None,
    rtol: float = 1e-3,
    created: datetime | None = None,
) -> Manifest:
    """Build, sign (with the release ``signing_keys``) and write a bundle to ``output``.

    The model is loaded to read its input and output specs (quantization included). With
    ``test_inputs`` (an ``.npz`` keyed by input name) the model is run on them and the
    inputs, outputs and tolerances are stored as ``test_vectors.npz``, and their statistics
    as ``reference_stats.json`` for drift. ``extra_files`` maps archive paths (labels …)
    to local files. ``output`` is written atomically. Returns the signed manifest.
    """
    model = Path(model)
    runtime = runtime or _runtime_for(model)
    if not signing_keys:
        raise ConfigError("a bundle needs at least one release key to sign it")
    loaded = _load_and_run(model, test_inputs)
    lineage, _ = _read_report(report)
    created = created or utcnow()
    model_name = f"model{model.suffix.lower()}"
    extra = dict(extra_files or {})
    if len(extra) + 3 > MAX_MEMBERS:
        raise ConfigError(f"expected at most {MAX_MEMBERS - 3} extra files, got {len(extra)}")
    reserved = {MANIFEST_NAME, model_name, TEST_VECTORS_NAME, REFERENCE_STATS_NAME}
    for archive_path in extra:
        check_member_path(archive_path, "extra file")
        if archive_path in reserved:
            raise ConfigError(f"extra file {archive_path!r} collides with a bundle file")

    with tempfile.TemporaryDirectory(prefix="edgeops-bundle-") as work:
        sources: dict[str, Path] = {model_name: model}
        if loaded.samples:
            sources[TEST_VECTORS_NAME] = Path(work) / TEST_VECTORS_NAME
            _write_test_vectors(sources[TEST_VECTORS_NAME], loaded, atol=atol, rtol=rtol)
            sources[REFERENCE_STATS_NAME] = Path(work) / REFERENCE_STATS_NAME
            _write_reference_stats(sources[REFERENCE_STATS_NAME], loaded)
        sources.update({k: Path(v) for k, v in sorted(extra.items())})
        entries = []
        for archive_path, source in sources.items():
            size, sha256 = file_digest(source)
            entries.append(FileEntry(path=archive_path, size=size, sha256=sha256))
        model_entry = entries[0]
        manifest = Manifest(
            name=name,
            version=version,
            release=release,
            created=created,
            model=model_name,
            files=tuple(entries),
            runtime=runtime,
            runtime_min_version=runtime_min_version or DEFAULT_MIN_VERSIONS.get(runtime, "0"),
            inputs=loaded.inputs,
            outputs=loaded.outputs,
            boards=tuple(boards),
            budgets=budgets or Budgets(),
            lineage=Lineage(
                source_sha256=source_sha256 or lineage.source_sha256 or model_entry.sha256,
                converter_version=converter_version or lineage.converter_version,
                report=lineage.report,
            ),
            test_vectors=TEST_VECTORS_NAME if loaded.samples else None,
            reference_stats=REFERENCE_STATS_NAME if loaded.samples else None,
        )
        # Round-trip through the reader: what we sign must be what a device accepts.
        manifest = Manifest.from_signed(json.loads(json.dumps(manifest.to_signed())))
        envelope = sign_metadata(manifest, signing_keys)
        _write_archive(Path(output), envelope, sources, created.timestamp())
    return manifest


def _write_archive(
    output: Path, envelope: bytes, sources: Mapping[str, Path], mtime: float
) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    try:
        with (
            os.fdopen(fd, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar,
        ):
            tar.addfile(_tar_info(MANIFEST_NAME, len(envelope), mtime), io.BytesIO(envelope))
            for archive_path, source in sources.items():
                with source.open("rb") as data:
                    size = os.fstat(data.fileno()).st_size
                    tar.addfile(_tar_info(archive_path, size, mtime), data)
        with open(tmp, "rb+") as done:
            os.fsync(done.fileno())
        os.replace(tmp, output)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StorageError(f"cannot write bundle {output}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_test_vectors(path: Path, manifest: Manifest) -> list[dict[str, Any]]:
    """Read an unpacked ``test_vectors.npz``: one dict per sample with ``inputs``,
    ``expected`` (name -> array), ``atol`` and ``rtol``."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read test vectors {path}: {exc}") from exc
    try:
        atol, rtol = float(arrays["atol"]), float(arrays["rtol"])
        inputs = {t.name: arrays[f"input:{t.name}"] for t in manifest.inputs}
        outputs = {t.name: arrays[f"output:{t.name}"] for t in manifest.outputs}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"test vectors {path} lack {exc}") from exc
    count = len(next(iter(inputs.values()))) if inputs else 0
    return [
        {
            "inputs": {k: v[i] for k, v in inputs.items()},
            "expected": {k: v[i] for k, v in outputs.items()},
            "atol": atol,
            "rtol": rtol,
        }
        for i in range(count)
    ]


__all__ = [
    "DEFAULT_MIN_VERSIONS",
    "REFERENCE_STATS_NAME",
    "TEST_VECTORS_NAME",
    "create_bundle",
    "file_digest",
    "load_test_vectors",
]
