"""Scoring label images: confusion matrix, IoU, Dice and boundary F1 (numpy and OpenCV, no torch).

The definitions are those of ``docs/dataset-and-metrics.md``:

- truth pixels labelled 255 are ignored everywhere: they are neither counted nor matched, and for the
  boundaries they behave like the space beyond the image frame (a class region that ends at the data bar
  has no boundary there, in the truth and in the prediction alike);
- a prediction value ``>= C`` (e.g. 255 where a tool gave no answer) counts as a miss for the truth
  class: the pixel is in the truth total of its class but in no prediction column;
- per image, a class absent from both truth and prediction is left out of the means (IoU, Dice, BF1 are
  NaN there); present in only one of them, it scores 0 on all three;
- dataset level: per-class IoU and Dice from the summed confusion matrix, per-class BF1 as the mean of the
  per-image BF1 over the images where the class is present in truth or prediction.

``absent_as_study=True`` reproduces the convention of the study this toolkit follows (absent classes count
IoU 1, Dice 1, BF1 0 and enter every mean) so that numbers can be compared with it; never use it to
report new results.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from semphase.metrics_boundary import (
    DEFAULT_TOLERANCE,
    boundary,
    boundary_f1,
    check_tolerance,
    f1_of_boundaries,
)
from semphase.phases import IGNORE

__all__ = [
    "DEFAULT_TOLERANCE",
    "ImageScore",
    "Scorer",
    "boundary",
    "boundary_f1",
    "confusion_counts",
    "confusion_matrix",
    "score_image",
]


# ------------------------------------------------------------------------------------- validation


def _check_pair(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> None:
    if not 1 <= num_classes <= 254:
        raise ValueError(f"num_classes must be in 1..254, got {num_classes}")
    if truth.ndim != 2 or pred.shape != truth.shape:
        raise ValueError(f"truth and prediction must be 2-D of one shape, got {truth.shape} and {pred.shape}")
    for role, arr in (("truth", truth), ("prediction", pred)):
        if arr.dtype.kind not in "ui":
            raise ValueError(f"{role} must hold integer class ids, got dtype {arr.dtype}")
        if arr.dtype.kind == "i" and arr.size and arr.min() < 0:
            raise ValueError(f"{role} holds negative class ids")


# -------------------------------------------------------------------------------------- confusion


def confusion_counts(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion counts with one extra column for truth pixels that have no valid prediction.

    Parameters
    ----------
    truth : uint8 (or other unsigned integer), shape (H, W): class ids ``0..C-1``, 255 = ignored.
    pred : integer, shape (H, W): class ids; values ``>= C`` mean "no prediction".
    num_classes : C.

    Returns
    -------
    int64, shape (C, C + 1): ``[t, p]`` counts pixels of truth class ``t`` predicted as ``p``; column
    ``C`` counts those predicted as nothing (``pred >= C``). Ignored truth pixels are in no cell.

    Raises
    ------
    ValueError
        for mismatched shapes, non-integer arrays, or truth ids other than ``0..C-1`` and 255.
    """
    _check_pair(truth, pred, num_classes)
    t = truth.ravel()
    p = pred.ravel()
    valid = t != IGNORE
    if not valid.all():
        t, p = t[valid], p[valid]
    if t.size and int(t.max()) >= num_classes:
        bad = sorted({int(v) for v in np.unique(t) if v >= num_classes})
        raise ValueError(f"truth holds ids {bad[:10]} outside 0..{num_classes - 1} and {IGNORE}")
    # Everything >= C collapses onto the "no prediction" column.
    p = np.minimum(p, num_classes).astype(np.intp, copy=False)
    index = t.astype(np.intp) * (num_classes + 1) + p
    counts = np.bincount(index, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1).astype(np.int64, copy=False)


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion matrix, rows = truth, columns = prediction.

    Parameters
    ----------
    truth : unsigned integer, shape (H, W): class ids ``0..C-1``; 255 pixels are ignored.
    pred : integer, shape (H, W): class ids; pixels predicted ``>= C`` (no data) are in no column, so a
        row may sum to less than the truth count of its class (see :func:`confusion_counts`).
    num_classes : C.

    Returns
    -------
    int64, shape (C, C).
    """
    return confusion_counts(truth, pred, num_classes)[:, :num_classes].copy()


def iou_dice(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU, Dice and "present in truth or prediction" per class from (C, C+1) counts.

    Classes present in neither get NaN.
    """
    c = counts.shape[0]
    tp = np.diag(counts[:, :c]).astype(np.float64)
    in_truth = counts.sum(axis=1).astype(np.float64)
    in_pred = counts[:, :c].sum(axis=0).astype(np.float64)
    union = in_truth + in_pred - tp
    present = union > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(present, tp / union, np.nan)
        dice = np.where(present, 2.0 * tp / (in_truth + in_pred), np.nan)
    return iou, dice, present


