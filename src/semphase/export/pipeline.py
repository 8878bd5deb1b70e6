"""``semphase export``: checkpoint -> model.onnx (FP32), model.fp16.onnx, model.int8.onnx, export_report.json.

Order: check the output folder and the inputs first (bad input fails in seconds, before any export), then
export, convert and quantize, then validate every file against the PyTorch checkpoint on held-out images.
A failed gate raises :class:`~semphase.errors.GateFailed` after the files and the report are written, so
they can be inspected.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from semphase.errors import GateFailed, InputError, OptionError
from semphase.export import fp16 as fp16_convert
from semphase.export import int8 as int8_quant
from semphase.export import onnx_export
from semphase.export.imagesets import ImageSets, calibration_tiles, resolve_image_sets
from semphase.export.metadata import (
    RECOMMENDED_OVERLAP,
    RECOMMENDED_TILE,
    build_metadata,
    config_sha256,
    reference_metadata,
    save_model,
    write_metadata,
)
from semphase.export.parity import TIMED_RUNS, WARMUP_RUNS, compare, measure_latency, open_session
from semphase.export.reference import REFERENCE_SIDE, REFERENCE_TILES, build_references, choose_tiles
from semphase.export.report import REPORT_FORMAT, check_gates, machine_description, write_report
from semphase.gates import Gates
from semphase.imageio import ensure_output_folder, file_sha256
from semphase.model_format import Tiling, normalize
from semphase.progress import SILENT, Progress
from semphase.runtime.selfcheck import EXPORT_MARGIN_PP

FILE_NAMES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
REPORT_NAME = "export_report.json"


@dataclass
class ExportOptions:
    """Everything ``semphase export`` can be told; defaults are the command's defaults.

    Attributes
    ----------
    calib : dataset folder for INT8 calibration (None: the checkpoint's own training split).
    fp16, int8 : write these variants.
    opset : ONNX opset.
    tile, overlap : recommended tiling written to the metadata; ``tile`` is also the parity block size
        and the latency tile.
    threads : CPU threads for onnxruntime and torch during validation (None: all logical CPUs).
    gates : validation thresholds.
    calib_images : number of calibration images (one random tile-sized crop from each).
    int8_settings : calibration method, activation type and float layers.
    simplify : run onnxsim on the FP32 graph.
    """

    calib: Path | None = None
    fp16: bool = True
    int8: bool = True
    opset: int = onnx_export.DEFAULT_OPSET
    tile: int = RECOMMENDED_TILE
    overlap: int = RECOMMENDED_OVERLAP
    threads: int | None = None
    gates: Gates = field(default_factory=Gates)
    calib_images: int = 32
    int8_settings: int8_quant.Int8Settings = int8_quant.DEFAULT_SETTINGS
    simplify: bool = True

    def validate(self) -> None:
        """Raise OptionError (naming the field; the CLI says its flag) for inconsistent options."""
        Tiling(self.tile, self.overlap)
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"must be >= 1, got {self.threads}", argument="threads")
        if self.calib_images < 1:
            raise OptionError(f"must be >= 1, got {self.calib_images}", argument="calib_images")
        opsets = onnx_export.SUPPORTED_OPSETS
        if self.opset not in opsets:
            raise OptionError(
                f"must be in {opsets.start}..{opsets.stop - 1}, got {self.opset}", argument="opset"
            )


def _latency_tile(image: np.ndarray, tile: int, normalization: dict) -> np.ndarray:
    """A ``tile`` x ``tile`` normalized input cut from (or wrapped around) a held-out image."""
    h, w = image.shape
    crop = np.pad(image[:tile, :tile], ((0, max(0, tile - h)), (0, max(0, tile - w))), mode="wrap")
    return np.ascontiguousarray(normalize(crop[None], normalization))


def _check_normalization(config: dict, checkpoint: Path) -> None:
    norm = config.get("normalization")
    channels = int(config.get("in_channels", 1))
    try:
        ok = (
            float(norm["scale"]) > 0
            and len(norm["mean"]) == channels
            and len(norm["std"]) == channels
            and all(float(v) > 0 for v in norm["std"])
        )
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(
            f"checkpoint config has no usable normalization (need scale and {channels} mean/std)", checkpoint
        )


Say = Callable[[str], None]


def run_export(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: ExportOptions | None = None,
    progress: Progress = SILENT,
) -> dict:
    """Export a checkpoint to FP32/FP16/INT8 ONNX files, validate them and write the report.

    Parameters
    ----------
    checkpoint : a semphase training checkpoint (``best.pt``).
    out_dir : folder for ``model.onnx``, ``model.fp16.onnx``, ``model.int8.onnx``, ``export_report.json``
        (created if missing; files are written atomically).
    options : see :class:`ExportOptions`.
    progress : receives a line per step (``progress.say``, :mod:`semphase.progress`).

    Returns
    -------
    dict: the report as written to ``export_report.json``.

    Raises
    ------
    InputError
        missing/corrupt/foreign checkpoint, unwritable folder, unreachable or empty calibration or
        held-out set.
    ValueError
        inconsistent options.
    GateFailed
        a validation gate failed; files and report are kept, and the exception's ``report`` attribute
        holds the report.
    """
    say = progress.say
    options = options or ExportOptions()
    options.validate()
    out_dir = Path(out_dir)
    ensure_output_folder(out_dir)
    source = _load_source(Path(checkpoint), options)
    say(f"held-out: {source.images.heldout_source}; {len(source.images.heldout)} images")
    graph, graphs, int8_info = _convert(source, options, say)
    files, references, reference_tiles = _write_files(source, graphs, out_dir, options, say)
    del graphs
    for variant, name in FILE_NAMES.items():
        if variant not in files and (out_dir / name).exists():
            say(f"note: {out_dir / name} is left from an earlier export (not rewritten now)")
    variants = _validate(source, files, options, say)
    gates = check_gates(variants, options.gates)
    report = _report(source, options, graph, int8_info, references, reference_tiles, variants, gates)
    write_report(out_dir / REPORT_NAME, report)
    failed = [g["text"] for g in gates if not g["passed"]]
    if failed:
        error = GateFailed(f"export validation failed: {'; '.join(failed)} (files kept in {out_dir})")
        error.report = report  # the CLI still shows the table
        raise error
    return report


def _report(
    source: _Source, options: ExportOptions, graph, int8_info, references, reference_tiles, variants, gates
):
    """The export report as ``export_report.json`` holds it (format :data:`REPORT_FORMAT`)."""
    return {
        "format": REPORT_FORMAT,
        "checkpoint": {
            "path": str(source.checkpoint),
            "sha256": source.sha256,
            "config_sha256": config_sha256(source.config),
            "arch": source.config.get("arch"),
            "classes": source.table.names,
        },
        "export": {
            "exporter": graph.exporter,
            "opset": graph.opset,
            "simplified": graph.simplified,
            "notes": graph.notes,
            "random_input_max_abs_diff": graph.check_max_abs_diff,
            "tile": {"size": options.tile, "overlap": options.overlap},
        },
        "int8": int8_info,
        "self_check_reference": {
            "tiles": int(reference_tiles.shape[0]),
            "tile": list(reference_tiles.shape[1:]),
            "labels_from": "fp32",
            "margin_pp": EXPORT_MARGIN_PP,
            "variants": {
                name: {"export_agreement_pct": ref.export_pct, "required_agreement_pct": ref.required_pct}
                for name, ref in references.items()
            },
        },
        "heldout": {
            "source": source.images.heldout_source,
            "images": len(source.images.heldout),
            "block": options.tile,
        },
        "machine": machine_description(source.threads),
        "latency": {
            "tile": options.tile,
            "threads": source.threads,
            "statistic": "median",
            "warmup_runs": WARMUP_RUNS,
            "timed_runs": TIMED_RUNS,
        },
        "variants": variants,
        "gates": gates,
        "passed": all(g["passed"] for g in gates),
    }


@dataclass
class _Source:
    """What an export starts from: the checkpoint's network, config and class table, and the images."""

    checkpoint: Path
    network: object
    config: dict
    ckpt: dict
    table: object
    images: ImageSets
    sha256: str
    threads: int


def _load_source(checkpoint: Path, options: ExportOptions) -> _Source:
    """Load and check the checkpoint, find the calibration and held-out images."""
    from semphase.phases import ClassTable
    from semphase.train.checkpoint import load_checkpoint

    network, config, ckpt = load_checkpoint(checkpoint)
    try:
        table = ClassTable.from_dict(config["classes"])
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"checkpoint config has no usable class table ({exc})", checkpoint) from None
    _check_normalization(config, checkpoint)
    return _Source(
        checkpoint=checkpoint,
        network=network,
        config=config,
        ckpt=ckpt,
        table=table,
        images=resolve_image_sets(checkpoint, config, options.calib, table),
        sha256=file_sha256(checkpoint),
        threads=options.threads or os.cpu_count() or 1,
    )


