"""Sliding-window inference over a whole micrograph, finalized band by band.

Tiles run in batches through the model; their logits are weighted by a blend window and summed. As soon
as the next tile row starts below a row, no later tile can touch it, and within a tile row the columns
left of the next tile's start are final too: finished pixels are labelled at once and handed to the
caller row band by row band. The float accumulator is therefore one tile plus the overlap rows of the
image width, and the micrograph itself is read one tile row at a time (from a TIFF's strips or tiles when
it is a :class:`~semphase.runtime.source.Micrograph`), so peak memory grows with the width, not the area.
The summed weights never need an image of their own: windows are separable and tiles form a grid, so they
are the outer product of two profiles, and only probabilities need them at all (the argmax of weighted
sums is the argmax of the weighted mean)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from semphase.model_format import Tiling
from semphase.runtime.tiling import TilePlan, blend_window, pad_reflect, plan_for, weight_profile


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

#: ``on(done, total)`` after each batch of tiles (:func:`semphase.progress.count_callback` makes one from a
#: :class:`semphase.progress.Progress`).
OnTiles = Callable[[int, int], None]


@dataclass(frozen=True)
class Band:
    """Finalized rows ``y0:y1`` of the image: their class ids, the micrograph rows they came from, and,
    when asked for, the blended logits.

    Attributes
    ----------
    labels_u8 : uint8 (y1 - y0, W): class ids (argmax of the blended logits).
    gray : uint8 (y1 - y0, W): the micrograph's rows (what the overlay paints).
    blended : float32 (C, y1 - y0, W) blended logits, or None unless ``iter_bands(..., logits=True)``.
    """

    y0: int
    y1: int
    labels_u8: np.ndarray
    gray: np.ndarray
    blended: np.ndarray | None = None

    def labels(self) -> np.ndarray:
        """Class ids, uint8 (y1 - y0, W)."""
        return self.labels_u8

    @property
    def logits(self) -> np.ndarray:
        """Blended logits, float32 (C, y1 - y0, W); only from ``iter_bands(..., logits=True)``."""
        if self.blended is None:
            raise ValueError("blended logits were not asked for: iter_bands(..., logits=True)")
        return self.blended


def argmax_classes(scores: np.ndarray) -> np.ndarray:
    """Index of the largest score along axis 0 as uint8, first index on ties (as ``np.argmax``).

    Parameters
    ----------
    scores : float32 (C, H, W), C <= 255; a view into a larger array is fine.

    Notes
    -----
    ``np.argmax(axis=0)`` walks C-strided memory pixel by pixel. Here the first maximum's index is counted
    instead: it is the number of leading classes whose score is below the maximum, i.e. the sum over k of
    "classes 0..k all below", a running logical and added up. Only contiguous comparisons, ands and adds:
    0.8 ms for a 5 x 480 x 480 block against 4.1 ms for a pass per class that copies the class id where it
    equals the maximum (the way before) and 5.5 ms for ``np.argmax`` (2026-12-07, the 2-core Xeon).
    """
    top = scores.max(axis=0)
    below = np.less(scores[0], top)  # classes 0..k all below the maximum, for k = 0, 1, ...
    labels = below.view(np.uint8).copy()
    step = np.empty_like(below)
    for c in range(1, scores.shape[0] - 1):
        np.less(scores[c], top, out=step)
        np.logical_and(below, step, out=below)
        np.add(labels, below.view(np.uint8), out=labels)
    return labels


def _flip_average(model: TileModel, batch: np.ndarray) -> np.ndarray:
    """Mean logits over the identity and the horizontal, vertical and double flips of each tile."""
    total = model.logits(batch)
    for axes in ((2,), (1,), (1, 2)):
        flipped = np.ascontiguousarray(np.flip(batch, axis=axes))
        total += np.flip(model.logits(flipped), axis=tuple(a + 1 for a in axes))
    total *= 0.25
    return total


class RowSource(Protocol):
    """Rows of a micrograph on demand (:class:`~semphase.runtime.source.Micrograph`, or an array)."""

    shape: tuple[int, int]

    def rows(self, y0: int, y1: int) -> np.ndarray: ...


class _ArraySource:
    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        self.shape = image.shape

    def rows(self, y0: int, y1: int) -> np.ndarray:
        return self.image[y0:y1]


def iter_bands(
    model: TileModel,
    image_u8: np.ndarray | RowSource,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    tiling: Tiling | None = None,
    batch: int = DEFAULT_BATCH,
    window: str = "gaussian",
    tta: bool = False,
    progress: OnTiles | None = None,
    logits: bool = False,
) -> Iterator[Band]:
    """Segment a micrograph with a sliding window, yielding finalized bands of rows, top to bottom.

    Parameters
    ----------
    model : anything with ``logits(uint8 (N, h, w)) -> float32 (N, C, h, w)``, ``tile_size``, ``overlap``
        and ``size_multiple`` (:class:`~semphase.runtime.model.SegmentationModel`).
    image_u8 : uint8 (H, W) array, or a :class:`RowSource` whose ``rows(y0, y1)`` returns uint8 (n, W)
        rows: then only one tile row of the image is held at a time, and a source with ``streamed = True``
        (a TIFF read strip by strip) is read one tile row ahead on a second thread, while the model runs.
    tile, overlap : pixels; default the model's recommendation (resolved by
        :meth:`~semphase.model_format.Tiling.resolve`).
    tiling : a tiling resolved already (``segment_file`` resolves its options once), instead of ``tile``
        and ``overlap``.
    batch : tiles per model call.
    window : blend window, see :func:`~semphase.runtime.tiling.blend_window`.
    tta : average the four flips of every tile (4x the compute).
    progress : called with (tiles done, tiles total) after every batch.
    logits : also hand out each band's blended logits (:attr:`Band.logits`; C float32 planes per band).

    Yields
    ------
    Band, covering rows 0..H exactly once, in order.

    Raises
    ------
    OptionError
        (a ValueError) for a ``tile`` the model cannot take or an ``overlap`` outside ``0..tile-1``.
    TypeError
        for ``tiling`` together with ``tile`` or ``overlap``.
    """
    if isinstance(image_u8, np.ndarray):
        if image_u8.ndim != 2 or image_u8.dtype != np.uint8:
            raise ValueError(f"expected a uint8 (H, W) image, got {image_u8.dtype} {image_u8.shape}")
        source: RowSource = _ArraySource(image_u8)
    else:
        source = image_u8
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if tiling is None:
        tiling = Tiling.resolve(model, tile, overlap)
    elif tile is not None or overlap is not None:
        raise TypeError("give either a resolved tiling or tile and overlap, not both")
    height, width = (int(n) for n in source.shape)
    plan = plan_for(height, width, tiling)
    strips = _Strips(source, plan)
    try:
        yield from _run(model, strips, plan, batch, window, tta, progress, logits)
    finally:
        strips.close()


class _Strips:
    """The padded rows of each tile row in turn: uint8 (h, padded width), read one tile row ahead on a
    worker thread when the source is streamed (decoding overlaps the model), inline otherwise."""

    _END = object()

    def __init__(self, source: RowSource, plan: TilePlan) -> None:
        self.source, self.plan = source, plan
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        if getattr(source, "streamed", False):
            self._queue: queue.Queue = queue.Queue(maxsize=1)
            self._thread = threading.Thread(target=self._read_ahead, name="semphase-read", daemon=True)
            self._thread.start()

    def strip(self, y: int, h: int) -> np.ndarray:
        rows, cols = self.plan.rows, self.plan.cols
        if rows.padded > rows.length:  # one tile row, taller than the image: pad below it too
            return pad_reflect(self.source.rows(0, rows.length), rows.padded, cols.padded)
        return pad_reflect(self.source.rows(y, y + h), h, cols.padded)

    def _read_ahead(self) -> None:
        try:
            for y, h in zip(self.plan.rows.starts, self.plan.rows.sizes, strict=True):
                item = self.strip(y, h)
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # handed to the consumer
            self._queue.put(exc)

    def __iter__(self) -> Iterator[np.ndarray]:
        for y, h in zip(self.plan.rows.starts, self.plan.rows.sizes, strict=True):
            if self._thread is None:
                yield self.strip(y, h)
                continue
            item = self._queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
            self._thread.join()
            self._thread = None


def _run(model, strips: _Strips, plan: TilePlan, batch, window, tta, progress, want_logits) -> Iterator[Band]:
    """Blend tile logits and hand out finalized rows; columns are finalized left to right too.

    Within a tile row, columns left of the next tile's start are touched by no later tile of the row, so
    their sums are final for this row as soon as that tile arrives: they are labelled at once (and their
    share of the next tile row's overlap rows is put aside in ``carry``). The float accumulator therefore
    spans one tile (``acc``, C x h x tile) plus the overlap rows of the image width (``carry``), not a
    whole tile row of the width: what lets a 65536-pixel-wide montage stay under a gigabyte. Every pixel's
    sum takes its tiles' weighted logits in the same order as a whole-image accumulator would (tile rows
    top to bottom, tiles left to right), so the labels are bitwise those of such an accumulator.

    The model runs one batch ahead on worker threads (:class:`_Ahead`): while this thread weighs, adds
    and labels batch k (and the caller writes the band it yields), the model computes batch k + 1, so the
    blending is off the model's critical path; a model with several streams computes the parts of a batch
    at once. The arithmetic and its order are unchanged.
    """
    rows, cols = plan.rows, plan.cols
    width = cols.length
    classes = len(model.classes)
    row_weight = weight_profile(rows, window).astype(np.float32)
    col_weight = weight_profile(cols, window)[:width].astype(np.float32)
    # Tiles of one row are batched by width (all full tiles, then the narrower last one, if any); either
    # way they come out left to right.
    widths: dict[int, list[int]] = {}
    for x, size in zip(cols.starts, cols.sizes, strict=True):
        widths.setdefault(size, []).append(x)
    run = (lambda b: _flip_average(model, b)) if tta else model.logits

    def batches() -> Iterator[tuple[int, int, np.ndarray, list[int], int, np.ndarray]]:
        """(tile row, its y, its strip, tile columns, tile width, tiles) of every model call, in order."""
        for band_index, (y, strip) in enumerate(zip(rows.starts, strips, strict=True)):
            for w, xs in widths.items():
                for i in range(0, len(xs), batch):
                    chunk = xs[i : i + batch]
                    yield band_index, y, strip, chunk, w, np.stack([strip[:, x : x + w] for x in chunk])

    carry = np.zeros((classes, 0, cols.padded), np.float32)  # sums of rows y.. from earlier tile rows
    done = 0
    row: _TileRow | None = None
    current = (-1, 0, None)  # the tile row being accumulated: (index, y, strip)

    def finished() -> Band:
        index, y, strip = current
        row.finish()
        return Band(y, plan.finalized_before(index), row.labels, strip[: row.n_out, :width], row.blended)

    with _Ahead(run, batches(), getattr(model, "streams", 1)) as ahead:
        for (band_index, y, strip, chunk, w, tiles), parts in ahead:
            if band_index != current[0]:
                if row is not None:
                    carry = row.next_carry
                    yield finished()
                h = rows.sizes[band_index]
                final = plan.finalized_before(band_index)
                carry_rows = y + h - final if band_index + 1 < rows.count else 0
                weights = (row_weight[y:final], col_weight) if want_logits else None
                row = _TileRow(
                    classes, h, cols.window, carry, final - y, carry_rows, width, cols.padded, weights
                )
                current = (band_index, y, strip)
                blend = {size: blend_window(h, size, window) for size in widths}
            xs = iter(chunk)
            for count, out in parts:
                if out.shape != (count, classes, tiles.shape[1], w):
                    shape = (count, *tiles.shape[1:])
                    raise ValueError(f"model returned logits of shape {out.shape} for tiles {shape}")
                out *= blend[w]
                for k in range(count):
                    row.add(next(xs), out[k])
            done += len(chunk)
            if progress is not None:
                progress(done, plan.count)
    if row is not None:
        yield finished()


class _Ahead:
    """The model's outputs for ``jobs`` (tuples whose last item is the batch), in order, computed on worker
    threads while the caller works on the batch before: ``for job, parts in ahead``, where ``parts`` is a
    list of (number of tiles, their logits) covering the batch in order. onnxruntime and OpenVINO release
    the GIL while they run, so the caller's numpy work overlaps the model's.

    A model with ``streams`` > 1 (:attr:`semphase.runtime.model.SegmentationModel.streams`) gets that many
    threads: each batch is cut into up to ``streams`` parts run at once, and the next batch's parts queue
    behind them, so a stream that finishes first starts on the next batch instead of waiting for the
    slowest part (or idling beside a batch of one tile, the last of a tile row).

    Used as a context manager: leaving it (the caller stopped early, an error, Ctrl-C) lets the calls under
    way finish, starts no other, and joins the threads. An error of the model is raised in the caller, with
    the job it belongs to.
    """

    def __init__(
        self, run: Callable[[np.ndarray], np.ndarray], jobs: Iterator[tuple], streams: int = 1
    ) -> None:
        self.run, self.jobs = run, jobs
        self.streams = max(1, int(streams))
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.streams, thread_name_prefix="semphase-model"
        )

    def __enter__(self) -> _Ahead:
        return self

    def __exit__(self, *exc) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self):
        job = next(self.jobs, None)
        if job is None:
            return None
        tiles = job[-1]
        cuts = np.linspace(0, len(tiles), min(self.streams, len(tiles)) + 1).astype(int).tolist()
        parts = zip(cuts[:-1], cuts[1:], strict=True)
        return job, [(b - a, self.pool.submit(self.run, tiles[a:b])) for a, b in parts]

    def __iter__(self) -> Iterator[tuple[tuple, list[tuple[int, np.ndarray]]]]:
        pending = self._submit()
        while pending is not None:
            job, futures = pending
            pending = self._submit()  # queued behind the running calls: the workers never wait for us
            yield job, [(count, future.result()) for count, future in futures]


class _TileRow:
    """The accumulator of one tile row: a window of C x h x (at most one tile) columns sliding right."""

    def __init__(
        self, classes, h, tile_w, carry, n_out, carry_rows, width, padded_width, weights=None
    ) -> None:
        self.acc = np.zeros((classes, h, tile_w), np.float32)
        self.left = self.filled = 0  # acc holds columns left .. left + filled
        self.carry = carry
        self.n_out, self.width, self.padded_width = n_out, width, padded_width
        self.next_carry = np.zeros((classes, carry_rows, padded_width), np.float32)
        self.labels = np.empty((n_out, width), np.uint8)
        self.weights = weights  # (row weights of the finished rows, column weights): blend logits too
        self.blended: np.ndarray | None = None

    def add(self, x: int, weighted: np.ndarray) -> None:
        """Add one tile's weighted logits (C, h, w) at column ``x``; columns left of ``x`` are final."""
        w = weighted.shape[2]
        if x > self.left:
            self._emit(self.left, x)
            shift = x - self.left
            keep = max(self.filled - shift, 0)
            for plane in self.acc:  # one plane at a time: an overlapping copy makes a temporary
                plane[:, :keep] = plane[:, shift : shift + keep]
            self.left, self.filled = x, keep
        end = x + w - self.left
        if end > self.filled:
            new = slice(self.filled, end)
            self.acc[:, :, new] = 0.0
            have = self.carry.shape[1]
            if have:
                self.acc[:, :have, new] = self.carry[:, :, self.left + self.filled : self.left + end]
            self.filled = end
        self.acc[:, :, x - self.left : end] += weighted

    def finish(self) -> None:
        self._emit(self.left, self.left + self.filled)
        if self.left + self.filled != self.padded_width:  # pragma: no cover - guarded by the tiling
            raise AssertionError(f"tiles covered {self.left + self.filled} of {self.padded_width} columns")

    def _emit(self, a: int, b: int) -> None:
        """Columns ``a:b`` are final for this tile row: label its finished rows, keep its overlap rows."""
        block = self.acc[:, :, a - self.left : b - self.left]
        n = self.n_out
        if self.next_carry.shape[1]:
            self.next_carry[:, :, a:b] = block[:, n:]
        bw = min(b, self.width) - a
        if n and bw > 0:
            sums = block[:, :n, :bw]
            self.labels[:, a : a + bw] = argmax_classes(sums)
            if self.weights is not None:
                if self.blended is None:
                    self.blended = np.empty((block.shape[0], n, self.width), np.float32)
                row_weight, col_weight = self.weights
                weight = row_weight[:, None] * col_weight[None, a : a + bw]
                np.divide(sums, weight, out=self.blended[:, :, a : a + bw])


def segment_array(
    model: TileModel,
    image_u8: np.ndarray,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = DEFAULT_BATCH,
    window: str = "gaussian",
    tta: bool = False,
    progress: OnTiles | None = None,
    *,
    tiling: Tiling | None = None,
) -> np.ndarray:
    """Label image of a micrograph held in memory (evaluation, benchmarks, library use).

    Parameters are those of :func:`iter_bands`.

    Returns
    -------
    uint8, shape (H, W): class ids (argmax of the blended logits).
    """
    labels = np.empty(image_u8.shape, np.uint8)
    bands = iter_bands(
        model,
        image_u8,
        tile=tile,
        overlap=overlap,
        tiling=tiling,
        batch=batch,
        window=window,
        tta=tta,
        progress=progress,
    )
    for band in bands:
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
