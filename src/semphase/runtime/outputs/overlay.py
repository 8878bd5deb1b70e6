"""The overlay: a micrograph's bands coloured by phase, as palette indices, with a legend box.

Pure numpy/OpenCV; :mod:`semphase.runtime.outputs.sink` streams the bands into the file.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

_FONT = cv2.FONT_HERSHEY_SIMPLEX


class OverlayPainter:
    """Colours bands of a micrograph by their labels, as an 8-bit palette image with a legend box.

    The overlay is a palette PNG: every (phase, grey level) pair is one palette entry, so a pixel is one
    byte instead of three, which makes the file a third the size and three times faster to compress.
    With C phases the grey is kept at ``(256 - C - 2) // (C + 1)`` levels (41 for five phases), steps
    that the colour tint and the shot noise hide.

    Parameters
    ----------
    classes : class names in id order; colors : one (r, g, b) per class (at most 60).
    width, height : the full image size (the legend is scaled to it).
    alpha : weight of the class colour; pixels labelled 255 (no data) keep the micrograph's grey.

    Attributes
    ----------
    palette : uint8 (256, 3), RGB entries for the PNG's PLTE chunk.
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
        groups = len(colors) + 1  # one per phase, and one uncoloured for no data / unknown ids
        levels = (256 - len(colors) - 2) // groups
        if levels < 4:
            raise ValueError(f"too many classes ({len(colors)}) for a palette overlay")
        self.alpha = alpha
        grey = (np.arange(levels, dtype=np.float32) + 0.5) * (256.0 / levels)
        palette = np.zeros((256, 3), np.float32)
        for g in range(groups):
            tint = np.asarray(colors[g], np.float32) if g < len(colors) else None
            block = (
                grey[:, None] * (1 - alpha) + tint * alpha
                if tint is not None
                else np.repeat(grey[:, None], 3, 1)
            )
            palette[g * levels : (g + 1) * levels] = block
        # The legend's own entries follow: white, black, then the pure class colours.
        legend_base = groups * levels
        palette[legend_base] = 255
        palette[legend_base + 1] = 0
        palette[legend_base + 2 : legend_base + 2 + len(colors)] = np.asarray(colors, np.float32)
        self.palette = np.clip(palette + 0.5, 0, 255).astype(np.uint8)
        # index = first entry of the pixel's group + its grey level: one lookup in a (group, grey) table.
        level_of = (np.arange(256) * levels // 256).astype(np.intp)
        table = np.arange(groups)[:, None] * levels + level_of[None, :]
        self.table = table.astype(np.uint8).ravel()  # (groups * 256,)
        self.group_of = np.full(256, len(colors), np.uint16)
        self.group_of[: len(colors)] = np.arange(len(colors))
        self.legend = _legend_box(list(classes), width, height, legend_base)

    def paint(self, gray_band: np.ndarray, label_band: np.ndarray, y0: int) -> np.ndarray:
        """Palette indices of the overlay for image rows ``y0 : y0 + len(gray_band)``.

        Parameters
        ----------
        gray_band : uint8 (n, W); label_band : uint8 (n, W), class ids or 255.

        Returns
        -------
        uint8 (n, W): indices into :attr:`palette`.
        """
        out = np.empty(label_band.shape, np.uint8)
        step = max(1, _PAINT_PIXELS // max(label_band.shape[1], 1))
        for r in range(0, label_band.shape[0], step):  # the uint16 index of a whole band would be 2 B/px
            index = self.group_of[label_band[r : r + step]]
            index <<= 8
            index += gray_band[r : r + step]
            np.take(self.table, index, out=out[r : r + step])
        lh, lw = self.legend.shape
        r0, r1 = y0, min(y0 + out.shape[0], lh)
        if r0 < r1:
            w = min(lw, out.shape[1])
            out[: r1 - r0, :w] = self.legend[r0:r1, :w]
        return out

    def to_rgb(self, indices: np.ndarray) -> np.ndarray:
        """RGB of palette indices (what a viewer shows), uint8 (..., 3)."""
        return self.palette[indices]


#: Pixels painted per step: the uint16 lookup index of a 65536-pixel-wide band would otherwise be 60 MB.
_PAINT_PIXELS = 1 << 20


def _legend_box(classes: list[str], width: int, height: int, base: int) -> np.ndarray:
    """Palette indices of a white box with a swatch and the name of each class, sized to the image.

    ``base`` is the palette entry of white; ``base + 1`` is black and ``base + 2 + i`` class i's colour.
    Text is drawn without anti-aliasing, which a palette could not show.
    """
    scale = float(np.clip(min(width, height) / 2800.0, 0.35, 1.6))
    thickness = max(1, int(round(scale * 1.6)))
    (_, text_h), baseline_h = cv2.getTextSize("Ag", _FONT, scale, thickness)
    line = text_h + baseline_h + int(10 * scale) + 4
    pad = max(4, int(8 * scale))
    swatch = line - max(4, int(8 * scale))
    text_w = max(cv2.getTextSize(f"{i} {n}", _FONT, scale, thickness)[0][0] for i, n in enumerate(classes))
    box_w = min(width, pad * 3 + swatch + text_w)
    box_h = min(height, pad * 2 + line * len(classes))
    box = np.full((box_h, box_w), base, np.uint8)
    for i, name in enumerate(classes):
        top = pad + i * line + (line - swatch) // 2
        cv2.rectangle(box, (pad, top), (pad + swatch, top + swatch), base + 2 + i, -1)
        cv2.rectangle(box, (pad, top), (pad + swatch, top + swatch), base + 1, 1)
        baseline = pad + i * line + (line + text_h) // 2
        origin = (pad * 2 + swatch, baseline)
        cv2.putText(box, f"{i} {name}", origin, _FONT, scale, base + 1, thickness, cv2.LINE_8)
    return box
