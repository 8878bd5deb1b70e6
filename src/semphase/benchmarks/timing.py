"""Pure timing arithmetic shared by the benchmark parts: percentiles, latency summaries, throughput."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics.

    This is numpy's default ("linear") method: for ``n`` sorted values the position is ``q/100 * (n-1)``.

    Raises
    ------
    ValueError
        for an empty sequence, non-finite values or ``q`` outside 0..100.
    """
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be in 0..100, got {q}")
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values")
    if not np.all(np.isfinite(data)):
        raise ValueError("values must be finite")
    return float(np.percentile(data, q))


def latency_summary(seconds: Sequence[float], batch: int = 1) -> dict:
    """Summarize timed runs of one call.

    Parameters
    ----------
    seconds : wall time of each timed run, in seconds (warm-up runs already left out).
    batch : tiles per call; ``per_tile_ms`` and ``tiles_per_s`` divide by it.

    Returns
    -------
    dict with ``runs``, ``median_ms``, ``p95_ms``, ``min_ms``, ``max_ms`` (per call), ``per_tile_ms``
    (median per call / batch) and ``tiles_per_s``.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    median = percentile(seconds, 50.0)
    return {
        "runs": len(seconds),
        "median_ms": 1000.0 * median,
        "p95_ms": 1000.0 * percentile(seconds, 95.0),
        "min_ms": 1000.0 * float(min(seconds)),
        "max_ms": 1000.0 * float(max(seconds)),
        "per_tile_ms": 1000.0 * median / batch,
        "tiles_per_s": batch / median if median > 0 else None,
    }


def megapixels(height: int, width: int) -> float:
    """Image area in megapixels (10^6 pixels)."""
    return height * width / 1e6


def mpix_per_s(height: int, width: int, seconds: float) -> float | None:
    """Throughput in megapixels per second; None when ``seconds`` is not a positive finite number."""
    if not (math.isfinite(seconds) and seconds > 0):
        return None
    return megapixels(height, width) / seconds


def time_runs(call: Callable[[], object], warmup: int, runs: int) -> list[float]:
    """Call ``call`` ``warmup`` times untimed, then ``runs`` times timed; return the timed wall seconds."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got {runs} and {warmup}")
    for _ in range(warmup):
        call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times
