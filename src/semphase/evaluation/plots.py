"""Evaluation figures: confusion matrix, class frequency vs IoU, overlay panels of best and worst images.

matplotlib is imported inside the functions and used through its object-oriented API (``Figure`` with
the Agg canvas), so importing this module costs nothing, no global backend is switched, and the base
install (without matplotlib) can still import :mod:`semphase.evaluation.report`. PNGs are rendered into
memory and written atomically.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from semphase.data.overlay import overlay
from semphase.imageio import write_bytes_atomic
from semphase.phases import IGNORE, ClassTable

#: Panels of the overlay figure are shrunk so their longer side is at most this many pixels.
PANEL_MAX_SIDE = 768


def _require_matplotlib() -> None:
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:  # missing, or broken (e.g. a compiled part that does not load)
        raise ModuleNotFoundError(
            "matplotlib is needed for the evaluation figures (pip install 'semphase[train]')"
        ) from None


def _figure(width_in: float, height_in: float):
    _require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout="constrained")


def _save(fig, path: str | os.PathLike, dpi: int = 120) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    write_bytes_atomic(path, buffer.getvalue())
    return Path(path)


def row_percentages(result: dict) -> np.ndarray:
    """Confusion matrix as % of each truth class's scored pixels, float64 (C, C); NaN rows for absent classes.

    Truth pixels that got no prediction count in the row total (so a row may sum to less than 100).
    """
    confusion = np.asarray(result["confusion"], dtype=np.float64).reshape(len(result["classes"]), -1)
    totals = result.get("per_class", {}).get("truth_pixels")
    totals = confusion.sum(axis=1) if totals is None else np.asarray(totals, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals[:, None] > 0, 100.0 * confusion / totals[:, None], np.nan)


def plot_confusion(result: dict, path: str | os.PathLike) -> Path:
    """Row-normalized confusion matrix (% of each truth class), annotated, as a PNG.

    Parameters
    ----------
    result : scoring-result dict.
    path : PNG to write (atomically).

    Returns
    -------
    The path written.
    """
    names = result["classes"]
    pct = row_percentages(result)
    c = len(names)
    side = max(4.0, 0.9 * c + 2.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(np.nan_to_num(pct, nan=0.0), cmap="Blues", vmin=0.0, vmax=100.0)
    fig.colorbar(image, ax=ax, label="% of truth class", shrink=0.8)
    for i in range(c):
        for j in range(c):
            if np.isnan(pct[i, j]):
                continue
            color = "white" if pct[i, j] > 55 else "black"
            ax.text(j, i, f"{pct[i, j]:.1f}", ha="center", va="center", color=color, fontsize=9)
    ax.set_xticks(range(c), names, rotation=35, ha="right")
    ax.set_yticks(range(c), names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    n = result.get("images", len(result.get("per_image", [])))
    ax.set_title(f"Confusion matrix, % of truth pixels ({n} images)")
    return _save(fig, path)


def frequency_iou_points(result: dict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Classes with a positive pixel frequency and an IoU: names, frequencies (0..1), IoUs."""
    names, freqs, ious = [], [], []
    per_class = result.get("per_class", {})
    freq_list = per_class.get("frequency") or [None] * len(result["classes"])
    for name, freq, iou in zip(result["classes"], freq_list, per_class.get("iou", []), strict=False):
        if freq is not None and freq > 0 and iou is not None:
            names.append(name)
            freqs.append(freq)
            ious.append(iou)
    return names, np.asarray(freqs, dtype=np.float64), np.asarray(ious, dtype=np.float64)


def log_frequency_correlation(freqs: np.ndarray, ious: np.ndarray) -> float | None:
    """Pearson r between log10(pixel frequency) and IoU; None for fewer than 3 classes or no spread."""
    if freqs.size < 3:
        return None
    x = np.log10(freqs)
    if np.ptp(x) == 0 or np.ptp(ious) == 0:
        return None
    return float(np.corrcoef(x, ious)[0, 1])


