"""``semphase export`` (checkpoint -> validated FP32/FP16/INT8 ONNX files) and ``semphase info`` (what a
model file says about itself; torch-free)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from semphase.cli.common import console, print_tables, styled
from semphase.errors import GateFailed
from semphase.model_format import RECOMMENDED_OVERLAP, RECOMMENDED_TILE
from semphase.progress import Silent


def _parse_float_layers(text: str) -> tuple[str, ...]:
    """``"first,head"`` -> ("first", "head"); ``"none"`` or empty -> ()."""
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    return () if items in ((), ("none",)) else items


def export_command(
    checkpoint: Path = typer.Argument(..., help="Training checkpoint (best.pt) written by `semphase train`."),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Output folder for model.onnx, model.fp16.onnx, "
        "model.int8.onnx and export_report.json (created if missing).",
    ),
    calib: Path | None = typer.Option(
        None,
        "--calib",
        help="Dataset folder to calibrate INT8 on (default: the checkpoint's own training "
        "split, when its dataset is still reachable). Held-out images for validation are the checkpoint's "
        "test split, or else crop groups of this dataset set aside before calibration.",
    ),
    fp16: bool = typer.Option(
        True,
        "--fp16/--no-fp16",
        help="Write model.fp16.onnx (FP16 weights and compute, float32 input/output).",
    ),
    int8: bool = typer.Option(True, "--int8/--no-int8", help="Write model.int8.onnx (static INT8, QDQ)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (13..20)."),
    tile: int = typer.Option(
        RECOMMENDED_TILE,
        "--tile",
        help="Recommended tile size written to the metadata; also the "
        "calibration crop, parity block and latency tile size (multiple of 32).",
    ),
    overlap: int = typer.Option(
        RECOMMENDED_OVERLAP,
        "--overlap",
        help="Recommended tile overlap in pixels, written to the metadata (32 was as accurate as 64 on "
        "the demo model, for less work; see benchmarks/RESULTS.md).",
    ),
    threads: int | None = typer.Option(
        None, "--threads", help="CPU threads for validation and timing (default: all logical CPUs)."
    ),
    min_fp32_agreement: float = typer.Option(
        99.99,
        "--min-fp32-agreement",
        help="Fail when FP32 argmax agreement with PyTorch is below this (% of held-out pixels).",
    ),
    min_fp16_agreement: float = typer.Option(
        99.9, "--min-fp16-agreement", help="Fail when FP16 argmax agreement with FP32 is below this (%)."
    ),
    min_int8_agreement: float = typer.Option(
        99.5, "--min-int8-agreement", help="Fail when INT8 argmax agreement with FP32 is below this (%)."
    ),
    max_delta_miou: float = typer.Option(
        0.01,
        "--max-delta-miou",
        help="Fail when FP16's or INT8's held-out mIoU differs from FP32's by more than this, either way.",
    ),
    max_delta_class_iou: float = typer.Option(
        0.02,
        "--max-delta-class-iou",
        help="Fail when any class's IoU differs from FP32's by more than this, either way.",
    ),
    max_fraction_change: float = typer.Option(
        0.5,
        "--max-fraction-change",
        help="Fail when any phase's share of the held-out pixels differs from FP32's by more than this "
        "many percentage points.",
    ),
    calib_images: int = typer.Option(
        32, "--calib-images", help="Number of calibration images (one random tile-sized crop from each)."
    ),
    calib_method: str = typer.Option(
        "minmax", "--calib-method", help="INT8 calibration: minmax, entropy or percentile."
    ),
    int8_activations: str = typer.Option(
        "quint8",
        "--int8-activations",
        help="INT8 activation type: quint8 (u8 x s8, the fast x86 path) or qint8.",
    ),
    int8_weights: str = typer.Option("qint8", "--int8-weights", help="INT8 weight type: qint8 or quint8."),
    int8_reduce_range: bool = typer.Option(
        True,
        "--int8-reduce-range/--int8-full-range",
        help="7-bit weights (default): the same phases on x86 CPUs without VNNI, whose u8 x s8 kernels "
        "saturate with 8-bit weights (see export/int8.py for the measurements).",
    ),
    int8_float_layers: str = typer.Option(
        "none",
        "--int8-float-layers",
        help="Layers kept in float in the "
        "INT8 file, comma-separated: first (the input convolution), head "
        "(the logits convolution), exact node names, or none.",
    ),
    simplify: bool = typer.Option(
        True,
        "--simplify/--no-simplify",
        help="Simplify the FP32 graph with onnxsim (kept unsimplified, with a note, when it fails).",
    ),
) -> None:
    """Export a checkpoint to self-describing ONNX files and validate them against PyTorch.

    Writes model.onnx (FP32), model.fp16.onnx and model.int8.onnx with the class table, normalization and
    recommended tiling in their metadata, then compares each with the checkpoint on held-out images (logit
    differences, argmax agreement, mIoU/mDice/mBF1) and times one tile on the CPU. Exit code 1 when a
    validation gate fails (files kept), 2 for bad input.
    """
    from semphase.export.int8 import Int8Settings
    from semphase.export.pipeline import ExportOptions, run_export
    from semphase.gates import Gates

    try:
        options = ExportOptions(
            calib=calib,
            fp16=fp16,
            int8=int8,
            opset=opset,
            tile=tile,
            overlap=overlap,
            threads=threads,
            gates=Gates(
                min_fp32_agreement=min_fp32_agreement,
                min_fp16_agreement=min_fp16_agreement,
                min_int8_agreement=min_int8_agreement,
                max_delta_miou=max_delta_miou,
                max_delta_class_iou=max_delta_class_iou,
                max_fraction_change_pp=max_fraction_change,
            ),
            calib_images=calib_images,
            simplify=simplify,
            int8_settings=Int8Settings(
                method=calib_method,
                activations=int8_activations,
                weights=int8_weights,
                reduce_range=int8_reduce_range,
                keep_float=_parse_float_layers(int8_float_layers),
            ),
        )
    except ValueError as exc:  # a --int8-float-layers list that does not parse
        raise typer.BadParameter(str(exc)) from None
    options.validate()

    try:
        with console.status("exporting", spinner="dots"):
            report = run_export(checkpoint, out, options, progress=_Lines())
    except GateFailed as exc:
        report = getattr(exc, "report", None)
        if report is not None:
            _show(report)
        raise
    _show(report)
    console.print(styled(("export passed", "green"), f": files in {out}"), soft_wrap=True)


class _Lines(Silent):
    """Export's progress: each step as a line of its own (``export: ...``); no bars."""

    def say(self, message: str) -> None:
        console.print(styled(("export:", "dim"), f" {message}"), soft_wrap=True)

    def log(self, message: str) -> None:
        console.print(message, soft_wrap=True)


