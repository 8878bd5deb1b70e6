"""One large synthetic micrograph as an 8-bit TIFF, written band by band, plus its truth label PNG.

Memory stays bounded: the TIFF is a ``tifffile.memmap`` filled one band of rows at a time, so only the
uint8 label image (needed whole for the PNG encoder) and one band of float work arrays live in RAM.
Optionally an SEM-style data bar is appended below the image (labelled ``IGNORE``) and the pixel size is
recorded the way FEI/Thermo instruments do (tag 34682, which tifffile parses as ``fei_metadata``) and as
standard TIFF resolution in pixels per centimetre.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import tifffile

from semphase.data.synth.render import prepare
from semphase.errors import InputError
from semphase.imageio import FEI_HELIOS_TAG, TIFF_SUFFIXES, atomic_path, write_image
from semphase.phases import IGNORE

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


def write_large(
    out_tif: str | os.PathLike,
    size: int | tuple[int, int],
    seed: int = 0,
    databar_px: int = 0,
    pixel_size_um: float | None = None,
    magnification: int = 700,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, Path]:
    """Write one large synthetic micrograph and its truth labels.

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

    Returns
    -------
    (tif, truth) : the TIFF, uint8 of shape (height + databar_px, width), and ``<stem>_truth.png``,
    uint8 class ids 0..4 with the data-bar rows ``IGNORE`` (255).
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
    if tif_path.is_dir():
        raise InputError("is a folder; expected a .tif file name", tif_path)
    truth_path = tif_path.with_name(f"{tif_path.stem}_truth.png")

    total_h = height + int(databar_px)
    options: dict = {"photometric": "minisblack", "metadata": None}
    if pixel_size_um is not None:
        per_cm = 1e4 / pixel_size_um
        options["resolution"] = (per_cm, per_cm)
        options["resolutionunit"] = "CENTIMETER"
        text = fei_metadata_text(pixel_size_um, width, height)
        options["extratags"] = [(FEI_HELIOS_TAG, "s", 0, text, True)]

    micrograph = prepare(height, width, seed, magnification)
    labels = np.full((total_h, width), IGNORE, np.uint8)
    with atomic_path(tif_path) as tmp:
        try:
            pixels = tifffile.memmap(tmp, shape=(total_h, width), dtype=np.uint8, **options)
        except OSError as exc:
            raise InputError(f"cannot write ({exc.strerror or exc})", tif_path) from None
        for y0, y1 in micrograph.bands():
            pixels[y0:y1], labels[y0:y1] = micrograph.render(y0, y1)
            if progress is not None:
                progress(y1, total_h)
        if databar_px:
            px_um = pixel_size_um or nominal_pixel_size_um(magnification)
            pixels[height:] = databar(width, int(databar_px), magnification, px_um, int(seed))
        pixels.flush()
        del pixels
        write_image(truth_path, labels)
        if progress is not None:
            progress(total_h, total_h)
    return tif_path, truth_path