def plot_frequency_vs_iou(result: dict, path: str | os.PathLike) -> Path:
    """Scatter of class pixel frequency (log x) against class IoU, labelled, as a PNG.

    The title states Pearson's r between log10(frequency) and IoU when at least three classes occur: the
    study's observation that rare phases score worse.
    """
    names, freqs, ious = frequency_iou_points(result)
    fig = _figure(6.0, 4.5)
    from matplotlib.ticker import FuncFormatter

    ax = fig.add_subplot()
    if names:
        ax.scatter(100.0 * freqs, ious, s=40, color="tab:blue", zorder=3)
        for name, f, v in zip(names, freqs, ious, strict=True):
            right = f > 0.3  # labels of the most frequent classes go left, inside the axes
            offset, align = ((-5, 4), "right") if right else ((5, 4), "left")
            ax.annotate(name, (100.0 * f, v), textcoords="offset points", xytext=offset, ha=align, fontsize=9)
        ax.set_xscale("log")
        lo, hi = 100.0 * freqs.min(), 100.0 * freqs.max()
        ax.set_xlim(lo / 3.0, min(hi * 3.0, 150.0))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}%"))
    else:
        ax.text(0.5, 0.5, "no class with pixels and an IoU", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("share of the scored truth pixels")
    ax.set_ylabel("IoU")
    ax.grid(True, which="both", alpha=0.3)
    r = log_frequency_correlation(freqs, ious)
    ax.set_title("Class frequency vs IoU" + ("" if r is None else f" (Pearson r on log frequency: {r:.2f})"))
    return _save(fig, path)


# ------------------------------------------------------------------------------------ overlays


@dataclass
class OverlayItem:
    """One image to show: ``tag`` (e.g. ``"best-1"``), its name, the micrograph (uint8 (H, W)), truth and
    prediction labels (uint8 (H, W), 255 = ignored / no data) and its scores (None when left out)."""

    tag: str
    name: str
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray
    miou: float | None = None
    mbf1: float | None = None


def _shrink(item: OverlayItem) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = item.truth.shape
    scale = PANEL_MAX_SIDE / max(h, w)
    if scale >= 1.0:
        return item.image, item.truth, item.pred
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return (
        cv2.resize(item.image, size, interpolation=cv2.INTER_AREA),
        cv2.resize(item.truth, size, interpolation=cv2.INTER_NEAREST),
        cv2.resize(item.pred, size, interpolation=cv2.INTER_NEAREST),
    )


def _error_map(image: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Gray micrograph with wrong pixels in red and ignored pixels in blue-gray, uint8 (H, W, 3)."""
    rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    rgb = (rgb.astype(np.uint16) * 3 // 5).astype(np.uint8)  # dim so the marks stand out
    ignored = truth == IGNORE
    rgb[(pred != truth) & ~ignored] = (230, 30, 30)
    rgb[ignored] = (110, 120, 140)
    return rgb


def _file_stem(name: str) -> str:
    stem = Path(name.replace("\\", "/")).with_suffix("").as_posix().replace("/", "__")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", stem)[:120] or "image"


def _label_rgb(labels: np.ndarray, table: ClassTable) -> np.ndarray:
    lut = table.color_lut()
    lut[IGNORE] = (110, 120, 140)
    return lut[labels]


def write_overlay_panels(
    items: list[OverlayItem], table: ClassTable, out_dir: str | os.PathLike
) -> list[Path]:
    """One figure per item: micrograph | truth | prediction | prediction overlay | errors.

    Parameters
    ----------
    items : images to draw (e.g. the best and worst by mIoU).
    table : class names and colours (legend).
    out_dir : folder for ``overlay_<tag>_<name>.png`` (created if needed).

    Returns
    -------
    The paths written, in the order of ``items``.
    """
    _require_matplotlib()
    from matplotlib.patches import Patch

    out = Path(out_dir)
    written = []
    for item in items:
        if item.image.dtype != np.uint8 or item.image.ndim != 2:
            raise ValueError(f"{item.name}: the micrograph must be uint8 (H, W), got {item.image.dtype}")
        if item.truth.shape != item.image.shape or item.pred.shape != item.image.shape:
            raise ValueError(f"{item.name}: micrograph, truth and prediction must have one shape")
        image, truth, pred = _shrink(item)
        h, w = truth.shape
        panel_w = 3.2
        fig = _figure(5 * panel_w, panel_w * h / w + 1.1)
        panes = [
            ("micrograph", cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)),
            ("truth", _label_rgb(truth, table)),
            ("prediction", _label_rgb(pred, table)),
            ("prediction overlay", overlay(image, pred, table.colors)),
            ("errors (red), ignored (gray)", _error_map(image, truth, pred)),
        ]
        axes = fig.subplots(1, len(panes))
        for ax, (title, pane) in zip(axes, panes, strict=True):
            ax.imshow(pane, interpolation="nearest")
            ax.set_title(title, fontsize=10)
            ax.set_axis_off()
        scores = []
        if item.miou is not None:
            scores.append(f"mIoU {item.miou:.3f}")
        if item.mbf1 is not None:
            scores.append(f"mBF1 {item.mbf1:.3f}")
        fig.suptitle(f"{item.tag}: {item.name}" + (f"  ({', '.join(scores)})" if scores else ""), fontsize=11)
        handles = [
            Patch(facecolor=np.array(p.color) / 255.0, edgecolor="black", label=p.name) for p in table.phases
        ]
        fig.legend(
            handles=handles, loc="outside lower center", ncol=min(len(handles), 8), fontsize=9, frameon=False
        )
        written.append(_save(fig, out / f"overlay_{item.tag}_{_file_stem(item.name)}.png", dpi=110))
    return written