def _show(report: dict) -> None:
    from semphase.export.report import results_tables

    print_tables(results_tables(report))
    if report.get("int8"):
        settings = report["int8"]
        floats = ", ".join(settings["float_nodes"]) or "none"
        console.print(
            f"INT8: {settings['method']} calibration on {settings['calibration']['tiles']} tiles "
            f"({settings['calibration']['source']}), {settings['activations']} activations, "
            f"{settings['weights']} weights, float layers: {floats}"
        )
    reference = report.get("self_check_reference")
    if reference:
        reached = ", ".join(
            f"{name.upper()} {v['export_agreement_pct']:.2f} % "
            f"(runs must reach {v['required_agreement_pct']:.2f} %)"
            for name, v in reference["variants"].items()
        )
        console.print(
            f"self-check reference: {reference['tiles']} tiles of "
            f"{reference['tile'][0]} x {reference['tile'][1]} with FP32 labels in every file; "
            f"agreement here: {reached}"
        )
    for note in report["export"]["notes"]:
        console.print(styled(("note:", "yellow"), f" {note}"), soft_wrap=True)
    for gate in report["gates"]:
        mark = ("pass", "green") if gate["passed"] else ("FAIL", "bold red")
        console.print(styled(mark, f" {gate['text']}"), soft_wrap=True)


