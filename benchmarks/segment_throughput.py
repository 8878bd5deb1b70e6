"""End-to-end `semphase segment` throughput and peak memory on large synthetic micrographs.

For each ``--sizes`` side S this writes an S x S synthetic micrograph (a TIFF with a data bar and FEI
pixel-size metadata, as a microscope would), then runs the real command, ``python -m semphase segment
MODEL X.tif --out DIR --quiet``, in a fresh child process: reading the TIFF, data-bar handling, tiled
inference, mask/overlay PNGs and the phase table included. The child reports its own peak RSS (VmHWM).

The reference is the raw model throughput on non-overlapping tiles of the model's tile size: the
megapixels per second the network itself manages when no pixel is computed twice and nothing is read,
blended or written. ``efficiency = end-to-end MP/s / raw MP/s`` is what tiling with overlap, blending
and I/O cost. The overlap alone caps it at pixels / tiled work (the table's ceiling: 0.886 for 512 px
tiles with 32 px overlap on an 8192² frame, 0.879 on 32768 x 8192), whatever the machine: those pixels are
computed twice. Writes ``segment_throughput.json`` and ``segment_throughput.md`` to ``--out``::

    python benchmarks/segment_throughput.py demo/model/model.int8.onnx --sizes 4096,8192 --out bench/seg
    python benchmarks/segment_throughput.py demo/model/model.int8.onnx --montage \
        --sizes 32768x8192,65536x16384 --out bench/montage

``--montage`` writes the inputs as stitched SEM montages are stored (tiled, Deflate-compressed BigTIFF);
``semphase segment`` then reads them strip by strip and, above 8192 x 8192, writes pyramidal OME-TIFFs.
``--backend`` runs the raw timing and the command on that backend (``semphase segment --backend``);
``--tiles model,1024`` runs each micrograph once per setting in turn, repeat after repeat (interleaved, so
a slower spell of the machine hits every setting): a number is ``segment --tile``, ``model`` the model's
recommendation (the default). ``--streams default,1`` does the same for ``segment --streams`` (``default``:
segment's own choice); the raw model is then timed at each of them, one call per stream at once, and every
row's efficiency is against the fastest of those raw timings: what the network alone manages at its best.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

CHILD = """
import atexit, json, sys
from semphase.benchmarks.rss import own_peak_rss_mb
def _report():
    peak, source = own_peak_rss_mb()
    print(json.dumps({"peak_rss_mb": peak, "peak_rss_source": source}), file=sys.stderr)
atexit.register(_report)
sys.argv = ["semphase"] + sys.argv[1:]
import runpy
runpy.run_module("semphase", run_name="__main__")
"""


def _size(text: str) -> tuple[int, int]:
    """(width, height) of ``S`` or ``WxH``."""
    parts = text.lower().strip().split("x")
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    return int(parts[0]), int(parts[1])


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="exported semphase ONNX model (model.int8.onnx, ...)")
    p.add_argument(
        "--sizes", default="4096,8192", help="synthetic micrographs: sides S (square) or WxH, comma-separated"
    )
    p.add_argument(
        "--montage",
        action="store_true",
        help="write the micrographs as stitched montages are stored (tiled 512 px, Deflate, BigTIFF) "
        "instead of uncompressed strips",
    )
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: one per core)")
    p.add_argument(
        "--backend", default=None, help="segment --backend (onnxruntime, openvino, auto); default segment's"
    )
    p.add_argument("--overlap", type=int, default=None, help="segment --overlap (default: the model's)")
    p.add_argument(
        "--tiles", default="model", help="comma-separated: a tile size (--tile) or model (its recommendation)"
    )
    p.add_argument(
        "--streams", default="default", help="comma-separated: segment --streams N, or default (segment's)"
    )
    p.add_argument("--batch", type=int, default=None, help="tiles per call (default: semphase's)")
    p.add_argument("--raw-tiles", type=int, default=64, help="tiles timed for the raw model throughput")
    p.add_argument("--repeat", type=int, default=1, help="end-to-end runs per size (median reported)")
    p.add_argument("--databar", type=int, default=96, help="rows of data bar appended to each micrograph")
    p.add_argument("--out", type=Path, required=True, help="folder for the micrographs, outputs and report")
    return p


def raw_throughput(
    model_path: Path,
    threads: int | None,
    batch: int,
    tiles: int,
    backend: str | None = None,
    streams: int | None = None,
) -> dict:
    """Median per-tile seconds of the bare model on non-overlapping tiles of its recommended size."""
    from semphase.runtime.model import load_model

    options = {"backend": backend} if backend else {}
    model = load_model(model_path, threads=threads, streams=streams, **options)
    return {**time_tiles(model, batch, tiles), "backend": model.backend.name}


def time_tiles(model, batch: int, tiles: int, tile: int | None = None) -> dict:
    """Median per-tile seconds of a loaded model on non-overlapping ``tile`` px tiles (default: its
    recommended size) of a rendered synthetic micrograph, ``batch`` at a time after one warm-up round.

    A model with several streams (``model.streams``) gets one batch per stream at once, each on its own
    thread, as the sliding window runs it; a round's seconds are divided by all the tiles it computed."""
    from concurrent.futures import ThreadPoolExecutor

    from semphase.data.synth.render import prepare

    t = tile or model.tile_size
    streams = int(getattr(model, "streams", 1))
    group = batch * streams
    side = t * int(np.ceil(np.sqrt(max(tiles, group))))
    scene = prepare(side, side, 3, 700)
    image = np.empty((side, side), np.uint8)
    for y0, y1 in scene.bands():
        image[y0:y1], _ = scene.render(y0, y1)
    crops = [image[y : y + t, x : x + t] for y in range(0, side, t) for x in range(0, side, t)][:tiles]
    crops += crops[: max(group - len(crops), 0)]
    with ThreadPoolExecutor(max_workers=streams) as pool:

        def one_round(first: int) -> None:
            chunks = [np.stack(crops[first + k * batch : first + (k + 1) * batch]) for k in range(streams)]
            for future in [pool.submit(model.logits, chunk) for chunk in chunks]:
                future.result()

        one_round(0)  # warm-up: session buffers, every stream's request
        per_tile = []
        for i in range(0, len(crops) - group + 1, group):
            start = time.perf_counter()
            one_round(i)
            per_tile.append((time.perf_counter() - start) / group)
    seconds = float(np.median(per_tile))
    return {
        "tile": t,
        "overlap": model.overlap,
        "batch": batch,
        "streams": streams,
        "tiles_timed": len(per_tile) * group,
        "seconds_per_tile": seconds,
        "mpix_per_s": t * t / 1e6 / seconds,
        "variant": model.variant,
        "providers": model.providers,
    }


