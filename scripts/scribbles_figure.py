"""Draw docs/scribbles.png: the sparse-label format in four panes, from synthetic data and a model.

    .venv/bin/python scripts/scribbles_figure.py MODEL.onnx docs/scribbles.png

Panes (one 384 px region of a ``shifted``-domain micrograph): the micrograph; strokes over 2 % of its
pixels painted in the class colours; the label file as saved (RGBA, transparent outside the strokes,
shown on a checkerboard); and the label image ``semphase suggest`` pre-fills with MODEL's phases where it
is sure (transparent elsewhere).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from semphase.data.labels import colour_labels, read_labels
from semphase.data.overlay import overlay
from semphase.data.synth import synth_micrograph
from semphase.data.synth.scribbles import scribble_labels
from semphase.imageio import write_image
from semphase.phases import DEFAULT_TABLE, IGNORE
from semphase.runtime import load_model
from semphase.runtime.suggest import SuggestOptions, model_table, suggest

SIDE = 384


def checkerboard(shape: tuple[int, int], cell: int = 12) -> np.ndarray:
    yy, xx = np.indices(shape)
    light = ((yy // cell + xx // cell) % 2).astype(bool)
    out = np.where(light[..., None], 235, 200).astype(np.uint8)
    return np.repeat(out, 3, axis=2)


def composite(rgba: np.ndarray) -> np.ndarray:
    """RGBA over a checkerboard (what a paint program shows)."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255
    board = checkerboard(rgba.shape[:2]).astype(np.float32)
    return (rgba[..., :3] * alpha + board * (1 - alpha)).astype(np.uint8)


def caption(image: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((28, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, image])


def main(model_path: str, out: str) -> None:
    image, truth = synth_micrograph(768, 1024, 3007, 800, "shifted")
    y, x = 192, 320
    crop, crop_truth = image[y : y + SIDE, x : x + SIDE], truth[y : y + SIDE, x : x + SIDE]
    strokes = scribble_labels(crop_truth, 0.02, 1, DEFAULT_TABLE.num_classes)
    painted = overlay(crop, strokes, DEFAULT_TABLE.colors, alpha=1.0)
    model = load_model(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        write_image(Path(tmp) / "in" / "field.png", crop)
        suggest(
            model,
            [Path(tmp) / "in" / "field.png"],
            ["field"],
            Path(tmp) / "s",
            SuggestOptions(n=1, region=SIDE),
        )
        prefill = read_labels(Path(tmp) / "s" / "masks" / "field__y0_x0.png", model_table(model))
    gap = np.full((SIDE + 28, 8, 3), 255, np.uint8)
    panes = [
        caption(cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB), "micrograph"),
        caption(painted, "strokes in the class colours (2 %)"),
        caption(composite(colour_labels(strokes, DEFAULT_TABLE)), "the label file: transparent = unlabelled"),
        caption(
            composite(colour_labels(prefill, DEFAULT_TABLE)),
            f"suggest's pre-fill ({np.mean(prefill != IGNORE):.0%} sure)",
        ),
    ]
    row = np.hstack([p if i == 0 else np.hstack([gap, p]) for i, p in enumerate(panes)])
    write_image(out, row)


if __name__ == "__main__":
    main(*sys.argv[1:3])
