"""Colour overlays of label images on micrographs, and image | mask | overlay panels.

OpenCV only (no matplotlib), so the base install can draw them on a microscope PC.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from semphase.phases import IGNORE, ClassTable

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BACKGROUND = (255, 255, 255)
_INK = (0, 0, 0)
_GAP = 6


def _color_lut(colors: Sequence[Sequence[int]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(256, 3) uint8 RGB lookup and (256,) bool 'is coloured'; ids beyond ``colors`` stay uncoloured."""
    palette = np.asarray(colors, dtype=np.int64).reshape(-1, 3)
    if len(palette) > IGNORE or palette.min(initial=0) < 0 or palette.max(initial=0) > 255:
        raise ValueError("colors must be at most 255 RGB triples in 0..255")
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = palette
    coloured = np.zeros(256, dtype=bool)
    coloured[: len(palette)] = True
    return lut, coloured


def _as_rgb(image_u8: np.ndarray) -> np.ndarray:
    if image_u8.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image_u8.dtype} (convert with imageio.to_uint8)")
    if image_u8.ndim == 2:
        return cv2.cvtColor(image_u8, cv2.COLOR_GRAY2RGB)
    if image_u8.ndim == 3 and image_u8.shape[2] == 3:
        return image_u8.copy()
    raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image_u8.shape}")


def overlay(
    image_u8: np.ndarray,
    labels: np.ndarray,
    colors: Sequence[Sequence[int]] | np.ndarray,
    alpha: float = 0.45,
) -> np.ndarray:
    """Blend class colours onto a micrograph.

    Parameters
    ----------
    image_u8 : uint8, shape (H, W) gray or (H, W, 3) RGB.
    labels : uint8, shape (H, W): class ids; 255 (and ids without a colour) are left uncoloured.
    colors : RGB triples in class-id order, e.g. ``ClassTable.colors``.
    alpha : weight of the class colour, 0..1.

    Returns
    -------
    uint8, shape (H, W, 3), RGB.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in 0..1, got {alpha}")
    rgb = _as_rgb(image_u8)
    if labels.shape != rgb.shape[:2] or labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8 {rgb.shape[:2]}, got {labels.dtype} {labels.shape}")
    lut, coloured = _color_lut(colors)
    blended = cv2.addWeighted(rgb, 1.0 - alpha, lut[labels], alpha, 0.0)
    keep = ~coloured[labels]
    blended[keep] = rgb[keep]
    return blended


def _fit(image: np.ndarray, labels: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Shrink a large micrograph and its labels so that the longer side is at most ``max_side``."""
    h, w = labels.shape
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image, labels
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return (
        cv2.resize(image, size, interpolation=cv2.INTER_AREA),
        cv2.resize(labels, size, interpolation=cv2.INTER_NEAREST),
    )


def _text_height(scale: float) -> int:
    (_, h), baseline = cv2.getTextSize("Ag", _FONT, scale, 1)
    return h + baseline


def _legend(table: ClassTable, width: int, scale: float) -> np.ndarray:
    """Rows of colour swatches with class names, wrapped to ``width``."""
    line = _text_height(scale) + 8
    swatch = line - 10
    items = []
    for phase in table.phases:
        (tw, _), _ = cv2.getTextSize(f"{phase.id} {phase.name}", _FONT, scale, 1)
        items.append((phase, swatch + 6 + tw + 18))
    rows: list[list[tuple]] = [[]]
    used = 0
    for item in items:
        if rows[-1] and used + item[1] > width - 2 * _GAP:
            rows.append([])
            used = 0
        rows[-1].append(item)
        used += item[1]
    canvas = np.full((line * len(rows) + 4, width, 3), _BACKGROUND, dtype=np.uint8)
    for r, row in enumerate(rows):
        x, y = _GAP, r * line + 4
        for phase, item_width in row:
            cv2.rectangle(canvas, (x, y + 3), (x + swatch, y + 3 + swatch), phase.color, -1)
            cv2.rectangle(canvas, (x, y + 3), (x + swatch, y + 3 + swatch), _INK, 1)
            org = (x + swatch + 6, y + line - 8)
            cv2.putText(canvas, f"{phase.id} {phase.name}", org, _FONT, scale, _INK, 1, cv2.LINE_AA)
            x += item_width
    return canvas


def _caption(text: str, width: int, scale: float, thickness: int = 1) -> np.ndarray:
    height = _text_height(scale) + 10
    canvas = np.full((height, width, 3), _BACKGROUND, dtype=np.uint8)
    # Long titles (deep relative paths) are cut rather than overflowing the panel.
    while len(text) > 4 and cv2.getTextSize(text, _FONT, scale, thickness)[0][0] > width - 2 * _GAP:
        text = "..." + text[4:]
    cv2.putText(canvas, text, (_GAP, height - 8), _FONT, scale, _INK, thickness, cv2.LINE_AA)
    return canvas


def panel(
    image_u8: np.ndarray,
    labels: np.ndarray,
    table: ClassTable,
    title: str,
    alpha: float = 0.45,
    max_side: int = 768,
) -> np.ndarray:
    """Micrograph | colour mask | overlay side by side, with a title and a class legend.

    Parameters
    ----------
    image_u8 : uint8, shape (H, W) gray or (H, W, 3) RGB.
    labels : uint8, shape (H, W): class ids; 255 is drawn black in the mask and uncoloured in the overlay.
    table : class names and colours.
    title : drawn above the panes (e.g. the sample name).
    alpha : overlay colour weight.
    max_side : larger micrographs are shrunk so that each pane's longer side is at most this.

    Returns
    -------
    uint8, shape (H', W', 3), RGB; write it with :func:`semphase.imageio.write_image`.
    """
    rgb = _as_rgb(image_u8)
    if labels.shape != rgb.shape[:2] or labels.dtype != np.uint8:
        raise ValueError(f"labels must be uint8 {rgb.shape[:2]}, got {labels.dtype} {labels.shape}")
    rgb, labels = _fit(rgb, labels, max_side)
    h, w = labels.shape
    mask_rgb = table.color_lut()[labels]
    panes = [rgb, mask_rgb, overlay(rgb, labels, table.colors, alpha)]
    width = 3 * w + 4 * _GAP
    scale = 0.5 if width >= 600 else 0.35
    row = np.full((h, width, 3), _BACKGROUND, dtype=np.uint8)
    captions = np.full((_text_height(scale) + 10, width, 3), _BACKGROUND, dtype=np.uint8)
    for i, (pane, name) in enumerate(zip(panes, ("micrograph", "mask", "overlay"), strict=True)):
        x = _GAP + i * (w + _GAP)
        row[:, x : x + w] = pane
        captions[:, x : x + w] = _caption(name, w, scale)
    parts = [_caption(title, width, scale * 1.2, 1), captions, row, _legend(table, width, scale)]
    return np.vstack(parts + [np.full((_GAP, width, 3), _BACKGROUND, dtype=np.uint8)])