def end_to_end(
    model: Path,
    tif: Path,
    out: Path,
    threads: int | None,
    batch: int,
    backend: str | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    streams: int | None = None,
) -> dict:
    """Run ``semphase segment`` on one micrograph in a child; seconds, peak RSS, and its phase table."""
    from semphase.benchmarks.rss import run_child

    argv = [sys.executable, "-c", CHILD, "segment", str(model), str(tif), "--out", str(out), "--quiet"]
    argv += ["--batch", str(batch)] + (["--threads", str(threads)] if threads else [])
    argv += (["--backend", backend] if backend else []) + (["--tile", str(tile)] if tile else [])
    argv += ["--overlap", str(overlap)] if overlap is not None else []
    argv += ["--streams", str(streams)] if streams is not None else []
    done = run_child(argv)
    if done.returncode != 0:  # the child's last stderr line is its peak-memory report: show the one before
        said = [line for line in done.stderr.strip().splitlines() if not line.startswith('{"peak_rss_mb"')]
        raise SystemExit(f"segment failed on {tif}: {said[-1:]}")
    memory = json.loads(done.stderr.strip().splitlines()[-1])
    result = json.loads((out / f"{tif.stem}.json").read_text(encoding="utf-8"))
    return {"process_s": done.wall_s, **memory, "result": result}


