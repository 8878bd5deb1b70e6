"""semphase (onnxruntime FP32 / INT8) against MONAI's sliding-window inference and plain PyTorch.

The same trained network (a semphase training checkpoint and its ``semphase export`` files) segments the
same synthetic micrographs, in one process with one thread count, four ways:

- ``monai``: :func:`monai.inferers.sliding_window_inference` on PyTorch with the semphase tiling
  (``roi_size`` = tile, ``overlap`` = overlap / tile, ``mode="gaussian"``, reflect padding) - the tiled
  inference most users would otherwise pick;
- ``pytorch-whole``: the whole micrograph through the network at once, when it fits (``--whole-max-mp``);
- ``semphase-fp32`` and ``semphase-int8``: :func:`semphase.runtime.segment.segment_array`.

Each method is timed on each micrograph (median of ``--repeat`` runs after a warm-up), its labels are
compared pixel by pixel with MONAI's, and the speed-up of semphase over MONAI is reported. Writes
``peer_monai.json`` and ``peer_monai.md`` to ``--out``; with ``--results`` also a RESULTS.md with the
table, the machine and the command that reproduces it. Needs the ``train`` and ``bench`` extras::

    python benchmarks/peer_monai.py --checkpoint runs/demo/best.pt --models models/demo \\
        --sizes 1024,2048 --threads 2 --out benchmarks/out --results benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import gc
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("monai", "pytorch-whole", "semphase-fp32", "semphase-int8")
MODEL_FILES = {"semphase-fp32": "model.onnx", "semphase-int8": "model.int8.onnx"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="semphase training checkpoint (best.pt)")
    p.add_argument("--models", type=Path, required=True, help="folder with model.onnx and model.int8.onnx")
    p.add_argument("--sizes", default="1024,2048", help="sides of the square synthetic micrographs")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for every method")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per method and micrograph")
    p.add_argument("--batch", type=int, default=2, help="tiles per inference call (MONAI's sw_batch_size)")
    p.add_argument("--sigma-scale", type=float, default=0.125, help="MONAI's Gaussian sigma / tile size")
    p.add_argument("--whole-max-mp", type=float, default=4.5, help="largest micrograph run untiled (MP)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic micrographs")
    p.add_argument("--out", type=Path, required=True, help="folder for peer_monai.json and peer_monai.md")
    p.add_argument("--results", type=Path, default=None, help="also write this RESULTS.md")
    p.add_argument("--benchmark-report", type=Path, default=None, help="report.md to include in RESULTS.md")
    p.add_argument(
        "--include",
        type=Path,
        action="append",
        default=[],
        help="another Markdown file to include in RESULTS.md (repeatable), e.g. segment_throughput.md",
    )
    return p


def _median_seconds(run, repeat: int) -> tuple[float, np.ndarray]:
    """Median wall time of ``repeat`` calls and the last call's result."""
    times, result = [], None
    for _ in range(repeat):
        result = None
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def _torch_methods(checkpoint: Path, tile: int, overlap: int, args):
    """``{name: segment(image_u8) -> labels}`` for MONAI and whole-image PyTorch."""
    import torch
    from monai.inferers import sliding_window_inference

    from semphase.train.checkpoint import load_checkpoint
    from semphase.train.inference import normalize_batch, predict_labels

    torch.set_num_threads(args.threads)
    network, config, _ = load_checkpoint(checkpoint, "cpu")
    norm = config["normalization"]

    def monai(image_u8: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = normalize_batch(image_u8[None], norm)
            logits = sliding_window_inference(
                x,
                roi_size=(tile, tile),
                sw_batch_size=args.batch,
                predictor=network,
                overlap=overlap / tile,
                mode="gaussian",
                sigma_scale=args.sigma_scale,
                padding_mode="reflect",
            )
            return logits[0].argmax(0).numpy().astype(np.uint8)

    def whole(image_u8: np.ndarray) -> np.ndarray:
        return predict_labels(network, config, image_u8)

    return {"monai": monai, "pytorch-whole": whole}


def _runtime_method(path: Path, args):
    from semphase.runtime.model import load_model
    from semphase.runtime.segment import segment_array

    model = load_model(path, provider="cpu", threads=args.threads)

    def segment(image_u8: np.ndarray) -> np.ndarray:
        return segment_array(model, image_u8, batch=args.batch, window="gaussian")

    return model, segment


def run(args, command: str) -> dict:
    """Measure every method on every size; return the JSON document (``command`` is recorded)."""
    from semphase.data.synth import write_large
    from semphase.imageio import read_gray
    from semphase.machine import machine_info

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    fp32_model, _ = _runtime_method(args.models / MODEL_FILES["semphase-fp32"], args)
    tile, overlap = int(fp32_model.tile_size), int(fp32_model.overlap)
    del fp32_model
    images = {}
    with tempfile.TemporaryDirectory(prefix="semphase-peer-") as work:
        for size in sizes:
            tif, _ = write_large(Path(work) / f"synthetic_{size}.tif", size, seed=args.seed)
            images[size] = read_gray(tif)
    rows: list[dict] = []
    labels: dict[tuple[str, int], np.ndarray] = {}
    for method in METHODS:
        if method in MODEL_FILES:
            model, segment = _runtime_method(args.models / MODEL_FILES[method], args)
        else:
            model, segment = None, _torch_methods(args.checkpoint, tile, overlap, args)[method]
        for size, image in images.items():
            row = {"method": method, "size": size, "megapixels": size * size / 1e6}
            if method == "pytorch-whole" and row["megapixels"] > args.whole_max_mp:
                row.update(status="skipped", reason=f"larger than --whole-max-mp {args.whole_max_mp}")
                rows.append(row)
                continue
            segment(np.ascontiguousarray(image[:tile, :tile]))  # warm-up
            seconds, result = _median_seconds(lambda s=segment, i=image: s(i), args.repeat)
            labels[(method, size)] = result
            row.update(status="ok", seconds=seconds, mpix_per_s=row["megapixels"] / seconds)
            rows.append(row)
        del model, segment
        gc.collect()
    for row in rows:
        ref = labels.get(("monai", row["size"]))
        mine = labels.get((row["method"], row["size"]))
        monai_row = next(r for r in rows if r["method"] == "monai" and r["size"] == row["size"])
        if ref is not None and mine is not None:
            row["agreement_vs_monai"] = float(np.mean(ref == mine))
            row["speedup_vs_monai"] = monai_row["seconds"] / row["seconds"]
        fp32 = labels.get(("semphase-fp32", row["size"]))
        if fp32 is not None and mine is not None:
            row["agreement_vs_semphase_fp32"] = float(np.mean(fp32 == mine))
    return {
        "format": "semphase-peer-monai/1",
        "command": command,
        "checkpoint": str(args.checkpoint),
        "models": str(args.models),
        "settings": {
            "threads": args.threads,
            "repeat": args.repeat,
            "batch": args.batch,
            "tile": tile,
            "overlap": overlap,
            "monai_overlap_fraction": overlap / tile,
            "sigma_scale": args.sigma_scale,
            "sizes": sizes,
            "seed": args.seed,
        },
        "machine": machine_info(args.threads, "cpu"),
        "rows": rows,
    }


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(doc: dict) -> str:
    """The results as a Markdown table with the settings under it."""
    s = doc["settings"]
    lines = [
        "| method | size | seconds | MP/s | speed-up vs MONAI | agreement vs MONAI "
        "| agreement vs semphase FP32 |",
        "|:---|:---|---:|---:|---:|---:|---:|",
    ]
    for r in doc["rows"]:
        if r["status"] != "ok":
            lines.append(
                f"| {r['method']} | {r['size']} x {r['size']} | {r['status']}: {r['reason']} | | | | |"
            )
            continue
        agree = r.get("agreement_vs_monai")
        agree32 = r.get("agreement_vs_semphase_fp32")
        lines.append(
            f"| {r['method']} | {r['size']} x {r['size']} | {r['seconds']:.2f} | {r['mpix_per_s']:.3f} "
            f"| {_cell(r.get('speedup_vs_monai'), '.2f')}x "
            f"| {_cell(None if agree is None else 100 * agree, '.3f')}% "
            f"| {_cell(None if agree32 is None else 100 * agree32, '.3f')}% |"
        )
    lines += [
        "",
        f"_{s['threads']} threads; tile {s['tile']}, overlap {s['overlap']} px (MONAI overlap "
        f"{s['monai_overlap_fraction']:.4f}), Gaussian blending (MONAI sigma_scale {s['sigma_scale']}), "
        f"batch {s['batch']}; median of {s['repeat']} runs after a warm-up._",
    ]
    return "\n".join(lines) + "\n"


def results_md(doc: dict, benchmark_report: Path | None, includes: list[Path] = ()) -> str:
    """RESULTS.md: the peer table, the machine, the command, other measurements, and optionally the
    benchmark report."""
    m = doc["machine"]
    isa = ", ".join(
        f"{k} {'yes' if v else 'no' if v is not None else '?'}" for k, v in m["instruction_sets"].items()
    )
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    parts = [
        "# Measured results",
        "",
        "## semphase vs MONAI sliding-window inference and plain PyTorch",
        "",
        markdown(doc),
        "## Machine",
        "",
        f"- CPU: {m['cpu']} ({m['physical_cores']} physical / {m['logical_cpus']} logical cores), "
        f"{m['memory_gb']} GiB",
        f"- instruction sets: {isa}",
        f"- {m['os']}, Python {m['python']}; {versions}",
        f"- load average at the end: {m.get('load_average')}",
        "",
        "## Reproduce",
        "",
        "```",
        doc["command"],
        "```",
        "",
    ]
    for path in includes:
        text = path.read_text(encoding="utf-8").strip()
        title = text.splitlines()[0].lstrip("# ") if text.startswith("# ") else path.stem.replace("_", " ")
        body = "\n".join(text.splitlines()[1:]) if text.startswith("# ") else text
        parts += [f"## {title}", "", body.strip(), ""]
    if benchmark_report is not None:
        text = benchmark_report.read_text(encoding="utf-8")
        lines = text.splitlines()
        if lines and lines[0].startswith("# "):
            lines = lines[1:]
        body = "\n".join(lines)
        if "\n## Figures" in body:  # the PNGs live beside report.md, not here
            body = body[: body.index("\n## Figures")]
            figures = f"`{benchmark_report.parent}/*.png`"
            body += f"\n\nFigures (throughput, accuracy deltas, confusion matrices): {figures}.\n"
        parts += ["## semphase benchmark report", "", body.replace("\n# ", "\n### ").strip(), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    from semphase.imageio import write_text_atomic

    doc = run(args, shlex.join(["python", "benchmarks/peer_monai.py", *argv]))
    write_text_atomic(args.out / "peer_monai.json", json.dumps(doc, indent=1) + "\n")
    write_text_atomic(args.out / "peer_monai.md", markdown(doc))
    if args.results is not None:
        write_text_atomic(args.results, results_md(doc, args.benchmark_report, args.include))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
