"""Child process of the end-to-end benchmark: load one model, segment one micrograph, print the timings.

Run as ``python -m semphase.benchmarks.child MODEL IMAGE [options]``; the parent reads the peak RSS of
this process when it exits (:mod:`semphase.benchmarks.rss`), so this process does nothing but what a
microscope PC does to segment one micrograph. The last stdout line is a JSON object: ``variant``,
``providers``, ``height``, ``width``, ``tile``, ``overlap``, ``batch``, ``load_s``, ``read_s``,
``warmup_s``, ``seconds`` (one entry per timed run) and ``peak_rss_mb`` / ``peak_rss_source`` (this
process's own peak, see :mod:`semphase.benchmarks.rss`). A ``.pt`` MODEL runs the PyTorch checkpoint
through the same tiling (torch is imported only then).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m semphase.benchmarks.child", description=__doc__)
    parser.add_argument("model", help="model.onnx / model.fp16.onnx / model.int8.onnx, or a .pt checkpoint")
    parser.add_argument("image", help="micrograph to segment (TIFF, PNG, ...)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads")
    parser.add_argument("--provider", default="auto", help="onnxruntime execution provider")
    parser.add_argument("--backend", default="onnxruntime", help="onnxruntime, openvino or auto")
    parser.add_argument("--batch", type=int, default=4, help="tiles per inference call")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs of the whole micrograph")
    parser.add_argument("--tile", type=int, default=None, help="tile size (default: the model's)")
    parser.add_argument("--overlap", type=int, default=None, help="tile overlap (default: the model's)")
    parser.add_argument("--labels-out", default=None, help="save the labels of the last run as .npy")
    return parser


def _load(args: argparse.Namespace):
    if args.model.lower().endswith((".pt", ".pth")):
        from semphase.train.inference import load_checkpoint_model

        return load_checkpoint_model(args.model, threads=args.threads, tile=args.tile, overlap=args.overlap)
    from semphase.runtime.model import load_model

    return load_model(args.model, provider=args.provider, threads=args.threads, backend=args.backend)


def main(argv: list[str] | None = None) -> int:
    """Segment and print the JSON line; exit 2 with a one-line message on bad input."""
    args = _parser().parse_args(argv)
    from semphase.errors import InputError

    try:
        start = time.perf_counter()
        model = _load(args)
        load_s = time.perf_counter() - start

        from semphase.imageio import read_gray, to_uint8
        from semphase.model_format import Tiling
        from semphase.runtime.segment import segment_array

        start = time.perf_counter()
        image = to_uint8(read_gray(args.image))
        read_s = time.perf_counter() - start

        tiling = Tiling.resolve(model, args.tile, args.overlap)
        options = {"tiling": tiling, "batch": args.batch, "window": "gaussian"}
        # First inference allocates the session's buffers; a one-tile warm-up keeps that out of the timing.
        start = time.perf_counter()
        segment_array(model, np.ascontiguousarray(image[: tiling.tile, : tiling.tile]), **options)
        warmup_s = time.perf_counter() - start

        seconds = []
        labels = None
        for _ in range(max(1, args.repeat)):
            labels = None  # free the previous result first: peak memory is that of one run
            start = time.perf_counter()
            labels = segment_array(model, image, **options)
            seconds.append(time.perf_counter() - start)
        if args.labels_out:
            np.save(args.labels_out, labels, allow_pickle=False)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory", file=sys.stderr)
        return 1
    except Exception as exc:  # the parent reports the last stderr line as the variant's reason
        from semphase.errors import one_line

        print(f"error: {exc.__class__.__name__}: {one_line(exc)}", file=sys.stderr)
        return 1
    from semphase.benchmarks.rss import own_peak_rss_mb

    peak_mb, peak_source = own_peak_rss_mb()
    report = {
        "variant": getattr(model, "variant", None),
        "providers": list(getattr(model, "providers", []) or []),
        "backend": getattr(getattr(model, "backend", None), "name", None),
        "height": int(image.shape[0]),
        "width": int(image.shape[1]),
        "tile": tiling.tile,
        "overlap": tiling.overlap,
        "batch": int(args.batch),
        "load_s": load_s,
        "read_s": read_s,
        "warmup_s": warmup_s,
        "seconds": seconds,
        "peak_rss_mb": peak_mb,
        "peak_rss_source": peak_source,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