def _row(
    runs: list[dict], width: int, height: int, args, raw: dict, setting: tuple[int | None, int | None]
) -> dict:
    """One table row: the median of one micrograph's runs at one (tile, streams) setting; efficiency
    against ``raw``, the fastest raw timing."""
    from semphase.runtime.tiling import plan_tiles

    seconds = [r["result"]["seconds"]["total"] for r in runs]
    median = float(np.median(seconds))
    result = runs[-1]["result"]
    analysed = result["analysed_pixels"]
    tiling = result["tiling"]
    plan = plan_tiles(height, width, tiling["tile"], tiling["overlap"])
    return {
        "size": f"{width} x {height}",
        "width": width,
        "height": height,
        "input": "tiled 512 px Deflate BigTIFF" if args.montage else "uncompressed TIFF strips",
        "streamed": result.get("streamed"),
        "format": result.get("format", "png"),
        "backend": (result.get("model") or {}).get("backend", {}).get("name"),
        "tile_setting": "model" if setting[0] is None else "--tile",
        "streams": (result.get("model") or {}).get("streams", 1),
        "tile": tiling["tile"],
        "megapixels": width * (height + args.databar) / 1e6,
        "analysed_megapixels": analysed / 1e6,
        "seconds": median,
        "runs_s": seconds,
        "process_s": float(np.median([r["process_s"] for r in runs])),
        "mpix_per_s": analysed / 1e6 / median,
        "efficiency": analysed / 1e6 / median / raw["mpix_per_s"],
        "work_ratio": plan.work_pixels / (width * height),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
        "peak_rss_source": runs[-1]["peak_rss_source"],
        "tiles": tiling["tiles"],
        "seconds_detail": result["seconds"],
    }


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from semphase.data.synth.large import write_large
    from semphase.machine import machine_info
    from semphase.runtime.sliding import DEFAULT_BATCH

    batch = args.batch or DEFAULT_BATCH
    tiles = [None if t.strip() == "model" else int(t) for t in args.tiles.split(",") if t.strip()]
    streams = [None if v.strip() == "default" else int(v) for v in args.streams.split(",") if v.strip()]
    settings = [(tile, n) for n in streams for tile in tiles]
    args.out.mkdir(parents=True, exist_ok=True)
    raws = [raw_throughput(args.model, args.threads, batch, args.raw_tiles, args.backend, n) for n in streams]
    for one in raws:
        print(
            f"raw model ({one['backend']}, {one['streams']} stream(s)): {one['seconds_per_tile'] * 1000:.1f} "
            f"ms per {one['tile']} px tile, {one['mpix_per_s']:.2f} MP/s"
        )
    raw = max(raws, key=lambda r: r["mpix_per_s"])
    rows = []
    for width, height in (_size(text) for text in args.sizes.split(",") if text.strip()):
        name = f"{'montage' if args.montage else 'micrograph'}_{width}x{height}"
        tif = args.out / f"{name}.tif"
        if not tif.exists():
            layout = {"tile": 512, "compression": "zlib", "bigtiff": True} if args.montage else {}
            write_large(
                tif,
                (width, height),
                seed=width + height,
                databar_px=args.databar,
                pixel_size_um=0.05,
                **layout,
            )
        runs: dict[tuple, list[dict]] = {setting: [] for setting in settings}
        for _ in range(args.repeat):  # interleaved: each setting once per repeat
            for setting in settings:
                tile, n = setting
                out = args.out / f"out_{name}_{tile or 'model'}_{n or 'default'}"
                runs[setting].append(
                    end_to_end(args.model, tif, out, args.threads, batch, args.backend, tile, args.overlap, n)
                )
        for setting in settings:
            row = _row(runs[setting], width, height, args, raw, setting)
            rows.append(row)
            print(
                f"{row['size']} tile {row['tile']} ({row['tile_setting']}), {row['streams']} stream(s): "
                f"{row['seconds']:.1f} s, "
                f"{row['mpix_per_s']:.2f} MP/s, efficiency {row['efficiency']:.2f}, work "
                f"{row['work_ratio']:.3f}, peak RSS {row['peak_rss_mb']:.0f} MiB"
            )
    report = {"model": str(args.model), "raw": raw, "raws": raws, "rows": rows}
    report["machine"] = machine_info(args.threads)
    report["command"] = " ".join(["python", "benchmarks/segment_throughput.py", *(argv or sys.argv[1:])])
    (args.out / "segment_throughput.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    (args.out / "segment_throughput.md").write_text(render(report), encoding="utf-8")
    print(f"wrote {args.out / 'segment_throughput.md'}")
    return 0


def render(report: dict) -> str:
    """The Markdown table README quotes."""
    raw, m = report["raw"], report["machine"]
    lines = [
        "# semphase segment end to end on large micrographs",
        "",
        f"`{report['command']}`",
        "",
        f"Machine: {m.get('cpu')}, {m.get('logical_cpus')} logical CPUs; "
        f"onnxruntime {m.get('versions', {}).get('onnxruntime')}; {raw['variant']} model, "
        f"tile {raw['tile']}, overlap {raw['overlap']}, batch {raw['batch']}.",
        "",
        "Raw model throughput on non-overlapping "
        f"{raw['tile']} px tiles (efficiency is against the fastest): "
        + "; ".join(
            f"{r.get('backend')}, {r.get('streams', 1)} stream(s): {r['seconds_per_tile'] * 1000:.1f} ms per "
            f"tile, {r['mpix_per_s']:.2f} MP/s"
            for r in report.get("raws", [raw])
        )
        + ".",
        "",
        "| micrograph | input -> outputs | backend | streams | tile | seconds | MP/s | efficiency vs raw "
        "| tiled work / pixels | its ceiling (pixels / work) | peak RSS |",
        "|:---|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['size']} | {r.get('input', 'TIFF')} -> {r.get('format', 'png')} | {r.get('backend')} | "
            f"{r.get('streams', 1)} | {r.get('tile')} | {r['seconds']:.1f} | "
            f"{r['mpix_per_s']:.2f} | {r['efficiency']:.2f} | {r['work_ratio']:.2f} | "
            f"{1 / r['work_ratio']:.3f} | {r['peak_rss_mb']:.0f} MiB |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
