"""``edgeops bundle …``: create, inspect and verify signed model bundles."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeops.cli.output import JSON_OPTION_HELP, emit, key_values

bundle_app = typer.Typer(
    name="bundle",
    help="Create, inspect and verify signed model bundles.",
    no_args_is_help=True,
)


def _specs(tensors: list[dict[str, Any]]) -> str:
    parts = []
    for t in tensors:
        quant = f" q({t['scale']:.6g},{t['zero_point']})" if t.get("scale") is not None else ""
        parts.append(f"{t['name']} {t['dtype']}{list(t['shape'])}{quant}")
    return "; ".join(parts)


def _human_manifest(signed: dict[str, Any], extra: dict[str, Any]) -> None:
    rows: dict[str, Any] = {
        "name": signed.get("name"),
        "version": signed.get("version"),
        "release": signed.get("release"),
        "created": signed.get("created"),
        "runtime": f"{signed.get('runtime', {}).get('name')} >= "
        f"{signed.get('runtime', {}).get('min_version')}",
        "inputs": _specs(signed.get("inputs", [])),
        "outputs": _specs(signed.get("outputs", [])),
        "boards": ", ".join(signed.get("boards", [])) or "any",
    }
    rows.update(extra)
    key_values(rows)
    for entry in signed.get("files", []):
        typer.echo(f"  {entry['path']:<28} {entry['size']:>12}  {entry['sha256'][:16]}")


@bundle_app.command("create")
def create(  # noqa: PLR0917 - typer passes options positionally
    model: Annotated[Path, typer.Argument(help="Model file (.tflite or .onnx).")],
    name: Annotated[str, typer.Option("--name", help="Bundle (model) name.")],
    version: Annotated[str, typer.Option("--version", help="Human version, e.g. 1.2.0.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Bundle file to write.")],
    fleet_dir: Annotated[
        Path, typer.Option("--fleet", help="Fleet folder holding the release key.")
    ] = Path("."),
    test_inputs: Annotated[
        Path | None,
        typer.Option(
            "--test-inputs",
            help=".npz of inputs keyed by input name; the model is run on them and the "
            "outputs stored as the bundle's test vectors.",
        ),
    ] = None,
    boards: Annotated[
        list[str] | None,
        typer.Option("--board", help="Compatible board (repeat); none means any board."),
    ] = None,
    release: Annotated[
        int | None,
        typer.Option("--release", help="Release counter (default: the fleet's last + 1)."),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option("--report", help="Conversion report (edgeops convert --report)."),
    ] = None,
    p95_ms: Annotated[
        float | None, typer.Option("--p95-ms", help="Latency budget: p95 in milliseconds.")
    ] = None,
    memory_mb: Annotated[
        float | None, typer.Option("--memory-mb", help="Memory budget in MB.")
    ] = None,
    extra: Annotated[
        list[Path] | None,
        typer.Option("--extra", help="Extra file to include (labels …), by its file name."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """Build a bundle from MODEL, sign it with the fleet's release key and write it to -o.

    The manifest records the files with sizes and SHA-256, the runtime, the model's input
    and output specs (quantization included), boards, budgets, the release counter and the
    source lineage.
    """
    from edgeops.bundle import create_bundle, file_digest
    from edgeops.errors import ConfigError
    from edgeops.fleet.fleetdir import FleetDir
    from edgeops.trust import Budgets

    fleet = FleetDir.open(fleet_dir)
    last = fleet.last_release()
    counter = release if release is not None else last + 1
    if counter <= last:
        raise ConfigError(
            f"expected release counter > {last} (the last one this fleet signed), got {counter}"
        )
    extras = {path.name: path for path in extra or []}
    manifest = create_bundle(
        model,
        name=name,
        version=version,
        release=counter,
        signing_keys=fleet.signing_keys("release"),
        output=output,
        test_inputs=test_inputs,
        boards=boards or (),
        budgets=Budgets(p95_latency_ms=p95_ms, memory_mb=memory_mb),
        report=report,
        extra_files=extras,
    )
    fleet.record_release(counter, name=name, version=version)
    size, sha256 = file_digest(output)
    result = {"path": str(output), "size": size, "sha256": sha256, **manifest.to_signed()}
    emit(
        result,
        as_json=as_json,
        human=lambda data: _human_manifest(
            data, {"bundle": f"{output} ({size} bytes)", "sha256": sha256}
        ),
    )


@bundle_app.command("inspect")
def inspect(
    bundle: Annotated[Path, typer.Argument(help="Bundle file.")],
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """Show a bundle's manifest and members WITHOUT checking signatures (see verify)."""
    from edgeops.bundle import inspect_bundle

    info = inspect_bundle(bundle)

    def human(data: dict[str, Any]) -> None:
        typer.echo("unverified view (use 'edgeops bundle verify' to check signatures)")
        _human_manifest(
            data["manifest"],
            {
                "bundle": f"{data['path']} ({data['size']} bytes)",
                "sha256": data["sha256"],
                "signed by": ", ".join(str(k)[:16] for k in data["signed_by"]),
            },
        )

    emit(info, as_json=as_json, human=human)


@bundle_app.command("verify")
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle file.")],
    root: Annotated[Path, typer.Option("--root", help="Trusted root.json of the fleet.")],
    board: Annotated[
        str | None, typer.Option("--board", help="Check the bundle is for this board.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """Verify a bundle as a device does: release signature against ROOT, every file's size
    and SHA-256, archive safety, board. Streams: memory does not grow with the bundle."""
    from edgeops.bundle import verify_bundle
    from edgeops.errors import ConfigError
    from edgeops.trust import TrustedState, utcnow

    try:
        root_bytes = root.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read root {root}: {exc.strerror or exc}") from exc
    trusted = TrustedState(root_bytes, now=utcnow())
    verified = verify_bundle(bundle, trusted, board=board)
    result = {
        "verified": True,
        "path": str(bundle),
        "size": verified.size,
        "sha256": verified.sha256,
        "root_version": trusted.root.version,
        **verified.manifest.to_signed(),
    }

    def human(data: dict[str, Any]) -> None:
        typer.echo(f"OK: {bundle} verified against root version {data['root_version']}")
        _human_manifest(data, {"sha256": data["sha256"]})

    emit(result, as_json=as_json, human=human)
