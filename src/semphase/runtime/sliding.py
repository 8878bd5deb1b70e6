"""Sliding-window inference over a whole micrograph, finalized band by band.

Tiles run in batches through the model; their logits are weighted by a blend window and summed into an
accumulator that spans one tile row of the image (tile height x image width). As soon as the next tile
row starts below a row, no later tile can touch it: that row is handed to the caller, and the
accumulator slides down. The summed weights never need an image of their own: windows are separable and
tiles form a grid, so they are the outer product of two profiles, and only probabilities need them at
all (the argmax of weighted sums is the argmax of the weighted mean). Peak memory is therefore a few
tile rows of the image width, whatever its height.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from semphase.runtime.tiling import TilePlan, blend_window, pad_reflect, plan_tiles, weight_profile


class TileModel(Protocol):
    """What the sliding window needs from a model (an ONNX model, or a PyTorch one in benchmarks)."""

    tile_size: int
    overlap: int
    classes: list[str]

    @property
    def size_multiple(self) -> int: ...

    def logits(self, batch_u8: np.ndarray) -> np.ndarray: ...


#: Tiles per model call. On a 2-core CPU batches of 1, 2 and 4 ran within 4 % of each other (INT8 demo
#: model, 4096 x 4096 micrograph); 2 was fastest and holds half the activations of 4.
DEFAULT_BATCH = 2

#: progress(tiles_done, tiles_total)
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Band:
    """Finalized rows ``y0:y1`` of the image.

    ``sums`` is a view into the sliding window's accumulator: it is valid until the next band is
    requested. Take :meth:`labels` or :attr:`logits` (new arrays) before that.

    Attributes
    ----------
    sums : float32 (C, y1 - y0, W): window-weighted sums of the tiles' logits.
    row_weight : float32 (y1 - y0,) and col_weight : float32 (W,): the summed blend weight is their outer
        product, so the blended logits are ``sums / (row_weight[:, None] * col_weight)``.
    """

    y0: int
    y1: int
    sums: np.ndarray
    row_weight: np.ndarray
    col_weight: np.ndarray

    def labels(self) -> np.ndarray:
        """Class ids, uint8 (y1 - y0, W). Weights are positive, so the sums' argmax is the blend's."""
        return argmax_classes(self.sums)

    @property
    def logits(self) -> np.ndarray:
        """Blended logits, float32 (C, y1 - y0, W)."""
        return self.sums / (self.row_weight[:, None] * self.col_weight[None, :])


def argmax_classes(scores: np.ndarray) -> np.ndarray:
    """Index of the largest score along axis 0 as uint8, first index on ties (as ``np.argmax``).

    Parameters
    ----------
    scores : float32 (C, H, W), C <= 255.

    Notes
    -----
    ``np.argmax(axis=0)`` walks C-strided memory pixel by pixel; one maximum and C contiguous
    comparisons are about a third faster on a band of an 8192-pixel-wide micrograph.
    """
    top = scores.max(axis=0)
    labels = np.full(scores.shape[1:], scores.shape[0] - 1, np.uint8)
    hit = np.empty(scores.shape[1:], bool)
    for c in range(scores.shape[0] - 2, -1, -1):
        np.equal(scores[c], top, out=hit)
        np.copyto(labels, np.uint8(c), where=hit)
    return labels


def _flip_average(model: TileModel, batch: np.ndarray) -> np.ndarray:
    """Mean logits over the identity and the horizontal, vertical and double flips of each tile."""
    total = model.logits(batch)
    for axes in ((2,), (1,), (1, 2)):
        flipped = np.ascontiguousarray(np.flip(batch, axis=axes))
        total += np.flip(model.logits(flipped), axis=tuple(a + 1 for a in axes))
    total *= 0.25
    return total


def resolve_tiling(model: TileModel, tile: int | None, overlap: int | None) -> tuple[int, int]:
    """Tile and overlap to use: the caller's, else the model's recommendation.

    Raises
    ------
    ValueError
        for a tile that is not a positive multiple of the model's size multiple, or an overlap outside
        ``0..tile-1``.
    """
    size = int(tile) if tile else int(model.tile_size)
    m = int(model.size_multiple)
    if size < m or size % m:
        raise ValueError(f"--tile must be a positive multiple of {m}, got {size}")
    lap = int(overlap) if overlap is not None else min(int(model.overlap), size // 2)
    if not 0 <= lap < size:
        raise ValueError(f"--overlap must be in 0..{size - 1} for tile {size}, got {lap}")
    return size, lap


def iter_bands(
    model: TileModel,
    image_u8: np.ndarray,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = DEFAULT_BATCH,
    window: str = "gaussian",
    tta: bool = False,
    progress: Progress | None = None,
) -> Iterator[Band]:
    """Segment ``image_u8`` with a sliding window, yielding blended logits band by band, top to bottom.

    Parameters
    ----------
    model : anything with ``logits(uint8 (N, h, w)) -> float32 (N, C, h, w)``, ``tile_size``, ``overlap``
        and ``size_multiple`` (:class:`~semphase.runtime.model.SegmentationModel`).
    image_u8 : uint8, shape (H, W).
    tile, overlap : pixels; default the model's recommendation.
    batch : tiles per model call.
    window : blend window, see :func:`~semphase.runtime.tiling.blend_window`.
    tta : average the four flips of every tile (4x the compute).
    progress : called with (tiles done, tiles total) after every batch.

    Yields
    ------
    Band, covering rows 0..H exactly once, in order.
    """
    if image_u8.ndim != 2 or image_u8.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W) image, got {image_u8.dtype} {image_u8.shape}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    size, lap = resolve_tiling(model, tile, overlap)
    plan = plan_tiles(image_u8.shape[0], image_u8.shape[1], size, lap, int(model.size_multiple))
    yield from _run(model, image_u8, plan, batch, window, tta, progress)


def _run(model, image_u8, plan: TilePlan, batch, window, tta, progress) -> Iterator[Band]:
    height, width = image_u8.shape
    rows, cols = plan.rows, plan.cols
    th = rows.window
    padded = pad_reflect(image_u8, rows.padded, cols.padded)
    classes = len(model.classes)
    acc = np.zeros((classes, th, cols.padded), np.float32)
    row_weight = weight_profile(rows, window).astype(np.float32)
    col_weight = weight_profile(cols, window)[:width].astype(np.float32)
    # Tiles of one row are batched by width (all full tiles, then the narrower last one, if any).
    widths: dict[int, list[int]] = {}
    for x, size in zip(cols.starts, cols.sizes, strict=True):
        widths.setdefault(size, []).append(x)
    top = emitted = done = 0
    run = (lambda b: _flip_average(model, b)) if tta else model.logits
    for band_index, (y, h) in enumerate(zip(rows.starts, rows.sizes, strict=True)):
        if y > top:  # slide the accumulator down to the new tile row
            shift = y - top
            acc[:, : th - shift] = acc[:, shift:]
            acc[:, th - shift :] = 0.0
            top = y
        for w, xs in widths.items():
            weight = blend_window(h, w, window)
            for i in range(0, len(xs), batch):
                chunk = xs[i : i + batch]
                tiles = np.stack([padded[y : y + h, x : x + w] for x in chunk])
                out = run(tiles)
                if out.shape != (len(chunk), classes, h, w):
                    raise ValueError(f"model returned logits of shape {out.shape} for tiles {tiles.shape}")
                out *= weight
                for k, x in enumerate(chunk):
                    acc[:, :h, x : x + w] += out[k]
                done += len(chunk)
                if progress is not None:
                    progress(done, plan.count)
        final = plan.finalized_before(band_index)
        if final > emitted:
            sums = acc[:, emitted - top : final - top, :width]
            yield Band(emitted, final, sums, row_weight[emitted:final], col_weight)
            emitted = final
    if emitted != height:  # pragma: no cover - guarded by the tiling arithmetic
        raise AssertionError(f"sliding window finalized {emitted} of {height} rows")


def segment_array(
    model: TileModel,
    image_u8: np.ndarray,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = DEFAULT_BATCH,
    window: str = "gaussian",
    tta: bool = False,
    progress: Progress | None = None,
) -> np.ndarray:
    """Label image of a micrograph held in memory (evaluation, benchmarks, library use).

    Parameters are those of :func:`iter_bands`.

    Returns
    -------
    uint8, shape (H, W): class ids (argmax of the blended logits).
    """
    labels = np.empty(image_u8.shape, np.uint8)
    for band in iter_bands(
        model, image_u8, tile=tile, overlap=overlap, batch=batch, window=window, tta=tta, progress=progress
    ):
        labels[band.y0 : band.y1] = band.labels()
    return labels


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    """Class probabilities from logits along ``axis`` (float32, numerically stable)."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


def normalized_entropy(probs: np.ndarray, axis: int = 0) -> np.ndarray:
    """Per-pixel entropy of class probabilities divided by log(C): 0 = certain, 1 = uniform."""
    classes = probs.shape[axis]
    if classes < 2:
        return np.zeros(np.delete(probs.shape, axis), np.float32)
    p = np.clip(probs, 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(axis=axis)
    return (entropy / np.log(classes)).astype(np.float32)
