"""Accuracy parity: do the variants (and the PyTorch checkpoint) find the same phases?

For each variant: the scoring result against the truth masks (mIoU, mDice, mBF1, per class, confusion),
pixel agreement with FP32 and with PyTorch (overall and per class of the reference), and the differences
of every score against those references. Torch-free: predictions arrive as label arrays or through
``predict(image_u8) -> labels`` callables.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from semphase.data.layout import Sample, load_pair
from semphase.errors import one_line
from semphase.gates import REDUCED_VARIANTS, Gates, changes_against, failures, variant_checks
from semphase.imageio import to_uint8
from semphase.metrics import Scorer
from semphase.phases import ClassTable

Predict = Callable[[np.ndarray], np.ndarray]

#: Variants the others are compared with, when present.
REFERENCES = ("fp32", "pytorch")
_METRICS = ("miou", "mdice", "mbf1")
_PER_CLASS = ("iou", "dice", "bf1")


def short_reason(exc: BaseException) -> str:
    """One line, at most 200 characters, naming the exception type when its message is empty."""
    return one_line(exc, 200)


def agreement_counts(reference: np.ndarray, other: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel counts of (reference label, other label), int64 (C + 1, C + 1); ids >= C share the last bin.

    Parameters
    ----------
    reference, other : integer label images of one shape (H, W).
    num_classes : C.
    """
    if reference.shape != other.shape:
        raise ValueError(f"label images differ in shape: {reference.shape} and {other.shape}")
    c = num_classes
    r = np.minimum(reference.ravel(), c).astype(np.intp)
    o = np.minimum(other.ravel(), c).astype(np.intp)
    return np.bincount(r * (c + 1) + o, minlength=(c + 1) ** 2).reshape(c + 1, c + 1).astype(np.int64)


def agreement_from_counts(counts: np.ndarray) -> tuple[float | None, list[float | None]]:
    """Overall fraction of equal pixels, and per reference class the fraction the other also gave that class.

    Returns
    -------
    (overall, per_class): None where there are no pixels; ``per_class`` has C entries (the last bin of
    ``counts``, "no class", is left out).
    """
    total = int(counts.sum())
    overall = float(np.trace(counts)) / total if total else None
    rows = counts.sum(axis=1)
    c = counts.shape[0] - 1
    per_class = [float(counts[i, i]) / int(rows[i]) if rows[i] else None for i in range(c)]
    return overall, per_class


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else float(a) - float(b)


def score_deltas(row: dict, reference: dict) -> dict:
    """Differences ``row - reference`` of mIoU/mDice/mBF1 (summary means) and of every per-class score."""
    out: dict = {k: _difference(row.get(k), reference.get(k)) for k in _METRICS}
    for k in _PER_CLASS:
        out[k] = [
            _difference(a, b) for a, b in zip(row["per_class"][k], reference["per_class"][k], strict=True)
        ]
    return out


class ParityRun:
    """Accumulates scores and agreement of several predictions of the same images.

    Parameters
    ----------
    class_names : names in class-id order.
    variants : prediction names in report order (e.g. ``["pytorch", "fp32", "fp16", "int8"]``).
    gates : thresholds FP16 and INT8 must meet against FP32 (:mod:`semphase.gates`).
    """

    def __init__(self, class_names: list[str], variants: list[str], gates: Gates | None = None) -> None:
        self.class_names = list(class_names)
        self.variants = list(variants)
        self.gates = gates or Gates()
        self.scorers = {v: Scorer(self.class_names) for v in self.variants}
        c = len(self.class_names)
        self.agreement = {
            (v, ref): np.zeros((c + 1, c + 1), np.int64) for v in variants for ref in REFERENCES
        }
        self.failed: dict[str, str] = {}

    def fail(self, variant: str, reason: str) -> None:
        """Mark a variant failed; it is left out of every later image."""
        self.failed.setdefault(variant, reason)

    def add(self, name: str, truth: np.ndarray, predictions: dict[str, np.ndarray]) -> None:
        """Score one image's predictions against ``truth`` (uint8 (H, W), 255 ignored) and each other.

        Agreement is counted over every pixel of the image, ignored truth pixels included: it compares
        two predictions, whatever the truth says.
        """
        c = len(self.class_names)
        for variant, pred in predictions.items():
            if variant in self.failed:
                continue
            self.scorers[variant].add(name, truth, pred)
            for ref in REFERENCES:
                if ref in predictions and ref not in self.failed:
                    self.agreement[(variant, ref)] += agreement_counts(predictions[ref], pred, c)

    def rows(self, extra: dict | None = None) -> list[dict]:
        """One report row per variant (see :func:`accuracy_row`), deltas against every reference."""
        rows, results = {}, {}
        for v in self.variants:
            if v in self.failed:
                rows[v] = failed_row(v, "failed", self.failed[v], self.class_names)
                continue
            results[v] = self.scorers[v].result()
            row = accuracy_row(v, results[v])
            for ref in REFERENCES:
                ok_ref = ref in self.scorers and ref not in self.failed and self.agreement[(v, ref)].any()
                overall, per_class = (
                    agreement_from_counts(self.agreement[(v, ref)]) if ok_ref else (None, None)
                )
                row[f"agreement_vs_{ref}"] = overall
                row[f"agreement_per_class_vs_{ref}"] = per_class
            rows[v] = row
        for row in rows.values():
            for ref in REFERENCES:
                usable = ref in rows and rows[ref]["status"] == "ok" and row["status"] == "ok"
                row[f"delta_vs_{ref}"] = score_deltas(row, rows[ref]) if usable else None
            self._judge(row, rows.get("fp32"), results)
            if extra:
                row.update(extra)
        return [rows[v] for v in self.variants]

    def _judge(self, row: dict, fp32: dict | None, results: dict[str, dict]) -> None:
        """Add the gate checks against FP32 to an FP16/INT8 row; a miss fails the row, numbers kept.
        ``results`` holds the scoring results the rows were made from."""
        row["gates"] = None
        variant = row["variant"]
        if variant not in REDUCED_VARIANTS or row["status"] != "ok" or not fp32 or fp32["status"] != "ok":
            return
        agreement = row.get("agreement_vs_fp32")
        changes = changes_against(
            results[variant], results["fp32"], None if agreement is None else 100.0 * agreement
        )
        row["gates"] = variant_checks(variant, changes, self.gates)
        missed = failures(row["gates"])
        if missed:
            row["status"] = "failed"
            row["reason"] = "misses the gates on this machine: " + "; ".join(missed)

    def results(self) -> dict[str, dict]:
        """The full scoring result of each variant that did not fail (for the confusion figures)."""
        return {v: self.scorers[v].result() for v in self.variants if v not in self.failed}


