"""Load on `semphase serve`: requests per minute and latency with 1 and 4 concurrent clients.

Starts ``semphase serve MODEL`` in a child process on a free localhost port, writes one synthetic
micrograph per size (TIFF with a 64-row FEI data bar and pixel size), then for each size and each number
of concurrent clients (httpx, one thread per client) sends ``--requests`` uploads and records every
request's latency (upload, queue, segmentation, JSON with inline PNGs). 503 answers (queue full) are
counted, not retried. Also measures ``semphase segment`` on the same file in one process (its own
``seconds.total`` from X.json, median of 3): the service's overhead is its median latency at one client
minus that. The server's peak RSS is read from /proc (VmHWM) after each size::

    python benchmarks/serve_load.py demo/model/model.int8.onnx --sizes 1024x768,4096x3072 --out bench/serve
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", type=Path, help="exported semphase model")
    p.add_argument("--sizes", default="1024x768,4096x3072", help="comma-separated WIDTHxHEIGHT")
    p.add_argument("--clients", default="1,4", help="comma-separated numbers of concurrent clients")
    p.add_argument("--requests", type=int, default=12, help="requests per size and client count")
    p.add_argument("--workers", type=int, default=1, help="the server's --workers")
    p.add_argument("--queue", type=int, default=4, help="the server's --queue")
    p.add_argument("--out", type=Path, required=True, help="work folder (images, serve_load.json)")
    return p


def _peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _segment_seconds(model: Path, image: Path, work: Path) -> float:
    times = []
    for i in range(3):
        out = work / f"segment-{image.stem}-{i}"
        subprocess.run(
            [sys.executable, "-m", "semphase", "segment", str(model), str(image), "--out", str(out), "-q"],
            check=True,
        )
        times.append(json.loads((out / f"{image.stem}.json").read_text())["seconds"]["total"])
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    import httpx

    from semphase.data.synth.large import write_large
    from semphase.machine import machine_info

    args = _parser().parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "semphase", "serve", str(args.model), "--port", str(port),
         "--workers", str(args.workers), "--queue", str(args.queue)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    rows = []
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: {server.stderr.read()[-500:]}") from None
                time.sleep(0.2)
        for size in args.sizes.split(","):
            width, height = (int(v) for v in size.lower().split("x"))
            image = args.out / f"micrograph_{width}x{height}.tif"
            if not image.exists():
                write_large(image, (width, height), seed=7, databar_px=64, pixel_size_um=0.1)
                (args.out / f"micrograph_{width}x{height}_truth.png").unlink()
            data = image.read_bytes()
            with tempfile.TemporaryDirectory() as work:
                segment_s = _segment_seconds(args.model, image, Path(work))
            for clients in (int(c) for c in args.clients.split(",")):
                latencies, statuses, lock = [], [], threading.Lock()
                todo = iter(range(args.requests))

                def client(
                    todo=todo, latencies=latencies, statuses=statuses, lock=lock, data=data, name=image.name
                ):
                    with httpx.Client(timeout=600) as http:
                        while True:
                            with lock:
                                if next(todo, None) is None:
                                    return
                            t0 = time.perf_counter()
                            r = http.post(url + "/segment", files={"file": (name, data)})
                            with lock:
                                statuses.append(r.status_code)
                                if r.status_code == 200:
                                    latencies.append(time.perf_counter() - t0)

                threads = [threading.Thread(target=client) for _ in range(clients)]
                t0 = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - t0
                ok = len(latencies)
                row = {
                    "size": [width, height],
                    "clients": clients,
                    "requests": args.requests,
                    "ok": ok,
                    "busy_503": statuses.count(503),
                    "other_errors": len(statuses) - ok - statuses.count(503),
                    "wall_s": round(wall, 2),
                    "requests_per_minute": round(60 * ok / wall, 2),
                    "latency_median_s": round(statistics.median(latencies), 3) if latencies else None,
                    "latency_max_s": round(max(latencies), 3) if latencies else None,
                    "segment_seconds_median": round(segment_s, 3),
                    "server_peak_rss_mib": _peak_rss_mib(server.pid),
                }
                if clients == 1 and latencies:
                    row["overhead_vs_segment_s"] = round(statistics.median(latencies) - segment_s, 3)
                rows.append(row)
                print(
                    f"{width} x {height}, {clients} client(s): {row['requests_per_minute']:.1f} req/min, "
                    f"median latency {row['latency_median_s']} s, 503s {row['busy_503']}, segment alone "
                    f"{segment_s:.2f} s, server peak RSS {row['server_peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    report = {
        "rows": rows,
        "workers": args.workers,
        "queue": args.queue,
        "cores": os.cpu_count(),
        "machine": machine_info(None),
        "command": " ".join(["python", "benchmarks/serve_load.py", *(argv or sys.argv[1:])]),
    }
    (args.out / "serve_load.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
