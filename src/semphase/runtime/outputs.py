"""What a segmentation leaves behind besides the mask: overlay bands with a legend, the phase table, the
per-run summary CSV. Pure numpy/OpenCV; the writers live in :mod:`semphase.runtime.rowwriters`."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from semphase.imageio import write_text_atomic

_FONT = cv2.FONT_HERSHEY_SIMPLEX


class OverlayPainter:
    """Colours bands of a micrograph by their labels and draws a legend box in the top-left corner.

    Parameters
    ----------
    classes : class names in id order; colors : one (r, g, b) per class.
    width, height : the full image size (the legend is scaled to it).
    alpha : weight of the class colour; pixels labelled 255 (no data) keep the micrograph's grey.
    """

    def __init__(
        self,
        classes: Sequence[str],
        colors: Sequence[Sequence[int]],
        width: int,
        height: int,
        alpha: float = 0.45,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in 0..1, got {alpha}")
        self.alpha = alpha
        # One row of 256 blended grey levels per class, and a last, uncoloured row for 255 (no data) and
        # any id without a colour: painting is then a single table lookup per pixel.
        gray = np.arange(256, dtype=np.float32)[:, None]
        rows = [np.clip(gray * (1 - alpha) + np.asarray(c, np.float32) * alpha + 0.5, 0, 255) for c in colors]
        rows.append(np.repeat(gray, 3, axis=1))
        self.lut = np.concatenate(rows).astype(np.uint8)  # ((C + 1) * 256, 3)
        self.row_of = np.full(256, len(colors), np.intp)
        self.row_of[: len(colors)] = np.arange(len(colors))
        self.legend, self.legend_alpha = _legend_box(list(classes), colors, width, height)

    def paint(self, gray_band: np.ndarray, label_band: np.ndarray, y0: int) -> np.ndarray:
        """RGB overlay rows for image rows ``y0 : y0 + len(gray_band)``.

        Parameters
        ----------
        gray_band : uint8 (n, W); label_band : uint8 (n, W), class ids or 255.

        Returns
        -------
        uint8 (n, W, 3).
        """
        index = self.row_of[label_band]
        index <<= 8
        index += gray_band
        out = np.take(self.lut, index, axis=0)
        self._draw_legend(out, y0)
        return out

    def _draw_legend(self, band: np.ndarray, y0: int) -> None:
        lh, lw = self.legend.shape[:2]
        r0, r1 = max(y0, 0), min(y0 + band.shape[0], lh)
        if r0 >= r1:
            return
        w = min(lw, band.shape[1])
        target = band[r0 - y0 : r1 - y0, :w].astype(np.float32)
        a = self.legend_alpha[r0:r1, :w, None]
        target = self.legend[r0:r1, :w].astype(np.float32) * a + target * (1 - a)
        band[r0 - y0 : r1 - y0, :w] = np.clip(target + 0.5, 0, 255).astype(np.uint8)


def _legend_box(
    classes: list[str], colors: Sequence[Sequence[int]], width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """A white, slightly transparent box with one colour swatch and name per class, sized to the image."""
    scale = float(np.clip(min(width, height) / 1400.0, 0.35, 2.5))
    thickness = max(1, int(round(scale * 1.6)))
    (_, text_h), base = cv2.getTextSize("Ag", _FONT, scale, thickness)
    line = text_h + base + int(10 * scale) + 4
    pad = max(4, int(8 * scale))
    swatch = line - max(4, int(8 * scale))
    text_w = max(cv2.getTextSize(f"{i} {n}", _FONT, scale, thickness)[0][0] for i, n in enumerate(classes))
    box_w = min(width, pad * 3 + swatch + text_w)
    box_h = min(height, pad * 2 + line * len(classes))
    box = np.full((box_h, box_w, 3), 255, np.uint8)
    for i, (name, colour) in enumerate(zip(classes, colors, strict=True)):
        top = pad + i * line + (line - swatch) // 2
        rgb = tuple(int(c) for c in colour)
        cv2.rectangle(box, (pad, top), (pad + swatch, top + swatch), rgb, -1)
        cv2.rectangle(box, (pad, top), (pad + swatch, top + swatch), (0, 0, 0), 1)
        baseline = pad + i * line + (line + text_h) // 2
        cv2.putText(
            box, f"{i} {name}", (pad * 2 + swatch, baseline), _FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA
        )
    alpha = np.full((box_h, box_w), 0.85, np.float32)
    return box, alpha


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
    return np.bincount(labels.ravel(), minlength=256)[:num_classes].astype(np.int64)


SUMMARY_NAME = "summary.csv"


def summary_rows(results: Sequence[Mapping], classes: Sequence[str]) -> list[dict]:
    """One flat row per input for summary.csv; failed inputs keep their reason."""
    rows = []
    for r in results:
        row = {
            "input": r.get("input"),
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
        row["mask"] = (r.get("outputs") or {}).get("mask", "")
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