# ------------------------------------------------------------------------------------- per image


@dataclass
class ImageScore:
    """Scores of one image.

    ``iou``, ``dice``, ``bf1`` are float64 arrays of shape (C,), NaN where the class is left out (absent
    from truth and prediction; under the study convention they hold 1, 1, 0 instead). ``miou``, ``mdice``,
    ``mbf1`` are the means over the classes left in (NaN when no class is, i.e. every truth pixel is
    ignored). ``confusion`` is int64 (C, C), rows truth; ``unpredicted`` is int64 (C,), truth pixels of
    each class whose prediction was ``>= C``.
    """

    name: str
    iou: np.ndarray
    dice: np.ndarray
    bf1: np.ndarray
    miou: float
    mdice: float
    mbf1: float
    confusion: np.ndarray
    unpredicted: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def _mean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def score_image(
    truth: np.ndarray,
    pred: np.ndarray,
    num_classes: int,
    name: str = "",
    absent_as_study: bool = False,
    tolerance: int = DEFAULT_TOLERANCE,
) -> ImageScore:
    """IoU, Dice and boundary F1 of every class in one image.

    Parameters
    ----------
    truth : unsigned integer, shape (H, W): class ids ``0..C-1``, 255 = ignored.
    pred : integer, shape (H, W): class ids; ``>= C`` = no prediction (a miss).
    num_classes : C.
    name : carried into the result.
    absent_as_study : count classes absent from both as IoU 1, Dice 1, BF1 0 (the study's convention).
    tolerance : boundary tolerance in pixels.

    Returns
    -------
    ImageScore
    """
    tolerance = check_tolerance(tolerance)
    counts = confusion_counts(truth, pred, num_classes)
    iou, dice, present = iou_dice(counts)
    bf1 = np.full(num_classes, np.nan)
    valid = truth != IGNORE
    all_valid = bool(valid.all())
    scored_valid = None if all_valid else valid
    in_truth = counts.sum(axis=1) > 0
    in_pred = counts[:, :num_classes].sum(axis=0) > 0
    for c in np.flatnonzero(present):
        if not (in_truth[c] and in_pred[c]):
            bf1[c] = 0.0
            continue
        t_mask = truth == c
        p_mask = pred == c if all_valid else (pred == c) & valid
        edges = boundary(p_mask, scored_valid), boundary(t_mask, scored_valid)
        bf1[c] = f1_of_boundaries(edges[0], edges[1], tolerance)
    if absent_as_study:
        iou[~present], dice[~present], bf1[~present] = 1.0, 1.0, 0.0
    return ImageScore(
        name=name,
        iou=iou,
        dice=dice,
        bf1=bf1,
        miou=_mean(iou),
        mdice=_mean(dice),
        mbf1=_mean(bf1),
        confusion=counts[:, :num_classes].copy(),
        unpredicted=counts[:, num_classes].copy(),
    )


# ----------------------------------------------------------------------------------- data set level


def _json_float(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _json_list(values: np.ndarray) -> list[float | None]:
    return [_json_float(v) for v in values]


def _stats(values: list[float]) -> dict[str, float | None]:
    finite = np.array([v for v in values if np.isfinite(v)], dtype=np.float64)
    if not finite.size:
        return {"mean": None, "std": None, "min": None, "max": None}
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std(ddof=0)),
        "min": float(finite.min()),
        "max": float(finite.max()),
    }


