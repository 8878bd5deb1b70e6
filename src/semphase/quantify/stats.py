"""Sample statistics of per-field area fractions, as ASTM E562 and E1245 report them.

For each phase of a sample of n fields: the mean of the per-field area fractions A_A, their standard
deviation s (n - 1 in the denominator), the 95 % confidence interval CI = t(0.975, n - 1) * s / sqrt(n)
(Student's t, from scipy), the relative accuracy %RA = CI / mean * 100, and how many fields would reach a
target %RA with the observed s: the smallest n with t(0.975, n - 1) * s / sqrt(n) <= target / 100 * mean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: The confidence level of the interval (both standards report 95 %).
CONFIDENCE = 0.95
#: The fields-needed search stops here (a phase too rare for any practical number of fields).
MAX_FIELDS_NEEDED = 100_000


def t_quantile(df: int) -> float:
    """Student's t quantile t(0.975, df) for a two-sided 95 % interval (scipy.stats)."""
    from scipy.stats import t

    return float(t.ppf(0.5 + CONFIDENCE / 2, df))


def fields_needed(mean: float, s: float, target_ra_pct: float) -> int | None:
    """The smallest number of fields whose 95 % CI is at most ``target_ra_pct`` % of ``mean``, with
    standard deviation ``s``; None when the mean is 0 (no %RA exists) or more than
    :data:`MAX_FIELDS_NEEDED` would be needed."""
    if mean <= 0 or target_ra_pct <= 0:
        return None
    if s == 0:
        return 2  # the interval needs two fields to exist at all
    goal = target_ra_pct / 100.0 * mean
    # t * s / sqrt(n) decreases with n; start from the normal approximation and walk to the exact n
    n = max(2, math.ceil((1.96 * s / goal) ** 2))
    while n > 2 and t_quantile(n - 2) * s / math.sqrt(n - 1) <= goal:
        n -= 1
    while t_quantile(n - 1) * s / math.sqrt(n) > goal:
        n += 1
        if n > MAX_FIELDS_NEEDED:
            return None
    return n


def phase_statistics(fractions: Sequence[float], target_ra_pct: float = 10.0) -> dict:
    """E562/E1245 statistics of one phase's per-field area fractions (0..1).

    Returns
    -------
    dict with ``n``, ``mean``, ``std`` (n - 1), ``ci95`` (half-width), ``ra_pct`` (None when the mean is 0
    or n < 2), ``fields_needed`` for ``target_ra_pct`` (None as for :func:`fields_needed`), ``min``, ``max``.
    With one field, ``std``, ``ci95`` and ``ra_pct`` are None: a single field has no spread.
    """
    values = np.asarray(fractions, dtype=np.float64)
    n = int(values.size)
    if n == 0:
        raise ValueError("no fields")
    mean = float(values.mean())
    out = {"n": n, "mean": mean, "std": None, "ci95": None, "ra_pct": None, "fields_needed": None}
    out.update(min=float(values.min()), max=float(values.max()))
    if n < 2:
        return out
    s = float(values.std(ddof=1))
    ci = t_quantile(n - 1) * s / math.sqrt(n)
    out.update(std=s, ci95=ci, ra_pct=(ci / mean * 100.0) if mean > 0 else None)
    out["fields_needed"] = fields_needed(mean, s, target_ra_pct)
    return out
