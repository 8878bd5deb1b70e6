"""What to label next: rank micrographs and regions by the model's uncertainty, and pre-fill their labels.

Active learning as MONAI Label and Cellpose 2.0 do it, on the runtime alone (onnxruntime, no torch). Every
micrograph is segmented with the four flips of every tile (flip test-time augmentation) and with four
photometric variants of it (:data:`PHOTOMETRIC`: gamma 0.7 and 1.4, contrast x0.8 and x1.25 about mid-grey,
changes of brightness and contrast an operator makes routinely); per pixel:

- **entropy** H: the normalized entropy of the flip-averaged class probabilities (0 = certain, 1 = all
  classes equally likely), the uncertainty ``segment --uncertainty`` writes;
- **disagreement** D: the share of the four flips whose phase differs from the consensus (the argmax of
  the averaged probabilities): where the model changes its mind when the micrograph is mirrored;
- **photometric disagreement** P: the share of the four photometric variants whose phase differs from the
  consensus: where the answer hangs on the grey levels rather than on the structure;
- the pixel's **uncertainty** u: P (``score="photometric"``, the default), ``(H + D) / 2``
  (``"combined"``), or H or D alone.

Why P by default: on micrographs unlike its training data a model is often *confidently* wrong (its flips
agree, its entropy is low), and H and D then point at boundaries while whole wrong regions go unnoticed.
On semphase's shifted synthetic domain, with a model trained on the default one, the regions P ranks
highest (4 per set, one per field) were wrong on 74-75 % of their pixels, against 60-69 % for H or H + D
and 48-54 % for random regions, and P's rank correlation with the error on the fields a user labels was
0.57 against 0.13-0.22 (benchmarks/RESULTS.md, "Few labels"). Fine-tuned on strokes in the picked regions,
the model was no better than with random regions (+0.002 +- 0.018 mIoU, 3 seeds), nor in the loop's second
round, with the once fine-tuned model ranking (-0.008 +- 0.009), and worse where each pick was corrected
completely (-0.034 +- 0.028): the ranking says where the model is wrong, not which labels teach it most.
Among micrographs of a look the model knows and of one it does not, it picks the unknown ones, and a model
fine-tuned on those alone forgets the known ones (RESULTS.md): a project should hold some of those too,
or fine-tune with ``train --replay``; with replay, its picks beat random ones over such an archive
(+0.012 +- 0.010 mIoU, ahead on 5 of 6 seeds from two models).

A candidate region (``region`` x ``region`` pixels on a grid, the data bar left out) scores the mean of
``u * (1 + rare_weight * r_c)`` over its pixels, where ``c`` is the pixel's predicted phase and ``r_c`` its
rarity: ``f_c ** -0.5`` over the predicted phase fractions ``f`` of all the micrographs scanned, scaled to
1 for the rarest phase. Uncertain pixels of a rare phase (the thin Reprecipitate rim, Carbide specks)
therefore count up to ``1 + rare_weight`` times more than those of the common ones. The ``n`` best regions
are picked greedily, at most ``per_image`` per micrograph and never overlapping, skipping regions whose
label file already exists in the output folder (they are labelled: a second run suggests new ones). With
``order="phases"`` the predicted phases take turns instead, rarest first (:func:`phase_turns`), and each
pick is the allowed region with the most uncertainty on pixels predicted as its phase, so the picks keep
the phases' mix rather than all being the most uncertain kind of region. With ``order="diverse"`` the
candidate regions are first grouped into ``n`` groups of regions alike (grey level, its spread, texture,
and the predicted phases' fractions: :func:`diverse_groups`), and each pick is the highest-scoring allowed
region of one group, so the picks cover the kinds of micrograph there are instead of crowding into the
one the model knows least.

For every pick the output folder gets, in the dataset layout ``semphase train`` reads:

- ``images/NAME.png``: the region as the model saw it (8-bit);
- ``masks/NAME.png``: an editable colour label image (:mod:`semphase.data.labels`): the model's phase in
  its class colour where it is confident (every pass agrees and H <= ``max_entropy``), transparent
  (unlabelled) elsewhere, so the user corrects and confirms instead of painting from nothing. An existing
  mask is never overwritten (it may hold the user's corrections);
- ``previews/NAME.png``: the region | its pre-filled labels | their overlay;

and ``worklist.csv`` (the picks, best first) and ``suggest.json`` (everything: the settings, the rarity
weights, every micrograph's score and the picks). ``NAME`` is ``STEM__yY_xX``; :func:`semphase.data.layout.
group_key` puts every region of one micrograph into one group, so a split never separates them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from semphase.data.labels import write_colour_labels
from semphase.data.overlay import panel
from semphase.errors import InputError, OptionError
from semphase.imageio import ensure_output_folder, write_image, write_text_atomic
from semphase.phases import IGNORE, ClassTable
from semphase.progress import SILENT, Event, Progress, count_callback
from semphase.runtime.databar import resolve_databar
from semphase.runtime.sliding import DEFAULT_BATCH, argmax_classes, iter_bands, normalized_entropy, softmax
from semphase.runtime.source import open_micrograph

SCORES = ("photometric", "combined", "entropy", "disagreement")
#: How the picks are ordered: ``score`` (the highest-scoring regions first), ``phases`` (the phases in
#: turn, the rarest predicted first: each pick is the region with the most uncertain pixels of its phase)
#: or ``diverse`` (the regions grouped by look and predicted phases, the highest-scoring of each group).
ORDERS = ("score", "phases", "diverse")
#: Planes of :attr:`Scan.looks`: grey level, its square, and the local grey-level gradient (texture).
LOOKS = 3
#: Side of the cells the region statistics are summed over; regions are multiples of it.
CELL = 32
#: Planes of :attr:`Scan.sums` before the per-phase ones: uncertainty, entropy, disagreement, photometric.
PLANES = 4
IMAGES_DIR, MASKS_DIR, PREVIEWS_DIR = "images", "masks", "previews"
WORKLIST_NAME, DOCUMENT_NAME = "worklist.csv", "suggest.json"
#: The four flips of a tile: (axes of a (N, h, w) batch) for identity, left-right, up-down, both.
FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (1,), (1, 2))


def _gamma(g: float) -> np.ndarray:
    x = np.arange(256, dtype=np.float64) / 255
    return np.clip(np.rint(255 * x**g), 0, 255).astype(np.uint8)


def _contrast(c: float) -> np.ndarray:
    x = np.arange(256, dtype=np.float64)
    return np.clip(np.rint(128 + (x - 128) * c), 0, 255).astype(np.uint8)


#: The photometric variants of a tile: (name, lookup table on 8-bit pixels). Symmetric on purpose (darker
#: and brighter, less and more contrast), so that no shift of one lab's micrographs is favoured.
PHOTOMETRIC: tuple[tuple[str, np.ndarray], ...] = (
    ("gamma 0.7", _gamma(0.7)),
    ("gamma 1.4", _gamma(1.4)),
    ("contrast 0.8", _contrast(0.8)),
    ("contrast 1.25", _contrast(1.25)),
)


@dataclass(frozen=True)
class SuggestOptions:
    """What :func:`suggest` picks and how it segments.

    Attributes
    ----------
    n : regions to pick (>= 1).
    region : side of a region in pixels, a multiple of 32 (a micrograph smaller than that is one region).
    per_image : at most this many regions of one micrograph (None: ``ceil(n / micrographs)``, so picks
        spread over the micrographs).
    score : ``"photometric"``, ``"combined"``, ``"entropy"`` or ``"disagreement"`` (module docstring).
    rare_weight : how much more an uncertain pixel of the rarest phase counts (0: phases count alike).
    order : ``"score"`` or ``"phases"`` (:data:`ORDERS`, module docstring).
    max_entropy : a pixel is pre-filled when its entropy is at most this and every pass agrees.
    tta : segment with the four flips (False: one pass, no flip disagreement).
    photometric : also segment the four photometric variants (False: no photometric disagreement).
    tile, overlap, batch, databar, normalize : as for ``segment``.
    """

    n: int = 8
    region: int = 512
    per_image: int | None = None
    score: str = "photometric"
    rare_weight: float = 1.0
    order: str = "score"
    max_entropy: float = 0.3
    tta: bool = True
    photometric: bool = True
    tile: int | None = None
    overlap: int | None = None
    batch: int = DEFAULT_BATCH
    databar: str | int = "auto"
    normalize: str = "linear"

    def __post_init__(self) -> None:
        """Check the settings; OptionError names the field (the CLI says its flag)."""
        checks = [
            (self.n >= 1, "n", f"must be >= 1, got {self.n}"),
            (
                self.region >= CELL and self.region % CELL == 0,
                "region",
                f"must be a positive multiple of {CELL}, got {self.region}",
            ),
            (self.per_image is None or self.per_image >= 1, "per_image", "must be >= 1"),
            (self.score in SCORES, "score", f"must be one of {', '.join(SCORES)}, got {self.score!r}"),
            (math.isfinite(self.rare_weight) and self.rare_weight >= 0, "rare_weight", "must be >= 0"),
            (self.order in ORDERS, "order", f"must be one of {', '.join(ORDERS)}, got {self.order!r}"),
            (0 <= self.max_entropy <= 1, "max_entropy", "must be in 0..1"),
            # two flags in one message: the CLI's own words (its --no-* flags have no argument of that name)
            (
                self.tta or self.score not in ("combined", "disagreement"),
                None,
                f"--no-tta has no flips to disagree: --score {self.score} needs them",
            ),
            (
                self.photometric or self.score != "photometric",
                None,
                "--no-photometric has no photometric variants: choose another --score",
            ),
            (self.batch >= 1, "batch", "must be >= 1"),
            (self.normalize in ("linear", "percentile"), "normalize", "must be linear or percentile"),
        ]
        for ok, argument, reason in checks:
            if not ok:
                raise OptionError(reason, argument=argument)


class PassStack:
    """A tile model whose logits are those of several passes over each tile, stacked: (N, P C, h, w) for
    the four flips (each flipped back) or the plain tile alone, then the :data:`PHOTOMETRIC` variants; the
    sliding window blends every pass on its own."""

    def __init__(self, model, flips: bool = True, photometric: bool = True) -> None:
        self.model = model
        self.flips = FLIPS if flips else ((),)
        self.photometric = PHOTOMETRIC if photometric else ()
        self.tile_size, self.overlap = model.tile_size, model.overlap
        self.streams = getattr(model, "streams", 1)  # its passes run on the calling stream's thread
        passes = len(self.flips) + len(self.photometric)
        self.classes = [f"{name}/{k}" for k in range(passes) for name in model.classes]

    @property
    def size_multiple(self) -> int:
        return int(self.model.size_multiple)

    def logits(self, batch_u8: np.ndarray) -> np.ndarray:
        outs = []
        for axes in self.flips:
            if not axes:
                outs.append(self.model.logits(batch_u8))
                continue
            flipped = np.ascontiguousarray(np.flip(batch_u8, axis=axes))
            outs.append(np.flip(self.model.logits(flipped), axis=tuple(a + 1 for a in axes)))
        for _, table in self.photometric:
            outs.append(self.model.logits(table[batch_u8]))
        return np.ascontiguousarray(np.concatenate(outs, axis=1))


def pixel_uncertainty(
    logits: np.ndarray, classes: int, tta: bool, photometric: bool = False
) -> tuple[np.ndarray, ...]:
    """Consensus phase, entropy, flip disagreement and photometric disagreement of blended logits.

    Parameters
    ----------
    logits : float32 (P C, h, w) as :class:`PassStack` stacks them: the four flips (``tta``) or the plain
        tile, then the four photometric variants (``photometric``).
    classes : C.

    Returns
    -------
    (labels uint8 (h, w), entropy, disagreement, photometric disagreement: float32 (h, w) in 0..1). The
    consensus and the entropy come from the flips (or the plain tile) alone; a disagreement that was not
    computed is 0.
    """
    flips = len(FLIPS) if tta else 1
    variants = len(PHOTOMETRIC) if photometric else 0
    per_pass = logits.reshape(flips + variants, classes, *logits.shape[1:])
    probs = np.stack([softmax(per_pass[f].astype(np.float32, copy=True)) for f in range(flips)])
    mean = probs.mean(axis=0)
    labels = argmax_classes(mean)
    agree = sum((argmax_classes(probs[f]) == labels).astype(np.float32) for f in range(flips))
    differ = np.zeros(labels.shape, np.float32)
    for v in range(flips, flips + variants):
        differ += argmax_classes(per_pass[v]) != labels
    return labels, normalized_entropy(mean), 1.0 - agree / flips, differ / max(variants, 1)


def combine(entropy: np.ndarray, disagreement: np.ndarray, photometric: np.ndarray, score: str) -> np.ndarray:
    """The per-pixel uncertainty ``score`` ranks by (float32, 0..1)."""
    if score == "entropy":
        return entropy
    if score == "disagreement":
        return disagreement
    if score == "photometric":
        return photometric
    return (entropy + disagreement) * np.float32(0.5)


@dataclass
class Scan:
    """One micrograph's uncertainty, summed over ``CELL`` x ``CELL`` cells, and where its pixels are kept
    until the picks are written.

    ``sums`` is float64 (4 + C, rows, cols): the uncertainty, the entropy, the disagreement, the
    photometric disagreement, then the uncertainty of the pixels predicted as each phase; ``counts``
    int64 (C, rows, cols): pixels predicted as each phase; ``looks`` float64 (:data:`LOOKS`, rows, cols):
    the sums of the grey level, its square and its gradient (:func:`_gradient`).
    """

    path: Path
    stem: str
    width: int
    height: int  # analysed rows (the data bar left out)
    sums: np.ndarray
    counts: np.ndarray
    arrays: Path  # folder of memory maps: labels.npy (pre-filled), predicted.npy
    looks: np.ndarray | None = None
    mean_entropy: float = 0.0
    mean_disagreement: float = 0.0
    mean_photometric: float = 0.0
    score: float = 0.0


def _cell_sums(values: np.ndarray, width: int) -> np.ndarray:
    """Per-row sums over column cells: (..., h, w) -> (..., h, ceil(w / CELL))."""
    cols = -(-width // CELL)
    pad = cols * CELL - width
    if pad:
        values = np.pad(values, [(0, 0)] * (values.ndim - 1) + [(0, pad)])
    return values.reshape(*values.shape[:-1], cols, CELL).sum(axis=-1)


def scan_micrograph(
    model, path: Path, stem: str, options: SuggestOptions, work: Path, progress: Progress = SILENT
) -> Scan:
    """Segment one micrograph with its passes and sum its uncertainty per cell; its labels go to ``work``."""
    classes = len(model.classes)
    source = open_micrograph(path, options.normalize)
    try:
        try:
            bar_rows, _ = resolve_databar(options.databar, source.bottom(), source.info.image_height)
        except ValueError as exc:
            raise InputError(str(exc), path) from None
        height, width = source.height - bar_rows, source.width
        rows_c, cols_c = -(-height // CELL), -(-width // CELL)
        sums = np.zeros((PLANES + classes, rows_c, cols_c), np.float64)
        counts = np.zeros((classes, rows_c, cols_c), np.int64)
        looks = np.zeros((LOOKS, rows_c, cols_c), np.float64)
        folder = work / stem
        folder.mkdir()
        kept = {
            name: np.lib.format.open_memmap(folder / f"{name}.npy", "w+", np.uint8, (height, width))
            for name in ("labels", "predicted")
        }
        analysed = _Rows(source, height)
        tile_model = PassStack(model, options.tta, options.photometric)
        for band in iter_bands(
            tile_model,
            analysed,
            tile=options.tile,
            overlap=options.overlap,
            batch=options.batch,
            tta=False,
            logits=True,
            progress=count_callback(progress, "tiles", f"tiles of {path.name}"),
        ):
            labels, entropy, disagreement, photometric = pixel_uncertainty(
                band.logits, classes, options.tta, options.photometric
            )
            u = combine(entropy, disagreement, photometric, options.score)
            confident = (entropy <= options.max_entropy) & (disagreement == 0) & (photometric == 0)
            kept["predicted"][band.y0 : band.y1] = labels
            kept["labels"][band.y0 : band.y1] = np.where(confident, labels, IGNORE)
            one_hot = labels[None] == np.arange(classes, dtype=np.uint8)[:, None, None]
            planes = np.concatenate(
                [u[None], entropy[None], disagreement[None], photometric[None], one_hot * u[None]]
            )
            planes = planes.astype(np.float64)
            row_sums = _cell_sums(planes, width)
            row_counts = _cell_sums(one_hot.astype(np.int64), width)
            cells = np.arange(band.y0, band.y1) // CELL
            np.add.at(sums, (slice(None), cells), row_sums)
            np.add.at(counts, (slice(None), cells), row_counts)
            gray = band.gray.astype(np.float64)
            look = np.stack([gray, gray**2, _gradient(gray)])
            np.add.at(looks, (slice(None), cells), _cell_sums(look, width))
        for array in kept.values():
            array.flush()
        del kept
    finally:
        source.close()
    pixels = max(height * width, 1)
    return Scan(
        path,
        stem,
        width,
        height,
        sums,
        counts,
        folder,
        looks,
        float(sums[1].sum() / pixels),
        float(sums[2].sum() / pixels),
        float(sums[3].sum() / pixels),
    )


def _gradient(gray: np.ndarray) -> np.ndarray:
    """Per pixel, ``|dI/dx| + |dI/dy|`` by forward differences within the rows given (0 past the last
    column or row): how busy the texture is, which tells noise, charging streaks and fine structure from
    flat phases."""
    out = np.zeros_like(gray)
    out[:, :-1] += np.abs(np.diff(gray, axis=1))
    out[:-1, :] += np.abs(np.diff(gray, axis=0))
    return out


class _Rows:
    """The analysed rows of an open micrograph (above its data bar), as the sliding window reads them."""

    def __init__(self, source, height: int) -> None:
        self.source = source
        self.shape = (height, source.width)
        self.streamed = source.streamed

    def rows(self, y0: int, y1: int) -> np.ndarray:
        return self.source.rows(y0, y1)


def rarity(scans: Sequence[Scan], classes: int) -> np.ndarray:
    """``f_c ** -0.5`` of the predicted phase fractions over all scans, scaled to 1 for the rarest phase
    (a phase never predicted counts as the rarest). float64 (C,)."""
    counts = np.zeros(classes, np.float64)
    for scan in scans:
        counts += scan.counts.sum(axis=(1, 2))
    total = counts.sum()
    if total == 0:
        return np.ones(classes)
    freq = counts / total
    present = freq > 0
    weights = np.ones(classes)
    weights[present] = freq[present] ** -0.5
    weights[present] /= weights[present].max()
    return weights


def _starts(length: int, size: int) -> list[int]:
    """Region starts along one axis: a grid of ``size``, the last one flush with the end (on the cell
    grid), or 0 alone when the axis is shorter than ``size``."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, size))
    last = (length - size) // CELL * CELL
    if last > starts[-1]:
        starts.append(last)
    return starts


