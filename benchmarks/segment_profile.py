"""Where does `segment` spend its time on a large micrograph? The model against everything else.

Runs :func:`semphase.runtime.segment.segment_file` once in this process on a synthetic micrograph (written
once, as ``segment_throughput.py`` writes them), with the model's ``logits`` wrapped in a timer and the
main thread under cProfile, and prints one JSON line and the functions that took the most time::

    python benchmarks/segment_profile.py demo/model/model.int8.onnx --size 8192 --work bench/profile
    python benchmarks/segment_profile.py demo/model/model.int8.onnx --tile 1024 --work bench/profile

The JSON line: ``raw_ms_per_tile`` (the bare model on non-overlapping tiles of the run's tile size cut
from a rendered micrograph, 2 at a time, median of 6 batches: ``segment_throughput.time_tiles``, the
measurement of ``segment_throughput.py``'s raw row), ``total_s`` (the whole ``segment_file``),
``model_s`` (the model calls inside it), ``model_share`` (model_s / total_s), ``work_ratio`` (tiled
pixels / analysed pixels) and ``efficiency`` (end-to-end megapixels per second over the raw model's).
Efficiency below ``1 / work_ratio * model_share`` is the model running slower inside the run than
alone. Writing the outputs happens on a background thread, which cProfile does not see; its cost shows
as model_share < 1.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="exported semphase ONNX model")
    p.add_argument("--size", type=int, default=8192, help="side of the square synthetic micrograph")
    p.add_argument("--tile", type=int, default=None, help="tile (default: the model's recommendation)")
    p.add_argument("--backend", default="onnxruntime", help="onnxruntime, openvino or auto")
    p.add_argument("--work", type=Path, required=True, help="folder for the micrograph and the outputs")
    p.add_argument("--top", type=int, default=15, help="functions to list")
    args = p.parse_args(argv)

    from segment_throughput import time_tiles  # this script's folder is on sys.path

    from semphase.data.synth.large import write_large
    from semphase.runtime import load_model
    from semphase.runtime.segment import SegmentOptions, segment_file
    from semphase.runtime.tiling import plan_tiles

    args.work.mkdir(parents=True, exist_ok=True)
    tif = args.work / f"micrograph_{args.size}.tif"
    if not tif.exists():
        write_large(tif, (args.size, args.size), seed=2 * args.size, databar_px=96, pixel_size_um=0.05)
    model = load_model(args.model, backend=args.backend)
    inner = model.logits
    spent = {"seconds": 0.0, "calls": 0}

    def timed(batch: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        out = inner(batch)
        spent["seconds"] += time.perf_counter() - start
        spent["calls"] += 1
        return out

    tile = args.tile or model.tile_size
    raw = time_tiles(model, 2, 12, tile)["seconds_per_tile"]
    raw_mps = tile * tile / raw / 1e6

    model.logits = timed
    options = SegmentOptions(tile=args.tile) if args.tile else SegmentOptions()
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    result = segment_file(model, tif, args.work / f"out_{args.size}_{tile}_{args.backend}", options)
    profile.disable()
    total = time.perf_counter() - start
    analysed = result["analysed_pixels"]
    height, width = analysed // args.size, args.size
    plan = plan_tiles(height, width, result["tiling"]["tile"], result["tiling"]["overlap"])
    summary = {
        "tile": tile,
        "overlap": result["tiling"]["overlap"],
        "backend": result.get("backend", args.backend),
        "tiles": result["tiling"]["tiles"],
        "work_ratio": round(plan.work_pixels / analysed, 4),
        "raw_ms_per_tile": round(raw * 1000, 1),
        "raw_mpix_per_s": round(raw_mps, 3),
        "total_s": round(total, 2),
        "model_s": round(spent["seconds"], 2),
        "model_ms_per_tile_in_run": round(spent["seconds"] / result["tiling"]["tiles"] * 1000, 1),
        "model_share": round(spent["seconds"] / total, 3),
        "mpix_per_s": round(analysed / 1e6 / total, 3),
        "efficiency": round(analysed / 1e6 / total / raw_mps, 3),
    }
    print(json.dumps(summary))
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(args.top)
    print(text.getvalue())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
