"""Simulated scribbles: the strokes a careful user paints on a micrograph, drawn from its exact truth.

What ilastik, QuPath's pixel classifier and semphase's sparse labels expect from a user is a few strokes
per phase, painted inside the phase's regions and away from their boundaries (where a human hesitates).
:func:`scribble_labels` makes such strokes from a truth label image, so the few-label workflow can be
tested and measured without a human: every stroke lies on pixels of its class (never a wrong label), the
phases share the pixel budget equally as far as each has room, and a phase too thin to hold a stroke of
the brush width (carbide specks, dendrite arms) gets dots on its own pixels instead.

Deterministic: the same truth, budget and seed give the same strokes.
"""

from __future__ import annotations

import cv2
import numpy as np

from semphase.phases import IGNORE

#: Brush diameter in pixels, and the length of one step of a stroke's random walk.
BRUSH_PX = 5
STEP_PX = 6
#: Steps of one stroke at most (a stroke also ends where it would leave its phase).
MAX_STEPS = 60


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def scribble_labels(
    truth: np.ndarray,
    fraction: float,
    seed: int,
    num_classes: int,
    brush: int = BRUSH_PX,
) -> np.ndarray:
    """Strokes covering about ``fraction`` of the pixels of ``truth``, each on pixels of its own class.

    Parameters
    ----------
    truth : uint8 (H, W) class ids ``0..C-1`` (255 = no data, never scribbled on).
    fraction : share of all pixels to label, in (0, 1]; 1 returns the truth itself (dense labels).
    seed : strokes are random but reproducible.
    num_classes : C.
    brush : stroke width in pixels (odd, >= 1).

    Returns
    -------
    uint8 (H, W): the class id on stroke pixels, 255 elsewhere. The budget is shared equally among the
    classes present; a class with less room than its share is labelled as far as its room goes (its
    whole interior at most), the rest of its share going to no other class.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if brush < 1 or brush % 2 == 0:
        raise ValueError(f"brush must be an odd number of pixels >= 1, got {brush}")
    if fraction == 1:
        return truth.copy()
    rng = np.random.default_rng([int(seed), 0x5C21])
    out = np.full(truth.shape, IGNORE, np.uint8)
    present = [c for c in range(num_classes) if np.any(truth == c)]
    if not present:
        return out
    budget = fraction * truth.size / len(present)
    radius = brush // 2
    for c in present:
        region = (truth == c).astype(np.uint8)
        # Strokes keep away from the phase's boundary by a brush radius plus one pixel.
        interior = cv2.erode(region, _disk(radius + 1), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        if interior.any():
            painted = _strokes(interior, region, budget, brush, rng)
        else:  # too thin for the brush: dots on the phase's own pixels
            painted = _dots(region, budget, rng)
        out[painted] = c
    return out


def _strokes(interior: np.ndarray, region: np.ndarray, budget: float, brush: int, rng) -> np.ndarray:
    """Random-walk strokes starting and staying in ``interior`` until ``budget`` pixels are painted."""
    h, w = interior.shape
    canvas = np.zeros(interior.shape, np.uint8)
    starts = np.flatnonzero(interior)
    painted = 0
    for _ in range(10_000):
        if painted >= budget:
            break
        y, x = divmod(int(starts[rng.integers(starts.size)]), w)
        heading = rng.uniform(0, 2 * np.pi)
        points = [(x, y)]
        for _ in range(MAX_STEPS):
            # one more step only while the stroke (its steps and its round ends) stays within the budget
            if painted + len(points) * STEP_PX * brush + brush * brush >= budget:
                break
            heading += rng.normal(0.0, 0.35)
            nx = int(round(points[-1][0] + STEP_PX * np.cos(heading)))
            ny = int(round(points[-1][1] + STEP_PX * np.sin(heading)))
            if not (0 <= nx < w and 0 <= ny < h) or not interior[ny, nx]:
                break
            points.append((nx, ny))
        stroke = np.zeros_like(canvas)
        if len(points) == 1:
            cv2.circle(stroke, points[0], brush // 2, 1, -1)
        else:
            cv2.polylines(stroke, [np.array(points, np.int32)], False, 1, brush)
        stroke &= region  # a stroke never leaves its phase, even where the brush is wider than the room
        new = int(np.count_nonzero(stroke & ~canvas.astype(bool)))
        canvas |= stroke
        painted += new
    return canvas.astype(bool)


def _dots(region: np.ndarray, budget: float, rng) -> np.ndarray:
    """Single pixels of a thin phase, up to ``budget`` of them."""
    where = np.flatnonzero(region)
    take = min(where.size, max(1, int(budget)))
    mask = np.zeros(region.size, bool)
    mask[rng.choice(where, take, replace=False)] = True
    return mask.reshape(region.shape)
