"""The tables a segmentation writes: the phase table of one micrograph and the run's summary.csv."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from semphase.errors import display_path
from semphase.imageio import write_text_atomic

#: Pixels counted per step: bincount's intp copy of a 65536-pixel-wide band would otherwise be 240 MB.
_COUNT_PIXELS = 1 << 20


def phase_table(counts: np.ndarray, classes: Sequence[str], pixel_size_um: float | None) -> list[dict]:
    """Rows of the phase table: id, name, pixels, fraction of analysed pixels, area in um^2 (or None).

    Parameters
    ----------
    counts : int array of length C, pixels per class over the analysed (non-excluded) area.
    """
    total = int(np.sum(counts))
    area = pixel_size_um**2 if pixel_size_um else None
    rows = []
    for i, name in enumerate(classes):
        pixels = int(counts[i])
        rows.append(
            {
                "id": i,
                "name": name,
                "pixels": pixels,
                "fraction": (pixels / total) if total else 0.0,
                "area_um2": (pixels * area) if area is not None else None,
            }
        )
    return rows


def count_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class id 0..C-1 in a label band (255 and other ids are not counted)."""
    flat = labels.reshape(-1)
    counts = np.zeros(256, np.int64)
    for i in range(0, flat.size, _COUNT_PIXELS):  # bincount makes an intp copy: 8 bytes per pixel counted
        counts += np.bincount(flat[i : i + _COUNT_PIXELS], minlength=256)[:256]
    return counts[:num_classes]


SUMMARY_NAME = "summary.csv"


def summary_rows(results: Sequence[Mapping], classes: Sequence[str]) -> list[dict]:
    """One flat row per input for summary.csv; failed inputs keep their reason."""
    rows = []
    for r in results:
        row = {
            "input": display_path(r.get("input") or ""),  # a spreadsheet cell: any file name, readable
            "status": r.get("status", "done"),
            "reason": r.get("reason", ""),
            "width": r.get("width"),
            "height": r.get("height"),
            "analysed_pixels": r.get("analysed_pixels"),
            "excluded_pixels": r.get("excluded_pixels"),
            "pixel_size_um": r.get("pixel_size_um"),
        }
        phases = {p["name"]: p for p in r.get("phases", [])}
        for name in classes:
            p = phases.get(name, {})
            row[f"{name}_fraction"] = _fmt(p.get("fraction"))
            row[f"{name}_area_um2"] = _fmt(p.get("area_um2"))
        if "uncertainty" in r:
            row["uncertain_fraction"] = _fmt(r["uncertainty"].get("uncertain_fraction"))
        row["seconds"] = _fmt((r.get("seconds") or {}).get("total"))
        row["mask"] = display_path((r.get("outputs") or {}).get("mask", ""))
        rows.append(row)
    return rows


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_summary(path: str | os.PathLike, results: Sequence[Mapping], classes: Sequence[str]) -> Path:
    """Write summary.csv (atomically) with one row per input, in input order."""
    rows = summary_rows(results, classes)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buffer.getvalue())
    return Path(path)
