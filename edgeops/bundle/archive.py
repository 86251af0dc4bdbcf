"""Reading bundle archives: streaming verification and safe unpacking.

A bundle is a POSIX ustar archive whose first member is ``manifest.json`` (a signed
envelope), followed by the files the manifest lists. This module reads the tar format
itself instead of using :mod:`tarfile`, because only a small subset is ever valid and
anything else is an attack surface: :mod:`tarfile` reads pax and GNU long-name headers of
any declared size into memory, and follows the archive's idea of links and devices.

:func:`verify_bundle`, :func:`unpack_bundle` and :func:`verify_and_unpack` (the agent's: both
in one pass, nothing kept unless every check passed) share one reader, :func:`_read_bundle`.

What a member may be: a regular file (type ``0``), a relative path without ``..``, ``.``
or empty parts, not seen before, listed in the manifest with exactly the size in its
header. Anything else raises :class:`~edgeops.errors.ArchiveError`. Every byte is read in
:data:`BLOCK` sized pieces and hashed as it goes, so memory does not grow with the bundle.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from edgeops.errors import (
    ArchiveError,
    ConfigError,
    DigestMismatchError,
    SizeLimitError,
    StateError,
    StorageError,
    VerificationError,
)
from edgeops.fsutil import fsync_dir
from edgeops.trust.metadata import BundleRef, FileEntry, Manifest, check_member_path
from edgeops.trust.verify import MAX_MANIFEST_BYTES, TrustedState, check_bundle_ref

MANIFEST_NAME = "manifest.json"
#: Read size; peak memory of verification is a small multiple of this.
BLOCK = 64 * 1024
#: Default cap on a whole bundle file.
MAX_BUNDLE_BYTES = 2 * 1024**3
#: Members beyond the manifest.
MAX_MEMBERS = 256
_HEADER = 512
_ZERO_BLOCK = bytes(_HEADER)
_TYPES = {
    b"1": "hard link",
    b"2": "symbolic link",
    b"3": "character device",
    b"4": "block device",
    b"5": "directory",
    b"6": "FIFO",
    b"7": "contiguous file",
    b"x": "pax extended header",
    b"g": "pax global header",
    b"L": "GNU long name",
    b"K": "GNU long link name",
}


class _CountingReader:
    """Reads from a file, counting every byte and refusing to pass ``cap``; hashes them too
    unless ``hash_whole`` is false (the whole-file digest was checked elsewhere)."""

    def __init__(self, fileobj: IO[bytes], cap: int, *, hash_whole: bool = True) -> None:
        self._file = fileobj
        self.cap = cap
        self.count = 0
        self.sha256 = hashlib.sha256()
        self._hash_whole = hash_whole

    def read(self, size: int) -> bytes:
        if self.count + size > self.cap:
            # Read one byte past the cap at most, to tell a short file from a long one.
            allowed = self.cap - self.count
            data = self._file.read(allowed + 1)
            if len(data) > allowed:
                raise SizeLimitError(f"expected a bundle of at most {self.cap} bytes, got more")
        else:
            data = self._file.read(size)
        self.count += len(data)
        if self._hash_whole:
            self.sha256.update(data)
        return data

    def read_exact(self, size: int, what: str) -> bytes:
        data = self.read(size)
        if len(data) != size:
            raise ArchiveError(f"archive ends inside {what} (truncated bundle)")
        return data

    def drain(self) -> None:
        while self.read(BLOCK):
            pass


@dataclass(frozen=True)
class _Member:
    name: str
    size: int


def _octal(field: bytes, what: str) -> int:
    text = field.rstrip(b"\x00 ").lstrip(b" ")
    if not text:
        return 0
    if field[:1] in (b"\x80", b"\xff"):
        raise ArchiveError(f"{what}: base-256 numbers are not used by bundles")
    try:
        return int(text, 8)
    except ValueError:
        raise ArchiveError(f"{what}: expected an octal number, got {text[:16]!r}") from None


def _parse_header(header: bytes) -> _Member:
    stored = _octal(header[148:156], "header checksum")
    computed = sum(header[:148]) + 32 * 8 + sum(header[156:])
    if stored != computed:
        raise ArchiveError(f"expected tar header checksum {computed}, got {stored}")
    if header[257:262] != b"ustar":
        raise ArchiveError(f"expected a ustar archive, got magic {header[257:263]!r}")
    typeflag = header[156:157]
    try:
        raw_name = header[0:100].split(b"\x00", 1)[0]
        prefix = header[345:500].split(b"\x00", 1)[0]
        name = (prefix + b"/" + raw_name if prefix else raw_name).decode("utf-8")
    except UnicodeDecodeError:
        raise ArchiveError("member name is not UTF-8") from None
    if typeflag not in (b"0", b"\x00"):
        kind = _TYPES.get(typeflag, f"type {typeflag!r}")
        raise ArchiveError(f"member {name!r}: expected a regular file, got a {kind}")
    try:
        check_member_path(name, "member")
    except VerificationError as exc:
        raise ArchiveError(f"unsafe member path: {exc}") from None
    return _Member(name=name, size=_octal(header[124:136], f"size of {name!r}"))


def _members(reader: _CountingReader) -> Iterator[_Member]:
    """Yield each member header; the caller must consume exactly ``size`` bytes of data
    with :func:`_data_blocks` before asking for the next."""
    while True:
        header = reader.read_exact(_HEADER, "a member header")
        if header == _ZERO_BLOCK:
            return
        yield _parse_header(header)


def _data_blocks(reader: _CountingReader, size: int, name: str) -> Iterator[bytes]:
    remaining = size
    while remaining:
        block = reader.read_exact(min(BLOCK, remaining), f"the data of {name!r}")
        remaining -= len(block)
        yield block
    padding = -size % _HEADER
    if padding:
        reader.read_exact(padding, f"the padding of {name!r}")


def _check_entry(member: _Member, manifest: Manifest, seen: set[str]) -> FileEntry:
    if member.name in seen or member.name == MANIFEST_NAME:
        raise ArchiveError(f"member {member.name!r} appears twice")
    seen.add(member.name)
    if len(seen) > MAX_MEMBERS:
        raise ArchiveError(f"expected at most {MAX_MEMBERS} members, got more")
    entry = next((e for e in manifest.files if e.path == member.name), None)
    if entry is None:
        raise ArchiveError(f"member {member.name!r} is not listed in the manifest")
    if member.size > entry.size:
        raise SizeLimitError(
            f"expected {entry.path!r} of {entry.size} bytes, the archive declares {member.size}"
        )
    if member.size < entry.size:
        raise ArchiveError(
            f"expected {entry.path!r} of {entry.size} bytes, the archive holds {member.size}"
        )
    return entry


def _read_manifest_member(reader: _CountingReader) -> bytes:
    members = _members(reader)
    first = next(members, None)
    if first is None or first.name != MANIFEST_NAME:
        raise ArchiveError(
            f"expected {MANIFEST_NAME} as the first member, got "
            f"{'an empty archive' if first is None else repr(first.name)}"
        )
    if first.size > MAX_MANIFEST_BYTES:
        raise SizeLimitError(
            f"expected {MANIFEST_NAME} of at most {MAX_MANIFEST_BYTES} bytes, got {first.size}"
        )
    return b"".join(_data_blocks(reader, first.size, MANIFEST_NAME))


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle file whose manifest signature, files and digests all checked out."""

    path: Path
    manifest: Manifest
    manifest_bytes: bytes
    sha256: str
    """SHA-256 of the whole bundle file (what a directive names)."""
    size: int

    def ref(self) -> BundleRef:
        """The :class:`BundleRef` a directive for this bundle carries."""
        m = self.manifest
        return BundleRef(
            sha256=self.sha256, size=self.size, name=m.name, version=m.version, release=m.release
        )


