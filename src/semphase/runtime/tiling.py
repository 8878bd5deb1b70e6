"""Sliding-window arithmetic: where tiles go, how the picture is padded, how overlaps are blended.

Pure numpy, no files, no models: the small core that :mod:`semphase.runtime.segment` drives. Tiles of
``tile`` pixels are laid along each axis with at least ``overlap`` pixels shared by neighbours, the first
at 0 and the last flush with the far edge; the spare room is spread evenly over the gaps so that no seam
gets a thinner overlap than the others. An axis shorter than one tile gets a single window, rounded up to
the model's size multiple and filled by reflect padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from semphase.model_format import SIZE_MULTIPLE, Tiling

#: Blend windows understood by :func:`blend_window`.
WINDOWS = ("gaussian", "cosine", "constant")

#: Smallest weight a window gives its border pixels. Where a single tile covers a pixel (the image's own
#: border) the weight is divided out again, so only its being positive matters.
_MIN_WEIGHT = 1e-3


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``value`` (and >= ``multiple``)."""
    return max(multiple, -(-int(value) // multiple) * multiple)


@dataclass(frozen=True)
class AxisPlan:
    """Tile windows along one axis.

    Attributes
    ----------
    length : pixels of the image along this axis.
    starts : first pixel of each tile, ascending.
    sizes : pixels each tile spans (multiples of the size multiple); all equal to the tile size except
        possibly the last, which is narrower and ends flush with the image. A single tile may run past
        ``length`` (the image is then reflect-padded up to it).
    """

    length: int
    starts: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def window(self) -> int:
        """The largest tile: the accumulator's extent along this axis."""
        return max(self.sizes)

    @property
    def padded(self) -> int:
        """Pixels needed along this axis including padding: ``max(length, window)``."""
        return max(self.length, self.window)

    @property
    def count(self) -> int:
        return len(self.starts)

    @property
    def covered(self) -> int:
        """Pixels the tiles span in total (the model's work along this axis)."""
        return sum(self.sizes)


def plan_axis(length: int, tile: int, overlap: int, multiple: int = SIZE_MULTIPLE) -> AxisPlan:
    """Place tiles along one axis.

    Full tiles start at ``0, s, 2s, ...`` with ``s = tile - overlap`` as long as they fit. Where the last
    full tile does not reach the far edge, one narrower tile ends flush with it: just wide enough (rounded
    up to ``multiple``) to share ``overlap`` pixels with its neighbour, and at least half a tile, so it
    still sees context. Compared with stretching full tiles over the axis, this saves up to a tile's worth
    of work per row and column (a 4096-pixel side takes 8.5 tiles of 512 instead of 9).

    Parameters
    ----------
    length : image pixels along the axis, >= 1.
    tile : tile size, a positive multiple of ``multiple``.
    overlap : minimum pixels shared by neighbouring tiles, ``0 <= overlap < tile``.
    multiple : the model's size multiple (32 for a five-level U-Net).

    Returns
    -------
    AxisPlan; one tile of ``round_up(length, multiple)`` pixels when ``length <= tile``.

    Raises
    ------
    ValueError
        for a non-positive length; :class:`~semphase.model_format.Tiling`'s OptionError (a ValueError)
        for a tile that is not a multiple of ``multiple`` or a bad overlap.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    Tiling(tile, overlap, multiple)
    if length <= tile:
        return AxisPlan(length, (0,), (round_up(length, multiple),))
    stride = tile - overlap
    full = (length - tile) // stride + 1
    starts = [i * stride for i in range(full)]
    sizes = [tile] * full
    rest = length - (starts[-1] + tile)
    if rest > 0:
        size = min(tile, max(round_up(rest + overlap, multiple), round_up(tile // 2, multiple)))
        starts.append(length - size)
        sizes.append(size)
    return AxisPlan(length, tuple(starts), tuple(sizes))


@dataclass(frozen=True)
class TilePlan:
    """Tiles over a 2-D image: the row plan times the column plan."""

    rows: AxisPlan
    cols: AxisPlan

    @property
    def count(self) -> int:
        return self.rows.count * self.cols.count

    @property
    def tile_shape(self) -> tuple[int, int]:
        """The largest tile (the accumulator's height and the widest column)."""
        return self.rows.window, self.cols.window

    @property
    def work_pixels(self) -> int:
        """Pixels the model processes in total (overlaps and padding included)."""
        return self.rows.covered * self.cols.covered

    def finalized_before(self, band: int) -> int:
        """Image rows that no tile row after ``band`` touches: rows ``< finalized_before(band)`` are final
        once tile rows ``0..band`` are blended."""
        if band + 1 >= self.rows.count:
            return self.rows.length
        return min(self.rows.length, self.rows.starts[band + 1])


def plan_tiles(height: int, width: int, tile: int, overlap: int, multiple: int = SIZE_MULTIPLE) -> TilePlan:
    """Tiles for an image of ``height`` x ``width`` pixels; see :func:`plan_axis`."""
    return TilePlan(plan_axis(height, tile, overlap, multiple), plan_axis(width, tile, overlap, multiple))


def plan_for(height: int, width: int, tiling: Tiling) -> TilePlan:
    """:func:`plan_tiles` for a resolved :class:`~semphase.model_format.Tiling`."""
    return plan_tiles(height, width, tiling.tile, tiling.overlap, tiling.multiple)


def pad_reflect(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad a 2-D image at the bottom and right to ``height`` x ``width`` by mirror reflection.

    Reflection (``cv2.BORDER_REFLECT_101`` order, no repeated edge pixel) keeps the texture statistics of
    a micrograph at its border, unlike zeros, which a network reads as a dark phase. Images smaller than
    half the target are reflected repeatedly.

    Parameters
    ----------
    image : ndarray, shape (h, w), any dtype; ``h <= height`` and ``w <= width``.

    Returns
    -------
    ndarray, shape (height, width), same dtype (``image`` itself when no padding is needed).
    """
    h, w = image.shape
    if h > height or w > width:
        raise ValueError(f"image {h}x{w} is larger than the padded size {height}x{width}")
    if (h, w) == (height, width):
        return image
    out = image
    while out.shape[0] < height or out.shape[1] < width:
        ph = min(height - out.shape[0], max(out.shape[0] - 1, 0))
        pw = min(width - out.shape[1], max(out.shape[1] - 1, 0))
        if ph == 0 and pw == 0:  # a single row or column: repeat it
            return np.pad(out, ((0, height - out.shape[0]), (0, width - out.shape[1])), mode="edge")
        out = np.pad(out, ((0, ph), (0, pw)), mode="reflect")
    return out


@lru_cache(maxsize=32)
def window_1d(size: int, kind: str = "gaussian") -> np.ndarray:
    """One axis of :func:`blend_window`: float64 of length ``size``, values in (0, 1]."""
    if kind not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {kind!r}")
    centre = (size - 1) / 2.0
    x = np.arange(size, dtype=np.float64)
    if kind == "gaussian":
        # sigma = size / 8, as MONAI's sliding_window_inference (sigma_scale=0.125).
        w = np.exp(-0.5 * ((x - centre) / (size / 8.0)) ** 2)
    elif kind == "cosine":
        w = 0.5 - 0.5 * np.cos(2.0 * np.pi * (x + 0.5) / size)
    else:
        w = np.ones(size)
    w = np.maximum(w / w.max(), _MIN_WEIGHT)
    w.setflags(write=False)
    return w


def weight_profile(plan: AxisPlan, kind: str = "gaussian") -> np.ndarray:
    """Summed blend weight along one axis: float64 of length ``plan.padded``.

    Blend windows are outer products of their axes and tiles form a grid, so the total weight at pixel
    (y, x) is ``weight_profile(rows)[y] * weight_profile(cols)[x]``: two vectors replace a weight image.
    """
    total = np.zeros(plan.padded, np.float64)
    for start, size in zip(plan.starts, plan.sizes, strict=True):
        total[start : start + size] += window_1d(size, kind)
    return total


@lru_cache(maxsize=32)
def blend_window(height: int, width: int, kind: str = "gaussian") -> np.ndarray:
    """Per-pixel weight of a tile when overlapping tiles are averaged.

    Parameters
    ----------
    height, width : tile shape in pixels.
    kind : ``"gaussian"`` (sigma = size / 8, peak 1 at the centre), ``"cosine"`` (a Hann window) or
        ``"constant"`` (plain averaging, which leaves visible seams where tile borders disagree).

    Returns
    -------
    ndarray of float32, shape (height, width), values in (0, 1]; read-only and cached.
    """
    w = np.outer(window_1d(height, kind), window_1d(width, kind)).astype(np.float32)
    w.setflags(write=False)
    return w