def accuracy_row(variant: str, result: dict) -> dict:
    """A report row from a scoring result: summary means on top, summary, per class and confusion below."""
    summary = result["summary"]
    return {
        "variant": variant,
        "status": "ok",
        "reason": None,
        "images": result.get("images", len(result.get("per_image", []))),
        "miou": summary["miou"]["mean"],
        "mdice": summary["mdice"]["mean"],
        "mbf1": summary["mbf1"]["mean"],
        "summary": summary,
        "pixel_accuracy": result.get("pixel_accuracy"),
        "per_class": {k: result["per_class"][k] for k in _PER_CLASS},
        "confusion": result["confusion"],
    }


def failed_row(variant: str, status: str, reason: str, class_names: list[str]) -> dict:
    """A row for a variant that could not be scored: every number None, ``status`` and ``reason`` set."""
    none = [None] * len(class_names)
    row = {
        "variant": variant,
        "status": status,
        "reason": reason,
        "images": 0,
        **{k: None for k in _METRICS},
        "summary": None,
        "pixel_accuracy": None,
        "per_class": {k: list(none) for k in _PER_CLASS},
        "confusion": None,
    }
    for ref in REFERENCES:
        row[f"agreement_vs_{ref}"] = None
        row[f"agreement_per_class_vs_{ref}"] = None
        row[f"delta_vs_{ref}"] = None
    return row


def heldout_parity(
    predictors: dict[str, Predict],
    samples: list[Sample],
    table: ClassTable,
    advance: Callable[[], None] | None = None,
    gates: Gates | None = None,
) -> ParityRun:
    """Run every predictor on every sample and accumulate scores and agreement.

    Parameters
    ----------
    predictors : variant name -> ``predict(image_u8 (H, W) uint8) -> labels (H, W) uint8``.
    samples : dataset samples with masks.
    table : class table the masks are remapped with.
    advance : called once per predictor and image (progress).
    gates : thresholds for FP16/INT8 against FP32 (default :class:`semphase.gates.Gates`).

    Returns
    -------
    The :class:`ParityRun`; a predictor that raises is marked failed with its reason and skipped for the
    remaining images while the others go on. Unreadable data raises InputError as usual.
    """
    run = ParityRun(table.names, list(predictors), gates)
    for sample in samples:
        image, truth = load_pair(sample, table)
        image_u8 = to_uint8(image)
        predictions = {}
        for variant, predict in predictors.items():
            if variant not in run.failed:
                try:
                    pred = np.asarray(predict(image_u8))
                    if pred.shape != truth.shape or pred.dtype.kind not in "ui":
                        raise ValueError(f"returned {pred.dtype} {pred.shape}, expected labels {truth.shape}")
                    predictions[variant] = pred
                except Exception as exc:  # a broken variant must not stop the others
                    run.fail(variant, f"{sample.name}: {short_reason(exc)}")
            if advance is not None:
                advance()
        run.add(sample.name, truth, predictions)
    return run
