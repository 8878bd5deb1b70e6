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

from semphase.errors import GateFailed, InputError, OptionError
from semphase.export import fp16 as fp16_convert
from semphase.export import int8 as int8_quant
from semphase.export import onnx_export
from semphase.export.imagesets import calibration_tiles, normalize, resolve_image_sets
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
        """Raise OptionError (naming the option) for inconsistent options."""
        if self.tile < 32 or self.tile % 32:
            raise OptionError(f"--tile must be a positive multiple of 32, got {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise OptionError(
                f"--overlap must be in 0..{self.tile - 1} for tile {self.tile}, got {self.overlap}"
            )
        if self.threads is not None and self.threads < 1:
            raise OptionError(f"--threads must be >= 1, got {self.threads}")
        if self.calib_images < 1:
            raise OptionError(f"--calib-images must be >= 1, got {self.calib_images}")
        opsets = onnx_export.SUPPORTED_OPSETS
        if self.opset not in opsets:
            raise OptionError(f"--opset must be in {opsets.start}..{opsets.stop - 1}, got {self.opset}")


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
    say: Say = print,
) -> dict:
    """Export a checkpoint to FP32/FP16/INT8 ONNX files, validate them and write the report.

    Parameters
    ----------
    checkpoint : a semphase training checkpoint (``best.pt``).
    out_dir : folder for ``model.onnx``, ``model.fp16.onnx``, ``model.int8.onnx``, ``export_report.json``
        (created if missing; files are written atomically).
    options : see :class:`ExportOptions`.
    say : receives one-line progress messages.

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
    from semphase.phases import ClassTable
    from semphase.train.checkpoint import load_checkpoint

    options = options or ExportOptions()
    options.validate()
    out_dir = Path(out_dir)
    checkpoint = Path(checkpoint)
    ensure_output_folder(out_dir)
    network, config, ckpt = load_checkpoint(checkpoint)
    try:
        table = ClassTable.from_dict(config["classes"])
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"checkpoint config has no usable class table ({exc})", checkpoint) from None
    _check_normalization(config, checkpoint)
    threads = options.threads or os.cpu_count() or 1
    images = resolve_image_sets(checkpoint, config, options.calib, table)
    say(f"held-out: {images.heldout_source}; {len(images.heldout)} images")
    checkpoint_sha = file_sha256(checkpoint)

    def metadata(variant: str) -> dict[str, str]:
        return build_metadata(
            config,
            ckpt,
            variant=variant,
            checkpoint_sha256=checkpoint_sha,
            tile_size=options.tile,
            overlap=options.overlap,
        )

    say(f"exporting FP32 (opset {options.opset})")
    graph = onnx_export.export_fp32(
        network,
        in_channels=int(config.get("in_channels", 1)),
        num_classes=table.num_classes,
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
        tiles = calibration_tiles(
            images.calibration,
            tile=options.tile,
            count=options.calib_images,
            normalization=config["normalization"],
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
            prepared = int8_quant.prepare(graph.model, work)
            try:
                quantized = int8_quant.quantize(prepared, tiles, settings)
            except ValueError as exc:
                raise InputError(f"INT8 quantization: {exc}", checkpoint) from None
        graphs["int8"] = quantized.model
        int8_info = {
            **settings.as_dict(),
            "weights": f"{settings.weights} {'per-channel' if settings.per_channel else 'per-tensor'}"
            + (" (7-bit range)" if settings.reduce_range else ""),
            "format": "QDQ",
            "float_nodes": quantized.float_nodes,
            "calibration": {"source": images.calibration_source, "tiles": len(tiles), "tile": options.tile},
        }

    say(f"storing the self-check reference ({REFERENCE_TILES} held-out tiles, FP32 labels) in every file")
    try:
        reference_tiles = choose_tiles(images.heldout, min(REFERENCE_SIDE, options.tile))
    except ValueError as exc:
        raise InputError(str(exc), checkpoint) from None
    # sessions on the graphs still in memory: each file is written once, with its reference
    sessions = {name: open_session(g.SerializeToString(), threads, False) for name, g in graphs.items()}
    references = build_references(
        reference_tiles,
        sessions,
        config["normalization"],
        {name: options.gates.min_agreement(name) for name in graphs},
    )
    del sessions
    files: dict[str, Path] = {}
    for name, model in graphs.items():
        write_metadata(model, {**metadata(name), **reference_metadata(references[name])})
        files[name] = out_dir / FILE_NAMES[name]
        save_model(model, files[name])
    del graphs
    for variant, name in FILE_NAMES.items():
        if variant not in files and (out_dir / name).exists():
            say(f"note: {out_dir / name} is left from an earlier export (not rewritten now)")

    say(f"validating against PyTorch on {len(images.heldout)} held-out images ({threads} threads)")
    parity = compare(
        network,
        config["normalization"],
        table.names,
        files,
        images.heldout,
        tile=options.tile,
        threads=threads,
    )
    say(f"timing one {options.tile}x{options.tile} tile per variant")
    latency = measure_latency(
        network,
        files,
        _latency_tile(images.heldout[0].image, options.tile, config["normalization"]),
        threads=threads,
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
    gates = check_gates(variants, options.gates)
    report = {
        "format": REPORT_FORMAT,
        "checkpoint": {
            "path": str(checkpoint),
            "sha256": checkpoint_sha,
            "config_sha256": config_sha256(config),
            "arch": config.get("arch"),
            "classes": table.names,
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
        "heldout": {"source": images.heldout_source, "images": len(images.heldout), "block": options.tile},
        "machine": machine_description(threads),
        "latency": {
            "tile": options.tile,
            "threads": threads,
            "statistic": "median",
            "warmup_runs": WARMUP_RUNS,
            "timed_runs": TIMED_RUNS,
        },
        "variants": variants,
        "gates": gates,
        "passed": all(g["passed"] for g in gates),
    }
    write_report(out_dir / REPORT_NAME, report)
    failed = [g["text"] for g in gates if not g["passed"]]
    if failed:
        error = GateFailed(f"export validation failed: {'; '.join(failed)} (files kept in {out_dir})")
        error.report = report  # the CLI still shows the table
        raise error
    return report
