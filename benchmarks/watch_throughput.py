"""Throughput of a watched folder: how many micrographs per minute `semphase watch` turns into results.

Writes ``--count`` synthetic micrographs of ``--size`` (width x height, with an FEI data bar and pixel
size, like a microscope export) into an inbox, then runs ``semphase watch INBOX --model MODEL --out OUT
--once`` in a child process and reads its journal: images per minute and megapixels per second over the
whole run (start-up, settling, scanning and segmenting included) and over the segmenting time alone::

    python benchmarks/watch_throughput.py demo/model/model.int8.onnx --count 20 --size 2048x1536 --out bench/w
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="exported semphase ONNX model")
    p.add_argument("--count", type=int, default=20, help="micrographs dropped into the inbox")
    p.add_argument("--size", default="2048x1536", help="WIDTHxHEIGHT of each micrograph (without data bar)")
    p.add_argument("--settle", type=float, default=2.0, help="the watcher's --settle (its default: 2 s)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime threads (default: one per core)")
    p.add_argument(
        "--out", type=Path, required=True, help="work folder (inbox/, out/, watch_throughput.json)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from semphase.benchmarks.rss import run_child
    from semphase.data.synth.large import write_series
    from semphase.machine import machine_info
    from semphase.runtime.ledger.journal import WATCH_JOURNAL, iter_lines

    width, height = (int(v) for v in args.size.lower().split("x"))
    inbox, out = args.out / "inbox", args.out / "out"
    shutil.rmtree(out, ignore_errors=True)
    write_series(inbox, args.count, (width, height), first_seed=100)
    argv_child = [sys.executable, "-m", "semphase", "watch", str(inbox), "--model", str(args.model)]
    argv_child += ["--out", str(out), "--once", "--quiet", "--settle", str(args.settle)]
    argv_child += ["--threads", str(args.threads)] if args.threads else []
    start = time.perf_counter()
    done = run_child(argv_child)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"watch failed: {done.stderr.strip()[-500:]}")
    lines = [r for r in iter_lines(out / WATCH_JOURNAL) if r["status"] == "done"]
    busy = sum(r["seconds"] for r in lines)
    megapixels = len(lines) * width * (height + 64) / 1e6
    report = {
        "images": len(lines),
        "size": [width, height],
        "wall_s": wall,
        "segmenting_s": busy,
        "images_per_minute": 60 * len(lines) / wall,
        "images_per_minute_segmenting": 60 * len(lines) / busy,
        "mpix_per_s": megapixels / wall,
        "settle_s": args.settle,
        "machine": machine_info(args.threads),
        "command": " ".join(["python", "benchmarks/watch_throughput.py", *(argv or sys.argv[1:])]),
    }
    (args.out / "watch_throughput.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(
        f"{len(lines)} micrographs of {width} x {height} (+64-row data bar) in {wall:.1f} s: "
        f"{report['images_per_minute']:.1f} images/min, {report['mpix_per_s']:.2f} MP/s overall "
        f"(settling and start-up included); {report['images_per_minute_segmenting']:.1f} images/min "
        f"while segmenting"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