def _open(path: Path) -> IO[bytes]:
    try:
        return Path(path).open("rb")
    except OSError as exc:
        raise StorageError(f"cannot read bundle {path}: {exc.strerror or exc}") from exc


MemberConsumer = Callable[[FileEntry, Iterator[bytes]], None]
"""Takes a checked member's manifest entry and its data blocks: must consume every block and
raise :class:`DigestMismatchError` (see :func:`_check_member_digest`) on a wrong digest."""


def _read_bundle(
    reader: _CountingReader,
    manifest_for: Callable[[bytes], Manifest],
    consume: MemberConsumer,
) -> tuple[bytes, Manifest]:
    """The one pass every reader of a bundle makes: the manifest member first, turned into
    a :class:`Manifest` by ``manifest_for`` (which verifies it, or returns one verified
    before) before any member data is read; then every member checked against the archive
    rules and the manifest and handed to ``consume``; no listed file missing; the rest of
    the file read to its end (counted, and hashed unless the reader skips it)."""
    manifest_bytes = _read_manifest_member(reader)
    manifest = manifest_for(manifest_bytes)
    seen: set[str] = set()
    for member in _members(reader):
        entry = _check_entry(member, manifest, seen)
        consume(entry, _data_blocks(reader, member.size, member.name))
    missing = [e.path for e in manifest.files if e.path not in seen]
    if missing:
        raise ArchiveError(f"partial bundle: missing {', '.join(missing)}")
    reader.drain()
    return manifest_bytes, manifest


