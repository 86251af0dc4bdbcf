"""The three signed objects — root, manifest, directive — as frozen dataclasses.

Each class reads itself from the ``signed`` part of an envelope with :meth:`from_signed`
(strict: unknown ``_type``, missing or mistyped fields, unsafe paths and oversized lists
raise :class:`~edgeops.errors.VerificationError`) and writes itself back with
:meth:`to_signed`. Signature checks live in :mod:`edgeops.trust.envelope` and the order of
checks in :mod:`edgeops.trust.verify`; this module only knows shapes and values.

Times are UTC, written as ISO 8601 with a ``Z`` suffix and whole seconds
(``2026-11-23T09:44:13Z``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from edgeops.errors import VerificationError
from edgeops.trust.keys import KEYTYPE, check_public_key

#: Version of the signed-metadata format; a reader rejects any other value.
SPEC_VERSION = "1"
ROLES: tuple[str, ...] = ("root", "release", "deploy")
RUNTIMES: tuple[str, ...] = ("litert", "tflite_runtime", "onnxruntime")
ACTIONS: tuple[str, ...] = ("install", "rollback")

MAX_KEYS = 64
MAX_FILES = 256
MAX_TENSORS = 64
MAX_RANK = 8
MAX_BOARDS = 64
MAX_NAME = 128
MAX_PATH = 255
MAX_TEXT = 256

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+:@-]*$")


# ---------------------------------------------------------------- times


def utcnow() -> datetime:
    """The current time in UTC, whole seconds."""
    return datetime.now(UTC).replace(microsecond=0)


def format_time(moment: datetime) -> str:
    """``2026-11-23T09:44:13Z`` for an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: Any, what: str) -> datetime:
    """Read a time written by :func:`format_time`."""
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text):
        raise VerificationError(
            f"{what}: expected a UTC time like 2026-01-31T12:00:00Z, got {text!r}"
        )
    try:
        # fromisoformat, not strptime: the pattern above already fixed the format, and
        # strptime costs twenty times as much and takes a module-wide lock on every call.
        return datetime.fromisoformat(text)
    except ValueError as exc:
        raise VerificationError(f"{what}: {text!r} is not a valid time") from exc


# ---------------------------------------------------------------- field readers


