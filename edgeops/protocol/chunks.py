"""Cutting a bundle into chunks and putting it back together, without I/O of its own.

The fleet publishes each chunk once as a retained message and a :class:`BundleMeta` that
lists every chunk's SHA-256. A device feeds whatever chunks arrive, in any order, into a
:class:`ChunkAssembler`, which writes each one at its offset into a file-like sink (memory
does not grow with the bundle), rejects a chunk whose hash is wrong so that only that chunk
is fetched again, and says which indexes are still missing after a reconnect.

The meta message is not trusted: the assembler is created from the signed directive's digest
and size, refuses a meta that disagrees with them or exceeds the size cap, and checks the
SHA-256 of the whole assembled file before declaring success.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from edgeops.errors import DigestMismatchError, ProtocolError, SizeLimitError, StateError
from edgeops.protocol.messages import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, BundleMeta
from edgeops.protocol.topics import MAX_CHUNKS, validate_digest

DEFAULT_CHUNK_SIZE = 256 * 1024
# A device refuses bundles above this unless its configuration says otherwise.
DEFAULT_MAX_BUNDLE = 512 * 1024 * 1024
_READ_BLOCK = 1024 * 1024


class Sink(Protocol):
    """Where an assembler writes: a binary file opened for update, or ``io.BytesIO``."""

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def write(self, data: bytes, /) -> int: ...

    def read(self, size: int = -1, /) -> bytes: ...


def _check_chunk_size(chunk_size: int) -> None:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ProtocolError(
            f"expected a chunk size in [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}], got {chunk_size}"
        )


def _iter_file(path: Path, chunk_size: int) -> Iterator[bytes]:
    with path.open("rb") as source:
        while block := source.read(chunk_size):
            yield block


def split_chunks(
    data_or_path: bytes | Path | str, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> tuple[BundleMeta, Iterator[bytes]]:
    """The meta of a bundle and an iterator over its chunks, in index order.

    A path is read twice (once to hash, once to yield), so memory stays at one chunk.
    """
    _check_chunk_size(chunk_size)
    whole = hashlib.sha256()
    hashes: list[str] = []
    total = 0
    if isinstance(data_or_path, bytes | bytearray):
        data = bytes(data_or_path)
        pieces: Iterator[bytes] = (
            data[offset : offset + chunk_size] for offset in range(0, len(data), chunk_size)
        )
    else:
        path = Path(data_or_path)
        pieces = _iter_file(path, chunk_size)
    for piece in pieces:
        whole.update(piece)
        hashes.append(hashlib.sha256(piece).hexdigest())
        total += len(piece)
    if total == 0:
        raise ProtocolError("cannot chunk an empty bundle")
    meta = BundleMeta(
        digest=whole.hexdigest(),
        total_size=total,
        chunk_size=chunk_size,
        chunk_sha256=tuple(hashes),
    )
    if isinstance(data_or_path, bytes | bytearray):
        frozen = bytes(data_or_path)
        chunks: Iterator[bytes] = (
            frozen[offset : offset + chunk_size] for offset in range(0, total, chunk_size)
        )
    else:
        chunks = _iter_file(Path(data_or_path), chunk_size)
    return meta, chunks


class ChunkAssembler:
    """Reassembles one bundle from chunks that arrive in any order.

    Created from what the signed directive says (``digest``, ``size``) and the device's cap
    ``max_total``. Call :meth:`accept_meta` once with the received meta, then :meth:`add` per
    chunk; when :attr:`complete`, :meth:`finish` checks the whole file's SHA-256.
    """

    def __init__(self, digest: str, size: int, sink: Sink, *, max_total: int = DEFAULT_MAX_BUNDLE):
        validate_digest(digest)
        if size > max_total:
            raise SizeLimitError(f"expected a bundle of at most {max_total} bytes, got {size}")
        if size < 1:
            raise ProtocolError(f"expected a bundle size of at least 1 byte, got {size}")
        self.digest = digest
        self.size = size
        self.max_total = max_total
        self._sink = sink
        self._meta: BundleMeta | None = None
        self._received: set[int] = set()
        # Counted as chunks arrive: summing over the received chunks on every call made
        # progress reporting quadratic in the chunk count (2048 chunks for 512 MB).
        self._received_bytes = 0
        self._finished = False
        # The whole-bundle hash follows the contiguous prefix of received chunks, so chunks
        # that arrive in order are hashed from memory and never read back from the sink.
        self._whole = hashlib.sha256()
        self._hashed = 0

    @property
    def meta(self) -> BundleMeta | None:
        """The accepted meta, or None before :meth:`accept_meta`."""
        return self._meta

    def accept_meta(self, meta: BundleMeta) -> None:
        """Take the chunk layout, after checking it describes the bundle the directive names."""
        if meta.digest != self.digest:
            raise DigestMismatchError(
                f"expected bundle meta for {self.digest[:16]}…, got {meta.digest[:16]}…"
            )
        if meta.total_size != self.size:
            raise SizeLimitError(
                f"expected a bundle of {self.size} bytes (signed directive), "
                f"meta says {meta.total_size}"
            )
        if meta.chunk_count > MAX_CHUNKS:
            raise SizeLimitError(f"expected at most {MAX_CHUNKS} chunks, got {meta.chunk_count}")
        if self._meta is not None:
            if meta != self._meta:
                raise StateError("a different meta for the same bundle arrived mid-assembly")
            return
        self._meta = meta

    def _require_meta(self) -> BundleMeta:
        if self._meta is None:
            raise StateError("chunk before meta: call accept_meta() first")
        return self._meta

    def add(self, index: int, data: bytes) -> bool:
        """Check chunk ``index`` and write it at its offset.

        Returns True if it was new, False for a duplicate. A chunk whose length or SHA-256
        differs from the meta raises (SizeLimitError, DigestMismatchError) and stays missing.
        """
        meta = self._require_meta()
        if (
            isinstance(index, bool)
            or not isinstance(index, int)
            or not 0 <= index < meta.chunk_count
        ):
            raise ProtocolError(f"expected a chunk index below {meta.chunk_count}, got {index!r}")
        if not isinstance(data, bytes | bytearray | memoryview):
            raise ProtocolError(f"expected chunk bytes, got {type(data).__name__}")
        if index in self._received:
            return False
        expected_length = meta.chunk_length(index)
        if len(data) != expected_length:
            raise SizeLimitError(
                f"chunk {index}: expected {expected_length} bytes, got {len(data)}"
            )
        actual = hashlib.sha256(data).hexdigest()
        if actual != meta.chunk_sha256[index]:
            raise DigestMismatchError(
                f"chunk {index}: expected sha256 {meta.chunk_sha256[index][:16]}…, "
                f"got {actual[:16]}…"
            )
        self._sink.seek(index * meta.chunk_size)
        self._sink.write(data)
        self._received.add(index)
        self._received_bytes += len(data)
        if index == self._hashed:
            self._whole.update(data)
            self._hashed += 1
            self._hash_written_prefix(meta)
        return True

    def _hash_written_prefix(self, meta: BundleMeta) -> None:
        # Chunks that came early are read back once the gap before them is filled.
        while self._hashed in self._received:
            self._sink.seek(self._hashed * meta.chunk_size)
            length = meta.chunk_length(self._hashed)
            block = self._sink.read(length)
            if len(block) != length:
                raise SizeLimitError(
                    f"sink returned {len(block)} bytes for chunk {self._hashed}, expected {length}"
                )
            self._whole.update(block)
            self._hashed += 1

    def missing(self) -> list[int]:
        """Indexes not yet received, ascending (empty before the meta is known: see meta)."""
        return list(self.iter_missing())

    def iter_missing(self) -> Iterator[int]:
        """:meth:`missing`, one at a time: a caller that wants the first few stops early."""
        if self._meta is None:
            return
        # Every chunk below the whole-bundle hash's position has been received.
        for index in range(self._hashed, self._meta.chunk_count):
            if index not in self._received:
                yield index

    @property
    def received(self) -> int:
        """How many distinct chunks were accepted."""
        return len(self._received)

    @property
    def received_bytes(self) -> int:
        """How many bytes of the bundle were accepted."""
        return self._received_bytes

    @property
    def complete(self) -> bool:
        """Whether every chunk arrived (the whole-file check is :meth:`finish`)."""
        return self._meta is not None and len(self._received) == self._meta.chunk_count

    def finish(self) -> None:
        """Check the whole bundle's SHA-256 against the directive's (raises on mismatch)."""
        if not self.complete:
            raise StateError(f"bundle incomplete: {len(self.missing())} chunks missing")
        if self._finished:
            return
        actual = self._whole.hexdigest()
        if actual != self.digest:
            raise DigestMismatchError(
                f"assembled bundle: expected sha256 {self.digest[:16]}…, "
                f"got {actual[:16]}… (meta lied about chunk hashes)"
            )
        self._finished = True


def file_sha256(path: Path | str) -> tuple[str, int]:
    """SHA-256 hex digest and size of a file, read in blocks."""
    whole = hashlib.sha256()
    size = 0
    with open(os.fspath(path), "rb") as source:
        while block := source.read(_READ_BLOCK):
            whole.update(block)
            size += len(block)
    return whole.hexdigest(), size


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_BUNDLE",
    "ChunkAssembler",
    "Sink",
    "file_sha256",
    "split_chunks",
]