class Scorer:
    """Accumulates image scores into the scoring-schema dict of ``docs/dataset-and-metrics.md``.

    Parameters
    ----------
    class_names : names in class-id order; C = ``len(class_names)``.
    absent_as_study : the study's convention for classes absent from an image (see module docstring).
    tolerance : boundary F1 tolerance in pixels.
    """

    def __init__(
        self, class_names: list[str], absent_as_study: bool = False, tolerance: int = DEFAULT_TOLERANCE
    ) -> None:
        if not class_names:
            raise ValueError("need at least one class name")
        self.class_names = list(class_names)
        self.absent_as_study = bool(absent_as_study)
        self.tolerance = check_tolerance(tolerance)
        c = len(self.class_names)
        self._counts = np.zeros((c, c + 1), dtype=np.int64)
        self.images: list[ImageScore] = []

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def add(self, name: str, truth: np.ndarray, pred: np.ndarray) -> ImageScore:
        """Score one image and add it to the totals.

        Parameters
        ----------
        name : image name, as it should appear in ``per_image``.
        truth, pred : see :func:`score_image`.

        Returns
        -------
        ImageScore of this image.
        """
        score = score_image(truth, pred, self.num_classes, name, self.absent_as_study, self.tolerance)
        self._counts[:, : self.num_classes] += score.confusion
        self._counts[:, self.num_classes] += score.unpredicted
        self.images.append(score)
        return score

    def result(self) -> dict:
        """The scoring result as a JSON-serializable dict.

        Keys of the schema: ``classes``, ``confusion`` (C x C, rows truth), ``per_class`` (``iou``,
        ``dice``, ``bf1``; null for classes with no pixel in truth or prediction over the whole set),
        ``per_image`` (``name``, ``miou``, ``mdice``, ``mbf1``), ``summary`` (``miou``, ``mdice``,
        ``mbf1``, each ``mean``/``std``/``min``/``max`` over images, std with ddof 0; null without
        images). Extras: ``per_class`` also holds ``frequency`` (fraction of scored truth pixels),
        ``correct_pct`` (% of a class's truth pixels predicted as it), ``main_confusion`` (the class its
        pixels are most often mistaken for, with %), ``truth_pixels``, ``pred_pixels`` and
        ``unpredicted``; ``per_image`` entries hold per-class ``iou``/``dice``/``bf1``; top level
        ``pixel_accuracy``, ``images``, ``convention`` and ``tolerance_px``.

        Under the study convention the per-image values change (absent classes count 1, 1, 0) and so
        does the per-class BF1, then a mean over every image; per-class IoU and Dice come from the summed
        confusion matrix either way.
        """
        c = self.num_classes
        counts = self._counts
        iou, dice, present = iou_dice(counts)
        # Per-class BF1: mean over the images where it is not NaN (the class is present in truth or
        # prediction; under the study convention, every image).
        stacked = np.stack([s.bf1 for s in self.images]) if self.images else np.full((0, c), np.nan)
        scored = ~np.isnan(stacked)
        n_scored = scored.sum(axis=0)
        bf1_sum = np.where(scored, stacked, 0.0).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            bf1 = np.where(present & (n_scored > 0), bf1_sum / n_scored, np.nan)
        truth_pixels = counts.sum(axis=1)
        pred_pixels = counts[:, :c].sum(axis=0)
        total = int(truth_pixels.sum())
        correct = np.diag(counts[:, :c])
        per_class = {
            "iou": _json_list(iou),
            "dice": _json_list(dice),
            "bf1": _json_list(bf1),
            "frequency": [_json_float(n / total) if total else None for n in truth_pixels],
            "correct_pct": _json_list(100.0 * correct / np.where(truth_pixels > 0, truth_pixels, np.nan)),
            "main_confusion": [self._main_confusion(i) for i in range(c)],
            "truth_pixels": [int(n) for n in truth_pixels],
            "pred_pixels": [int(n) for n in pred_pixels],
            "unpredicted": [int(n) for n in counts[:, c]],
        }
        per_image = [
            {
                "name": s.name,
                "miou": _json_float(s.miou),
                "mdice": _json_float(s.mdice),
                "mbf1": _json_float(s.mbf1),
                "iou": _json_list(s.iou),
                "dice": _json_list(s.dice),
                "bf1": _json_list(s.bf1),
            }
            for s in self.images
        ]
        return {
            "classes": list(self.class_names),
            "confusion": counts[:, :c].tolist(),
            "per_class": per_class,
            "per_image": per_image,
            "summary": {
                key: _stats([getattr(s, key) for s in self.images]) for key in ("miou", "mdice", "mbf1")
            },
            "pixel_accuracy": _json_float(correct.sum() / total) if total else None,
            "images": len(self.images),
            "convention": "absent-as-study" if self.absent_as_study else "absent-left-out",
            "tolerance_px": self.tolerance,
        }

    def _main_confusion(self, c: int) -> dict | None:
        """The class (other than ``c``, or "no prediction") that most of class ``c``'s pixels went to."""
        row = self._counts[c].copy()
        total = int(row.sum())
        row[c] = 0
        if total == 0 or not row.any():
            return None
        j = int(np.argmax(row))
        name = self.class_names[j] if j < self.num_classes else "(no prediction)"
        class_id = j if j < self.num_classes else None
        return {"class": name, "id": class_id, "pct": 100.0 * float(row[j]) / total}
