"""One large synthetic micrograph as an 8-bit TIFF, written band by band, plus its truth label PNG.

Memory stays bounded by one band of rows (and one row of tiles), whatever the size of the frame: the
renderer draws bands of rows (:meth:`~semphase.data.synth.render.Micrograph.bands`), the truth labels of
each band go straight into a streaming PNG encoder, and the pixels go into the TIFF in one of two
layouts:

- plain (the default): uncompressed strips; tifffile lays out the file and the bands are written into
  place;
- montage (``tile`` and/or ``compression``): rows are regrouped into tile rows (or strips) of the file and
  handed to :meth:`tifffile.TiffWriter.write` as an iterator of tiles (or encoded strips), the form of real
  stitched SEM montages of several gigapixels (tiled, zlib/LZW/zstd/JPEG, BigTIFF).

The pixels do not depend on the layout: the renderer always draws the same bands, which are only
regrouped. Optionally an SEM-style data bar is appended below the image (labelled ``IGNORE``) and the
pixel size is recorded the way FEI/Thermo instruments do (tag 34682, which tifffile parses as
``fei_metadata``) and as standard TIFF resolution in pixels per centimetre.

What remains proportional to the frame is the scene geometry that :func:`prepare` builds for the whole
frame (particle outlines, precipitates, dendrite segments: a few tenths of a byte per pixel).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from semphase.data.synth.domains import domain_named
from semphase.data.synth.render import prepare
from semphase.errors import InputError
from semphase.imageio import FEI_HELIOS_TAG, TIFF_SUFFIXES, atomic_path
from semphase.phases import IGNORE
from semphase.rowwriters import PngRowWriter

#: The display width that defines SEM magnification on FEI-style instruments (Polaroid 5" convention).
_DISPLAY_WIDTH_UM = 127_000.0


def fei_metadata_text(pixel_size_um: float, width: int, image_height: int) -> str:
    """INI text in the layout FEI/Thermo microscopes write (tag 34682) that tifffile parses."""
    m = pixel_size_um * 1e-6
    return (
        "[User]\r\nUser=semphase\r\n"
        "[System]\r\nSystemtype=semphase synthetic\r\n"
        f"[Scan]\r\nPixelWidth={m:.6e}\r\nPixelHeight={m:.6e}\r\n"
        f"HorizontalFieldWidth={m * width:.6e}\r\n"
        f"[Image]\r\nResolutionX={width}\r\nResolutionY={image_height}\r\n"
    )


def nominal_pixel_size_um(magnification: int, width: int = 1024) -> float:
    """Pixel size an SEM states for ``magnification`` when a frame of ``width`` pixels spans the
    127 mm reference display (0.177 um at 700x and 1024 px).

    The generator's feature sizes in pixels depend on the magnification only, so a large synthetic
    frame is read as a montage of 1024-pixel fields at this pixel size.
    """
    return _DISPLAY_WIDTH_UM / (magnification * width)


def _nice_length(target: float) -> float:
    """Largest 1, 2 or 5 x 10^k not above ``target``."""
    exp = 10.0 ** math.floor(math.log10(target))
    return max(m * exp for m in (1.0, 2.0, 5.0) if m * exp <= target)


def _fit_text(text: str, max_w: int, max_h: int, font: int) -> tuple[float, int]:
    """Largest font scale (and a matching stroke) whose rendering fits max_w x max_h pixels."""
    (tw, th), base = cv2.getTextSize(text, font, 1.0, 1)
    scale = min(max_w / max(tw, 1), max_h / max(th + base, 1))
    return scale, max(1, int(round(scale * 1.4)))


def databar(width: int, bar_px: int, magnification: int, pixel_size_um: float, seed: int) -> np.ndarray:
    """An SEM data bar: black band, acquisition text at the left, a scale bar with its length at the right.

    Returns
    -------
    ndarray of uint8, shape (bar_px, width)
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, width, bar_px, 0xDA7A]))
    bar = np.zeros((bar_px, width), np.uint8)
    bar[: max(1, bar_px // 24)] = 90  # the thin separator line instruments draw above the bar
    font = cv2.FONT_HERSHEY_SIMPLEX
    hfw = pixel_size_um * width
    text = (
        f"HV {rng.choice([15.0, 20.0]):.1f} kV   mag {magnification} x   WD {rng.uniform(9.5, 11.5):.1f} mm"
        f"   HFW {hfw:.1f} um   det BSED"
    )
    # A scale bar of a round length (about a fifth of the width) at the right, the text left of it.
    sb_len_um = _nice_length(0.18 * width * pixel_size_um)
    sb_px = max(2, int(round(sb_len_um / pixel_size_um)))
    label = f"{sb_len_um:g} um"
    right = width - max(4, width // 64)
    left = right - sb_px
    thick = max(2, bar_px // 10)
    bar_top = int(bar_px * 0.62)
    cv2.rectangle(bar, (left, bar_top), (right, min(bar_px - 2, bar_top + thick)), 255, -1)
    scale, stroke = _fit_text(label, sb_px, int(bar_px * 0.4), font)
    if scale >= 0.2:
        (lw, _), _ = cv2.getTextSize(label, font, scale, stroke)
        cv2.putText(
            bar,
            label,
            (left + (sb_px - lw) // 2, bar_top - max(2, bar_px // 12)),
            font,
            scale,
            255,
            stroke,
            cv2.LINE_AA,
        )
    x_text = max(2, width // 128)
    scale, stroke = _fit_text(text, max(1, left - 2 * x_text - width // 32), int(bar_px * 0.45), font)
    if scale >= 0.2:
        (_, th), _ = cv2.getTextSize(text, font, scale, stroke)
        cv2.putText(bar, text, (x_text, (bar_px + th) // 2), font, scale, 255, stroke, cv2.LINE_AA)
    return bar


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"size must be an int or (width, height), got {size!r}")
        return int(size[0]), int(size[1])
    return int(size), int(size)


#: TIFF compressions a large micrograph can be written with (``jpeg`` is lossy).
COMPRESSIONS = ("none", "zlib", "lzw", "zstd", "jpeg")
#: tifffile's name of each compression.
_TIFFFILE_NAME = {"zlib": "ADOBE_DEFLATE", "lzw": "LZW", "zstd": "ZSTD", "jpeg": "JPEG"}
#: Upper bound of stored / raw bytes assumed when deciding on BigTIFF: deflate and zstd add a few bytes
#: per block to incompressible data; LZW spends up to 12 bits on a byte (uniform noise: 1.37), JPEG at
#: the default quality 1.01 on uniform noise.
_WORST_RATIO = {"none": 1.0, "zlib": 1.01, "zstd": 1.01, "lzw": 1.5, "jpeg": 1.5}
#: Stored bytes above which the 32-bit offsets of a classic TIFF may not reach (room left for the IFDs).
_CLASSIC_TIFF_BYTES = 2**32 - 2**25
#: Largest width or height of one JPEG image (a JPEG-compressed strip or tile is one).
_JPEG_MAX = 65535
#: Bytes per compressed strip when no tiles are asked for (tifffile's default size), in rows of 16.
_STRIP_BYTES = 1 << 18


@dataclass(frozen=True)
class TiffLayout:
    """How the pixels of a large micrograph are stored.

    Attributes
    ----------
    tile : side of the square tiles in pixels, or None for strips
    compression : one of :data:`COMPRESSIONS`
    bigtiff : 64-bit offsets (asked for, or needed because the file could exceed 4 GB)
    rows_per_strip : rows of a compressed strip (None: tiled, or uncompressed in one strip)
    """

    tile: int | None
    compression: str
    bigtiff: bool
    rows_per_strip: int | None

    @property
    def plain(self) -> bool:
        """Uncompressed strips: the layout written before montages existed, filled in place."""
        return self.tile is None and self.compression == "none"

    def describe(self) -> str:
        """``"tiled 512 x 512, zlib, BigTIFF"``, ``"strips, uncompressed"`` and so on."""
        parts = [f"tiled {self.tile} x {self.tile}" if self.tile else "strips"]
        parts.append("uncompressed" if self.compression == "none" else self.compression)
        if self.bigtiff:
            parts.append("BigTIFF")
        return ", ".join(parts)


def tiff_layout(
    width: int, total_height: int, tile: int | None = None, compression: str | None = None, bigtiff=False
) -> TiffLayout:
    """Check and complete the storage options of a ``width`` x ``total_height`` 8-bit TIFF.

    Parameters
    ----------
    width, total_height : pixels of the whole TIFF (data bar included)
    tile : square tile side, a positive multiple of 16 as TIFF requires; None: strips
    compression : one of :data:`COMPRESSIONS`; None: ``"zlib"`` with tiles, ``"none"`` without
    bigtiff : force BigTIFF; it is chosen anyway when the stored pixels could exceed 4 GB

    Raises
    ------
    ValueError
        one line naming the option that is wrong.
    """
    if tile is not None and (isinstance(tile, bool) or int(tile) != tile or tile < 16 or tile % 16):
        raise ValueError(f"tile size must be a positive multiple of 16 pixels (TIFF), got {tile}")
    tile = None if tile is None else int(tile)
    name = ("zlib" if tile else "none") if compression is None else str(compression).strip().lower()
    if name not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    rows_per_strip = None
    if tile is None and name != "none":
        rows_per_strip = min(max(16, _STRIP_BYTES // width // 16 * 16), max(total_height, 1))
    if name == "jpeg" and (tile or width) > _JPEG_MAX:
        raise ValueError(
            f"JPEG {'tiles' if tile else 'strips'} are at most {_JPEG_MAX} pixels wide, got "
            f"{tile or width}{'' if tile else '; write tiles (--tile)'}"
        )
    side = tile or 1  # tiles are stored whole, padded at the right and bottom edges
    stored = -(-total_height // side) * side * (-(-width // side) * side)
    big = bool(bigtiff) or stored * _WORST_RATIO[name] > _CLASSIC_TIFF_BYTES
    return TiffLayout(tile, name, big, rows_per_strip)


def _regroup(bands: Iterable[np.ndarray], rows: int, width: int) -> Iterator[np.ndarray]:
    """The rows of consecutive bands in blocks of exactly ``rows`` rows (the last block may be shorter).

    One buffer serves every block: a consumer is done with a block (or has copied what it keeps) when
    it asks for the next.
    """
    block = np.empty((rows, width), np.uint8)
    filled = 0
    for band in bands:
        start = 0
        while start < band.shape[0]:
            take = min(rows - filled, band.shape[0] - start)
            block[filled : filled + take] = band[start : start + take]
            filled, start = filled + take, start + take
            if filled == rows:
                yield block
                filled = 0
    if filled:
        yield block[:filled]


def _tiles(blocks: Iterable[np.ndarray], width: int, tile: int) -> Iterator[np.ndarray]:
    """Tiles in TIFF order (left to right, then down) of blocks that are tile rows, each a copy (tifffile
    keeps the first one, and threads may encode several at once); tifffile pads the incomplete tiles at
    the right and bottom edges with zeros."""
    for block in blocks:
        for x in range(0, width, tile):
            yield np.ascontiguousarray(block[:, x : x + tile])


def _write_plain(path: Path, bands: Iterable[np.ndarray], shape: tuple[int, int], options: dict) -> None:
    """Uncompressed strips: tifffile writes the header and reserves the pixels (the same bytes
    ``tifffile.memmap`` lays out), the bands are then written into place with plain file writes."""
    offset, _ = tifffile.imwrite(
        path,
        data=None,
        shape=shape,
        dtype=np.uint8,
        align=tifffile.TIFF.ALLOCATIONGRANULARITY,
        returnoffset=True,
        **options,
    )
    with open(path, "r+b") as fh:
        fh.seek(offset)
        for band in bands:
            fh.write(np.ascontiguousarray(band).data)
        fh.flush()
        os.fsync(fh.fileno())


def _write_montage(
    path: Path, bands: Iterable[np.ndarray], shape: tuple[int, int], layout: TiffLayout, options: dict
) -> None:
    """Tiles or compressed strips, through :meth:`tifffile.TiffWriter.write` fed tile by tile (strip by
    strip); only one tile row (strip) is held at a time."""
    height, width = shape
    name = _TIFFFILE_NAME.get(layout.compression)
    with tifffile.TiffWriter(path, bigtiff=layout.bigtiff) as writer:
        if layout.tile:
            tile = layout.tile
            writer.write(
                _tiles(_regroup(bands, tile, width), width, tile),
                shape=shape,
                dtype=np.uint8,
                tile=(tile, tile),
                compression=name,
                buffersize=tile * max(width, tile),  # tifffile encodes at most a tile row at a time
                **options,
            )
        else:
            rows = int(layout.rows_per_strip or height)
            encode = tifffile.TIFF.COMPRESSORS[int(tifffile.COMPRESSION[name])]
            writer.write(
                (encode(strip) for strip in _regroup(bands, rows, width)),
                shape=shape,
                dtype=np.uint8,
                rowsperstrip=rows,
                compression=name,
                **options,
            )
    with open(path, "r+b") as fh:
        os.fsync(fh.fileno())


def write_large(
    out_tif: str | os.PathLike,
    size: int | tuple[int, int],
    seed: int = 0,
    databar_px: int = 0,
    pixel_size_um: float | None = None,
    magnification: int = 700,
    progress: Callable[[int, int], None] | None = None,
    *,
    tile: int | None = None,
    compression: str | None = None,
    bigtiff: bool = False,
    domain: str = "ni-wc",
) -> tuple[Path, Path]:
    """Write one large synthetic micrograph and its truth labels, band by band in bounded memory.

    Parameters
    ----------
    out_tif : path ending in .tif or .tiff
    size : int (square) or (width, height), pixels of the image proper
    seed : int >= 0
    databar_px : rows of SEM data bar appended below the image (0: none)
    pixel_size_um : pixel size to record as FEI metadata and TIFF resolution (None: not recorded; the
        data bar then uses the nominal size for ``magnification``)
    magnification : feature scale, see :func:`synth_micrograph`
    progress : optional callback ``(rows_done, rows_total)``
    tile : write square tiles of this side (a positive multiple of 16); None: strips
    compression : one of :data:`COMPRESSIONS`; None: ``"zlib"`` with tiles, ``"none"`` (the plain
        layout) without. ``"jpeg"`` is lossy: the truth still describes the rendered scene, not the
        decoded pixels.
    bigtiff : force BigTIFF (chosen anyway when the file could exceed 4 GB)
    domain : the synthetic domain (:mod:`semphase.data.synth.domains`): ``"ni-wc"`` or ``"shifted"``

    Returns
    -------
    (tif, truth) : the TIFF, uint8 of shape (height + databar_px, width), and ``<stem>_truth.png``,
    uint8 class ids 0..4 with the data-bar rows ``IGNORE`` (255). For a seed and size the pixels are the
    same in every layout (JPEG aside); the plain layout gives the same bytes as before tiles existed.

    Notes
    -----
    Both files are written under temporary names and renamed when complete (the truth first); an
    error or Ctrl-C leaves neither.
    """
    tif_path = Path(out_tif)
    if tif_path.suffix.lower() not in TIFF_SUFFIXES:
        raise InputError("a large micrograph is written as TIFF; use a .tif or .tiff name", tif_path)
    try:
        width, height = _size_pair(size)
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc), tif_path) from None
    if width < 1 or height < 1:
        raise InputError(f"size must be positive, got {width} x {height}", tif_path)
    if int(databar_px) < 0:
        raise InputError(f"data bar height must be >= 0, got {databar_px}", tif_path)
    if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
        raise InputError(
            f"pixel size must be a positive number of micrometres, got {pixel_size_um}", tif_path
        )
    if int(seed) < 0 or int(magnification) < 1:
        raise InputError(
            f"seed must be >= 0 and magnification positive, got {seed}, {magnification}", tif_path
        )
    total_h = height + int(databar_px)
    try:
        layout = tiff_layout(width, total_h, tile, compression, bigtiff)
    except ValueError as exc:
        raise InputError(str(exc), tif_path) from None
    if tif_path.is_dir():
        raise InputError("is a folder; expected a .tif file name", tif_path)
    truth_path = tif_path.with_name(f"{tif_path.stem}_truth.png")

    options: dict = {"photometric": "minisblack", "metadata": None}
    if pixel_size_um is not None:
        per_cm = 1e4 / pixel_size_um
        options["resolution"] = (per_cm, per_cm)
        options["resolutionunit"] = "CENTIMETER"
        text = fei_metadata_text(pixel_size_um, width, height)
        options["extratags"] = [(FEI_HELIOS_TAG, "s", 0, text, True)]
    if layout.plain:
        options["bigtiff"] = layout.bigtiff

    micrograph = prepare(height, width, seed, magnification, domain_named(domain))
    truth = PngRowWriter(truth_path, width, total_h, 1, label_image=True)

    def bands() -> Iterator[np.ndarray]:
        """Image rows band by band; their labels go to the truth PNG on the way."""
        for y0, y1 in micrograph.bands():
            image, labels = micrograph.render(y0, y1)
            truth.write(labels)
            if progress is not None:
                progress(y1, total_h)
            yield image
        if databar_px:
            px_um = pixel_size_um or nominal_pixel_size_um(magnification)
            truth.write(np.full((int(databar_px), width), IGNORE, np.uint8))
            yield databar(width, int(databar_px), magnification, px_um, int(seed))

    try:
        with atomic_path(tif_path) as tmp:
            try:
                if layout.plain:
                    _write_plain(tmp, bands(), (total_h, width), options)
                else:
                    _write_montage(tmp, bands(), (total_h, width), layout, options)
            except OSError as exc:
                raise InputError(f"cannot write ({exc.strerror or exc})", tif_path) from None
            truth.commit()
    except BaseException:
        truth.abort()
        raise
    if progress is not None:
        progress(total_h, total_h)
    return tif_path, truth_path


def write_series(
    folder: str | os.PathLike,
    count: int,
    size: tuple[int, int],
    *,
    first_seed: int = 0,
    digits: int = 3,
    databar_px: int = 64,
    pixel_size_um: float | None = 0.1,
) -> list[Path]:
    """``count`` micrographs ``micrograph_000.tif`` ... as a microscope exports them (data bar, pixel
    size), without their truth labels; files already there are kept (the benchmarks reuse them)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        tif = folder / f"micrograph_{i:0{digits}d}.tif"
        if not tif.exists():
            _, truth = write_large(
                tif, size, seed=first_seed + i, databar_px=databar_px, pixel_size_um=pixel_size_um
            )
            truth.unlink()
        paths.append(tif)
    return paths