def _convert(source: _Source, options: ExportOptions, say: Say):
    """The graphs to write: FP32 (exported and checked), FP16 and INT8 as asked; returns (the FP32 export
    result, {variant: graph}, the INT8 settings for the report or None)."""
    say(f"exporting FP32 (opset {options.opset})")
    graph = onnx_export.export_fp32(
        source.network,
        in_channels=int(source.config.get("in_channels", 1)),
        num_classes=source.table.num_classes,
        opset=options.opset,
        simplify=options.simplify,
    )
    for note in graph.notes:
        say(f"note: {note}")
    graphs = {"fp32": graph.model}
    if options.fp16:
        say("converting to FP16")
        graphs["fp16"] = fp16_convert.convert_fp16(graph.model)
    int8_info = None
    if options.int8:
        graphs["int8"], int8_info = _quantize(source, graph.model, options, say)
    return graph, graphs, int8_info


def _quantize(source: _Source, fp32: onnx.ModelProto, options: ExportOptions, say: Say):
    """Static INT8 from calibration tiles; returns (the graph, its settings for the report)."""
    images = source.images
    tiles = calibration_tiles(
        images.calibration,
        tile=options.tile,
        count=options.calib_images,
        normalization=source.config["normalization"],
    )
    settings = options.int8_settings
    say(
        f"quantizing to INT8 ({settings.method} calibration on {len(tiles)} tiles from "
        f"{images.calibration_source}, {settings.activations} activations, "
        f"{'7-bit (reduce_range)' if settings.reduce_range else '8-bit'} weights"
        + (f", float layers: {', '.join(settings.keep_float)}" if settings.keep_float else "")
        + ")"
    )
    with tempfile.TemporaryDirectory(prefix="semphase-export-") as work:
        prepared = int8_quant.prepare(fp32, work)
        try:
            quantized = int8_quant.quantize(prepared, tiles, settings)
        except ValueError as exc:
            raise InputError(f"INT8 quantization: {exc}", source.checkpoint) from None
    info = {
        **settings.as_dict(),
        "weights": f"{settings.weights} {'per-channel' if settings.per_channel else 'per-tensor'}"
        + (" (7-bit range)" if settings.reduce_range else ""),
        "format": "QDQ",
        "float_nodes": quantized.float_nodes,
        "calibration": {"source": images.calibration_source, "tiles": len(tiles), "tile": options.tile},
    }
    return quantized.model, info


