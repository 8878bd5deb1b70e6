"""Feature (particle) measurements of one phase in one field, as ASTM E1245 defines them.

Features are the 8-connected components of a phase (OpenCV's connected components with statistics).
Per feature: area, equivalent circle diameter ECD = sqrt(4 A / pi), Feret diameters (the largest and the
smallest caliper width of the feature's convex hull, pixel corners included), aspect ratio Feret max /
Feret min, roundness 4 A / (pi Feret_max^2). Per phase and field: the number of features, N_A (features
per unit area, with features that touch the field border counted as one half: the border cuts them, so on
average half of each belongs to this field), and N_L (features entered per unit length of horizontal and
vertical test lines through every row and column), from which the mean free path
lambda = (1 - A_A) / N_L. Features smaller than ``min_pixels`` are noise: left out of every count and
measurement, and counted themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class PhaseFeatures:
    """The features of one phase in one field (lengths in pixels; the caller scales them)."""

    count: int
    #: Features touching the field border (counted 1/2 in :attr:`n_a_count`).
    touching_border: int
    #: Features smaller than the minimum size, left out.
    too_small: int
    #: count - touching_border / 2: the numerator of N_A.
    n_a_count: float
    #: Feature entries along every row and every column of the field.
    intercepts: int
    #: Total test-line length in pixels (rows x width + columns x height, analysed pixels only).
    line_length: float
    #: One row per kept feature: area_px, ecd_px, feret_max_px, feret_min_px, aspect_ratio, roundness,
    #: touches_border, centroid_x, centroid_y.
    rows: list[dict]


def _feret(points: np.ndarray) -> tuple[float, float]:
    """(max, min) caliper widths of a convex polygon given by its hull points (float, N x 2)."""
    if len(points) == 1:
        return 0.0, 0.0
    diffs = points[:, None, :] - points[None, :, :]
    feret_max = float(np.sqrt((diffs**2).sum(-1)).max())
    if len(points) == 2:
        return feret_max, 0.0
    widths = []
    for i in range(len(points)):
        a, b = points[i], points[(i + 1) % len(points)]
        edge = b - a
        length = float(np.hypot(*edge))
        if length == 0:
            continue
        normal = np.array([-edge[1], edge[0]]) / length
        widths.append(float(np.abs((points - a) @ normal).max()))
    return feret_max, min(widths) if widths else 0.0


def _pixel_corners(component: np.ndarray) -> np.ndarray:
    """The four corners of each boundary pixel of a binary component: their convex hull is the hull of
    the pixels as squares, so a 1-pixel feature measures 1 x 1 (and sqrt 2 across)."""
    contours, _ = cv2.findContours(component.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    xy = np.concatenate([c.reshape(-1, 2) for c in contours], axis=0)
    corners = np.concatenate([xy + (dx, dy) for dx in (0, 1) for dy in (0, 1)], axis=0)
    return corners.astype(np.float32)


def measure_phase(labels: np.ndarray, class_id: int, min_pixels: int = 4, valid: np.ndarray | None = None):
    """Measure the features of ``class_id`` in a label image (uint8, 255 = no data).

    Parameters
    ----------
    labels : (H, W) uint8 class ids.
    min_pixels : features with fewer pixels are left out (and counted in ``too_small``).
    valid : (H, W) bool, the analysed pixels (default: every pixel that is not 255).

    Returns
    -------
    :class:`PhaseFeatures`.
    """
    if valid is None:
        valid = labels != 255
    mask = ((labels == class_id) & valid).astype(np.uint8)
    count, components, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    h, w = mask.shape
    rows: list[dict] = []
    too_small = touching = 0
    for index in range(1, count):
        x, y, bw, bh, area = (int(v) for v in stats[index])
        if area < min_pixels:
            too_small += 1
            continue
        border = x == 0 or y == 0 or x + bw == w or y + bh == h
        touching += border
        piece = components[y : y + bh, x : x + bw] == index
        hull = cv2.convexHull(_pixel_corners(piece)).reshape(-1, 2).astype(np.float64)
        feret_max, feret_min = _feret(hull)
        ecd = float(np.sqrt(4.0 * area / np.pi))
        rows.append(
            {
                "area_px": area,
                "ecd_px": ecd,
                "feret_max_px": feret_max,
                "feret_min_px": feret_min,
                "aspect_ratio": feret_max / feret_min if feret_min > 0 else None,
                "roundness": 4.0 * area / (np.pi * feret_max**2) if feret_max > 0 else None,
                "touches_border": bool(border),
                "centroid_x": float(centroids[index][0]),
                "centroid_y": float(centroids[index][1]),
            }
        )
    kept = len(rows)
    intercepts = _entries(mask, axis=1) + _entries(mask, axis=0)
    line_length = float(valid.sum(axis=1).sum() + valid.sum(axis=0).sum())
    return PhaseFeatures(
        count=kept,
        touching_border=touching,
        too_small=too_small,
        n_a_count=kept - touching / 2.0,
        intercepts=intercepts,
        line_length=line_length,
        rows=rows,
    )


def _entries(mask: np.ndarray, axis: int) -> int:
    """How many times lines along ``axis`` (1: rows, 0: columns) enter the phase (0 -> 1 steps, and a
    line that starts inside it)."""
    m = mask.astype(np.int8)
    steps = np.diff(m, axis=axis)
    first = m[:, 0] if axis == 1 else m[0, :]
    return int((steps == 1).sum() + first.sum())


def ecd_percentiles(ecds: np.ndarray) -> dict:
    """D10, D50 and D90 of equivalent circle diameters (None for no features)."""
    if ecds.size == 0:
        return {"d10": None, "d50": None, "d90": None}
    d10, d50, d90 = np.percentile(ecds, [10, 50, 90])
    return {"d10": float(d10), "d50": float(d50), "d90": float(d90)}
