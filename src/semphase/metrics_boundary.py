"""Boundaries of class masks and boundary F1 (OpenCV morphology, no torch).

Definitions of ``docs/dataset-and-metrics.md``: a boundary pixel of a mask has at least one pixel of its
3 x 3 neighbourhood outside the mask; pixels beyond the image frame, and ignored pixels, do not count as
outside. Boundary pixels match when the other boundary has a pixel within Chebyshev distance ``r``.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Boundary tolerance of the study, in pixels (Chebyshev distance).
DEFAULT_TOLERANCE = 2

_KERNEL_3X3 = np.ones((3, 3), dtype=np.uint8)


def check_tolerance(tolerance: int) -> int:
    """The tolerance as an int; ValueError unless it is a non-negative whole number."""
    if int(tolerance) != tolerance or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative whole number of pixels, got {tolerance}")
    return int(tolerance)


def _as_u8(mask: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(mask, dtype=bool).view(np.uint8)


def boundary(mask: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Boundary pixels of a binary mask.

    A pixel of ``mask`` is on the boundary when at least one pixel of its 3 x 3 neighbourhood is outside
    the mask. Pixels beyond the image frame do not count as outside (the frame is not a boundary), and
    neither do pixels where ``valid`` is False (ignored truth pixels behave like the space beyond the
    frame).

    Parameters
    ----------
    mask : bool (or 0/1 integer), shape (H, W).
    valid : bool, shape (H, W), optional: pixels that are scored; mask pixels outside it are dropped.

    Returns
    -------
    bool, shape (H, W).
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    if valid is not None:
        if valid.shape != m.shape:
            raise ValueError(f"valid must have the mask's shape {m.shape}, got {valid.shape}")
        inside = m | ~valid  # ignored pixels never make a neighbour "outside"
        m = m & valid
    else:
        inside = m
    if not m.any():
        return np.zeros(m.shape, dtype=bool)
    # Replicating the border makes the 3 x 3 minimum look only at pixels inside the image.
    interior = cv2.erode(_as_u8(inside), _KERNEL_3X3, borderType=cv2.BORDER_REPLICATE)
    return m & (interior == 0)


def _near(edge: np.ndarray, tolerance: int) -> np.ndarray:
    """Pixels within Chebyshev distance ``tolerance`` of an edge pixel, bool (H, W)."""
    if tolerance == 0:
        return edge
    kernel = np.ones((2 * tolerance + 1, 2 * tolerance + 1), dtype=np.uint8)
    grown = cv2.dilate(_as_u8(edge), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return grown.view(bool)


def f1_of_boundaries(pred_edge: np.ndarray, truth_edge: np.ndarray, tolerance: int) -> float:
    """BF1 of two boundary maps (bool (H, W)) of a class present in both truth and prediction."""
    n_pred = int(np.count_nonzero(pred_edge))
    n_truth = int(np.count_nonzero(truth_edge))
    if n_pred == 0 and n_truth == 0:
        return 1.0  # the class fills the scored area in both
    if n_pred == 0 or n_truth == 0:
        return 0.0
    precision = np.count_nonzero(pred_edge & _near(truth_edge, tolerance)) / n_pred
    recall = np.count_nonzero(truth_edge & _near(pred_edge, tolerance)) / n_truth
    if precision + recall == 0:
        return 0.0
    return float(2.0 * precision * recall / (precision + recall))


def boundary_f1(
    pred_mask: np.ndarray,
    truth_mask: np.ndarray,
    tolerance: int = DEFAULT_TOLERANCE,
    valid: np.ndarray | None = None,
) -> float:
    """Boundary F1 of one class.

    A boundary pixel matches when the other mask's boundary has a pixel within Chebyshev distance
    ``tolerance`` (a ``(2r+1) x (2r+1)`` square). precision = matched predicted boundary / predicted
    boundary, recall = matched truth boundary / truth boundary, BF1 = 2pr / (p + r) (0 when p + r = 0).

    Parameters
    ----------
    pred_mask, truth_mask : bool, shape (H, W): where the class is predicted / true.
    tolerance : r in pixels, >= 0.
    valid : bool, shape (H, W), optional: scored pixels (truth != 255). Both masks are restricted to it and
        its complement behaves like the space beyond the frame.

    Returns
    -------
    float in [0, 1]: 1 when the class is present in both but neither has a boundary (it fills the scored
    area), 0 when it is present in only one or only one has a boundary; NaN when it is present in neither
    (the class is left out).
    """
    tolerance = check_tolerance(tolerance)
    p = np.asarray(pred_mask, dtype=bool)
    t = np.asarray(truth_mask, dtype=bool)
    if p.shape != t.shape or p.ndim != 2:
        raise ValueError(f"masks must be 2-D of one shape, got {p.shape} and {t.shape}")
    if valid is not None:
        p, t = p & valid, t & valid
    in_pred, in_truth = bool(p.any()), bool(t.any())
    if not in_pred and not in_truth:
        return float("nan")
    if not (in_pred and in_truth):
        return 0.0
    return f1_of_boundaries(boundary(p, valid), boundary(t, valid), tolerance)
