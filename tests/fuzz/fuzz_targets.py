"""The fuzz targets, one per parser of data from outside, in :data:`TARGETS` (issue 6).

Each target is a ``TestOneInput(data: bytes)`` (:func:`fuzz_harness.build_one_input`) that
passes when the code under test returns or raises one of the target's allowed edgeops
errors, and fails on any other exception or on an input that takes longer than the
target's time bound. The same targets run three ways:

* ``tests/fuzz/test_fuzz.py`` (marker ``fuzz``): the seed corpus replayed, mutations of it
  under hypothesis, and a few thousand coverage-guided atheris runs per target in a
  subprocess, within a minute;
* ``python tests/fuzz/fuzz_run.py TARGET [libFuzzer flags] [corpus dirs]``: one target
  under atheris, as long as wanted;
* ``benchmarks/fuzz.py --seconds N``: every target for N seconds each, with a memory limit,
  printing executions, exec/s, crashes and peak RSS as JSON.

Each ``_build_*`` prepares what the target needs once and returns the body run per input;
each ``_seeds_*`` returns genuine inputs to mutate. Where an input decodes, the body also
checks what the parser promised (decoded tensors match the model's specs, an assembled
bundle is the exact bundle), so a target catches wrong answers as well as crashes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fuzz_harness import Reader, Target
from fuzz_world import BOARD, DEVICE_ID, FLEET_NAME, GROUP, World, signed_part, world

from edgeops.errors import EdgeopsError, InputError
from edgeops.trust.metadata import Root
from edgeops.trust.verify import TrustedState

Body = Callable[[bytes], None]


# ------------------------------------------------------------------ trust


def _build_trust_envelope() -> Body:
    w = world()
    trusted = w.trusted()
    rooted = [w.trusted()]

    def body(data: bytes) -> None:
        for call in (
            lambda: trusted.verify_manifest(data, board=BOARD, last_release_counter=2),
            lambda: trusted.verify_directive(
                data, device_id=DEVICE_ID, groups=(GROUP,), last_sequence=3
            ),
            lambda: _update_root(w, rooted, data),
        ):
            with contextlib.suppress(EdgeopsError):
                call()

    return body


def _update_root(w: World, holder: list[TrustedState], data: bytes) -> Root:
    """``update_root`` on a state at root v2. The state changes only when a root is
    accepted, so it is rebuilt only then (building one verifies two roots: milliseconds
    that would otherwise dominate every input)."""
    try:
        return holder[0].update_root(data)
    finally:
        if holder[0].root.version != 2:
            holder[0] = w.trusted()


def _seeds_trust_envelope() -> list[bytes]:
    w = world()
    return [w.manifest_bytes, *w.directives, w.root_v2]


def _build_trust_signed() -> Body:
    """Mutated ``signed`` parts, signed with the fleet's real keys, reach the schema readers
    behind the signature check (what a holder of a stolen key could send)."""
    from edgeops.trust.canonical import parse_json
    from edgeops.trust.envelope import envelope_bytes, sign_envelope

    w = world()
    trusted = w.trusted()
    rooted = [w.trusted()]
    signers = {"manifest": "release", "directive": "deploy", "root": "root"}

    def body(data: bytes) -> None:
        signed: Any = parse_json(data, max_size=1 << 20, what="fuzz input")
        kind = signed.get("_type") if isinstance(signed, dict) else None
        if not isinstance(kind, str) or kind not in signers:
            return
        envelope = envelope_bytes(sign_envelope(signed, w.keys[signers[kind]]))
        if kind == "manifest":
            manifest = trusted.verify_manifest(envelope, board=BOARD, last_release_counter=2)
            assert manifest.release > 2
        elif kind == "directive":
            directive = trusted.verify_directive(
                envelope, device_id=DEVICE_ID, groups=(GROUP,), last_sequence=3
            )
            assert directive.sequence > 3
        else:
            root = _update_root(w, rooted, envelope)
            assert root.version == trusted.root.version + 1

    return body


def _seeds_trust_signed() -> list[bytes]:
    w = world()
    root: Any = json.loads(w.root_v2)["signed"]
    root["version"] += 1  # the next root, so the seed passes as it stands
    return [
        *(signed_part(s) for s in (w.manifest_bytes, *w.directives)),
        json.dumps(root, sort_keys=True).encode(),
    ]


# ------------------------------------------------------------------ bundle archive


def _scratch(name: str) -> Path:
    path = world().workdir / f"scratch-{name}-{os.getpid()}"
    path.mkdir(exist_ok=True)
    return path


def _build_bundle_verify() -> Body:
    from edgeops.bundle import inspect_bundle, verify_bundle

    w = world()
    trusted = w.trusted()
    path = _scratch("verify") / "fuzz.bundle"

    def body(data: bytes) -> None:
        path.write_bytes(data)
        try:
            verified = verify_bundle(path, trusted, board=BOARD, last_release_counter=2)
        except EdgeopsError:
            pass
        else:
            # Only the genuine bundle carries a valid signature and matching digests.
            assert verified.sha256 == hashlib.sha256(data).hexdigest()
            assert verified.manifest_bytes == w.manifest_bytes
        inspect_bundle(path)

    return body


def _build_bundle_unpack() -> Body:
    """Mutated archives against the genuine manifest: the unpacker past the signature."""
    from edgeops.bundle import unpack_bundle

    w = world()
    scratch = _scratch("unpack")
    path = scratch / "fuzz.bundle"
    dest = scratch / "out"
    expected = {f.path: f.sha256 for f in w.manifest.files}

    def body(data: bytes) -> None:
        path.write_bytes(data)
        try:
            written = unpack_bundle(path, dest, w.manifest, max_unpacked=1 << 20)
        except EdgeopsError:
            # Nothing half-written stays behind.
            assert not dest.exists() or not any(dest.iterdir())
        else:
            assert {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in written.items()} == (
                expected
            )
        finally:
            shutil.rmtree(dest, ignore_errors=True)

    return body


def _seeds_bundle() -> list[bytes]:
    w = world()
    raw = w.bundle
    # Also the bundle cut short and the bare first blocks, so truncation paths are seeded.
    return [raw, raw[: len(raw) // 2], raw[:1024]]


# ------------------------------------------------------------------ wire protocol


def _build_protocol_messages() -> Body:
    from edgeops.protocol import (
        BundleMeta,
        EventMessage,
        StateMessage,
        TelemetryMessage,
        check_directive_payload,
    )

    classes = (StateMessage, EventMessage, TelemetryMessage, BundleMeta)

    def body(data: bytes) -> None:
        for cls in classes:
            try:
                message = cls.from_bytes(data)
            except EdgeopsError:
                continue
            # What parses must survive its own round trip unchanged.
            assert type(message).from_bytes(message.to_bytes()) == message
        check_directive_payload(data)

    return body


def _seeds_protocol_messages() -> list[bytes]:
    from edgeops.protocol import (
        EventMessage,
        StateMessage,
        TelemetryMessage,
        TelemetrySample,
        split_chunks,
    )
    from edgeops.protocol.messages import BundleRef as WireRef

    w = world()
    digest = hashlib.sha256(w.bundle).hexdigest()
    ref = WireRef(name="adder", version="1.0.0", digest=digest, release=3)
    meta, _ = split_chunks(w.bundle, 4096)
    return [
        StateMessage(
            online=True,
            ts=1_700_000_000.0,
            bundle=ref,
            previous=ref,
            agent_version="0.1.0",
            board=BOARD,
            update="committed",
        ).to_bytes(),
        EventMessage(
            seq=7,
            kind="update_result",
            ts=1_700_000_000.0,
            directive_seq=4,
            bundle_digest=digest,
            state="committed",
            figures={"p95_ms": 12.5, "requests": 40},
        ).to_bytes(),
        TelemetryMessage(
            seq=11,
            samples=(
                TelemetrySample(
                    ts=1_700_000_000.0,
                    window_s=30.0,
                    requests=120,
                    errors=1,
                    latency_p50_ms=3.0,
                    latency_p95_ms=7.5,
                    latency_p99_ms=9.0,
                    temperature_c=51.0,
                    bundle_digest=digest,
                    drift=0.1,
                    outputs={"y.mean": 0.5},
                ),
            ),
            dropped=2,
        ).to_bytes(),
        meta.to_bytes(),
    ]


def _build_protocol_topic() -> Body:
    from edgeops.protocol import agent_directive_filters, fleet_ingest_filters, topic_matches
    from edgeops.protocol.topics import parse_topic

    filters = [
        *agent_directive_filters(FLEET_NAME, DEVICE_ID, (GROUP,)),
        *fleet_ingest_filters(FLEET_NAME),
    ]

    def body(data: bytes) -> None:
        # paho hands topics over as str after UTF-8 decoding; replace keeps every input.
        topic = data.decode("utf-8", errors="replace")
        for pattern in filters:
            with contextlib.suppress(EdgeopsError):
                topic_matches(pattern, topic)
        parsed = parse_topic(topic)
        assert parsed.fleet

    return body


def _seeds_protocol_topic() -> list[bytes]:
    from edgeops.protocol import (
        bundle_chunk_topic,
        bundle_meta_topic,
        device_directive_topic,
        events_topic,
        group_directive_topic,
        state_topic,
        telemetry_topic,
    )

    digest = "ab" * 32
    return [
        t.encode()
        for t in (
            state_topic(FLEET_NAME, DEVICE_ID),
            events_topic(FLEET_NAME, DEVICE_ID),
            telemetry_topic(FLEET_NAME, DEVICE_ID),
            device_directive_topic(FLEET_NAME, DEVICE_ID),
            group_directive_topic(FLEET_NAME, GROUP),
            bundle_meta_topic(FLEET_NAME, digest),
            bundle_chunk_topic(FLEET_NAME, digest, 17),
        )
    ]


CHUNK = 1024


def _build_chunk_assembler() -> Body:
    """Bytes drive a session: metas (genuine or fuzzed), chunks (genuine, altered, foreign,
    any index), duplicates and ``finish``; a finished assembly must be the exact bundle."""
    from edgeops.protocol import BundleMeta, ChunkAssembler, split_chunks

    w = world()
    bundle = w.bundle
    digest = hashlib.sha256(bundle).hexdigest()
    meta, pieces = split_chunks(bundle, CHUNK)
    chunks = list(pieces)

    def body(data: bytes) -> None:
        reader = Reader(data)
        sink = io.BytesIO()
        size = len(bundle) if reader.flag() else reader.uint(4)
        assembler = ChunkAssembler(digest, size, sink, max_total=1 << 20)
        for _ in range(64):
            if reader.remaining == 0:
                break
            op = reader.pick(6)
            try:
                if op == 0:
                    assembler.accept_meta(meta)
                elif op == 1:
                    assembler.accept_meta(BundleMeta.from_bytes(reader.take(reader.uint(2))))
                elif op == 2:
                    index = reader.uint(1) - 8
                    assembler.add(index, chunks[index % len(chunks)])
                elif op == 3:
                    index = reader.pick(len(chunks))
                    altered = bytearray(chunks[index])
                    altered[reader.uint(2) % len(altered)] ^= reader.uint(1) or 1
                    assembler.add(index, bytes(altered))
                elif op == 4:
                    assembler.add(reader.uint(2) - 4, reader.take(reader.uint(2)))
                else:
                    assembler.missing()
                    assembler.finish()
                    assert sink.getvalue()[: len(bundle)] == bundle
            except EdgeopsError:
                pass

    return body


def _seeds_chunk_assembler() -> list[bytes]:
    count = -(-len(world().bundle) // CHUNK)
    in_order = b"\x01\x00" + b"".join(bytes([2, 8 + i]) for i in range(count)) + b"\x05"
    reversed_with_bad = (
        b"\x01\x00\x03\x00\x00\x00\x07"
        + b"".join(bytes([2, 8 + i]) for i in reversed(range(count)))
        + b"\x05"
    )
    return [in_order, reversed_with_bad, b"\x01\x02" + b"\x05"]


# ------------------------------------------------------------------ inference API


def _serving_specs() -> list[Any]:
    from edgeops.agent.runtimes import TensorSpec

    return [
        (TensorSpec(name="x", shape=(1, 4), dtype="float32"),),
        (TensorSpec(name="images", shape=(1, 8, 8, 3), dtype="uint8", scale=0.02, zero_point=0),),
        (
            TensorSpec(name="ids", shape=(-1, 6), dtype="int64"),
            TensorSpec(name="mask", shape=(-1, 6), dtype="bool"),
        ),
        (
            TensorSpec(name="a", shape=(2,), dtype="int8"),
            TensorSpec(name="b", shape=(), dtype="float16"),
        ),
    ]


def _build_serving_request() -> Body:
    """The KServe v2 decoder: the first byte picks the model, the next says whether (and
    where) the binary extension's header length is, the rest is the body."""
    import numpy as np

    from edgeops.agent.serving.protocol import decode_request

    specs = _serving_specs()

    def body(data: bytes) -> None:
        reader = Reader(data)
        model = specs[reader.pick(len(specs))]
        mode = reader.uint(1)
        header_length: int | None = None
        if mode & 1:
            header_length = reader.uint(4) if mode & 2 else reader.uint(2)
        request = decode_request(reader.rest(), header_length, model)
        by_name = {spec.name: spec for spec in model}
        for name, array in request.inputs.items():
            spec = by_name[name]
            assert array.dtype == np.dtype(spec.dtype), (name, array.dtype)
            assert len(array.shape) == len(spec.shape)
            assert all(d == s or s == -1 for d, s in zip(array.shape, spec.shape, strict=True))

    return body