def _write_files(source: _Source, graphs: dict, out_dir: Path, options: ExportOptions, say: Say):
    """Write each graph once, with its metadata and self-check reference; returns (files, references,
    the reference tiles)."""
    say(f"storing the self-check reference ({REFERENCE_TILES} held-out tiles, FP32 labels) in every file")
    try:
        reference_tiles = choose_tiles(source.images.heldout, min(REFERENCE_SIDE, options.tile))
    except ValueError as exc:
        raise InputError(str(exc), source.checkpoint) from None
    # sessions on the graphs still in memory: each file is written once, with its reference
    sessions = {
        name: open_session(g.SerializeToString(), source.threads, False) for name, g in graphs.items()
    }
    references = build_references(
        reference_tiles,
        sessions,
        source.config["normalization"],
        {name: options.gates.min_agreement(name) for name in graphs},
    )
    del sessions
    files: dict[str, Path] = {}
    for name, model in graphs.items():
        metadata = build_metadata(
            source.config,
            source.ckpt,
            variant=name,
            checkpoint_sha256=source.sha256,
            tile_size=options.tile,
            overlap=options.overlap,
        )
        write_metadata(model, {**metadata, **reference_metadata(references[name])})
        files[name] = out_dir / FILE_NAMES[name]
        save_model(model, files[name])
    return files, references, reference_tiles


def _validate(source: _Source, files: dict[str, Path], options: ExportOptions, say: Say) -> dict[str, dict]:
    """Parity with PyTorch on the held-out images and the latency of one tile, per variant."""
    heldout = source.images.heldout
    say(f"validating against PyTorch on {len(heldout)} held-out images ({source.threads} threads)")
    parity = compare(
        source.network,
        source.config["normalization"],
        source.table.names,
        files,
        heldout,
        tile=options.tile,
        threads=source.threads,
    )
    say(f"timing one {options.tile}x{options.tile} tile per variant")
    latency = measure_latency(
        source.network,
        files,
        _latency_tile(heldout[0].image, options.tile, source.config["normalization"]),
        threads=source.threads,
    )
    variants: dict[str, dict] = {}
    for name in ("pytorch", *files):
        row = dict(parity[name])
        row["latency_ms"] = latency[name]
        if name in files:
            row["file"] = files[name].name
            row["size_bytes"] = files[name].stat().st_size
            row["size_vs_fp32"] = row["size_bytes"] / files["fp32"].stat().st_size
            row["speedup_vs_fp32"] = latency["fp32"] / latency[name]
        variants[name] = row
    return variants