@dataclass
class Candidate:
    """A region of one scan and its score."""

    scan: Scan
    x: int
    y: int
    width: int
    height: int
    score: float

    @property
    def name(self) -> str:
        return f"{self.scan.stem}__y{self.y}_x{self.x}"

    @property
    def cells(self) -> tuple[slice, slice]:
        """The region's cells in the scan's per-cell arrays: (rows, columns)."""
        return _cell_window(self.x, self.y, self.width, self.height)

    def mean(self, plane: int) -> float:
        """Mean of ``scan.sums[plane]`` over the region's cells (per pixel)."""
        return float(self.scan.sums[(plane, *self.cells)].sum() / (self.width * self.height))

    def features(self) -> np.ndarray:
        """What the region looks like and what the model sees in it: grey mean, grey standard deviation,
        mean gradient, and the fraction of its pixels predicted as each phase (float64 (3 + C,))."""
        rows, cols = self.cells
        pixels = self.width * self.height
        if self.scan.looks is None:
            look = np.zeros(LOOKS)
        else:
            look = self.scan.looks[:, rows, cols].sum(axis=(1, 2)) / pixels
        spread = math.sqrt(max(look[1] - look[0] ** 2, 0.0))
        phases = self.scan.counts[:, rows, cols].sum(axis=(1, 2)) / pixels
        return np.concatenate([[look[0], spread, look[2]], phases])

    def overlaps(self, other: Candidate) -> bool:
        return (
            self.scan is other.scan
            and self.x < other.x + other.width
            and other.x < self.x + self.width
            and self.y < other.y + other.height
            and other.y < self.y + self.height
        )


