"""Simulated scribbles: the strokes a careful user paints on a micrograph, drawn from its exact truth.

What ilastik, QuPath's pixel classifier and semphase's sparse labels expect from a user is a few strokes
per phase, painted inside the phase's regions and away from their boundaries (where a human hesitates).
:func:`scribble_labels` makes such strokes from a truth label image, so the few-label workflow can be
tested and measured without a human: every stroke lies on pixels of its class (never a wrong label), and
the phases share the pixel budget equally as far as each has room. Within a phase the budget follows
where the phase is: its wide parts get brush strokes (``brush`` px, kept a brush radius from the
boundary), its thin parts (dendrite arms, needles, rims narrower than the brush) one-pixel pencil lines
along them, as docs/adapt.md tells a user to paint them, in proportion to their share of the phase.

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
#: Pixels of one pencil line along a thin part of a phase, at most.
PENCIL_PX = 40


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def scribble_labels(
    truth: np.ndarray,
    fraction: float,
    seed: int,
    num_classes: int,
    brush: int = BRUSH_PX,
    prediction: np.ndarray | None = None,
    corrective_share: float = 0.5,
) -> np.ndarray:
    """Strokes covering about ``fraction`` of the pixels of ``truth``, each on pixels of its own class.

    Parameters
    ----------
    truth : uint8 (H, W) class ids ``0..C-1`` (255 = no data, never scribbled on).
    fraction : share of all pixels to label, in (0, 1]; 1 returns the truth itself (dense labels).
    seed : strokes are random but reproducible.
    num_classes : C.
    brush : stroke width in pixels (odd, >= 1).
    prediction : uint8 (H, W), a model's phases for the micrograph: the user then paints, with
        ``corrective_share`` of the budget, where the prediction is wrong (correcting the overlay, as
        docs/adapt.md asks), each phase in proportion to its wrong pixels; the rest as without it.
    corrective_share : see ``prediction``.

    Returns
    -------
    uint8 (H, W): the class id on stroke pixels, 255 elsewhere. The (rest of the) budget is shared
    equally among the classes present; a class with less room than its share is labelled as far as its
    room goes, the rest of its share going to no other class.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if brush < 1 or brush % 2 == 0:
        raise ValueError(f"brush must be an odd number of pixels >= 1, got {brush}")
    if not 0 <= corrective_share <= 1:
        raise ValueError(f"corrective_share must be in 0..1, got {corrective_share}")
    if fraction == 1:
        return truth.copy()
    rng = np.random.default_rng([int(seed), 0x5C21])
    out = np.full(truth.shape, IGNORE, np.uint8)
    present = [c for c in range(num_classes) if np.any(truth == c)]
    if not present:
        return out
    total = fraction * truth.size
    if prediction is not None and corrective_share > 0:
        wrong = (prediction != truth) & (truth != IGNORE)
        counts = np.array([np.count_nonzero(wrong & (truth == c)) for c in present], np.float64)
        if counts.sum() > 0:
            for c, n in zip(present, counts, strict=True):
                if n:
                    region = (wrong & (truth == c)).astype(np.uint8)
                    share = corrective_share * total * n / counts.sum()
                    out[_paint(region, share, brush, rng)] = c
            total -= float(np.count_nonzero(out != IGNORE))
    budget = max(total, 0.0) / len(present)
    for c in present:
        region = ((truth == c) & (out == IGNORE)).astype(np.uint8)
        out[_paint(region, budget, brush, rng)] = c
    return out


def _paint(region: np.ndarray, budget: float, brush: int, rng) -> np.ndarray:
    """Pixels of ``region`` (uint8 0/1) a user paints with ``budget`` pixels: brush strokes in its wide
    parts (a brush radius from its edge), one-pixel pencil lines along its thin parts, each in proportion
    to its share of the region."""
    radius = brush // 2
    interior = cv2.erode(region, _disk(radius + 1), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    reach = cv2.dilate(interior, _disk(radius + 1)) & region  # what a brush can cover
    thin = region.astype(bool) & ~reach.astype(bool)
    area = float(region.sum())
    painted = np.zeros(region.shape, bool)
    if area == 0 or budget <= 0:
        return painted
    thin_share = float(thin.sum()) / area
    if interior.any():
        painted |= _strokes(interior, region, budget * (1.0 - thin_share), brush, rng)
    if thin.any():
        painted |= _pencil(thin, budget - int(painted.sum()), rng)
    return painted


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


def _pencil(thin: np.ndarray, budget: float, rng) -> np.ndarray:
    """One-pixel lines along the thin parts of a phase: short walks from random pixels to unvisited
    8-neighbours within ``thin`` (straight on when it can), until ``budget`` pixels are labelled."""
    h, w = thin.shape
    painted = np.zeros(thin.shape, bool)
    seeds = np.flatnonzero(thin)
    steps = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
    count = 0
    for _ in range(10_000):
        if count >= budget or count >= seeds.size:
            break
        y, x = divmod(int(seeds[rng.integers(seeds.size)]), w)
        if painted[y, x]:
            continue
        direction = None
        for _ in range(PENCIL_PX):
            painted[y, x] = True
            count += 1
            if count >= budget:
                break
            options = [
                (dy, dx)
                for dy, dx in steps
                if 0 <= y + dy < h
                and 0 <= x + dx < w
                and thin[y + dy, x + dx]
                and not painted[y + dy, x + dx]
            ]
            if not options:
                break
            if direction in options:
                dy, dx = direction
            else:
                dy, dx = options[int(rng.integers(len(options)))]
            direction = (dy, dx)
            y, x = y + dy, x + dx
    return painted
