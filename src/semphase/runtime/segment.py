"""Segmenting micrograph files: read, exclude the data bar, slide the model over it, write the results.

:func:`segment_file` is what ``semphase segment`` and ``semphase watch`` call per input. Everything it
writes for an input X goes to temporary files first and is renamed into place only when the whole input
succeeded, the phase table ``X.json`` last; a crash, Ctrl-C or a bad input never leaves a half-written
output under a finished name, and never touches the input.

Outputs per input X in the output folder:

- ``X_mask.png``: uint8 class ids, same size as the input, 255 where there is no data (the data bar);
- ``X_overlay.png``: the micrograph with class colours alpha-blended and a legend;
- ``X.json``: the phase table (pixels, fraction of analysed pixels, area in um^2 when the pixel size is
  known), excluded pixels, the model (variant, hash), the tiling and the seconds taken;
- with ``uncertainty``: ``X_uncertainty.png`` (normalized entropy, 0..255); with ``probs``:
  ``X_probs.tif`` (float16, one page per class).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from semphase import __version__
from semphase.errors import InputError, OptionError
from semphase.imageio import write_text_atomic
from semphase.model_format import Tiling
from semphase.progress import SILENT, Progress, count_callback
from semphase.runtime.databar import resolve_databar
from semphase.runtime.model import SegmentationModel
from semphase.runtime.outputs import phase_table
from semphase.runtime.outputs.sink import FORMATS, UNCERTAIN_ENTROPY, BackgroundSink, OutputSink
from semphase.runtime.sliding import DEFAULT_BATCH, TileModel, iter_bands, segment_array
from semphase.runtime.source import Micrograph, open_micrograph
from semphase.runtime.tiling import WINDOWS, TilePlan, plan_for

__all__ = ["SegmentOptions", "segment_array", "segment_file", "output_names"]


#: ``--format auto`` writes OME-TIFF when the image, data bar not counted, has more pixels than this:
#: every single SEM frame up to 8192 x 8192 (plus its bar) gets PNGs as before; larger frames (16384 x
#: 12288) and stitched montages get pyramidal OME-TIFFs, which viewers open at any zoom, where a PNG of
#: that size must be decoded whole.
AUTO_OME_TIFF_PIXELS = 8192 * 8192


@dataclass(frozen=True)
class SegmentOptions:
    """How :func:`segment_file` segments and what it writes.

    Attributes
    ----------
    tile, overlap : pixels; None = the model's recommendation.
    batch : tiles per model call.
    window : blend window, ``"gaussian"`` or ``"cosine"`` (``"constant"`` for comparison only).
    databar : ``"auto"`` (vendor metadata, else detection), ``"none"``, or rows to exclude.
    pixel_size_um : overrides the file's metadata for the areas in the phase table.
    normalize : 16-bit to 8-bit mapping, ``"linear"`` (value / 257) or ``"percentile"``.
    uncertainty : also write ``X_uncertainty.png`` and the uncertain fraction.
    probs : also write ``X_probs.tif`` (float16 class probabilities).
    tta : average the four flips of every tile.
    alpha : overlay colour weight.
    format : ``"png"``, ``"ome-tiff"`` (pyramidal, tiled, compressed) or ``"auto"``: OME-TIFF for
        micrographs whose image (data bar not counted) has more than :data:`AUTO_OME_TIFF_PIXELS`
        (8192 x 8192), PNG up to that.
    """

    tile: int | None = None
    overlap: int | None = None
    batch: int = DEFAULT_BATCH
    window: str = "gaussian"
    databar: str | int = "auto"
    pixel_size_um: float | None = None
    normalize: str = "linear"
    uncertainty: bool = False
    probs: bool = False
    tta: bool = False
    alpha: float = 0.45
    format: str = "auto"

    def __post_init__(self) -> None:
        """Check what needs no model; OptionError names the field (the CLI says its flag)."""
        if self.format not in ("auto", *FORMATS):
            raise OptionError(f"must be auto, png or ome-tiff, got {self.format!r}", argument="format")
        if self.window not in WINDOWS:
            raise OptionError(f"must be one of {', '.join(WINDOWS)}, got {self.window!r}", argument="window")
        if self.normalize not in ("linear", "percentile"):
            raise OptionError(f"must be linear or percentile, got {self.normalize!r}", argument="normalize")
        if self.batch < 1:
            raise OptionError(f"must be >= 1, got {self.batch}", argument="batch")
        if self.pixel_size_um is not None and not (
            np.isfinite(self.pixel_size_um) and self.pixel_size_um > 0
        ):
            raise OptionError(
                f"must be a positive number, got {self.pixel_size_um}", argument="pixel_size_um"
            )
        Tiling.check_arguments(self.tile, self.overlap)
        text = str(self.databar).strip().lower()
        if text not in ("auto", "none") and not text.isdigit():
            raise OptionError(
                f"must be auto, none or a number of rows, got {self.databar!r}", argument="databar"
            )

    def format_for(self, width: int, height: int) -> str:
        """The output format for a micrograph whose image (without its data bar) has this size: ``"png"``
        or ``"ome-tiff"``."""
        if self.format != "auto":
            return self.format
        return "ome-tiff" if width * height > AUTO_OME_TIFF_PIXELS else "png"

    def tiling_for(self, model: TileModel) -> Tiling:
        """The tiling for ``model``: ``tile`` and ``overlap``, else the model's recommendation, resolved by
        :meth:`~semphase.model_format.Tiling.resolve`; call it once before any file is read.

        Raises
        ------
        OptionError
            for a ``tile`` the model cannot take (not a multiple of its size multiple) or an ``overlap``
            outside ``0..tile-1``.
        """
        return Tiling.resolve(model, self.tile, self.overlap)


def output_names(stem: str, options: SegmentOptions, fmt: str | None = None) -> dict[str, str]:
    """File names of the outputs for an input whose output stem is ``stem``, in format ``fmt``
    (``"png"`` or ``"ome-tiff"``; default: ``options.format``, which must then not be ``"auto"``)."""
    fmt = fmt or options.format
    if fmt not in FORMATS:
        raise ValueError(f"output_names needs the format, png or ome-tiff, got {fmt!r}")
    image = ".png" if fmt == "png" else ".ome.tif"
    names = {"mask": f"{stem}_mask{image}", "overlay": f"{stem}_overlay{image}"}
    if options.uncertainty:
        names["uncertainty"] = f"{stem}_uncertainty{image}"
    if options.probs:
        names["probs"] = f"{stem}_probs.tif" if fmt == "png" else f"{stem}_probs.ome.tif"
    names["json"] = f"{stem}.json"
    return names


def possible_output_names(stem: str, options: SegmentOptions) -> list[str]:
    """Every name an input with this stem may write (both formats under ``--format auto``)."""
    formats = FORMATS if options.format == "auto" else (options.format,)
    return sorted({name for fmt in formats for name in output_names(stem, options, fmt).values()})


def check_inputs_are_not_outputs(
    files: Sequence[Path],
    stems: Sequence[str],
    out_dir: Path,
    options: SegmentOptions,
    extra: Sequence[str] = (),
) -> None:
    """Refuse a run where a named input is also a file the run writes (its own or another input's outputs,
    or ``extra`` names in ``out_dir`` such as summary.csv), before anything is written: it would be
    overwritten.

    Raises
    ------
    InputError
        naming the first such input and the output it collides with.
    """
    written = {os.path.realpath(out_dir / name): name for name in extra}
    for stem in stems:
        for name in possible_output_names(stem, options):
            written[os.path.realpath(out_dir / name)] = name
    for path in files:
        name = written.get(os.path.realpath(path))
        if name is not None:
            raise InputError(f"is also an output of this run ({name}); choose another output folder", path)


def _check_not_input(path: Path, targets: list[Path]) -> None:
    for target in targets:
        if target.exists() and os.path.samefile(target, path):
            raise InputError(
                f"an output would overwrite the input itself ({target.name}); choose another output folder",
                path,
            )


def segment_file(
    model: SegmentationModel,
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    options: SegmentOptions | None = None,
    stem: str | None = None,
    progress: Progress = SILENT,
) -> dict:
    """Segment one micrograph file and write its outputs.

    Parameters
    ----------
    model : from :func:`semphase.runtime.model.load_model`.
    path : TIFF (8/16-bit, first page), PNG, BMP or JPEG; gray, RGB or RGBA (converted to gray).
    out_dir : output folder (created if needed).
    options : see :class:`SegmentOptions`.
    stem : output file stem; default the input's stem.
    progress : stage ``"tiles"`` (described by the file's name), one step per tile
        (:mod:`semphase.progress`).

    Returns
    -------
    dict, the content of ``X.json`` (see the module docstring), with ``outputs`` naming every file.

    Raises
    ------
    InputError
        naming the file, for an unreadable input or an unwritable output; nothing is left behind then.
    """
    options = options or SegmentOptions()
    src = Path(path)
    stem = stem or src.stem
    tiling = options.tiling_for(model)
    if src.exists():
        _check_not_input(src, [Path(out_dir) / name for name in possible_output_names(stem, options)])
    t0 = time.perf_counter()
    micrograph = _read_input(src, options)
    try:
        t_read = time.perf_counter() - t0
        fmt = options.format_for(micrograph.width, micrograph.analysed_height)  # the bar is not image
        targets = {key: Path(out_dir) / name for key, name in output_names(stem, options, fmt).items()}
        t1 = time.perf_counter()
        on_tiles = count_callback(progress, "tiles", f"  {src.name}")
        sink, plan = _segment_and_write(model, micrograph, targets, options, fmt, tiling, on_tiles)
        t_segment = time.perf_counter() - t1
    finally:
        micrograph.source.close()
    result = _result_document(model, micrograph, sink, plan, options, fmt, tiling)
    result["outputs"] = {key: str(p) for key, p in targets.items()}
    result["seconds"] = {
        "read": round(t_read, 4),
        "segment_and_write": round(t_segment, 4),
        "total": round(time.perf_counter() - t0, 4),
    }
    write_text_atomic(targets["json"], json.dumps(result, indent=2) + "\n")
    return result


@dataclass
class _Micrograph:
    """An opened input: its rows on demand and what is known about them."""

    path: Path
    source: Micrograph
    bit_depth: int
    bar_rows: int
    bar_source: str
    pixel_size_um: float | None
    pixel_size_source: str | None
    notes: list[str]

    @property
    def width(self) -> int:
        return self.source.width

    @property
    def height(self) -> int:
        return self.source.height

    @property
    def analysed_height(self) -> int:
        return self.height - self.bar_rows


class _Analysed:
    """The rows above the data bar, as the sliding window reads them."""

    def __init__(self, source: Micrograph, height: int) -> None:
        self.source = source
        self.shape = (height, source.width)
        self.streamed = source.streamed

    def rows(self, y0: int, y1: int) -> np.ndarray:
        return self.source.rows(y0, y1)


def _read_input(src: Path, options: SegmentOptions) -> _Micrograph:
    """Open the input (TIFFs are read strip by strip later), find the data bar and the pixel size."""
    source = open_micrograph(src, options.normalize)
    try:
        info = source.info
        bar_rows, bar_source = resolve_databar(options.databar, source.bottom(), info.image_height)
    except ValueError as exc:
        source.close()
        raise InputError(str(exc), src) from None
    except BaseException:
        source.close()
        raise
    pixel_source = (
        "option" if options.pixel_size_um else (info.vendor or ("tiff" if info.pixel_size_um else None))
    )
    return _Micrograph(
        path=src,
        source=source,
        bit_depth=source.bit_depth,
        bar_rows=bar_rows,
        bar_source=bar_source,
        pixel_size_um=options.pixel_size_um or info.pixel_size_um,
        pixel_size_source=pixel_source,
        notes=list(info.notes),
    )


def _segment_and_write(
    model: SegmentationModel,
    micrograph: _Micrograph,
    targets: dict[str, Path],
    options: SegmentOptions,
    fmt: str,
    tiling: Tiling,
    progress: Callable[[int, int], None] | None,
) -> tuple[OutputSink, TilePlan]:
    """Run the sliding window band by band while the outputs stream to their temporaries; commit them all
    at the end, or remove them all on any exception (Ctrl-C included)."""
    width, analysed_h = micrograph.width, micrograph.analysed_height
    plan = plan_for(analysed_h, width, tiling)
    outputs = {k: v for k, v in targets.items() if k != "json"}
    sink = OutputSink(
        outputs,
        width,
        micrograph.height,
        model.classes,
        model.colors,
        options.alpha,
        micrograph.path.name,
        fmt,
        micrograph.pixel_size_um,
    )
    pipeline = BackgroundSink(sink)
    try:
        bands = iter_bands(
            model,
            _Analysed(micrograph.source, analysed_h),
            tiling=tiling,
            batch=options.batch,
            window=options.window,
            tta=options.tta,
            progress=progress,
            logits=sink.wants_logits,
        )
        for band in bands:
            pipeline.band(band)
        for y0 in range(analysed_h, micrograph.height, 256):  # the data bar, read in bands too
            pipeline.excluded(y0, micrograph.source.rows(y0, min(micrograph.height, y0 + 256)))
        pipeline.finish()
        sink.commit()
    except BaseException:
        pipeline.stop()
        sink.abort()
        raise
    return sink, plan


def _result_document(
    model: SegmentationModel,
    micrograph: _Micrograph,
    sink: OutputSink,
    plan: TilePlan,
    options: SegmentOptions,
    fmt: str,
    tiling: Tiling,
) -> dict:
    """The content of ``X.json`` (without ``outputs`` and ``seconds``), in its documented key order."""
    height, width = micrograph.height, micrograph.width
    analysed = micrograph.analysed_height * width
    result = {
        "input": str(micrograph.path),
        "width": width,
        "height": height,
        "bit_depth": micrograph.bit_depth,
        "normalize": options.normalize,
        "databar": {"rows": micrograph.bar_rows, "source": micrograph.bar_source},
        "analysed_pixels": analysed,
        "excluded_pixels": micrograph.bar_rows * width,
        "pixel_size_um": micrograph.pixel_size_um,
        "pixel_size_source": micrograph.pixel_size_source,
        "streamed": micrograph.source.streamed,
        "format": fmt,
        "phases": phase_table(sink.counts, model.classes, micrograph.pixel_size_um),
        "model": model.describe(),
        "tiling": {
            "tile": tiling.tile,
            "overlap": tiling.overlap,
            "window": options.window,
            "batch": options.batch,
            "tta": options.tta,
            "tiles": plan.count,
            "grid": [plan.rows.count, plan.cols.count],
        },
        "options": asdict(options),
        "semphase_version": __version__,
    }
    if options.uncertainty:
        result["uncertainty"] = {
            "entropy_threshold": UNCERTAIN_ENTROPY,
            "uncertain_pixels": sink.uncertain,
            "uncertain_fraction": sink.uncertain / analysed if analysed else 0.0,
        }
    if micrograph.notes:
        result["metadata_notes"] = list(micrograph.notes)
    return result