def _weighted(scan: Scan, weights: np.ndarray, rare_weight: float) -> np.ndarray:
    """Per cell: the sum of ``u * (1 + rare_weight * r_c)`` (float64 (rows, cols))."""
    return scan.sums[0] + rare_weight * np.tensordot(weights, scan.sums[PLANES:], axes=1)


def candidates(scan: Scan, weights: np.ndarray, options: SuggestOptions) -> list[Candidate]:
    """Every region of the scan's grid with its score (mean weighted uncertainty per pixel)."""
    cells = _weighted(scan, weights, options.rare_weight)
    integral = np.zeros((cells.shape[0] + 1, cells.shape[1] + 1))
    integral[1:, 1:] = cells.cumsum(0).cumsum(1)
    out = []
    rh, rw = min(options.region, scan.height), min(options.region, scan.width)
    for y in _starts(scan.height, options.region):
        for x in _starts(scan.width, options.region):
            rows, cols = _cell_window(x, y, rw, rh)
            r0, r1, c0, c1 = rows.start, rows.stop, cols.start, cols.stop
            total = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
            out.append(Candidate(scan, x, y, rw, rh, float(total / (rw * rh))))
    return out


def _cell_window(x: int, y: int, width: int, height: int) -> tuple[slice, slice]:
    """The :data:`CELL` cells a region covers, partly or wholly: (rows, columns) of the per-cell arrays."""
    return slice(y // CELL, -(-(y + height) // CELL)), slice(x // CELL, -(-(x + width) // CELL))


def pick(
    scans: Sequence[Scan], weights: np.ndarray, options: SuggestOptions, taken: set[str]
) -> list[Candidate]:
    """The ``n`` best regions: highest score first (or as ``options.order`` says), at most ``per_image``
    per micrograph, none overlapping another pick, none named in ``taken`` (already labelled)."""
    per_image = options.per_image or max(1, math.ceil(options.n / max(len(scans), 1)))
    pool = [c for scan in scans for c in candidates(scan, weights, options)]
    pool.sort(key=lambda c: (-c.score, c.scan.stem, c.y, c.x))
    chosen: list[Candidate] = []
    per_scan: dict[str, int] = {}

    def allowed(candidate: Candidate) -> bool:
        return (
            candidate.name not in taken
            and per_scan.get(candidate.scan.stem, 0) < per_image
            and not any(candidate.overlaps(c) for c in chosen)
        )

    def take(candidate: Candidate) -> None:
        chosen.append(candidate)
        per_scan[candidate.scan.stem] = per_scan.get(candidate.scan.stem, 0) + 1

    if options.order == "diverse":
        for group in diverse_groups(pool, options.n):
            best = next((c for c in group if allowed(c)), None)  # groups keep the pool's score order
            if best is not None:
                take(best)
        # a group with nothing allowed left (its micrographs are used up): the score order fills in
    elif options.order == "phases":
        for phase in phase_turns(scans, options.n):
            # the most uncertain pixels predicted as this phase; ties (none at all) fall to the score order
            best = max(
                (c for c in pool if allowed(c)),
                key=lambda c: c.mean(PLANES + phase),
                default=None,
            )
            if best is None:
                break
            take(best)
        return chosen
    for candidate in pool:
        if len(chosen) >= options.n:
            break
        if allowed(candidate):
            take(candidate)
    return chosen


def diverse_groups(pool: Sequence[Candidate], n: int) -> list[list[Candidate]]:
    """``pool`` (in score order) split into ``min(n, len(pool))`` groups of regions alike in look and in
    predicted phases, each group in score order, the groups by their best score.

    Each candidate is described by :meth:`Candidate.features`, every feature scaled to zero mean and unit
    spread over the pool (a feature without spread is left out) and each half (the look, the phases) given
    equal weight, then grouped by k-means (OpenCV's, k-means++ seeding, its random generator seeded: the
    same pool gives the same groups). Why: at a budget of a few regions, the regions that teach a model
    most are not the most uncertain ones, which crowd into one kind of micrograph, but ones that cover the
    kinds there are (the cold-start result of active learning: Hacohen et al., ICML 2022), and within a
    kind the uncertain one is where the model is wrong."""
    import cv2

    k = min(n, len(pool))
    if k <= 1:
        return [list(pool)] if pool else []
    table = np.array([c.features() for c in pool], dtype=np.float64)
    spread = table.std(axis=0)
    keep = spread > 1e-9
    z = (table[:, keep] - table[:, keep].mean(axis=0)) / spread[keep]
    halves = np.array([i < LOOKS for i in range(table.shape[1])])[keep]
    for half in (halves, ~halves):
        if half.any():
            z[:, half] /= math.sqrt(half.sum())
    if z.shape[1] == 0:  # every region alike: nothing to group by, the score order
        return [[c] for c in pool[:k]]
    cv2.setRNGSeed(0)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-6)
    _, assigned, _ = cv2.kmeans(z.astype(np.float32), k, None, criteria, 5, cv2.KMEANS_PP_CENTERS)
    groups: dict[int, list[Candidate]] = {}
    for candidate, label in zip(pool, assigned.ravel(), strict=True):
        groups.setdefault(int(label), []).append(candidate)
    return sorted(groups.values(), key=lambda group: -group[0].score)