def _seeds_serving_request() -> list[bytes]:
    import numpy as np

    from edgeops.agent.serving.protocol import encode_request

    seeds = []
    examples: list[dict[str, Any]] = [
        {"x": np.arange(4, dtype=np.float32).reshape(1, 4)},
        {"images": np.zeros((1, 8, 8, 3), np.uint8)},
        {"ids": np.ones((2, 6), np.int64), "mask": np.ones((2, 6), bool)},
        {"a": np.array([1, -1], np.int8), "b": np.array(1.5, np.float16)},
    ]
    for index, inputs in enumerate(examples):
        for binary in (False, True):
            body, headers = encode_request(
                inputs, binary_inputs=binary, outputs=["y"], request_id="r1"
            )
            if "Inference-Header-Content-Length" in headers:
                length = int(headers["Inference-Header-Content-Length"])
                prefix = bytes([index, 3]) + length.to_bytes(4, "little")
            else:
                prefix = bytes([index, 0])
            seeds.append(prefix + body)
    return seeds


# ------------------------------------------------------------------ agent.toml


def _build_agent_config() -> Body:
    from edgeops.agent.config import AgentConfig

    base = _scratch("config")

    def body(data: bytes) -> None:
        text = data.decode("utf-8", errors="replace")
        config = AgentConfig.from_toml(text, base_dir=base, environ={})
        assert config.device_id

    return body


