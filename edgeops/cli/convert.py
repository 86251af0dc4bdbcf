"""``edgeops convert``: ONNX (or .tflite) to TFLite, with quantization and a validation report.

The command calls :func:`edgeops.converters.pipeline.convert`, then — when the module
``edgeops.converters.report`` provides them — ``build_report(result, source=..., options=...)``
for the validation report (a JSON-ready dict) and ``print_report(report)`` to show it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgeops.cli import app
from edgeops.cli.output import JSON_OPTION_HELP, emit


@app.command("convert")
def convert_command(
    model: Annotated[Path, typer.Argument(help="ONNX model, or a .tflite to validate and copy.")],
    *,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .tflite.")],
    quantize: Annotated[
        str, typer.Option(help="float32 | float16 (weights) | dynamic | int8 (full integer).")
    ] = "float32",
    calibration: Annotated[
        Path | None,
        typer.Option(help="Folder of images, .npy or .npz: int8 calibration and held-out data."),
    ] = None,
    preset: Annotated[
        str, typer.Option(help="Image preprocessing: yolov8 | imagenet | none.")
    ] = "none",
    input_shape: Annotated[
        list[str] | None,
        typer.Option("--input-shape", help="Pin an input shape, NAME=1,3,320,320 (repeatable)."),
    ] = None,
    io_dtype: Annotated[
        str, typer.Option(help="Model input/output type for int8: float32 | int8.")
    ] = "float32",
    calibration_method: Annotated[
        str, typer.Option(help="int8 activation ranges: auto | minmax | percentile.")
    ] = "auto",
    calibration_count: Annotated[
        int | None,
        typer.Option(help="How many samples int8 calibrates on (the rest are held out)."),
    ] = None,
    keep_input_layout: Annotated[
        bool,
        typer.Option(
            "--keep-input-layout",
            help="Keep 4-D inputs in the ONNX layout (default: image inputs become NHWC).",
        ),
    ] = False,
    report: Annotated[
        Path | None, typer.Option(help="Write the validation report as JSON here.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=JSON_OPTION_HELP)] = False,
) -> None:
    """Convert MODEL to a TFLite file that LiteRT and tflite-runtime 2.14 load."""
    from edgeops.converters.pipeline import ConvertOptions, convert, parse_input_shape
    from edgeops.fsutil import atomic_write_json

    shapes = dict(parse_input_shape(text) for text in input_shape or [])
    options = ConvertOptions(
        quantize=quantize,  # type: ignore[arg-type]  # validated in __post_init__
        input_shapes=shapes,
        calibration=calibration,
        preset=preset,
        io_dtype=io_dtype,  # type: ignore[arg-type]
        calibration_method=calibration_method,  # type: ignore[arg-type]
        calibration_count=calibration_count,
        nhwc_inputs=not keep_input_layout,
        progress=not as_json,
    )
    result = convert(model, output, options)
    summary: dict[str, Any] = {
        "model": str(model),
        "output": str(output),
        "source_size": model.stat().st_size,
        **result.summary(),
    }
    validation = _validation_report(result, model, options)
    if validation is not None:
        summary["validation"] = validation
    if report is not None:
        atomic_write_json(report, summary)
    emit(summary, as_json=as_json, human=_print_summary)


def _report_module() -> Any:
    """``edgeops.converters.report`` when it is part of this build, else None."""
    import importlib

    try:
        return importlib.import_module("edgeops.converters.report")
    except ImportError:
        return None


def _validation_report(result: Any, model: Path, options: Any) -> dict[str, Any] | None:
    """The report module's validation, when it is part of this build."""
    report_module = _report_module()
    if report_module is None:
        return None
    build = getattr(report_module, "build_report", None)
    if build is None:
        return None
    validation: dict[str, Any] = build(result, source=model, options=options)
    return validation


def _print_summary(summary: dict[str, Any]) -> None:
    ratio = summary["size"] / max(summary["source_size"], 1)
    typer.echo(
        f"wrote {summary['output']} ({summary['mode']}): {summary['size'] / 1e6:.2f} MB, "
        f"{ratio:.2f}x the source, {summary['op_count']} ops in "
        f"{summary['seconds'].get('total', 0.0):.2f} s"
    )
    for io in ("inputs", "outputs"):
        for tensor in summary[io]:
            typer.echo(f"  {io[:-1]:6} {tensor['name']}  {tensor['dtype']}{tensor['shape']}")
    width = max((len(op) for op in summary["ops"]), default=0)
    for op, count in summary["ops"].items():
        typer.echo(f"  {op.ljust(width)}  {count}")
    validation = summary.get("validation")
    if validation is None:
        typer.echo("  (no validation report in this build)")
        return
    renderer = _renderer()
    if renderer is not None:
        renderer(validation)


def _renderer() -> Any:
    report_module = _report_module()
    return None if report_module is None else getattr(report_module, "print_report", None)