def phase_turns(scans: Sequence[Scan], n: int) -> list[int]:
    """The phase of each of ``n`` picks in ``order="phases"``: the phases by predicted pixels, rarest
    first (never predicted: rarest of all), in turn."""
    if not scans:
        return []
    counts = np.sum([scan.counts.sum(axis=(1, 2)) for scan in scans], axis=0)
    order = [int(c) for c in np.argsort(counts, kind="stable")]
    return [order[j % len(order)] for j in range(n)]


def labelled_names(out_dir: Path) -> set[str]:
    """Names (stems) of the label files already in ``out_dir/masks``."""
    masks = out_dir / MASKS_DIR
    if not masks.is_dir():
        return set()
    return {p.stem for p in masks.iterdir() if p.is_file() and not p.name.startswith(".")}


@dataclass
class Suggestion:
    """One pick as written: its files and what the model said about it."""

    rank: int
    name: str
    micrograph: str
    x: int
    y: int
    width: int
    height: int
    score: float
    mean_entropy: float
    disagreement: float
    photometric: float  # mean photometric disagreement
    prefilled: float  # share of the region's pixels pre-filled with the model's phase
    phases: dict[str, float] = field(default_factory=dict)  # predicted phase fractions in the region


def _region(array_path: Path, c: Candidate) -> np.ndarray:
    array = np.load(array_path, mmap_mode="r")
    return np.array(array[c.y : c.y + c.height, c.x : c.x + c.width])


