"""Which INT8 quantization gives the same phases as FP32 on every x86 CPU? Measure the candidates.

Two steps, so that the second can run where the first cannot (an emulated CPU, a microscope PC):

``make``: quantize an exported FP32 ``model.onnx`` with each candidate setting (activation and weight
types, 7-bit weights, per-channel or per-tensor scales), calibrating exactly as ``semphase export`` does
(32 random 512-pixel crops of the checkpoint's training split), into ``--out``.

``score``: torch-free. Run FP32 and every candidate on the held-out split in non-overlapping blocks and
report, against FP32: argmax agreement, change of mIoU, the largest change of any class IoU and of any
phase fraction (the numbers of ``semphase.gates``), and the median latency of one 512 x 512 tile against
FP32's, each candidate also with the session option ``session.x64quantprecision=1``. Writes
``int8_variants.json`` and a Markdown table; ``--no-timing`` skips the latency (under an emulator)::

    python benchmarks/int8_variants.py make --checkpoint demo/run/best.pt --fp32 demo/model/model.onnx \\
        --out int8-candidates
    python benchmarks/int8_variants.py score --data demo/data --split demo/split.json --models int8-candidates
    # the AVX2 kernels of a CPU without AVX-512/VNNI, on any x86 machine (QEMU user mode, ~1000x slower):
    python benchmarks/int8_variants.py score ... --crop 256 --max-images 3 --save-fp32-labels fp32.npz
    qemu-x86_64 -cpu EPYC-Rome .venv/bin/python benchmarks/int8_variants.py score ... --crop 256 \\
        --max-images 3 --fp32-labels fp32.npz --no-timing --tag avx2-emulated
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

#: name -> Int8Settings fields. "shipped-1.0" is the setting before issue 10; "default" is today's.
CANDIDATES = {
    "u8s8-8bit (before)": {"activations": "quint8", "weights": "qint8", "reduce_range": False},
    "u8s8-7bit (reduce_range)": {"activations": "quint8", "weights": "qint8", "reduce_range": True},
    "u8u8-8bit": {"activations": "quint8", "weights": "quint8", "reduce_range": False},
    "s8s8-8bit": {"activations": "qint8", "weights": "qint8", "reduce_range": False},
    "u8s8-8bit per-tensor": {
        "activations": "quint8",
        "weights": "qint8",
        "reduce_range": False,
        "per_channel": False,
    },
}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


def make(args: argparse.Namespace) -> None:
    import onnx

    from semphase.export.imagesets import calibration_tiles, resolve_image_sets
    from semphase.export.int8 import Int8Settings, prepare, quantize
    from semphase.phases import ClassTable
    from semphase.train.checkpoint import load_checkpoint

    _, config, _ = load_checkpoint(args.checkpoint)
    table = ClassTable.from_dict(config["classes"])
    images = resolve_image_sets(args.checkpoint, config, None, table)
    tiles = calibration_tiles(images.calibration, tile=512, count=32, normalization=config["normalization"])
    args.out.mkdir(parents=True, exist_ok=True)
    fp32 = onnx.load_model(str(args.fp32))
    (args.out / "fp32.onnx").write_bytes(args.fp32.read_bytes())
    work = args.out / "work"
    work.mkdir(exist_ok=True)
    prepared = prepare(fp32, work)
    for name, fields in CANDIDATES.items():
        start = time.perf_counter()
        graph = quantize(prepared, tiles, Int8Settings(**fields), cache_dir=work)
        onnx.save_model(graph.model, str(args.out / f"{_slug(name)}.onnx"))
        print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
    (args.out / "candidates.json").write_text(json.dumps(CANDIDATES, indent=1), encoding="utf-8")


def _session(path: Path, threads: int, precise: bool):
    from semphase.runtime.session import create_session

    return create_session(
        path, threads=threads, config={"session.x64quantprecision": "1"} if precise else None
    )


def _labels(session, image: np.ndarray, normalization: dict, tile: int = 512) -> np.ndarray:
    from semphase.model_format import normalize, pad_to_multiple

    h, w = image.shape
    out = np.empty((h, w), np.uint8)
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            block = pad_to_multiple(image[y : y + tile, x : x + tile])
            logits = session.run(None, {"image": normalize(block[None], normalization)})[0][0]
            bh, bw = min(tile, h - y), min(tile, w - x)
            out[y : y + bh, x : x + bw] = logits[:, :bh, :bw].argmax(0)
    return out


def _latency_ms(session, normalization: dict, runs: int) -> float:
    from semphase.export.imagesets import normalize

    tile = normalize(np.random.default_rng(0).integers(0, 256, (1, 512, 512), dtype=np.uint8), normalization)
    for _ in range(2):
        session.run(None, {"image": tile})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {"image": tile})
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def _centre(shape: tuple[int, int], side: int) -> tuple[slice, slice]:
    y, x = max(0, (shape[0] - side) // 2), max(0, (shape[1] - side) // 2)
    return slice(y, y + side), slice(x, x + side)


def score(args: argparse.Namespace) -> None:
    import json as _json

    import onnxruntime as ort

    from semphase.data.layout import load_pair, open_dataset
    from semphase.data.split import load_split
    from semphase.gates import changes_against
    from semphase.imageio import to_uint8
    from semphase.machine import cpu_summary, numpy_cpu_features
    from semphase.metrics import Scorer
    from semphase.phases import DEFAULT_TABLE

    fp32 = args.models / "fp32.onnx"
    meta = dict(_session(fp32, 1, False).get_modelmeta().custom_metadata_map)
    normalization = _json.loads(meta["semphase.input"])
    dataset = open_dataset(args.data)
    test = load_split(args.split, dataset)["test"]
    samples = [dataset.by_name()[n] for n in test][: args.max_images or None]
    heldout = [load_pair(s, DEFAULT_TABLE) for s in samples]
    if args.crop:  # the centre crop of each image: an emulated CPU runs ~100x slower
        heldout = [
            (image[_centre(image.shape, args.crop)], truth[_centre(truth.shape, args.crop)])
            for image, truth in heldout
        ]
    wanted = [n for n in CANDIDATES if not args.variants or _slug(n) in args.variants.split(",")]
    files = {"fp32": fp32} | {
        name: args.models / f"{_slug(name)}.onnx"
        for name in wanted
        if (args.models / f"{_slug(name)}.onnx").exists()
    }
    precise_runs = (False, True) if args.precise else (False,)
    runs = [("fp32", False)] + [(n, p) for n in files if n != "fp32" for p in precise_runs]
    labels: dict[tuple[str, bool], list[np.ndarray]] = {}
    scores, latency = {}, {}
    if args.fp32_labels:  # FP32 labelled natively: float results do not depend on the instruction set
        stored = np.load(args.fp32_labels)
        labels[("fp32", False)] = [stored[s.name] for s in samples]
        scorer = Scorer(DEFAULT_TABLE.names)
        for sample, (_, truth), pred in zip(samples, heldout, labels[("fp32", False)], strict=True):
            scorer.add(sample.name, truth, pred)
        scores[("fp32", False)] = scorer.result()
        runs = runs[1:]
    for name, precise in runs:
        session = _session(files[name], args.threads, precise)
        scorer = Scorer(DEFAULT_TABLE.names)
        labels[(name, precise)] = []
        for sample, (image, truth) in zip(samples, heldout, strict=True):
            pred = _labels(session, to_uint8(image), normalization)
            labels[(name, precise)].append(pred)
            scorer.add(sample.name, truth, pred)
        scores[(name, precise)] = scorer.result()
        if not args.no_timing:
            latency[(name, precise)] = _latency_ms(session, normalization, args.runs)
        print(f"scored {name}{' (precise kernels)' if precise else ''}", file=sys.stderr, flush=True)
    if args.save_fp32_labels:
        np.savez_compressed(
            args.save_fp32_labels,
            **{s.name: a for s, a in zip(samples, labels[("fp32", False)], strict=True)},
        )
    rows = []
    reference = labels[("fp32", False)]
    for (name, precise), preds in labels.items():
        agree = sum(int((a == b).sum()) for a, b in zip(preds, reference, strict=True))
        pixels = sum(r.size for r in reference)
        changes = changes_against(scores[(name, precise)], scores[("fp32", False)], 100.0 * agree / pixels)
        row = {
            "variant": name,
            "session_option": "session.x64quantprecision=1" if precise else None,
            **changes,
        }
        row["miou"] = scores[(name, precise)]["summary"]["miou"]["mean"]
        if latency:
            row["ms_per_tile"] = latency[(name, precise)]
            row["speedup_vs_fp32"] = latency[("fp32", False)] / latency[(name, precise)]
        rows.append(row)
    doc = {
        "tag": args.tag,
        "machine": {
            **cpu_summary(),
            # what CPUID tells this process (differs from the OS's flags under an emulator)
            "cpuid": [k for k in ("AVX2", "AVX512F", "AVX512VNNI") if numpy_cpu_features().get(k)],
            "onnxruntime": ort.__version__,
            "threads": args.threads,
        },
        "images": len(samples),
        "crop": args.crop or None,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"int8_variants-{args.tag}.json").write_text(_json.dumps(doc, indent=1), encoding="utf-8")
    lines = [
        f"{args.tag}: {doc['machine']['cpu']}; CPUID: {', '.join(doc['machine']['cpuid']) or 'no AVX2'}; "
        f"{len(samples)} held-out images"
        + (f" (centre {args.crop} x {args.crop})" if args.crop else "")
        + f", onnxruntime {ort.__version__}",
        "",
        "| variant | session option | agreement with FP32 | Δ mIoU | largest Δ class IoU"
        " | largest Δ fraction (pp) |" + (" ms / 512 tile | speed vs FP32 |" if latency else ""),
        "|:--|:--|--:|--:|--:|--:|" + ("--:|--:|" if latency else ""),
    ]
    for r in rows:
        cells = [
            r["variant"],
            r["session_option"] or "-",
            f"{r['agreement_pct']:.2f} %",
            f"{r['delta_miou']:+.4f}",
            f"{r['max_delta_class_iou']:+.4f} ({r['max_delta_class_iou_class']})",
            f"{r['max_fraction_change_pp']:+.3f} ({r['max_fraction_change_class']})",
        ]
        if latency:
            cells += [f"{r['ms_per_tile']:.1f}", f"{r['speedup_vs_fp32']:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (args.out / f"int8_variants-{args.tag}.md").write_text(text, encoding="utf-8")
    print(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    m = sub.add_parser("make", help="quantize FP32 with every candidate setting")
    m.add_argument("--checkpoint", type=Path, required=True)
    m.add_argument("--fp32", type=Path, required=True, help="model.onnx from semphase export")
    m.add_argument("--out", type=Path, required=True)
    s = sub.add_parser("score", help="compare the candidates with FP32 on the held-out split (torch-free)")
    s.add_argument("--data", type=Path, required=True)
    s.add_argument("--split", type=Path, required=True)
    s.add_argument("--models", type=Path, required=True, help="the folder 'make' wrote")
    s.add_argument("--out", type=Path, default=Path("int8-variants"))
    s.add_argument("--tag", default="native")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--runs", type=int, default=10, help="timed runs per variant (median)")
    s.add_argument("--max-images", type=int, default=0, help="score only the first N test images")
    s.add_argument("--no-timing", action="store_true", help="skip latency (emulated CPUs)")
    s.add_argument("--crop", type=int, default=0, help="score only the centre CROP x CROP of each image")
    s.add_argument("--variants", default="", help="comma-separated file stems of the candidates to score")
    s.add_argument("--no-precise", dest="precise", action="store_false", help="skip the precise-kernel runs")
    s.add_argument(
        "--save-fp32-labels", type=Path, help="write FP32's labels (.npz) for a later --fp32-labels"
    )
    s.add_argument(
        "--fp32-labels", type=Path, help="FP32 labels from --save-fp32-labels instead of running FP32"
    )
    args = parser.parse_args(argv)
    make(args) if args.step == "make" else score(args)


if __name__ == "__main__":
    main()