def _check_member_digest(entry: FileEntry, digest: str) -> None:
    if digest != entry.sha256:
        raise DigestMismatchError(
            f"expected {entry.path!r} to hash to {entry.sha256}, got {digest}"
        )


def _hash_member(entry: FileEntry, blocks: Iterator[bytes]) -> None:
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(block)
    _check_member_digest(entry, digest.hexdigest())


def _verifier(
    trusted: TrustedState, *, board: str | None, last_release_counter: int | None
) -> Callable[[bytes], Manifest]:
    def verify(manifest_bytes: bytes) -> Manifest:
        return trusted.verify_manifest(
            manifest_bytes, board=board, last_release_counter=last_release_counter
        )

    return verify


def _cap(expected: BundleRef | None, max_size: int) -> int:
    return min(max_size, expected.size) if expected is not None else max_size


def _verified(
    path: Path,
    reader: _CountingReader,
    manifest_bytes: bytes,
    manifest: Manifest,
    expected: BundleRef | None,
    *,
    digest_checked: bool = False,
) -> VerifiedBundle:
    # The whole-file check comes last, as the directive's digest covers every byte.
    if digest_checked and expected is not None:
        sha256 = expected.sha256
    else:
        sha256 = reader.sha256.hexdigest()
    if expected is not None:
        check_bundle_ref(expected, sha256=sha256, size=reader.count)
    return VerifiedBundle(
        path=Path(path),
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        sha256=sha256,
        size=reader.count,
    )


def verify_bundle(
    path: Path,
    trusted: TrustedState,
    *,
    board: str | None = None,
    last_release_counter: int | None = None,
    expected: BundleRef | None = None,
    max_size: int = MAX_BUNDLE_BYTES,
) -> VerifiedBundle:
    """Verify a bundle file in one streaming pass.

    Checks, in order: the manifest signature and fields (:meth:`TrustedState.verify_manifest`
    with ``board`` and ``last_release_counter``); every member against the archive rules
    and the manifest (size, then SHA-256); no listed file missing; and, when ``expected``
    (the directive's bundle reference) is given, the size and digest of the whole file.
    The file may not exceed ``expected.size`` or ``max_size``.
    """
    verify = _verifier(trusted, board=board, last_release_counter=last_release_counter)
    with _open(path) as fileobj:
        reader = _CountingReader(fileobj, _cap(expected, max_size))
        manifest_bytes, manifest = _read_bundle(reader, verify, _hash_member)
    return _verified(path, reader, manifest_bytes, manifest, expected)