def write_pick(
    c: Candidate, rank: int, table: ClassTable, out_dir: Path, options: SuggestOptions
) -> Suggestion:
    """Write a pick's region, pre-filled labels and preview; return what was written."""
    with open_micrograph(c.scan.path, options.normalize) as source:
        crop = np.ascontiguousarray(source.rows(c.y, c.y + c.height)[:, c.x : c.x + c.width])
    labels = _region(c.scan.arrays / "labels.npy", c)
    predicted = _region(c.scan.arrays / "predicted.npy", c)
    write_image(out_dir / IMAGES_DIR / f"{c.name}.png", crop)
    mask_path = out_dir / MASKS_DIR / f"{c.name}.png"
    if not mask_path.exists():  # never over a user's labels (labelled regions are not picked anyway)
        write_colour_labels(mask_path, labels, table)
    write_image(out_dir / PREVIEWS_DIR / f"{c.name}.png", panel(crop, labels, table, f"{rank}. {c.name}"))
    counts = np.bincount(predicted.ravel(), minlength=table.num_classes)[: table.num_classes]
    area = c.width * c.height
    return Suggestion(
        rank=rank,
        name=c.name,
        micrograph=str(c.scan.path),
        x=c.x,
        y=c.y,
        width=c.width,
        height=c.height,
        score=c.score,
        mean_entropy=c.mean(1),
        disagreement=c.mean(2),
        photometric=c.mean(3),
        prefilled=float(np.count_nonzero(labels != IGNORE)) / area,
        phases={name: float(n) / area for name, n in zip(table.names, counts, strict=True)},
    )