def _get(obj: dict[str, Any], key: str, what: str) -> Any:
    if key not in obj:
        raise VerificationError(f"{what}: missing field {key!r}")
    return obj[key]


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VerificationError(f"{what}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, what: str, cap: int) -> list[Any]:
    if not isinstance(value, list):
        raise VerificationError(f"{what}: expected a list, got {type(value).__name__}")
    if len(value) > cap:
        raise VerificationError(f"{what}: expected at most {cap} entries, got {len(value)}")
    return value


def _int(value: Any, what: str, *, minimum: int | None = 0) -> int:
    # bool is an int subclass in Python; a signed "true" must not pass as 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise VerificationError(f"{what}: expected an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise VerificationError(f"{what}: expected an integer >= {minimum}, got {value}")
    return value


def _num(value: Any, what: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise VerificationError(f"{what}: expected a number, got {type(value).__name__}")
    return float(value)


def _opt_num(value: Any, what: str) -> float | None:
    if value is None:
        return None
    number = _num(value, what)
    if number < 0:
        raise VerificationError(f"{what}: expected a number >= 0, got {number}")
    return number


def _str(value: Any, what: str, *, cap: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise VerificationError(f"{what}: expected a string, got {type(value).__name__}")
    if len(value) > cap:
        raise VerificationError(f"{what}: expected at most {cap} characters, got {len(value)}")
    return value


def _opt_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _name(value: Any, what: str) -> str:
    text = _str(value, what, cap=MAX_NAME)
    if not _NAME.fullmatch(text):
        raise VerificationError(
            f"{what}: expected letters, digits and . _ + : @ - (starting with a letter or "
            f"digit), got {text!r}"
        )
    return text


def _sha256(value: Any, what: str) -> str:
    text = _str(value, what)
    if not _HEX64.fullmatch(text):
        raise VerificationError(f"{what}: expected 64 lowercase hex digits, got {text!r}")
    return text


def _choice(value: Any, what: str, choices: tuple[str, ...]) -> str:
    text = _str(value, what)
    if text not in choices:
        raise VerificationError(f"{what}: expected one of {', '.join(choices)}, got {text!r}")
    return text


def check_type(signed: dict[str, Any], expected: str) -> None:
    """Check ``_type`` and ``spec_version`` of a ``signed`` object."""
    kind = signed.get("_type")
    if kind != expected:
        raise VerificationError(f"expected signed metadata of type {expected!r}, got {kind!r}")
    spec = signed.get("spec_version")
    if spec != SPEC_VERSION:
        raise VerificationError(f"{expected}: expected spec_version {SPEC_VERSION!r}, got {spec!r}")


def check_member_path(path: Any, what: str = "path") -> str:
    """A relative POSIX path that cannot leave the folder it is unpacked into."""
    text = _str(path, what, cap=MAX_PATH)
    if not text or text.startswith("/") or "\\" in text or "\x00" in text:
        raise VerificationError(f"{what}: expected a relative path, got {text!r}")
    parts = text.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise VerificationError(
            f"{what}: expected a path without '', '.' or '..' parts, got {text!r}"
        )
    return text


# ---------------------------------------------------------------- root


@dataclass(frozen=True, kw_only=True)
class RoleKeys:
    """The key ids trusted for one role and how many of them must sign."""

    keyids: tuple[str, ...]
    threshold: int

    def __post_init__(self) -> None:
        if self.threshold < 1:
            raise VerificationError(f"expected a threshold >= 1, got {self.threshold}")
        if len(set(self.keyids)) != len(self.keyids):
            raise VerificationError("a role lists the same key id twice")
        if self.threshold > len(self.keyids):
            raise VerificationError(
                f"expected a threshold <= {len(self.keyids)} (the number of keys), "
                f"got {self.threshold}"
            )


@dataclass(frozen=True, kw_only=True)
class Root:
    """The fleet's root of trust: the keys and thresholds of the root, release and deploy
    roles, a version that increases by one per rotation, and an expiry."""

    fleet: str
    version: int
    expires: datetime
    keys: dict[str, bytes]
    roles: dict[str, RoleKeys]
    spec_version: str = SPEC_VERSION

    def __post_init__(self) -> None:
        if set(self.roles) != set(ROLES):
            raise VerificationError(
                f"root: expected roles {', '.join(ROLES)}, got {', '.join(sorted(self.roles))}"
            )
        for role, spec in self.roles.items():
            for keyid in spec.keyids:
                if keyid not in self.keys:
                    raise VerificationError(f"root: role {role} names unknown key {keyid[:16]}")

    def role(self, name: str) -> RoleKeys:
        """Keys and threshold of role ``name``."""
        try:
            return self.roles[name]
        except KeyError:
            raise VerificationError(f"root: no role {name!r}") from None

    def to_signed(self) -> dict[str, Any]:
        return {
            "_type": "root",
            "spec_version": self.spec_version,
            "fleet": self.fleet,
            "version": self.version,
            "expires": format_time(self.expires),
            "keys": {
                keyid: {"keytype": KEYTYPE, "public": raw.hex()} for keyid, raw in self.keys.items()
            },
            "roles": {
                name: {"keyids": list(spec.keyids), "threshold": spec.threshold}
                for name, spec in self.roles.items()
            },
        }

    @classmethod
    def from_signed(cls, signed: dict[str, Any]) -> Root:
        check_type(signed, "root")
        keys_obj = _obj(_get(signed, "keys", "root"), "root.keys")
        if len(keys_obj) > MAX_KEYS:
            raise VerificationError(f"root.keys: expected at most {MAX_KEYS}, got {len(keys_obj)}")
        keys: dict[str, bytes] = {}
        for keyid, raw_entry in keys_obj.items():
            entry = _obj(raw_entry, f"root.keys.{keyid[:16]}")
            _choice(_get(entry, "keytype", "root key"), "root key keytype", (KEYTYPE,))
            try:
                keys[keyid] = check_public_key(
                    keyid, _str(_get(entry, "public", "root key"), "public")
                )
            except VerificationError as exc:
                raise type(exc)(f"root.keys: {exc}") from exc
        roles_obj = _obj(_get(signed, "roles", "root"), "root.roles")
        roles: dict[str, RoleKeys] = {}
        for role in ROLES:
            what = f"root.roles.{role}"
            entry = _obj(_get(roles_obj, role, "root.roles"), what)
            keyids = tuple(
                _str(k, f"{what}.keyids")
                for k in _list(_get(entry, "keyids", what), f"{what}.keyids", MAX_KEYS)
            )
            roles[role] = RoleKeys(
                keyids=keyids, threshold=_int(_get(entry, "threshold", what), f"{what}.threshold")
            )
        if len(roles_obj) != len(ROLES):
            extra = sorted(set(roles_obj) - set(ROLES))
            raise VerificationError(f"root.roles: unknown roles {', '.join(extra)}")
        return cls(
            fleet=_name(_get(signed, "fleet", "root"), "root.fleet"),
            version=_int(_get(signed, "version", "root"), "root.version", minimum=1),
            expires=parse_time(_get(signed, "expires", "root"), "root.expires"),
            keys=keys,
            roles=roles,
        )


# ---------------------------------------------------------------- manifest


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    """One file of a bundle: its path inside the archive, size and SHA-256."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True, kw_only=True)
class TensorInfo:
    """A model input or output as the runtime reports it (``-1`` for a dynamic dimension)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }

    @classmethod
    def from_dict(cls, value: Any, what: str) -> TensorInfo:
        obj = _obj(value, what)
        shape = tuple(
            _int(d, f"{what}.shape", minimum=-1)
            for d in _list(_get(obj, "shape", what), f"{what}.shape", MAX_RANK)
        )
        scale = obj.get("scale")
        zero_point = obj.get("zero_point")
        return cls(
            name=_str(_get(obj, "name", what), f"{what}.name"),
            shape=shape,
            dtype=_str(_get(obj, "dtype", what), f"{what}.dtype", cap=32),
            scale=None if scale is None else _num(scale, f"{what}.scale"),
            zero_point=None
            if zero_point is None
            else _int(zero_point, f"{what}.zero_point", minimum=None),
        )


@dataclass(frozen=True, kw_only=True)
class Budgets:
    """Resource budgets the health check enforces; ``None`` means not checked."""

    p95_latency_ms: float | None = None
    memory_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"p95_latency_ms": self.p95_latency_ms, "memory_mb": self.memory_mb}


@dataclass(frozen=True, kw_only=True)
class Lineage:
    """Where the model came from: the source model's digest, the converter, its report."""

    source_sha256: str | None = None
    converter_version: str | None = None
    report: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_sha256": self.source_sha256,
            "converter_version": self.converter_version,
            "report": self.report,
        }


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What a bundle is: its files, runtime, model I/O, boards, budgets and release counter.

    Signed by the fleet's release role. ``release`` increases with every bundle the fleet
    makes, so a device can refuse anything older than what it runs.
    """

    name: str
    version: str
    release: int
    created: datetime
    model: str
    files: tuple[FileEntry, ...]
    runtime: str
    runtime_min_version: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    boards: tuple[str, ...] = ()
    budgets: Budgets = field(default_factory=Budgets)
    lineage: Lineage = field(default_factory=Lineage)
    test_vectors: str | None = None
    reference_stats: str | None = None
    spec_version: str = SPEC_VERSION

    def __post_init__(self) -> None:
        paths = [entry.path for entry in self.files]
        if len(set(paths)) != len(paths):
            raise VerificationError("manifest.files lists a path twice")
        if "manifest.json" in paths:
            raise VerificationError("manifest.files must not list manifest.json itself")
        for role, path in (
            ("model", self.model),
            ("test_vectors", self.test_vectors),
            ("reference_stats", self.reference_stats),
        ):
            if path is not None and path not in paths:
                raise VerificationError(f"manifest.{role}: {path!r} is not in manifest.files")

    def file(self, path: str) -> FileEntry:
        """The entry for ``path``."""
        for entry in self.files:
            if entry.path == path:
                return entry
        raise VerificationError(f"manifest lists no file {path!r}")

    @property
    def total_size(self) -> int:
        """Sum of the declared file sizes."""
        return sum(entry.size for entry in self.files)

    def to_signed(self) -> dict[str, Any]:
        return {
            "_type": "manifest",
            "spec_version": self.spec_version,
            "name": self.name,
            "version": self.version,
            "release": self.release,
            "created": format_time(self.created),
            "model": self.model,
            "files": [entry.to_dict() for entry in self.files],
            "runtime": {"name": self.runtime, "min_version": self.runtime_min_version},
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "boards": list(self.boards),
            "budgets": self.budgets.to_dict(),
            "lineage": self.lineage.to_dict(),
            "test_vectors": self.test_vectors,
            "reference_stats": self.reference_stats,
        }

    @classmethod
    def from_signed(cls, signed: dict[str, Any]) -> Manifest:
        check_type(signed, "manifest")
        w = "manifest"
        files = []
        for i, item in enumerate(_list(_get(signed, "files", w), "manifest.files", MAX_FILES)):
            obj = _obj(item, f"manifest.files[{i}]")
            files.append(
                FileEntry(
                    path=check_member_path(_get(obj, "path", w), f"manifest.files[{i}].path"),
                    size=_int(_get(obj, "size", w), f"manifest.files[{i}].size"),
                    sha256=_sha256(_get(obj, "sha256", w), f"manifest.files[{i}].sha256"),
                )
            )
        runtime = _obj(_get(signed, "runtime", w), "manifest.runtime")
        budgets = _obj(signed.get("budgets") or {}, "manifest.budgets")
        lineage = _obj(signed.get("lineage") or {}, "manifest.lineage")
        report = lineage.get("report")
        source = lineage.get("source_sha256")
        return cls(
            name=_name(_get(signed, "name", w), "manifest.name"),
            version=_str(_get(signed, "version", w), "manifest.version", cap=MAX_NAME),
            release=_int(_get(signed, "release", w), "manifest.release", minimum=1),
            created=parse_time(_get(signed, "created", w), "manifest.created"),
            model=check_member_path(_get(signed, "model", w), "manifest.model"),
            files=tuple(files),
            runtime=_choice(_get(runtime, "name", w), "manifest.runtime.name", RUNTIMES),
            runtime_min_version=_str(
                _get(runtime, "min_version", w), "manifest.runtime.min_version", cap=32
            ),
            inputs=tuple(
                TensorInfo.from_dict(t, f"manifest.inputs[{i}]")
                for i, t in enumerate(
                    _list(_get(signed, "inputs", w), "manifest.inputs", MAX_TENSORS)
                )
            ),
            outputs=tuple(
                TensorInfo.from_dict(t, f"manifest.outputs[{i}]")
                for i, t in enumerate(
                    _list(_get(signed, "outputs", w), "manifest.outputs", MAX_TENSORS)
                )
            ),
            boards=tuple(
                _name(b, "manifest.boards")
                for b in _list(signed.get("boards", []), "manifest.boards", MAX_BOARDS)
            ),
            budgets=Budgets(
                p95_latency_ms=_opt_num(
                    budgets.get("p95_latency_ms"), "manifest.budgets.p95_latency_ms"
                ),
                memory_mb=_opt_num(budgets.get("memory_mb"), "manifest.budgets.memory_mb"),
            ),
            lineage=Lineage(
                source_sha256=None
                if source is None
                else _sha256(source, "manifest.lineage.source_sha256"),
                converter_version=_opt_str(
                    lineage.get("converter_version"), "manifest.lineage.converter_version"
                ),
                report=None if report is None else _obj(report, "manifest.lineage.report"),
            ),
            test_vectors=None
            if signed.get("test_vectors") is None
            else check_member_path(signed["test_vectors"], "manifest.test_vectors"),
            reference_stats=None
            if signed.get("reference_stats") is None
            else check_member_path(signed["reference_stats"], "manifest.reference_stats"),
        )


# ---------------------------------------------------------------- directive


@dataclass(frozen=True, kw_only=True)
class Target:
    """Who a directive is for: one device, or every member of a group."""

    kind: Literal["device", "group"]
    name: str

    def __post_init__(self) -> None:
        if self.kind not in ("device", "group"):
            raise VerificationError(f"target: expected device or group, got {self.kind!r}")
        _name(self.name, f"target {self.kind}")

    def to_dict(self) -> dict[str, Any]:
        return {self.kind: self.name}

    def __str__(self) -> str:
        return f"{self.kind} {self.name}"


@dataclass(frozen=True, kw_only=True)
class BundleRef:
    """A bundle named by the SHA-256 and size of the whole bundle file."""

    sha256: str
    size: int
    name: str
    version: str
    release: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "size": self.size,
            "name": self.name,
            "version": self.version,
            "release": self.release,
        }


@dataclass(frozen=True, kw_only=True)
class RolloutPolicy:
    """The health gates of the rollout a directive belongs to; ``None`` means not set."""

    rollout_id: str | None = None
    wave: int | None = None
    trial_window_s: float | None = None
    max_error_rate: float | None = None
    max_p95_latency_ms: float | None = None
    max_drift: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rollout_id": self.rollout_id,
            "wave": self.wave,
            "trial_window_s": self.trial_window_s,
            "max_error_rate": self.max_error_rate,
            "max_p95_latency_ms": self.max_p95_latency_ms,
            "max_drift": self.max_drift,
        }


@dataclass(frozen=True, kw_only=True)
class Directive:
    """Which bundle a device or group runs, signed by the deploy role.

    ``sequence`` increases with every directive for the same target; a device keeps the
    last sequence it accepted per target and refuses anything not greater (replay).
    """

    fleet: str
    target: Target
    sequence: int
    issued: datetime
    expires: datetime
    action: Literal["install", "rollback"]
    bundle: BundleRef
    rollout: RolloutPolicy = field(default_factory=RolloutPolicy)
    spec_version: str = SPEC_VERSION

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise VerificationError(
                f"directive.action: expected install or rollback, got {self.action!r}"
            )
        if self.expires <= self.issued:
            raise VerificationError(
                f"directive: expected expires after issued ({format_time(self.issued)}), "
                f"got {format_time(self.expires)}"
            )

    def to_signed(self) -> dict[str, Any]:
        return {
            "_type": "directive",
            "spec_version": self.spec_version,
            "fleet": self.fleet,
            "target": self.target.to_dict(),
            "sequence": self.sequence,
            "issued": format_time(self.issued),
            "expires": format_time(self.expires),
            "action": self.action,
            "bundle": self.bundle.to_dict(),
            "rollout": self.rollout.to_dict(),
        }

    @classmethod
    def from_signed(cls, signed: dict[str, Any]) -> Directive:
        check_type(signed, "directive")
        w = "directive"
        target_obj = _obj(_get(signed, "target", w), "directive.target")
        if len(target_obj) != 1 or next(iter(target_obj)) not in ("device", "group"):
            raise VerificationError(
                "directive.target: expected {'device': id} or {'group': name}, "
                f"got keys {sorted(target_obj)}"
            )
        kind, name = next(iter(target_obj.items()))
        bundle = _obj(_get(signed, "bundle", w), "directive.bundle")
        rollout = _obj(signed.get("rollout") or {}, "directive.rollout")
        wave = rollout.get("wave")
        rollout_id = rollout.get("rollout_id")
        action = _choice(_get(signed, "action", w), "directive.action", ACTIONS)
        return cls(
            fleet=_name(_get(signed, "fleet", w), "directive.fleet"),
            target=Target(
                kind="device" if kind == "device" else "group", name=_name(name, "directive.target")
            ),
            sequence=_int(_get(signed, "sequence", w), "directive.sequence", minimum=1),
            issued=parse_time(_get(signed, "issued", w), "directive.issued"),
            expires=parse_time(_get(signed, "expires", w), "directive.expires"),
            action="install" if action == "install" else "rollback",
            bundle=BundleRef(
                sha256=_sha256(_get(bundle, "sha256", w), "directive.bundle.sha256"),
                size=_int(_get(bundle, "size", w), "directive.bundle.size", minimum=1),
                name=_name(_get(bundle, "name", w), "directive.bundle.name"),
                version=_str(_get(bundle, "version", w), "directive.bundle.version", cap=MAX_NAME),
                release=_int(_get(bundle, "release", w), "directive.bundle.release", minimum=1),
            ),
            rollout=RolloutPolicy(
                rollout_id=None
                if rollout_id is None
                else _name(rollout_id, "directive.rollout.rollout_id"),
                wave=None if wave is None else _int(wave, "directive.rollout.wave"),
                trial_window_s=_opt_num(
                    rollout.get("trial_window_s"), "directive.rollout.trial_window_s"
                ),
                max_error_rate=_opt_num(
                    rollout.get("max_error_rate"), "directive.rollout.max_error_rate"
                ),
                max_p95_latency_ms=_opt_num(
                    rollout.get("max_p95_latency_ms"), "directive.rollout.max_p95_latency_ms"
                ),
                max_drift=_opt_num(rollout.get("max_drift"), "directive.rollout.max_drift"),
            ),
        )


__all__ = [
    "ACTIONS",
    "ROLES",
    "RUNTIMES",
    "SPEC_VERSION",
    "Budgets",
    "BundleRef",
    "Directive",
    "FileEntry",
    "Lineage",
    "Manifest",
    "RoleKeys",
    "RolloutPolicy",
    "Root",
    "Target",
    "TensorInfo",
    "check_member_path",
    "check_type",
    "format_time",
    "parse_time",
    "utcnow",
]