def _seeds_agent_config() -> list[bytes]:
    w = world()
    text = w.agent_toml
    return [
        text.encode(),
        (
            text + "\n[update]\nmax_attempts = 2\ntrial_window_s = 30.0\n"
            '[caps]\nmax_bundle_mb = 64\ntelemetry_max_entries = 500\n[test]\ncrash_at = "staged"\n'
        ).encode(),
        b'[device]\nid = "a"\nfleet = "f"\n[broker]\nurl = "mqtt://localhost:1883"\n',
    ]


# ------------------------------------------------------------------ ONNX import


def _onnx_models() -> list[bytes]:
    """Small real models that take different paths through the converter."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    from edgeops.agent.runtimes.testing import onnx_add_model

    def model(nodes: list[Any], inputs: dict[str, list[int]], outputs: list[str], inits: Any):
        graph = helper.make_graph(
            nodes,
            "fuzz",
            [
                helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s)
                for n, s in inputs.items()
            ],
            [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in outputs],
            initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()],
        )
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8
        return proto.SerializeToString()

    rng = np.random.default_rng(0)
    conv = model(
        [
            helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("GlobalAveragePool", ["r"], ["p"]),
            helper.make_node("Flatten", ["p"], ["f"]),
            helper.make_node("Gemm", ["f", "fw", "fb"], ["g"], transB=1),
            helper.make_node("Softmax", ["g"], ["y"], axis=-1),
        ],
        {"x": [1, 3, 8, 8]},
        ["y"],
        {
            "w": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
            "b": np.zeros(4, np.float32),
            "fw": rng.normal(size=(5, 4)).astype(np.float32),
            "fb": np.zeros(5, np.float32),
        },
    )
    shapes = model(
        [
            helper.make_node("Shape", ["x"], ["s"]),
            helper.make_node("Gather", ["s", "i"], ["d"], axis=0),
            helper.make_node("Concat", ["d", "m"], ["ns"], axis=0),
            helper.make_node("Reshape", ["x", "ns"], ["r"]),
            helper.make_node("Transpose", ["r"], ["t"], perm=[1, 0]),
            helper.make_node("ReduceMean", ["t"], ["y"], axes=[1], keepdims=1),
        ],
        {"x": [2, 3, 4]},
        ["y"],
        {"i": np.array([0], np.int64), "m": np.array([-1], np.int64)},
    )
    return [onnx_add_model(), conv, shapes]


def _convert(data: bytes) -> None:
    from edgeops.converters.pipeline import ConvertOptions, convert_model

    result = convert_model(data, ConvertOptions(quantize="float32"))
    assert result.tflite[4:8] == b"TFL3"


def _build_onnx_bytes() -> Body:
    # Import before the first input, so the first input's time is the conversion's alone.
    import edgeops.converters.pipeline  # noqa: F401

    return _convert


def _build_onnx_edits() -> Body:
    """Structure-aware: the bytes pick a seed model and a list of edits to its protobuf (an
    attribute's value, a tensor's dims or data, an op type, a wire between nodes), so the
    converter sees well-formed ONNX that says something wrong, not only decode errors."""
    import onnx

    import edgeops.converters.pipeline  # noqa: F401

    models = _onnx_models()
    op_types = ["Conv", "Relu", "Reshape", "Gather", "Concat", "Slice", "Transpose", "Add",
                "MatMul", "Softmax", "Resize", "Split", "Pad", "Unknown"]  # fmt: skip

    def body(data: bytes) -> None:
        reader = Reader(data)
        proto = onnx.ModelProto()
        proto.ParseFromString(models[reader.pick(len(models))])
        graph = proto.graph
        for _ in range(reader.uint(1) % 6):
            kind = reader.pick(6)
            value = reader.uint(4) - (1 << 31)
            if kind == 0 and graph.node:
                node = graph.node[reader.pick(len(graph.node))]
                if node.attribute:
                    attr = node.attribute[reader.pick(len(node.attribute))]
                    if attr.ints:
                        attr.ints[reader.pick(len(attr.ints))] = value
                    else:
                        attr.i = value
            elif kind == 1 and graph.initializer:
                tensor = graph.initializer[reader.pick(len(graph.initializer))]
                if tensor.dims:
                    tensor.dims[reader.pick(len(tensor.dims))] = value % 17 - 1
                if tensor.raw_data:
                    raw = bytearray(tensor.raw_data)
                    raw[reader.uint(2) % len(raw)] ^= reader.uint(1) or 1
                    tensor.raw_data = bytes(raw)
            elif kind == 2 and graph.node:
                graph.node[reader.pick(len(graph.node))].op_type = op_types[
                    reader.pick(len(op_types))
                ]
            elif kind == 3 and graph.node:
                node = graph.node[reader.pick(len(graph.node))]
                names = [*(v.name for v in graph.input), *(i.name for i in graph.initializer)]
                names += [o for n in graph.node for o in n.output]
                if node.input:
                    node.input[reader.pick(len(node.input))] = names[reader.pick(len(names))]
            elif kind == 4 and graph.input:
                dims = graph.input[0].type.tensor_type.shape.dim
                if dims:
                    dims[reader.pick(len(dims))].dim_value = value % 40
            elif kind == 5:
                proto.opset_import[0].version = reader.uint(1) % 24
        _convert(proto.SerializeToString())

    return body


def _seeds_onnx_edits() -> list[bytes]:
    return [bytes([i]) for i in range(3)] + [b"\x01\x02\x00\x05\x00\x00\x00\x00\x01"]


# ------------------------------------------------------------------ registry


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            name="trust_envelope",
            doc="verify_manifest / verify_directive / update_root on mutated signed envelopes",
            build=_build_trust_envelope,
            seeds=_seeds_trust_envelope,
            max_len=16384,
        ),
        Target(
            name="trust_signed",
            doc="mutated signed parts re-signed with the fleet's keys: the schema readers",
            build=_build_trust_signed,
            seeds=_seeds_trust_signed,
            max_len=16384,
        ),
        Target(
            name="bundle_verify",
            doc="verify_bundle and inspect_bundle on mutated real bundles",
            build=_build_bundle_verify,
            seeds=_seeds_bundle,
            max_len=32768,
        ),
        Target(
            name="bundle_unpack",
            doc="unpack_bundle of mutated real bundles against the genuine manifest",
            build=_build_bundle_unpack,
            seeds=_seeds_bundle,
            max_len=32768,
        ),
        Target(
            name="protocol_messages",
            doc="state, event, telemetry and bundle-meta parsers, directive payload check",
            build=_build_protocol_messages,
            seeds=_seeds_protocol_messages,
            max_len=16384,
        ),
        Target(
            name="protocol_topic",
            doc="parse_topic and topic_matches against the agent's and the fleet's filters",
            build=_build_protocol_topic,
            seeds=_seeds_protocol_topic,
            max_len=1024,
        ),
        Target(
            name="chunk_assembler",
            doc="ChunkAssembler sessions: metas, chunks in any order, altered and foreign",
            build=_build_chunk_assembler,
            seeds=_seeds_chunk_assembler,
            max_len=8192,
        ),
        Target(
            name="serving_request",
            doc="KServe v2 request decoder, JSON and the binary tensor data extension",
            build=_build_serving_request,
            seeds=_seeds_serving_request,
            max_len=16384,
        ),
        Target(
            name="agent_config",
            doc="agent.toml parsing and validation",
            build=_build_agent_config,
            seeds=_seeds_agent_config,
            max_len=4096,
        ),
        Target(
            name="onnx_bytes",
            doc="ONNX import and float32 conversion of mutated model bytes",
            build=_build_onnx_bytes,
            seeds=_onnx_models,
            allowed=(InputError,),
            time_limit_s=10.0,
            max_len=8192,
        ),
        Target(
            name="onnx_edits",
            doc="ONNX conversion of real models with structured edits (attributes, dims, ops)",
            build=_build_onnx_edits,
            seeds=_seeds_onnx_edits,
            allowed=(InputError,),
            time_limit_s=10.0,
            max_len=256,
        ),
    )
}