def model_table(model) -> ClassTable:
    """The class table of a runtime model (names and colours; raw ids 1..C as the Zenodo masks)."""
    return ClassTable.from_dict(
        {"classes": [{"name": n, "color": list(c)} for n, c in zip(model.classes, model.colors, strict=True)]}
    )


def suggest(
    model,
    files: Sequence[Path],
    stems: Sequence[str],
    out_dir: str | os.PathLike,
    options: SuggestOptions,
    progress: Progress = SILENT,
) -> dict:
    """Rank ``files`` and their regions by uncertainty and write the ``n`` best picks to ``out_dir``.

    Parameters
    ----------
    model : a runtime model (:func:`semphase.runtime.load_model`).
    files, stems : the micrographs and their distinct output stems (:func:`~semphase.runtime.inputs.
        output_stems`).
    out_dir : the suggestion folder (created); ``images/``, ``masks/``, ``previews/``, ``worklist.csv``,
        ``suggest.json``.
    options : see :class:`SuggestOptions`.
    progress : stages ``micrographs``, ``tiles`` and ``picks``; a micrograph that cannot be read is an
        :class:`~semphase.progress.Event` ``failed`` (one line naming it) and the others go on.

    Returns
    -------
    The document written to ``suggest.json``: ``settings``, ``rarity`` (per phase), ``micrographs`` (each
    with its mean entropy, disagreement and score, best first), ``picks`` (see :class:`Suggestion`) and
    ``failed`` (path, reason).
    """
    out = ensure_output_folder(out_dir)
    table = model_table(model)
    taken = labelled_names(out)
    failed: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix=".suggest-", dir=out))
    try:
        scans = []
        progress.start("micrographs", "scanning micrographs", len(files))
        for path, stem in zip(files, stems, strict=True):
            progress.say(str(path))
            try:
                scans.append(scan_micrograph(model, Path(path), stem, options, work, progress))
            except InputError as exc:
                progress.event(Event("failed", str(path), str(exc)))
                failed.append({"path": str(path), "reason": exc.said_of(path)})
            progress.advance("micrographs")
        weights = rarity(scans, table.num_classes)
        for scan in scans:
            cells = _weighted(scan, weights, options.rare_weight)
            scan.score = float(cells.sum() / max(scan.width * scan.height, 1))
        chosen = pick(scans, weights, options, taken)
        progress.start("picks", "writing picks", len(chosen))
        picks = []
        for rank, candidate in enumerate(chosen, start=1):
            picks.append(write_pick(candidate, rank, table, out, options))
            progress.advance("picks")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    document = {
        "format": "semphase-suggest/1",
        "settings": asdict(options),
        "classes": table.names,
        "rarity": {name: float(w) for name, w in zip(table.names, weights, strict=True)},
        "already_labelled": sorted(taken),
        "micrographs": [
            {
                "path": str(s.path),
                "stem": s.stem,
                "width": s.width,
                "analysed_height": s.height,
                "mean_entropy": s.mean_entropy,
                "mean_disagreement": s.mean_disagreement,
                "mean_photometric": s.mean_photometric,
                "score": s.score,
            }
            for s in sorted(scans, key=lambda s: -s.score)
        ],
        "picks": [asdict(p) for p in picks],
        "failed": failed,
    }
    write_text_atomic(out / DOCUMENT_NAME, json.dumps(document, indent=1) + "\n")
    write_text_atomic(out / WORKLIST_NAME, worklist_csv(picks, table.names))
    return document


def worklist_csv(picks: Sequence[Suggestion], names: Sequence[str]) -> str:
    """The picks as CSV, best first: where each region is, why it was picked, what to check."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        [
            "rank",
            "name",
            "micrograph",
            "x",
            "y",
            "width",
            "height",
            "score",
            "mean_entropy",
            "disagreement",
            "photometric",
            "prefilled",
            *(f"predicted_{n}" for n in names),
        ]
    )
    for p in picks:
        writer.writerow(
            [
                p.rank,
                p.name,
                p.micrograph,
                p.x,
                p.y,
                p.width,
                p.height,
                f"{p.score:.5f}",
                f"{p.mean_entropy:.5f}",
                f"{p.disagreement:.5f}",
                f"{p.photometric:.5f}",
                f"{p.prefilled:.4f}",
                *(f"{p.phases[n]:.4f}" for n in names),
            ]
        )
    return buf.getvalue()
