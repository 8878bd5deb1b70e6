"""Brush strokes of the labelling page, as the server applies them to a label image (numpy only).

The page sends what the user did, not pixels: each stroke is a tool, a brush radius and the path of the
mouse in image coordinates. The server rasterizes it with one exact rule, so what is saved never depends
on the browser's canvas antialiasing or on the zoom the user painted at, and a stroke on a 16k x 16k
micrograph costs the browser no full-resolution buffer.

**The rule.** Image coordinates put pixel ``(row r, column c)`` at the square ``[c, c+1) x [r, r+1)``, its
centre at ``(c + 0.5, r + 0.5)``. A stroke of radius ``R`` through points ``p0, p1, ..., pn`` covers a pixel
when the distance from the pixel's centre to the polyline (to the point ``p0`` alone for a one-point
stroke, a click) is at most ``R``: a round brush dragged along the path; and the pixel under each point of
the path is always covered, so the finest pencil (``R`` = 0.5) paints the pixel clicked even at its
corner. (Squared distances are compared
with ``R**2 * (1 + 1e-9)``, so a centre exactly ``R`` away counts whatever the rounding of the
projection.)

**The tools.**

- ``paint`` with ``class`` = a class id: the covered pixels get that class;
- ``erase``: the covered pixels become unlabelled (255);
- ``accept``: the covered pixels take the model's prediction (its phase, or unlabelled where the model
  gave none, e.g. the data bar): "the model is right here", without repainting it.

Strokes apply in order, each over the result of the ones before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from semphase.phases import IGNORE

TOOLS = ("paint", "erase", "accept")
#: Brush radius limits in image pixels (a half-pixel pencil up to a 512-pixel flood).
MIN_RADIUS, MAX_RADIUS = 0.5, 512.0
#: Relative slack of the distance test: a pixel centre exactly on the brush's edge is covered.
TIE = 1e-9
#: At most this many points in one save (a long session of strokes is a few thousand).
MAX_POINTS = 200_000


class StrokeError(ValueError):
    """A stroke the server cannot apply (unknown tool or class, bad radius or points): one line."""


@dataclass(frozen=True)
class Stroke:
    """One brush stroke: ``tool`` (paint, erase, accept), ``cls`` (class id, paint only), ``radius`` in
    image pixels, ``points`` as float64 (N, 2) of (x, y) image coordinates."""

    tool: str
    radius: float
    points: np.ndarray
    cls: int | None = None

    def covered(self, shape: tuple[int, int]) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """The pixels this stroke covers in an image of ``shape`` (rows, columns): the bounding window
        and a bool mask of it, or None when the stroke misses the image."""
        return cover(self.points, self.radius, shape)


def cover(points: np.ndarray, radius: float, shape: tuple[int, int]):
    """Pixels whose centre lies within ``radius`` of the polyline ``points`` ((N, 2) x, y), as
    ``(window, mask)`` inside an image of ``shape``; None when none does."""
    h, w = shape
    x0 = max(0, math.floor(points[:, 0].min() - radius))
    x1 = min(w, math.ceil(points[:, 0].max() + radius) + 1)
    y0 = max(0, math.floor(points[:, 1].min() - radius))
    y1 = min(h, math.ceil(points[:, 1].max() + radius) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    r2 = radius * radius * (1 + TIE)
    ends = points if len(points) > 1 else np.repeat(points, 2, axis=0)  # a click: one point as a segment
    segments = list(zip(ends[:-1], ends[1:], strict=True))
    for a, b in segments:
        # the window of this segment alone, in the stroke's window
        sx0 = max(x0, math.floor(min(a[0], b[0]) - radius))
        sx1 = min(x1, math.ceil(max(a[0], b[0]) + radius) + 1)
        sy0 = max(y0, math.floor(min(a[1], b[1]) - radius))
        sy1 = min(y1, math.ceil(max(a[1], b[1]) + radius) + 1)
        if sx0 >= sx1 or sy0 >= sy1:
            continue
        cx = np.arange(sx0, sx1, dtype=np.float64)[None, :] + 0.5
        cy = np.arange(sy0, sy1, dtype=np.float64)[:, None] + 0.5
        dx, dy = b[0] - a[0], b[1] - a[1]
        length2 = dx * dx + dy * dy
        if length2 > 0:
            t = np.clip(((cx - a[0]) * dx + (cy - a[1]) * dy) / length2, 0.0, 1.0)
        else:
            t = np.zeros((1, 1))
        ex = cx - (a[0] + t * dx)
        ey = cy - (a[1] + t * dy)
        mask[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] |= ex * ex + ey * ey <= r2
    cols, rows = np.floor(points[:, 0]).astype(np.int64), np.floor(points[:, 1]).astype(np.int64)
    under = (cols >= x0) & (cols < x1) & (rows >= y0) & (rows < y1)  # the pixels under the path's points
    mask[rows[under] - y0, cols[under] - x0] = True
    if not mask.any():
        return None
    return (slice(y0, y1), slice(x0, x1)), mask


def parse_strokes(items: object, num_classes: int) -> list[Stroke]:
    """Strokes from the page's JSON (a list of ``{"tool", "class", "radius", "points"}``).

    Raises
    ------
    StrokeError
        one line naming the stroke (its position) and what is wrong with it.
    """
    if not isinstance(items, list):
        raise StrokeError("strokes must be a list")
    strokes = []
    total = 0
    for i, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise StrokeError(f"stroke {i}: not an object")
        tool = item.get("tool")
        if tool not in TOOLS:
            raise StrokeError(f"stroke {i}: unknown tool {tool!r} (expected one of {', '.join(TOOLS)})")
        cls = item.get("class")
        if tool == "paint":
            if isinstance(cls, bool) or not isinstance(cls, int) or not 0 <= cls < num_classes:
                known = f"0..{num_classes - 1}"
                raise StrokeError(f"stroke {i}: class {cls!r} is not a class of the model ({known})")
        else:
            cls = None
        radius = item.get("radius")
        if isinstance(radius, bool) or not isinstance(radius, int | float) or not math.isfinite(radius):
            raise StrokeError(f"stroke {i}: radius must be a number")
        if not MIN_RADIUS <= radius <= MAX_RADIUS:
            raise StrokeError(f"stroke {i}: radius {radius:g} outside {MIN_RADIUS:g}..{MAX_RADIUS:g} pixels")
        try:
            points = np.asarray(item.get("points"), dtype=np.float64)
        except (TypeError, ValueError):
            raise StrokeError(f"stroke {i}: points must be a list of [x, y] numbers") from None
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
            raise StrokeError(f"stroke {i}: points must be a non-empty list of [x, y] numbers")
        if not np.isfinite(points).all():
            raise StrokeError(f"stroke {i}: points must be finite numbers")
        total += len(points)
        if total > MAX_POINTS:
            raise StrokeError(f"more than {MAX_POINTS} points in one save; save more often")
        strokes.append(Stroke(tool=tool, radius=float(radius), points=points, cls=cls))
    return strokes


def apply_strokes(labels: np.ndarray, strokes: Sequence[Stroke], prediction: np.ndarray | None = None) -> int:
    """Apply ``strokes`` in order to ``labels`` (uint8 (H, W) class ids, 255 = unlabelled) in place.

    ``prediction`` (uint8 (H, W), the model's phases) is needed for ``accept`` strokes. Returns how many
    pixels changed.

    Raises
    ------
    StrokeError
        for an ``accept`` stroke without a prediction of the same size.
    """
    before = labels.copy()
    for i, stroke in enumerate(strokes, 1):
        hit = stroke.covered(labels.shape)
        if hit is None:
            continue
        window, mask = hit
        if stroke.tool == "paint":
            labels[window][mask] = stroke.cls
        elif stroke.tool == "erase":
            labels[window][mask] = IGNORE
        else:
            if prediction is None or prediction.shape != labels.shape:
                raise StrokeError(f"stroke {i}: 'accept' needs the model's prediction of this micrograph")
            labels[window][mask] = prediction[window][mask]
    return int(np.count_nonzero(before != labels))