def _check_unpacked_size(manifest: Manifest, max_unpacked: int | None) -> None:
    total = manifest.total_size
    if max_unpacked is not None and total > max_unpacked:
        raise SizeLimitError(
            f"expected a bundle that unpacks to at most {max_unpacked} bytes, "
            f"its manifest declares {total}"
        )


def _prepare_dest(dest: Path) -> Path:
    """Create ``dest`` (it may exist if empty); returns its resolved path."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise StateError(f"unpack destination {dest} is not empty")
        return dest.resolve()
    except OSError as exc:
        raise StorageError(f"cannot create {dest}: {exc.strerror or exc}") from exc


class _MemberWriter:
    """A :data:`MemberConsumer` that writes each member under ``dest``; see
    :func:`_write_member`. ``written`` maps archive paths to the files kept so far."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.root: Path | None = None
        self.written: dict[str, Path] = {}

    def open(self) -> None:
        self.root = _prepare_dest(self.dest)

    def __call__(self, entry: FileEntry, blocks: Iterator[bytes]) -> None:
        assert self.root is not None, "open() first"
        target = self.root / entry.path
        # Paths are checked already; this guards against a future rule change.
        if self.root not in target.resolve().parents:
            raise ArchiveError(f"member {entry.path!r} would leave {self.dest}")
        self.written[entry.path] = _write_member(target, blocks, entry)

    def sync_folders(self) -> None:
        # Each file was synced as it was written; its folder's entries once, at the end.
        try:
            for folder in {file.parent for file in self.written.values()}:
                fsync_dir(folder)
        except OSError as exc:
            raise StorageError(f"cannot sync {self.dest}: {exc.strerror or exc}") from exc

    def remove_written(self) -> None:
        for file in self.written.values():
            file.unlink(missing_ok=True)


def unpack_bundle(
    path: Path,
    dest: Path,
    manifest: Manifest,
    *,
    max_unpacked: int | None = None,
) -> dict[str, Path]:
    """Write the files ``manifest`` lists from the bundle at ``path`` into ``dest``.

    ``manifest`` must come from :func:`verify_bundle` of the same file. ``dest`` must not
    exist or be empty. Each file is written through a temporary file and kept only when its
    size and SHA-256 match the manifest; on any error nothing written so far is left in
    place. Returns archive path -> written path. :func:`verify_and_unpack` does both in one
    pass.
    """
    _check_unpacked_size(manifest, max_unpacked)
    writer = _MemberWriter(Path(dest))
    writer.open()
    try:
        with _open(path) as fileobj:
            reader = _CountingReader(fileobj, MAX_BUNDLE_BYTES, hash_whole=False)
            _read_bundle(reader, lambda _: manifest, writer)
        writer.sync_folders()
    except BaseException:
        writer.remove_written()
        raise
    return writer.written


@dataclass(frozen=True)
class UnpackedBundle:
    """What :func:`verify_and_unpack` checked and wrote."""

    verified: VerifiedBundle
    files: dict[str, Path]
    """Archive path -> written path."""


