"""Chunking and reassembly: any order, bad chunks refused one by one, meta not trusted."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeops.errors import (
    DigestMismatchError,
    InputError,
    ProtocolError,
    SizeLimitError,
    StateError,
)
from edgeops.protocol import BundleMeta, ChunkAssembler, split_chunks

KIB = 1024


def _bundle(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


@settings(max_examples=40)
@given(
    size=st.integers(1, 40 * KIB),
    chunk_size=st.integers(KIB, 8 * KIB),
    seed=st.integers(0, 2**32),
)
def test_chunks_in_any_order_reassemble_the_exact_bundle(size, chunk_size, seed):
    data = _bundle(size, seed)
    meta, chunks = split_chunks(data, chunk_size)
    pieces = list(enumerate(chunks))
    assert b"".join(piece for _, piece in pieces) == data
    random.Random(seed).shuffle(pieces)
    sink = io.BytesIO()
    assembler = ChunkAssembler(hashlib.sha256(data).hexdigest(), size, sink)
    assembler.accept_meta(BundleMeta.from_bytes(meta.to_bytes()))
    for index, piece in pieces:
        assert assembler.add(index, piece) is True
        assert assembler.add(index, piece) is False
    assert assembler.missing() == []
    assembler.finish()
    assert sink.getvalue() == data


def test_split_reads_a_file_in_chunk_sized_pieces(tmp_path):
    data = _bundle(10 * KIB + 7)
    path = tmp_path / "bundle.tar"
    path.write_bytes(data)
    meta, chunks = split_chunks(path, 4 * KIB)
    assert (meta.chunk_count, meta.total_size) == (3, len(data))
    assert [len(c) for c in chunks] == [4 * KIB, 4 * KIB, 2 * KIB + 7]
    assert meta.digest == hashlib.sha256(data).hexdigest()


def _ready(data: bytes, chunk_size: int = KIB) -> tuple[ChunkAssembler, list[bytes], io.BytesIO]:
    meta, chunks = split_chunks(data, chunk_size)
    sink = io.BytesIO()
    assembler = ChunkAssembler(meta.digest, meta.total_size, sink)
    assembler.accept_meta(meta)
    return assembler, list(chunks), sink


def test_a_corrupt_chunk_is_refused_and_stays_missing_alone():
    assembler, chunks, _ = _ready(_bundle(5 * KIB))
    for index in (0, 1, 3, 4):
        assembler.add(index, chunks[index])
    corrupt = bytearray(chunks[2])
    corrupt[100] ^= 0xFF
    with pytest.raises(DigestMismatchError, match="chunk 2: expected sha256"):
        assembler.add(2, bytes(corrupt))
    assert assembler.missing() == [2]
    with pytest.raises(SizeLimitError, match="chunk 2: expected 1024 bytes, got 1025"):
        assembler.add(2, chunks[2] + b"x")
    assembler.add(2, chunks[2])
    assembler.finish()


@settings(max_examples=40)
@given(order=st.permutations(range(12)), stop=st.integers(0, 12))
def test_missing_lists_exactly_the_chunks_not_received_in_any_order(order, stop):
    assembler, chunks, _ = _ready(_bundle(12 * KIB))
    received = order[:stop]
    for index in received:
        assembler.add(index, chunks[index])
    expected = [i for i in range(12) if i not in received]
    assert assembler.missing() == expected
    assert list(assembler.iter_missing()) == expected
    # Lazily: the first one alone, without the rest being listed.
    assert next(assembler.iter_missing(), None) == (expected[0] if expected else None)


def test_meta_that_disagrees_with_the_signed_directive_is_refused():
    data = _bundle(3 * KIB)
    meta, _ = split_chunks(data, KIB)
    other, _ = split_chunks(_bundle(3 * KIB, seed=2), KIB)
    assembler = ChunkAssembler(meta.digest, len(data), io.BytesIO())
    with pytest.raises(DigestMismatchError, match="expected bundle meta for"):
        assembler.accept_meta(other)
    lying_size = BundleMeta(
        digest=meta.digest,
        total_size=4 * KIB,
        chunk_size=KIB,
        chunk_sha256=(*meta.chunk_sha256, meta.chunk_sha256[0]),
    )
    with pytest.raises(SizeLimitError, match="expected a bundle of 3072 bytes"):
        assembler.accept_meta(lying_size)
    with pytest.raises(StateError, match="chunk before meta"):
        assembler.add(0, data[:KIB])


def test_directive_size_above_the_cap_is_refused_before_any_download():
    with pytest.raises(SizeLimitError, match="at most 1000 bytes, got 1001"):
        ChunkAssembler("00" * 32, 1001, io.BytesIO(), max_total=1000)


def test_meta_with_self_consistent_but_false_chunk_hashes_fails_the_whole_check():
    data = _bundle(3 * KIB)
    forged_data = _bundle(3 * KIB, seed=9)
    forged, forged_chunks = split_chunks(forged_data, KIB)
    real_digest = hashlib.sha256(data).hexdigest()
    lying = BundleMeta(
        digest=real_digest,
        total_size=forged.total_size,
        chunk_size=KIB,
        chunk_sha256=forged.chunk_sha256,
    )
    assembler = ChunkAssembler(real_digest, len(data), io.BytesIO())
    assembler.accept_meta(lying)
    for index, piece in enumerate(forged_chunks):
        assembler.add(index, piece)
    with pytest.raises(DigestMismatchError, match="assembled bundle"):
        assembler.finish()


def test_finish_before_complete_is_an_ordering_error():
    assembler, chunks, _ = _ready(_bundle(2 * KIB))
    assembler.add(1, chunks[1])
    with pytest.raises(StateError, match="1 chunks missing"):
        assembler.finish()


@given(index=st.integers(-5, 10) | st.booleans(), data=st.binary(max_size=2 * KIB))
def test_add_raises_only_input_errors_on_arbitrary_chunks(index, data):
    assembler, chunks, _ = _ready(_bundle(5 * KIB))
    try:
        new = assembler.add(index, data)
    except InputError:
        assert assembler.received == 0
        return
    assert new
    assert data == chunks[index]


def test_split_refuses_bad_sizes():
    with pytest.raises(ProtocolError, match="chunk size"):
        split_chunks(b"abc", 10)
    with pytest.raises(ProtocolError, match="empty bundle"):
        split_chunks(b"", KIB)
