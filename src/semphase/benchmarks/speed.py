"""Speed on this machine: per-tile latency (in this process) and end-to-end tiled segmentation (in a child).

Latency times ``model.logits`` on a batch of real-looking tiles (a synthetic micrograph), median and p95
over timed runs after warm-up; a model with several streams gets one call per stream at once in each run,
as the sliding window runs it, so its tiles per second are what segmenting a large micrograph gets.
End-to-end runs :mod:`semphase.benchmarks.child` once per variant and micrograph size, so every row's
peak RSS is that of a fresh process doing just that job.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from semphase.benchmarks.rss import run_child
from semphase.benchmarks.timing import latency_summary, megapixels, mpix_per_s, time_runs


def latency_tiles(tile: int, batch: int, seed: int = 0) -> np.ndarray:
    """``batch`` different tiles of a synthetic micrograph: uint8 (batch, tile, tile).

    Real micrograph statistics matter for INT8 (static quantization clips to calibrated ranges) and keep
    every variant on the same input.
    """
    from semphase.data.synth import synth_micrograph

    image, _ = synth_micrograph(tile, tile * batch, seed)
    return np.ascontiguousarray(np.stack(np.split(image, batch, axis=1)))


def measure_latency(
    model, variant: str, batches: list[int], warmup: int, repeat: int, seed: int = 0
) -> list[dict]:
    """Latency rows of one loaded model at each batch size.

    Parameters
    ----------
    model : anything with ``logits(batch_u8 (N, H, W) uint8) -> (N, C, H, W) float32`` and ``tile_size``.
    variant : name for the rows.
    batches : tiles per call, e.g. ``[1, 4]``.
    warmup, repeat : untimed and timed calls per batch size.

    Returns
    -------
    One row per batch size: ``variant``, ``batch``, ``streams``, ``tile``, ``status``, ``reason`` and the
    fields of :func:`~semphase.benchmarks.timing.latency_summary` (per run of ``streams`` calls at once: its
    ``per_tile_ms`` and ``tiles_per_s`` count the tiles of all of them). A call that raises gives a failed
    row.
    """
    from semphase.benchmarks.accuracy import short_reason
    from semphase.runtime.backends import at_once

    tile = int(model.tile_size)
    streams = max(1, int(getattr(model, "streams", 1)))
    rows = []
    with at_once(model.logits, streams) as once:
        for batch in batches:
            row = {"variant": variant, "batch": int(batch), "streams": streams, "tile": tile}
            row.update(status="ok", reason=None)
            try:
                tiles = latency_tiles(tile, batch, seed)
                timed = time_runs(lambda t=tiles: once(t), warmup, repeat)
                row.update(latency_summary(timed, batch * streams))
            except Exception as exc:  # a variant that cannot run must not stop the others
                row.update(status="failed", reason=short_reason(exc))
            rows.append(row)
    return rows


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _child_report(done) -> dict | None:
    """The JSON line a successful child prints last, or None."""
    if done.returncode != 0:
        return None
    try:
        return json.loads(_last_line(done.stdout))
    except json.JSONDecodeError:
        return None


def end_to_end(
    variant: str,
    model_path: str | os.PathLike,
    image_path: str | os.PathLike,
    *,
    threads: int,
    provider: str,
    batch: int,
    repeat: int = 1,
    backend: str = "onnxruntime",
    tile: int | None = None,
    overlap: int | None = None,
    labels_out: str | os.PathLike | None = None,
    size: tuple[int, int] | None = None,
) -> dict:
    """Segment one micrograph in a child process and return its speed row.

    Returns
    -------
    dict with ``variant``, ``width``, ``height``, ``megapixels``, ``seconds`` (median of the timed runs),
    ``runs_s`` (every timed run), ``mpix_per_s``, ``peak_rss_mb``, ``load_s``, ``read_s``, ``process_s``
    (the child's whole life, interpreter start included), ``threads``, ``provider``, ``providers``,
    ``backend``, ``batch``, ``tile``, ``overlap``, ``status`` and ``reason`` (the child's last stderr line
    on failure).
    ``size`` (width, height) fills the size fields of a failed row, whose child could not say.
    """
    argv = [sys.executable, "-m", "semphase.benchmarks.child", os.fspath(model_path), os.fspath(image_path)]
    argv += [
        "--threads",
        str(threads),
        "--provider",
        provider,
        "--backend",
        backend,
        "--batch",
        str(batch),
        "--repeat",
        str(repeat),
    ]
    for flag, value in (("--tile", tile), ("--overlap", overlap), ("--labels-out", labels_out)):
        if value is not None:
            argv += [flag, os.fspath(value) if flag == "--labels-out" else str(value)]
    done = run_child(argv)
    row = {
        "variant": variant,
        "image": Path(image_path).name,
        "threads": threads,
        "provider": provider,
        "batch": batch,
        "peak_rss_mb": done.rusage_peak_mb,
        "peak_rss_source": "rusage" if done.rusage_peak_mb is not None else "unknown",
        "process_s": done.wall_s,
    }
    report = _child_report(done)
    if report is None:
        reason = _last_line(done.stderr)[:300] or (
            f"child process exited with status {done.returncode}"
            if done.returncode
            else "the child process printed no result"
        )
        width, height = size or (None, None)
        row.update(width=width, height=height, megapixels=megapixels(height, width) if size else None)
        row.update(status="failed", reason=reason.removeprefix("error: "), seconds=None, mpix_per_s=None)
        row.update(peak_rss_mb=None, peak_rss_source="unknown")
        return row
    h, w = report["height"], report["width"]
    seconds = float(np.median(report["seconds"]))
    row.update(
        width=w,
        height=h,
        megapixels=megapixels(h, w),
        seconds=seconds,
        runs_s=report["seconds"],
        mpix_per_s=mpix_per_s(h, w, seconds),
        load_s=report["load_s"],
        read_s=report["read_s"],
        providers=report["providers"],
        backend=report.get("backend"),
        tile=report["tile"],
        overlap=report["overlap"],
        status="ok",
        reason=None,
    )
    if report.get("peak_rss_mb") is not None:  # the child's own peak; rusage would include ours
        row.update(peak_rss_mb=report["peak_rss_mb"], peak_rss_source=report["peak_rss_source"])
    return row
