"""Archive throughput: plain `semphase segment` against `segment --cluster` on the same micrographs.

Writes ``--count`` synthetic micrographs of ``--size`` (width x height, plus a 64-row FEI data bar and
a pixel size, like a microscope export) once, then segments all of them into a fresh output folder with

1. ``semphase segment MODEL IN --out OUT``                         (one process, all cores)
2. ``... --cluster local:1``                                        (a LocalCluster, one worker)
3. ``... --cluster local:2``                                        (two workers, cores / 2 threads each)
4. ``... --cluster tcp://127.0.0.1:PORT`` with ``dask scheduler`` and two ``dask worker --nthreads 1``
   started as separate processes on this machine (how a real cluster runs, minus the network)

each as a child process, timed from start to exit (start-up, model loading and the self-check included).
Reports images per minute, megapixels per second and the cluster overhead per micrograph against plain
``segment`` ((wall - plain wall) / images), and checks that every configuration wrote the same masks::

    python benchmarks/archive_throughput.py demo/model/model.int8.onnx --count 200 --out bench/archive
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="exported semphase ONNX model (or .bioimageio.zip)")
    p.add_argument("--count", type=int, default=200, help="micrographs in the archive")
    p.add_argument("--size", default="2048x1536", help="WIDTHxHEIGHT of each micrograph (without data bar)")
    p.add_argument(
        "--configs",
        default="plain,local:1,local:2,scheduler:2",
        help="comma-separated: plain, local:N, scheduler:N (a dask scheduler + N dask workers as processes)",
    )
    p.add_argument("--out", type=Path, required=True, help="work folder (archive/, out-*/, archive.json)")
    return p


def _masks_digest(out: Path) -> str:
    digest = hashlib.sha256()
    for mask in sorted(out.glob("*_mask.png")):
        digest.update(mask.name.encode())
        digest.update(mask.read_bytes())
    return digest.hexdigest()


def _start_scheduler(work: Path, workers: int) -> tuple[str, list[subprocess.Popen]]:
    bindir = Path(sys.executable).parent
    scheduler_file = work / "scheduler.json"
    scheduler_file.unlink(missing_ok=True)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [bindir / "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", scheduler_file], **quiet,
        )
    ]  # fmt: skip
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    address = json.loads(scheduler_file.read_text())["address"]
    for _ in range(workers):
        procs.append(
            subprocess.Popen(
                [bindir / "dask", "worker", address, "--nthreads", "1", "--no-dashboard"], **quiet
            )
        )
    return address, procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from semphase.data.synth.large import write_series
    from semphase.machine import machine_info

    width, height = (int(v) for v in args.size.lower().split("x"))
    archive = args.out / "archive"
    write_series(archive, args.count, (width, height), first_seed=1000, digits=4)
    megapixels = args.count * width * (height + 64) / 1e6
    rows, digests = [], {}
    plain_wall = None
    for config in [c.strip() for c in args.configs.split(",") if c.strip()]:
        out = args.out / f"out-{config.replace(':', '-')}"
        shutil.rmtree(out, ignore_errors=True)
        command = [
            sys.executable,
            "-m",
            "semphase",
            "segment",
            str(args.model),
            str(archive),
            "--out",
            str(out),
        ]
        command.append("--quiet")
        procs: list[subprocess.Popen] = []
        if config.startswith("local"):
            command += ["--cluster", config]
        elif config.startswith("scheduler:"):
            address, procs = _start_scheduler(args.out, int(config.split(":")[1]))
            command += ["--cluster", address]
        elif config != "plain":
            raise SystemExit(f"unknown config {config!r}")
        try:
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            wall = time.perf_counter() - start
        finally:
            _stop(procs)
        if done.returncode != 0:
            raise SystemExit(f"{config} failed: {done.stderr.strip()[-800:]}")
        if config == "plain":
            plain_wall = wall
        digests[config] = _masks_digest(out)
        run = json.loads((out / "cluster-run.json").read_text()) if config != "plain" else None
        row = {
            "config": config,
            "wall_s": round(wall, 2),
            "images_per_minute": round(60 * args.count / wall, 2),
            "mpix_per_s": round(megapixels / wall, 3),
            "overhead_per_image_s": round((wall - plain_wall) / args.count, 3) if plain_wall else None,
            "workers": run["workers"] if run else None,
        }
        rows.append(row)
        print(
            f"{config:>12}: {wall:7.1f} s, {row['images_per_minute']:6.1f} images/min, "
            f"{row['mpix_per_s']:.2f} MP/s"
            + (
                f", {row['overhead_per_image_s']:+.3f} s per image vs plain"
                if row["overhead_per_image_s"]
                else ""
            ),
            flush=True,
        )
    same = len(set(digests.values())) == 1
    report = {
        "images": args.count,
        "size": [width, height],
        "databar_rows": 64,
        "megapixels": megapixels,
        "configs": rows,
        "same_masks_everywhere": same,
        "machine": machine_info(None),
        "cores": os.cpu_count(),
        "command": " ".join(["python", "benchmarks/archive_throughput.py", *(argv or sys.argv[1:])]),
    }
    (args.out / "archive.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"masks identical in every configuration: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