def verify_and_unpack(
    path: Path,
    dest: Path,
    trusted: TrustedState,
    *,
    board: str | None = None,
    last_release_counter: int | None = None,
    expected: BundleRef | None = None,
    max_size: int = MAX_BUNDLE_BYTES,
    max_unpacked: int | None = None,
    digest_checked: bool = False,
) -> UnpackedBundle:
    """:func:`verify_bundle` and :func:`unpack_bundle` in one pass over the file.

    The manifest (the first member) is verified before anything is written; each member is
    then hashed as it is written into ``dest`` (which must not exist or be empty), and the
    whole file is counted and hashed on the way. The files are kept only when every check
    of :func:`verify_bundle` passed, ``expected``'s size and digest last; on any failure
    ``dest`` is removed (or, if it existed before, emptied of what was written) and the same
    error as :func:`verify_bundle`'s raised.

    ``digest_checked`` skips hashing the whole file again, for a caller that hashed exactly
    these bytes against ``expected.sha256`` itself (a download it just assembled and
    checked); the size is still compared. A file found on disk is never such a file.
    """
    if digest_checked and expected is None:
        raise ConfigError("digest_checked needs the expected bundle reference")
    dest = Path(dest)
    created = not dest.exists()
    verify = _verifier(trusted, board=board, last_release_counter=last_release_counter)
    writer = _MemberWriter(dest)

    def manifest_for(manifest_bytes: bytes) -> Manifest:
        manifest = verify(manifest_bytes)
        _check_unpacked_size(manifest, max_unpacked)
        writer.open()
        return manifest

    try:
        with _open(path) as fileobj:
            reader = _CountingReader(
                fileobj, _cap(expected, max_size), hash_whole=not digest_checked
            )
            manifest_bytes, manifest = _read_bundle(reader, manifest_for, writer)
        verified = _verified(
            path, reader, manifest_bytes, manifest, expected, digest_checked=digest_checked
        )
        writer.sync_folders()
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            writer.remove_written()
        raise
    return UnpackedBundle(verified=verified, files=writer.written)


def _write_member(target: Path, blocks: Iterator[bytes], entry: FileEntry) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".unpack.", dir=target.parent)
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb", buffering=0) as out:
            for block in blocks:
                digest.update(block)
                out.write(block)
            os.fsync(out.fileno())
        _check_member_digest(entry, digest.hexdigest())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StorageError(f"cannot write {target}: {exc.strerror or exc}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def inspect_bundle(path: Path, *, max_size: int = MAX_BUNDLE_BYTES) -> dict[str, Any]:
    """An unverified look inside a bundle: its manifest, signers and members.

    Nothing here is trusted — use :func:`verify_bundle` before acting on a bundle. The
    archive rules still apply, so an unsafe archive raises :class:`ArchiveError`.
    """
    from edgeops.trust.canonical import parse_json

    with _open(path) as fileobj:
        reader = _CountingReader(fileobj, max_size)
        manifest_bytes = _read_manifest_member(reader)
        envelope = parse_json(
            manifest_bytes, max_size=MAX_MANIFEST_BYTES, what=MANIFEST_NAME, error=ArchiveError
        )
        members = [{"path": MANIFEST_NAME, "size": len(manifest_bytes)}]
        for member in _members(reader):
            if len(members) > MAX_MEMBERS:
                raise ArchiveError(f"expected at most {MAX_MEMBERS} members, got more")
            for _ in _data_blocks(reader, member.size, member.name):
                pass
            members.append({"path": member.name, "size": member.size})
        reader.drain()
    if not isinstance(envelope, dict) or not isinstance(envelope.get("signed"), dict):
        raise ArchiveError(f"{MANIFEST_NAME} is not a signed envelope")
    signatures = envelope.get("signatures")
    keyids = (
        [s.get("keyid") for s in signatures if isinstance(s, dict)]
        if isinstance(signatures, list)
        else []
    )
    return {
        "path": str(path),
        "size": reader.count,
        "sha256": reader.sha256.hexdigest(),
        "manifest": envelope["signed"],
        "signed_by": keyids,
        "members": members,
    }


__all__ = [
    "BLOCK",
    "MANIFEST_NAME",
    "MAX_BUNDLE_BYTES",
    "MAX_MEMBERS",
    "UnpackedBundle",
    "VerifiedBundle",
    "inspect_bundle",
    "unpack_bundle",
    "verify_and_unpack",
    "verify_bundle",
]