def info_command(
    model: Path = typer.Argument(
        ..., help="A .onnx file written by `semphase export`, or a .bioimageio.zip from `semphase package`."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print everything as one JSON object instead."),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Run the model's self-check on this machine: its classes on the reference tiles stored at "
        "export against the FP32 labels stored beside them (with the precise INT8 kernels as fall-back). "
        "Exit code 2 when the model fails it.",
    ),
    provider: str = typer.Option(
        "auto", "--provider", help="Execution provider for --verify: auto, cpu, cuda, dml or openvino."
    ),
) -> None:
    """Show a model's metadata (classes, normalization, tiling, source, metrics), opset, input/output
    signature, file size and the execution providers onnxruntime offers here. Needs no torch."""
    import onnxruntime as ort
    from rich.table import Table

    try:
        from semphase.export.metadata import summarize_model
    except ImportError:  # the base install (a microscope PC) has onnxruntime but not the onnx package
        from semphase.runtime.model import summarize_file as summarize_model

    summary = summarize_model(model)
    providers = ort.get_available_providers()
    verdict = None
    if verify:
        from semphase.runtime.model import load_model

        verdict = load_model(model, provider=provider).self_check  # a failed self-check raises (exit 2)
    if as_json:
        document = {
            "path": str(summary.path),
            "size_bytes": summary.size_bytes,
            "opset": summary.opset,
            "producer": summary.producer,
            "inputs": [{"name": n, "dtype": t, "shape": s} for n, t, s in summary.inputs],
            "outputs": [{"name": n, "dtype": t, "shape": s} for n, t, s in summary.outputs],
            "metadata": summary.metadata,
            "providers": providers,
        }
        if verdict is not None:
            document["self_check"] = verdict.as_dict()
        console.print_json(json.dumps(document))
        return
    table = Table(title=f"{summary.path.name}", title_justify="left", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("file", f"{summary.path} ({summary.size_bytes / 1e6:.1f} MB, {summary.size_bytes} bytes)")
    if summary.path.suffix.lower() == ".zip":
        table.add_row("package", "bioimage.io model package: the ONNX weights inside it are described here")
    opset = summary.opset if summary.opset is not None else "not read (the onnx package is not installed)"
    table.add_row("opset", f"{opset} (producer: {summary.producer})")
    for label, values in (("input", summary.inputs), ("output", summary.outputs)):
        for name, dtype, shape in values:
            table.add_row(label, f"{name}: {dtype} [{' x '.join(str(d) for d in shape)}]")
    for key, value in summary.metadata.items():
        text = _metrics_text(value) if key == "semphase.metrics" else None
        text = _reference_text(value) if key == "semphase.reference" else text
        table.add_row(key, text or json.dumps(value))
    if "semphase.reference" not in summary.metadata:
        table.add_row("semphase.reference", "none: exported before self-check references (loads unverified)")
    table.add_row("providers", ", ".join(providers))
    if verdict is not None:
        style = "green" if verdict.status.startswith("passed") else "yellow"
        table.add_row("self-check", styled((verdict.line(), style)))
    console.print(table)


EXPORT_HELP = (
    "Export a checkpoint to self-describing ONNX files and validate them against PyTorch. Writes model.onnx "
    "(FP32), model.fp16.onnx and model.int8.onnx with the class table, normalization and recommended tiling "
    "in their metadata, compares each with the checkpoint on held-out images (logit differences, argmax "
    "agreement, mIoU/mDice/mBF1), times one tile on the CPU and writes export_report.json. Exit code 1 when "
    "a validation gate fails (files kept), 2 for bad input."
)
INFO_HELP = (
    "Show what a model file says about itself: semphase metadata (classes, normalization, tiling, source, "
    "test metrics), opset, input/output signature, file size, and the execution providers onnxruntime "
    "offers on this machine. Needs no torch."
)


def _reference_text(value) -> str | None:
    """``2 tiles of 256 x 256 ...`` for a self-check reference (the tiles themselves are not shown)."""
    try:
        shape = value["tiles"]["shape"]
        exported = value.get("export_agreement_pct")
        cpu = (value.get("exported_on") or {}).get("cpu") or "unknown CPU"
        return (
            f"{shape[0]} tiles of {shape[1]} x {shape[2]} with {value['labels_from'].upper()} labels; "
            f"runs must reach {value['required_agreement_pct']:.2f} % agreement"
            + (f" ({exported:.2f} % at export on {cpu})" if exported is not None else "")
            + " (--verify checks it here)"
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None


def _metrics_text(metrics) -> str | None:
    """``mIoU 0.83 (0.80..0.87), ...`` for a test summary; None when it has another shape."""
    try:
        parts = [
            f"{label} {metrics['summary'][key]['mean']:.4f} "
            f"({metrics['summary'][key]['min']:.4f}..{metrics['summary'][key]['max']:.4f})"
            for key, label in (("miou", "mIoU"), ("mdice", "mDice"), ("mbf1", "mBF1"))
        ]
    except (KeyError, TypeError, ValueError):
        return None
    images = f" over {metrics['images']} test images" if "images" in metrics else ""
    return ", ".join(parts) + images + " (--json shows per-class scores)"


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``info`` to ``app``."""
    app.command(
        "export", help=EXPORT_HELP, short_help="Export a checkpoint to validated FP32/FP16/INT8 ONNX."
    )(export_command)
    app.command("info", help=INFO_HELP, short_help="Show a model file's metadata, signature and size.")(
        info_command
    )
