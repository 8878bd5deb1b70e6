"""Benchmark figures: throughput per variant and size, per-class accuracy deltas, confusion matrices.

matplotlib is imported inside the functions (object-oriented ``Figure`` API with the Agg canvas, no
global backend switch), so the base install can run a benchmark and write its tables without it; PNGs are
rendered into memory and written atomically.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from semphase.benchmarks.tables import display_name
from semphase.imageio import write_bytes_atomic

THROUGHPUT_NAME = "throughput.png"
DELTAS_NAME = "accuracy_deltas.png"

_COLORS = {"pytorch": "#7f7f7f", "fp32": "#1f77b4", "fp16": "#2ca02c", "int8": "#d62728"}


def _figure(width_in: float, height_in: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:  # missing, or a compiled part that does not load
        raise ModuleNotFoundError(
            "matplotlib is needed for the figures (pip install 'semphase[train]')"
        ) from None
    return Figure(figsize=(width_in, height_in), layout="constrained")


def _save(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    write_bytes_atomic(path, buffer.getvalue())
    return Path(path)


def _grouped_bars(ax, groups: list[str], series: dict[str, list[float | None]], fmt: str | None) -> None:
    """Bars of every series side by side within each group; missing values leave a gap."""
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        heights = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
        bars = ax.bar(
            x + (k - (n - 1) / 2) * width,
            np.nan_to_num(heights),
            width,
            label=display_name(name),
            color=_COLORS.get(name),
        )
        if fmt:
            labels = ["" if np.isnan(h) else format(h, fmt) for h in heights]
            ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
    ax.set_xticks(x, groups)


def plot_throughput(speed_rows: list[dict], path: str | os.PathLike) -> Path:
    """Megapixels per second of end-to-end tiled segmentation, bars per variant, grouped by image size.

    Parameters
    ----------
    speed_rows : report ``speed`` rows (``variant``, ``width``, ``height``, ``mpix_per_s``, ``status``).
    path : PNG to write.
    """
    ok = [r for r in speed_rows if r.get("status") == "ok" and r.get("mpix_per_s") is not None]
    sizes = sorted({(r["width"], r["height"]) for r in ok}, key=lambda s: s[0] * s[1])
    variants = list(dict.fromkeys(r["variant"] for r in ok))
    lookup = {(r["variant"], r["width"], r["height"]): r["mpix_per_s"] for r in ok}
    series = {v: [lookup.get((v, w, h)) for w, h in sizes] for v in variants}
    fig = _figure(max(5.0, 1.6 * len(sizes) + 2.5), 3.8)
    ax = fig.add_subplot()
    _grouped_bars(ax, [f"{w} x {h}" for w, h in sizes], series, ".2f")
    ax.set_ylabel("megapixels / s")
    ax.set_xlabel("micrograph size (px)")
    ax.set_title("End-to-end tiled segmentation throughput (higher is better)")
    if series:
        ax.legend(fontsize=8)
    ax.margins(y=0.15)
    return _save(fig, path)


def plot_accuracy_deltas(
    accuracy_rows: list[dict], classes: list[str], reference: str, path: str | os.PathLike
) -> Path:
    """Per-class IoU, Dice and BF1 differences of each variant against ``reference`` (one panel each).

    Parameters
    ----------
    accuracy_rows : report ``accuracy`` rows with ``delta_vs_<reference>`` per-class lists.
    classes : class names in id order.
    reference : ``"pytorch"`` or ``"fp32"``.
    path : PNG to write.
    """
    rows = [
        r
        for r in accuracy_rows
        if r.get("summary") is not None and r["variant"] != reference and r.get(f"delta_vs_{reference}")
    ]
    fig = _figure(max(6.0, 1.1 * len(classes) + 3.0), 7.5)
    axes = fig.subplots(3, 1, sharex=True)
    for ax, (metric, label) in zip(axes, (("iou", "IoU"), ("dice", "Dice"), ("bf1", "BF1")), strict=True):
        series = {r["variant"]: list(r[f"delta_vs_{reference}"][metric]) for r in rows}
        _grouped_bars(ax, list(classes), series, None)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_ylabel(f"Δ {label}")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_title(f"Per-class difference against {display_name(reference)} (held-out images)")
    if rows:
        axes[0].legend(fontsize=8)
    axes[-1].tick_params(axis="x", labelrotation=20)
    return _save(fig, path)


def plot_confusion_matrix(result: dict, path: str | os.PathLike) -> Path:
    """Row-normalized confusion matrix of one variant's scoring result (the evaluation figure)."""
    from semphase.evaluation.report import plot_confusion

    return plot_confusion(result, path)
