"""``training_curves.png``: losses and validation mIoU per epoch (matplotlib, Agg backend)."""

from __future__ import annotations

import io
import math
from pathlib import Path

from semphase.imageio import write_bytes_atomic


def plot_training_curves(
    rows: list[dict], class_names: list[str], path: Path, freeze_epochs: int = 0
) -> None:
    """Write the curves of ``rows`` (history.csv rows) to ``path`` atomically.

    Left: train and validation loss. Right: validation mIoU and the per-class IoU (thin lines). A shaded
    band marks the epochs with a frozen encoder.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    loss_ax, iou_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train loss", ms=3)
    loss_ax.plot(epochs, [r["val_loss"] for r in rows], "s-", label="val loss", ms=3)
    loss_ax.set(xlabel="epoch", ylabel="0.6 CE + 0.4 Dice", title="Loss")
    iou_ax.plot(epochs, [r["val_miou"] for r in rows], "o-", color="black", lw=2, ms=4, label="val mIoU")
    for name in class_names:
        values = [r.get(f"iou_{name}", math.nan) for r in rows]
        iou_ax.plot(epochs, values, lw=1, alpha=0.8, label=name)
    iou_ax.set(xlabel="epoch", ylabel="IoU", title="Validation IoU", ylim=(0, 1))
    for ax in (loss_ax, iou_ax):
        if freeze_epochs > 0 and epochs:
            ax.axvspan(0.5, freeze_epochs + 0.5, color="0.9", zorder=0, label="encoder frozen")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_atomic(path, buf.getvalue())
