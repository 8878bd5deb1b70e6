"""Study-style result tables and the per-image CSV of a scoring result (torch-free).

The input everywhere is the scoring-result dict of :meth:`semphase.metrics.Scorer.result` (the JSON
schema of ``docs/dataset-and-metrics.md``). The figures (confusion matrix, frequency vs IoU, overlay
panels) live in :mod:`semphase.evaluation.plots` and are re-exported here; they import matplotlib lazily.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from semphase.evaluation.plots import (
    OverlayItem,
    plot_confusion,
    plot_frequency_vs_iou,
    write_overlay_panels,
)
from semphase.imageio import write_text_atomic
from semphase.tables import Table

__all__ = [
    "OverlayItem",
    "format_summary_line",
    "plot_confusion",
    "plot_frequency_vs_iou",
    "study_tables",
    "write_overlay_panels",
    "write_per_image_csv",
]

_METRICS = (("miou", "mIoU"), ("mdice", "mDice"), ("mbf1", "mBF1"))
_PER_CLASS = (("iou", "IoU"), ("dice", "Dice"), ("bf1", "BF1"))


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}%"


def _class_values(result: dict, key: str) -> list[Any]:
    values = result.get("per_class", {}).get(key)
    return values if isinstance(values, list) else [None] * len(result["classes"])


def format_summary_line(result: dict) -> str:
    """One line: ``mIoU 0.8123 +- 0.0412 | mDice ... | mBF1 ... (N images)``."""
    parts = []
    for key, label in _METRICS:
        stats = result["summary"][key]
        parts.append(f"{label} {_num(stats['mean'])} +- {_num(stats['std'])}")
    n = result.get("images", len(result.get("per_image", [])))
    return " | ".join(parts) + f" ({n} images)"


def study_tables(result: dict) -> list[Table]:
    """The study's tables: the summary over images and the per-class table (text cells, for any display).

    Parameters
    ----------
    result : scoring-result dict.

    The summary table holds mean, std (ddof 0), min and max over images of mIoU, mDice and mBF1. The
    per-class table holds IoU and Dice (from the summed confusion matrix), BF1 (mean over the images
    where the class occurs), the percentage of the class's pixels classified correctly, the class they are
    most often mistaken for (with its percentage), and the class's share of the scored truth pixels. Its
    notes give the pixel accuracy and the convention for absent classes.
    """
    n = result.get("images", len(result.get("per_image", [])))
    convention = result.get("convention", "absent-left-out")
    note = (
        "absent classes counted as IoU 1, Dice 1, BF1 0 (the study's convention)"
        if convention == "absent-as-study"
        else "classes absent from an image are left out of its means"
    )
    tolerance = result.get("tolerance_px")
    caption = note + (f"; BF1 tolerance {tolerance} px" if tolerance is not None else "")

    summary = Table("summary", f"Summary over {n} images", ["metric", "mean", "std", "min", "max"])
    for key, label in _METRICS:
        stats = result["summary"][key]
        summary.rows.append([label, *(_num(stats[c]) for c in ("mean", "std", "min", "max"))])

    headers = ["id", "class", *(label for _, label in _PER_CLASS), "correct", "main confusion", "frequency"]
    per_class = Table("per_class", "Per class", headers, text_columns=("class", "main confusion"))
    columns = [_class_values(result, key) for key, _ in _PER_CLASS]
    correct = _class_values(result, "correct_pct")
    confusion = _class_values(result, "main_confusion")
    frequency = _class_values(result, "frequency")
    for i, name in enumerate(result["classes"]):
        main = confusion[i]
        mistaken = "-" if not main else f"{main['class']} ({_pct(main['pct'], 1)})"
        freq = None if frequency[i] is None else 100.0 * frequency[i]
        per_class.rows.append(
            [str(i), name, *(_num(col[i]) for col in columns), _pct(correct[i]), mistaken, _pct(freq, 3)]
        )
    accuracy = result.get("pixel_accuracy")
    if accuracy is not None:
        per_class.notes.append(f"pixel accuracy {100.0 * accuracy:.2f}% over all scored pixels")
    per_class.notes.append(caption)
    return [summary, per_class]


def write_per_image_csv(result: dict, path: str | os.PathLike) -> None:
    """Write one row per image: name, mIoU, mDice, mBF1 and, when present, per-class IoU/Dice/BF1.

    Empty cells stand for classes left out of an image. The file is written atomically.
    """
    classes = result["classes"]
    header = ["name", "miou", "mdice", "mbf1"]
    per_image = result.get("per_image", [])
    detailed = [key for key, _ in _PER_CLASS if per_image and all(key in row for row in per_image)]
    for key in detailed:
        header += [f"{key}_{name}" for name in classes]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)

    def cell(value: float | None) -> str:
        return "" if value is None else f"{value:.6f}"

    for row in per_image:
        values = [row["name"], *(cell(row[k]) for k, _ in _METRICS)]
        for key in detailed:
            values += [cell(v) for v in row[key]]
        writer.writerow(values)
    write_text_atomic(path, buffer.getvalue())
