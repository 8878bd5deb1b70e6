"""semphase's exported FP32, FP16 and INT8 files on onnxruntime and on OpenVINO, measured side by side.

The same ONNX files (``--models``: the folder ``semphase export`` wrote) run, with ``--threads`` threads
(default: one per physical core this process may use), as:

- ``ort-fp32``, ``ort-fp16``, ``ort-int8``: semphase's own runtime (:func:`semphase.runtime.model.load_model`
  on the CPU provider, sessions from :func:`semphase.runtime.session.create_session`). Each file is opened
  once with its self-check, and every onnxruntime run here then uses the session options that check chose
  (the precise INT8 kernels where the fast ones change the phases), as ``semphase segment`` would;
- ``ov-fp32``, ``ov-fp16``, ``ov-int8``: ``openvino.Core().compile_model`` on the same file, device CPU,
  ``INFERENCE_NUM_THREADS`` = threads, ``PERFORMANCE_HINT`` = ``LATENCY`` and OpenVINO's default
  ``INFERENCE_PRECISION_HINT``. On CPUs with avx512_bf16 or AMX that default is bf16, not f32: the
  float layers then run in bfloat16, which is faster and can change the phases. So:
- ``ov-fp32-f32``: the FP32 file again with ``INFERENCE_PRECISION_HINT`` = ``f32`` (``--f32-all`` adds
  ``-f32`` runs of the other OpenVINO files too). Every result records the precision OpenVINO resolved;
- ``ov-nncf-int8``: OpenVINO's own INT8, NNCF post-training quantization (``nncf.quantize``) of the
  OpenVINO model read from ``model.onnx``: preset ``PERFORMANCE`` (symmetric weights and activations),
  target device CPU, ``fast_bias_correction`` on, ``subset_size`` = ``--calibration-tiles`` (default 300,
  NNCF's own default; ``semphase export`` calibrates its INT8 on 32 crops). The calibration tiles are
  512 x 512 crops of synthetic micrographs (:mod:`semphase.data.synth`, seeds from 1000, 16 crops each),
  normalized as semphase normalizes. Quantization runs in its own process (nncf imports torch where it
  is installed); the model is saved as OpenVINO IR (weights kept in f32) to ``--out`` and compiled like
  the others. Without nncf this row is skipped with its reason;
- ``auto-fp32``, ``auto-fp16``, ``auto-int8``: what ``semphase segment --backend auto`` runs: semphase's
  ``load_model(..., backend="auto")`` (the self-check on each backend, the faster that passes, the choice
  cached per model and machine), timed in the same interleaved rounds as the others, so that its table
  shows auto against the faster of the two on the same tile in the same run. Not run end to end (it runs
  one of the two).

Measured:

- per 512 x 512 tile (1 x 1 x 512 x 512, uint8 to logits, normalization included): the median latency of
  ``--repeats`` runs after ``--warmup`` runs, interleaved (one run of every configuration per round, the
  order rotated each round, ``--settle`` seconds between runs so that no thread pool still spins);
  argmax agreement of every configuration with onnxruntime FP32, and of each OpenVINO run with
  onnxruntime on the same file, on ``--heldout-tiles`` crops of synthetic micrographs (seeds from 2000,
  8 crops each; never used for calibration), and the largest change of any phase fraction;
- first inference: load or compile the file plus the first 512 x 512 tile, in a fresh process (median of
  ``--first-repeats`` processes, interleaved). onnxruntime's load is semphase's ``load_model`` without
  the self-check (it includes semphase's one 64 x 64 probe tile); OpenVINO compiles without a model cache;
- end to end (``--sizes``, default 4096,8192): the whole sliding-window segmentation of a synthetic
  micrograph (:func:`semphase.runtime.sliding.segment_array`, the model's tile and overlap, Gaussian
  blending, ``--batch`` tiles per call) in a fresh process per run, after a one-tile warm-up: seconds,
  megapixels per second and the process's own peak RSS (``VmHWM``, :mod:`semphase.benchmarks.rss`),
  median of ``--e2e-repeats`` interleaved runs; labels compared with onnxruntime FP32's. OpenVINO runs
  through the same sliding window, wrapped in :class:`OpenVinoModel` (``logits(batch_u8)`` like
  :class:`semphase.runtime.model.SegmentationModel`).

Writes ``peer_openvino.json`` (everything, with the machine: CPU, instruction sets, OpenVINO's
optimization capabilities, onnxruntime / openvino / nncf versions, threads) and ``peer_openvino.md``
to ``--out`` and prints the tables. ``--resume`` continues an interrupted run with the same settings
(the synthetic micrographs and labels live in ``--out/work`` until the run completes).
Needs ``openvino`` (and ``nncf`` for OpenVINO's INT8)::

    python benchmarks/peer_openvino.py --models demo/model --out bench/openvino
    python benchmarks/peer_openvino.py --models demo/model --out /tmp/ov --sizes "" --repeats 1 \\
        --heldout-tiles 2 --first-repeats 1 --configs ort-fp32,ov-fp32,ov-fp32-f32   # a smoke test
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import importlib.util
import json
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Side of the tiles timed and compared one by one.
TILE = 512
#: Seeds of the synthetic micrographs: calibration, held-out tiles, first-inference tile, end to end.
CALIBRATION_SEED, HELDOUT_SEED, FIRST_SEED, E2E_SEED = 1000, 2000, 3000, 4000
#: OpenVINO IR written by the NNCF quantization (with its .bin beside it).
NNCF_FILE = "openvino_nncf_int8.xml"
FORMAT = "semphase-peer-openvino/1"


@dataclass(frozen=True)
class Config:
    """One way to run one file: ``backend`` on ``file`` with an OpenVINO precision hint (None: default);
    ``pair`` is the onnxruntime configuration its row is compared with."""

    id: str
    backend: str
    file: str
    hint: str | None = None
    pair: str = "ort-fp32"


CONFIGS = [
    Config("ort-fp32", "onnxruntime", "model.onnx"),
    Config("ort-fp16", "onnxruntime", "model.fp16.onnx", pair="ort-fp16"),
    Config("ort-int8", "onnxruntime", "model.int8.onnx", pair="ort-int8"),
    Config("ov-fp32", "openvino", "model.onnx"),
    Config("ov-fp32-f32", "openvino", "model.onnx", "f32"),
    Config("ov-fp16", "openvino", "model.fp16.onnx", pair="ort-fp16"),
    Config("ov-int8", "openvino", "model.int8.onnx", pair="ort-int8"),
    Config("ov-nncf-int8", "openvino", NNCF_FILE, pair="ort-int8"),
    Config("auto-fp32", "auto", "model.onnx"),
    Config("auto-fp16", "auto", "model.fp16.onnx", pair="ort-fp16"),
    Config("auto-int8", "auto", "model.int8.onnx", pair="ort-int8"),
]
F32_EXTRA = [
    Config("ov-fp16-f32", "openvino", "model.fp16.onnx", "f32", "ort-fp16"),
    Config("ov-int8-f32", "openvino", "model.int8.onnx", "f32", "ort-int8"),
    Config("ov-nncf-int8-f32", "openvino", NNCF_FILE, "f32", "ort-int8"),
]


@dataclass
class OpenVinoModel:
    """A compiled OpenVINO model behind the tile interface of
    :class:`semphase.runtime.model.SegmentationModel`, so that semphase's sliding window runs it unchanged.

    Attributes
    ----------
    request : the compiled model's infer request (one: the sliding window calls ``logits`` serially).
    input : the file's normalization, ``{"scale", "mean", "std", "size_multiple", ...}``.
    tile_size, overlap, classes, variant : as in the file's metadata.
    properties : what OpenVINO resolved: precision, threads, streams, pinning.
    """

    request: object
    input: dict
    tile_size: int
    overlap: int
    classes: list[str]
    variant: str
    properties: dict

    @classmethod
    def compile(cls, path: Path, threads: int, hint: str | None, meta: dict) -> OpenVinoModel:
        """Compile ``path`` (ONNX or OpenVINO IR) for the CPU; ``meta`` holds the semphase metadata."""
        import openvino as ov

        config = {"INFERENCE_NUM_THREADS": int(threads), "PERFORMANCE_HINT": "LATENCY"}
        if hint:
            config["INFERENCE_PRECISION_HINT"] = hint
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        return cls(
            compiled.create_infer_request(),
            meta["input"],
            meta["tile_size"],
            meta["overlap"],
            meta["classes"],
            meta["variant"],
            _resolved(compiled),
        )

    @property
    def size_multiple(self) -> int:
        return int(self.input["size_multiple"])

    def logits(self, batch_u8: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W) tiles -> float32 (N, C, H, W) logits, normalized as semphase normalizes."""
        from semphase.model_format import normalize

        if batch_u8.ndim != 3 or batch_u8.dtype != np.uint8:
            raise ValueError(f"expected uint8 (N, H, W) tiles, got {batch_u8.dtype} {batch_u8.shape}")
        # share_outputs=False (the default) copies the logits out: the next call reuses the request.
        out = self.request.infer({0: normalize(batch_u8, self.input)}, share_inputs=True)
        return np.asarray(out[0], dtype=np.float32)


def _resolved(compiled) -> dict:
    values = {}
    for key in ("INFERENCE_PRECISION_HINT", "INFERENCE_NUM_THREADS", "NUM_STREAMS", "ENABLE_CPU_PINNING"):
        try:
            value = compiled.get_property(key)
        except Exception:  # a property this OpenVINO version does not have
            continue
        values[key] = value.get_type_name() if hasattr(value, "get_type_name") else value
    return {k: v if isinstance(v, bool | int | float | str) else str(v) for k, v in values.items()}


def open_model(spec: dict):
    """The configuration in ``spec`` as an object with ``logits(batch_u8)`` and the tiling attributes.

    Every configuration runs one call at a time on all ``threads`` (``streams=1``), as the OpenVINO rows'
    single infer request does: this compares the backends call for call; what two streams add is
    measured end to end by ``segment_throughput.py --streams``."""
    if spec["backend"] in ("onnxruntime", "auto"):
        from semphase.runtime.model import load_model

        if spec["backend"] == "auto":  # what `semphase segment --backend auto` runs: self-checked, measured
            return load_model(
                spec["path"], provider="cpu", threads=spec["threads"], backend="auto", streams=1
            )
        return load_model(
            spec["path"],
            provider="cpu",
            threads=spec["threads"],
            verify=False,
            session_options=spec["session_options"],
            streams=1,
        )
    return OpenVinoModel.compile(Path(spec["path"]), spec["threads"], spec["hint"], spec["meta"])


def synthetic_tiles(first_seed: int, count: int, per_micrograph: int, side: int = 2048) -> np.ndarray:
    """``count`` random 512 x 512 crops, uint8 (count, 512, 512), ``per_micrograph`` from each synthetic
    ``side`` x ``side`` micrograph with seeds ``first_seed``, ``first_seed + 1``, ..."""
    from semphase.data.synth.render import prepare

    tiles = []
    seed = first_seed
    while len(tiles) < count:
        scene = prepare(side, side, seed, 700)
        image = np.empty((side, side), np.uint8)
        for y0, y1 in scene.bands():
            image[y0:y1], _ = scene.render(y0, y1)
        rng = np.random.default_rng(seed)
        for _ in range(min(per_micrograph, count - len(tiles))):
            y, x = rng.integers(0, side - TILE + 1, 2)
            tiles.append(image[y : y + TILE, x : x + TILE].copy())
        seed += 1
    return np.stack(tiles) if tiles else np.empty((0, TILE, TILE), np.uint8)


def _child(spec: dict) -> int:
    """Fresh-process run: load, first tile, optionally segment a micrograph; one JSON line on stdout."""
    try:
        start = time.perf_counter()
        __import__("openvino" if spec["backend"] == "openvino" else "onnxruntime")
        import_s = time.perf_counter() - start
        image = None
        if spec.get("image"):
            from semphase.imageio import read_gray, to_uint8

            image = to_uint8(read_gray(spec["image"]))
            tile = np.ascontiguousarray(image[None, : spec["tile"], : spec["tile"]])
        else:
            tile = synthetic_tiles(FIRST_SEED, 1, 1, side=spec["tile"])
        start = time.perf_counter()
        model = open_model(spec)
        load_s = time.perf_counter() - start
        start = time.perf_counter()
        model.logits(tile)
        first_run_s = time.perf_counter() - start
        seconds = None
        if image is not None:
            from semphase.runtime.sliding import segment_array

            start = time.perf_counter()
            labels = segment_array(model, image, batch=spec["batch"], window="gaussian")
            seconds = time.perf_counter() - start
            np.save(spec["labels_out"], labels, allow_pickle=False)
    except Exception as exc:  # the parent records the last stderr line as the reason
        print(f"error: {exc.__class__.__name__}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 1
    from semphase.benchmarks.rss import own_peak_rss_mb

    peak, source = own_peak_rss_mb()
    report = {"import_s": import_s, "load_s": load_s, "first_run_s": first_run_s, "seconds": seconds}
    print(json.dumps(report | {"peak_rss_mb": peak, "peak_rss_source": source}))
    return 0


def _run_child(spec: dict, mode: str = "_child") -> dict:
    """Run this script as ``mode`` in a fresh process; its JSON line, ``status`` and the wall time."""
    from semphase.benchmarks.rss import run_child

    done = run_child([sys.executable, str(Path(__file__).resolve()), mode, json.dumps(spec)])
    if done.returncode != 0:
        said = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        return {"status": "failed", "reason": said[-1]}
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report.get("peak_rss_mb", 0) is None:
        report.update(peak_rss_mb=done.rusage_peak_mb, peak_rss_source="rusage")
    return {"status": "ok", **report, "process_s": done.wall_s}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--models", type=Path, required=True, help="folder with model.onnx, .fp16.onnx, .int8.onnx"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for peer_openvino.json / .md")
    p.add_argument(
        "--threads", type=int, default=None, help="threads for both (default: the physical cores usable here)"
    )
    ids = ", ".join(c.id for c in CONFIGS + F32_EXTRA)
    p.add_argument(
        "--configs", default="", help=f"comma-separated, from: {ids} (default: all but the --f32-all extras)"
    )
    p.add_argument("--f32-all", action="store_true", help="also run every OpenVINO file with the f32 hint")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per tile configuration (median)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per configuration before timing")
    p.add_argument("--settle", type=float, default=0.05, help="seconds of pause between timed runs")
    p.add_argument("--heldout-tiles", type=int, default=16, help="512 x 512 tiles for the agreement")
    p.add_argument("--calibration-tiles", type=int, default=300, help="NNCF calibration tiles")
    p.add_argument("--first-repeats", type=int, default=3, help="fresh processes timing the first inference")
    p.add_argument("--sizes", default="4096,8192", help="sides of the end-to-end micrographs ('' for none)")
    p.add_argument("--e2e-repeats", type=int, default=3, help="end-to-end runs per size and configuration")
    p.add_argument("--batch", type=int, default=None, help="tiles per call end to end (default: semphase's)")
    p.add_argument("--resume", action="store_true", help="continue the run recorded in --out")
    return p


def _default_threads(physical: int | None) -> int:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(physical or usable, usable))


def _selected(args) -> list[Config]:
    """The configurations asked for, with onnxruntime FP32 (the reference) and each one's pair."""
    every = CONFIGS + F32_EXTRA
    wanted = {c.strip() for c in args.configs.split(",") if c.strip()}
    unknown = wanted - {c.id for c in every}
    if unknown:
        raise SystemExit(
            f"unknown configuration {', '.join(sorted(unknown))}; use {', '.join(c.id for c in every)}"
        )
    if not wanted:
        wanted = {c.id for c in CONFIGS + (F32_EXTRA if args.f32_all else [])}
    wanted |= {"ort-fp32"} | {c.pair for c in every if c.id in wanted}
    return [c for c in every if c.id in wanted]


def _machine(threads: int) -> dict:
    import openvino as ov

    from semphase.machine import machine_info, parse_cpuinfo

    info = machine_info(threads, "cpu")
    info["versions"]["openvino"] = ov.get_version()
    try:  # the version without importing nncf (which imports torch where installed)
        info["versions"]["nncf"] = importlib.metadata.version("nncf")
    except importlib.metadata.PackageNotFoundError:
        info["versions"]["nncf"] = None
    try:
        flags = parse_cpuinfo(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))["flags"]
        info["bf16_flags"] = {f: f in flags for f in ("avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")}
    except OSError:
        info["bf16_flags"] = None
    core = ov.Core()
    info["openvino_cpu"] = {
        "name": core.get_property("CPU", "FULL_DEVICE_NAME"),
        "optimization_capabilities": list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")),
    }
    return info


def _quantize_nncf(fp32: Path, meta: dict, args, doc: dict) -> dict:
    """OpenVINO's INT8 of ``fp32`` by NNCF, saved as IR in ``--out``; the record of how (or why not).

    Runs in a child process: nncf imports torch where it is installed, and its calibration runs leave
    OpenVINO thread pools behind; neither should sit in the process that times the tiles.
    """
    target = args.out / NNCF_FILE
    settings = {
        "preset": "PERFORMANCE",
        "target_device": "CPU",
        "fast_bias_correction": True,
        "subset_size": args.calibration_tiles,
        "calibration": f"{args.calibration_tiles} random {TILE} x {TILE} crops, 16 per synthetic 2048 x 2048 "
        f"micrograph, seeds from {CALIBRATION_SEED}, magnification 700",
    }
    previous = doc.get("nncf") or {}
    same = previous.get("status") == "ok" and previous.get("settings") == settings
    if args.resume and same and target.exists():
        return previous
    if importlib.util.find_spec("nncf") is None:
        return {"status": "skipped", "reason": "nncf is not installed (pip install nncf)"}
    print(f"quantizing with NNCF on {args.calibration_tiles} tiles ...", file=sys.stderr, flush=True)
    spec = {"fp32": str(fp32), "target": str(target), "input": meta["input"], "tiles": args.calibration_tiles}
    done = _run_child(spec, "_quantize")
    if done["status"] != "ok":
        return done | {"settings": settings}
    return {"status": "ok", "seconds": done["seconds"], "settings": settings, "file": str(target)}


def _quantize(spec: dict) -> int:
    """Child process of :func:`_quantize_nncf`: one JSON line with the seconds, or an error line."""
    import logging

    import nncf
    import openvino as ov

    from semphase.model_format import normalize

    nncf.set_log_level(logging.ERROR)
    tiles = synthetic_tiles(CALIBRATION_SEED, spec["tiles"], 16)
    start = time.perf_counter()
    try:
        dataset = nncf.Dataset(list(tiles), lambda tile: normalize(tile[None], spec["input"]))
        quantized = nncf.quantize(
            ov.Core().read_model(spec["fp32"]),
            dataset,
            preset=nncf.QuantizationPreset.PERFORMANCE,
            target_device=nncf.TargetDevice.CPU,
            subset_size=spec["tiles"],
            fast_bias_correction=True,
        )
        ov.save_model(quantized, spec["target"], compress_to_fp16=False)
    except Exception as exc:  # NNCF raises its own types for graphs it cannot quantize
        print(f"error: {exc.__class__.__name__}: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 1
    print(json.dumps({"seconds": time.perf_counter() - start}))
    return 0


def _ort_options(path: Path, threads: int) -> tuple[dict, dict]:
    """The session options semphase's self-check picks for ``path`` here, and its verdict."""
    from semphase.errors import InputError
    from semphase.runtime.model import load_model

    try:
        model = load_model(path, provider="cpu", threads=threads, verify=True, streams=1)
    except InputError as exc:  # measured anyway, with default options: the refusal is part of the result
        return {}, {"status": "refused", "reason": str(exc)}
    verdict = model.self_check.as_dict()
    return dict(model.session_options), {
        k: verdict[k] for k in ("status", "agreement_pct", "session_options")
    }


def _labels(model, tiles: np.ndarray) -> np.ndarray:
    return np.stack([model.logits(t[None])[0].argmax(0).astype(np.uint8) for t in tiles])


def _compare(a: np.ndarray, b: np.ndarray, classes: int) -> dict:
    """Pixel agreement (%) and the largest change of any phase fraction (percentage points)."""
    fa = np.bincount(a.ravel(), minlength=classes) / a.size
    fb = np.bincount(b.ravel(), minlength=classes) / b.size
    return {
        "agreement_pct": 100.0 * float(np.mean(a == b)),
        "max_fraction_change_pp": 100 * float(np.abs(fa - fb).max()),
    }


def measure_tiles(specs: dict[str, dict], args, classes: int) -> dict:
    """Latency, agreement and resolved properties of every configuration on 512 x 512 tiles."""
    heldout = synthetic_tiles(HELDOUT_SEED, args.heldout_tiles, 8)
    timing_tile = heldout[:1] if len(heldout) else synthetic_tiles(HELDOUT_SEED, 1, 1)
    models, rows = {}, {}
    for cid, spec in specs.items():
        try:
            models[cid] = open_model(spec)
        except Exception as exc:  # a file one backend cannot compile is a result, not a crash
            rows[cid] = {"status": "failed", "reason": " ".join(str(exc).split())[:300]}
    labels = {cid: _labels(m, heldout) for cid, m in models.items()}
    for model in models.values():
        for _ in range(args.warmup):
            model.logits(timing_tile)
    times: dict[str, list[float]] = {cid: [] for cid in models}
    order = list(models)
    for r in range(args.repeats):
        for cid in order[r % len(order) :] + order[: r % len(order)]:
            time.sleep(args.settle)
            start = time.perf_counter()
            models[cid].logits(timing_tile)
            times[cid].append(time.perf_counter() - start)
    for cid, model in models.items():
        row = rows[cid] = {"status": "ok", "runs_ms": [1000 * t for t in times[cid]]}
        row["ms"] = float(np.median(row["runs_ms"])) if row["runs_ms"] else None
        row["properties"] = getattr(model, "properties", None)
        if specs[cid]["backend"] == "auto":
            row["backend_used"], row["choice"] = model.backend.name, model.backend_choice
        if len(heldout) and "ort-fp32" in labels:
            row["vs_ort_fp32"] = _compare(labels[cid], labels["ort-fp32"], classes)
            pair = specs[cid]["pair"]
            if pair in labels and pair != cid:
                row["vs_pair"] = _compare(labels[cid], labels[pair], classes)
    del models
    gc.collect()
    return rows


def _median(runs: list[dict], key: str) -> float | None:
    values = [r[key] for r in runs if r.get("status") == "ok" and r.get(key) is not None]
    return float(np.median(values)) if values else None


def _rotated(items: list, r: int) -> list:
    return items[r % len(items) :] + items[: r % len(items)] if items else items


def _read_meta(fp32: Path) -> dict:
    """What the OpenVINO wrapper needs from the file's semphase metadata (read through onnxruntime)."""
    from semphase.errors import InputError
    from semphase.runtime.model import load_model

    try:
        base = load_model(fp32, provider="cpu", threads=1, verify=False)
    except InputError as exc:
        raise SystemExit(str(exc)) from None
    return {
        "input": base.input,
        "tile_size": base.tile_size,
        "overlap": base.overlap,
        "classes": list(base.classes),
        "variant": base.variant,
    }


def _settings(args, configs: list[Config], meta: dict) -> dict:
    from semphase.machine import machine_info
    from semphase.runtime.sliding import DEFAULT_BATCH

    host = machine_info()
    return {
        "models": str(args.models),
        "threads": args.threads or _default_threads(host["physical_cores"]),
        "configs": [c.id for c in configs],
        "repeats": args.repeats,
        "warmup": args.warmup,
        "heldout_tiles": args.heldout_tiles,
        "calibration_tiles": args.calibration_tiles,
        "first_repeats": args.first_repeats,
        "sizes": [int(s) for s in args.sizes.split(",") if s.strip()],
        "e2e_repeats": args.e2e_repeats,
        "batch": args.batch or DEFAULT_BATCH,
        "tile": TILE,
        "model_tile": meta["tile_size"],
        "model_overlap": meta["overlap"],
        "cpu": host["cpu"],
    }


def _specs(configs: list[Config], args, doc: dict, meta: dict) -> dict[str, dict]:
    """How to open each configuration (``open_model``'s argument); the ones that cannot run go to
    ``doc["skipped"]`` with their reason."""
    threads = doc["settings"]["threads"]
    specs, skipped = {}, {}
    for c in configs:
        path = args.out / NNCF_FILE if c.file == NNCF_FILE else args.models / c.file
        if c.file == NNCF_FILE and doc["nncf"]["status"] != "ok":
            nncf = doc["nncf"]
            skipped[c.id] = (
                nncf["reason"] if nncf["status"] == "skipped" else f"NNCF failed: {nncf['reason']}"
            )
        elif not path.exists():
            skipped[c.id] = f"no {path.name} in {args.models}"
        else:
            specs[c.id] = {"backend": c.backend, "path": str(path), "threads": threads, "hint": c.hint}
            specs[c.id] |= {"meta": meta, "pair": c.pair, "session_options": {}, "tile": TILE}
        if c.backend == "onnxruntime" and c.id in specs:
            specs[c.id]["session_options"], verdict = _ort_options(path, threads)
            doc.setdefault("self_check", {})[c.id] = verdict
    doc["skipped"] = skipped
    doc["configs"] = {
        c.id: {"backend": c.backend, "file": c.file, "hint": c.hint or "default", "pair": c.pair}
        for c in configs
    }
    return specs


def _end_to_end(size: int, specs: dict, ids: list[str], args, doc: dict, save) -> None:
    """Interleaved fresh-process runs of every configuration on one synthetic micrograph."""
    work = args.out / "work"
    tif = work / f"synthetic_{size}.tif"
    rows = doc["e2e"].setdefault(str(size), {})
    missing = any(len(rows.get(cid, {}).get("runs", [])) < args.e2e_repeats for cid in ids)
    if missing and not tif.exists():
        from semphase.data.synth.large import write_large

        print(f"writing a {size} x {size} micrograph ...", file=sys.stderr, flush=True)
        write_large(tif, size, seed=E2E_SEED)
    (work / "labels").mkdir(parents=True, exist_ok=True)
    for r in range(args.e2e_repeats):
        for cid in _rotated(ids, r):
            runs = rows.setdefault(cid, {"runs": []})["runs"]
            if len(runs) > r:
                continue
            print(f"{size} x {size}, {cid}, run {r + 1} ...", file=sys.stderr, flush=True)
            spec = specs[cid] | {"image": str(tif), "tile": specs[cid]["meta"]["tile_size"]}
            spec |= {
                "batch": doc["settings"]["batch"],
                "labels_out": str(work / "labels" / f"{size}-{cid}.npy"),
            }
            runs.append(_run_child(spec))
            save()
    _compare_e2e(rows, specs, work / "labels", size, len(specs["ort-fp32"]["meta"]["classes"]))
    save()


def run(args, argv: list[str]) -> dict:
    """Measure everything, saving the JSON after every step; return the document."""
    from semphase.imageio import write_text_atomic

    configs = _selected(args)
    fp32 = args.models / "model.onnx"
    meta = _read_meta(fp32)
    settings = _settings(args, configs, meta)
    out_json = args.out / "peer_openvino.json"
    doc = json.loads(out_json.read_text(encoding="utf-8")) if args.resume and out_json.exists() else {}
    if doc and doc.get("settings") != settings:
        raise SystemExit(f"{out_json} was measured with other settings; drop --resume or use another --out")
    args.out.mkdir(parents=True, exist_ok=True)
    doc.update(format=FORMAT, command=shlex.join(["python", "benchmarks/peer_openvino.py", *argv]))
    doc.update(settings=settings, machine=_machine(settings["threads"]))
    doc.setdefault("first", {})
    doc.setdefault("e2e", {})

    def save() -> None:
        write_text_atomic(out_json, json.dumps(doc, indent=1) + "\n")

    if any(c.file == NNCF_FILE for c in configs):
        doc["nncf"] = _quantize_nncf(fp32, meta, args, doc)
        save()
    specs = _specs(configs, args, doc, meta)
    if not (args.resume and doc.get("tiles")):
        print(f"timing {len(specs)} configurations on {TILE} x {TILE} tiles ...", file=sys.stderr, flush=True)
        doc["tiles"] = measure_tiles(specs, args, len(meta["classes"]))
        save()
    ids = [cid for cid in specs if doc["tiles"].get(cid, {}).get("status") == "ok"]
    for r in range(args.first_repeats):
        for cid in _rotated(ids, r):
            runs = doc["first"].setdefault(cid, [])
            if len(runs) <= r:
                runs.append(_run_child(specs[cid]))
                save()
    e2e_ids = [cid for cid in ids if specs[cid]["backend"] != "auto"]  # auto runs one of the two
    for size in settings["sizes"]:
        _end_to_end(size, specs, e2e_ids, args, doc, save)
    shutil.rmtree(args.out / "work", ignore_errors=True)
    return doc


def _compare_e2e(rows: dict, specs: dict, folder: Path, size: int, classes: int) -> None:
    """Agreement of each configuration's last labels with onnxruntime FP32's and its pair's."""
    files = {cid: folder / f"{size}-{cid}.npy" for cid in rows}
    files = {cid: path for cid, path in files.items() if path.exists()}
    ref = np.load(files["ort-fp32"]) if "ort-fp32" in files else None
    for cid, path in files.items():
        mine = np.load(path)
        if ref is not None:
            rows[cid]["vs_ort_fp32"] = _compare(mine, ref, classes)
        pair = specs[cid]["pair"]
        if pair != cid and pair in files:
            rows[cid]["vs_pair"] = _compare(mine, np.load(files[pair]), classes)


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def _pct(comparison: dict | None) -> str:
    return _fmt((comparison or {}).get("agreement_pct"), ".3f", " %")


def _precision(doc: dict, cid: str) -> str:
    hint = doc["configs"][cid]["hint"]
    props = (doc["tiles"].get(cid) or {}).get("properties") or {}
    resolved = props.get("INFERENCE_PRECISION_HINT", "?")
    return f"{hint} ({resolved})" if hint == "default" else str(resolved)


def _label(doc: dict, cid: str) -> str:
    file = doc["configs"][cid]["file"]
    return "NNCF INT8 of model.onnx (vs ORT model.int8.onnx)" if file == NNCF_FILE else file


def _first_inference(doc: dict) -> dict[str, float | None]:
    """Median load (or compile) plus median first-tile seconds per configuration."""
    out = {}
    for cid, runs in doc["first"].items():
        load, first = _median(runs, "load_s"), _median(runs, "first_run_s")
        out[cid] = None if load is None or first is None else load + first
    return out


def _tile_table(doc: dict) -> list[str]:
    s, tiles, configs = doc["settings"], doc["tiles"], doc["configs"]
    lines = [
        f"Per {TILE} x {TILE} tile: median of {s['repeats']} interleaved runs; agreement on "
        f"{s['heldout_tiles']} held-out tiles; first inference = load or compile + first tile, in a fresh "
        "process.",
        "",
        "| file | OpenVINO precision | onnxruntime ms | OpenVINO ms | OV faster by | agreement ORT vs OV "
        "| vs ORT FP32: ORT / OV | largest Δ phase fraction, OV vs ORT FP32 (pp) "
        "| first inference s: ORT / OV |",
        "|:--|:--|--:|--:|--:|--:|--:|--:|--:|",
    ]
    first = _first_inference(doc)
    for cid, row in tiles.items():
        if configs[cid]["backend"] != "openvino":
            continue
        pair = configs[cid]["pair"]
        ort = tiles.get(pair) or {}
        if row["status"] != "ok":
            lines.append(
                f"| {_label(doc, cid)} | {configs[cid]['hint']} | {row['status']}: {row['reason']} |"
            )
            continue
        speed = ort["ms"] / row["ms"] if ort.get("ms") and row["ms"] else None
        ort32, ov32 = ort.get("vs_ort_fp32") or {}, row.get("vs_ort_fp32") or {}
        lines.append(
            f"| {_label(doc, cid)} | {_precision(doc, cid)} | {_fmt(ort.get('ms'), '.1f')} | {row['ms']:.1f} "
            f"| {_fmt(speed, '.2f', 'x')} | {_pct(row.get('vs_pair'))} "
            f"| {_pct(ort32)} / {_pct(ov32)} | {_fmt(ov32.get('max_fraction_change_pp'), '.3f')} "
            f"| {_fmt(first.get(pair), '.2f')} / {_fmt(first.get(cid), '.2f')} |"
        )
    lines += [f"| {cid} | skipped: {reason} |" for cid, reason in doc["skipped"].items()]
    return lines


def _auto_table(doc: dict) -> list[str]:
    """``--backend auto`` per file against the faster of onnxruntime and OpenVINO (default precision),
    the same tile in the same interleaved rounds."""
    tiles, configs = doc["tiles"], doc["configs"]
    autos = [cid for cid in tiles if configs[cid]["backend"] == "auto" and tiles[cid]["status"] == "ok"]
    if not autos:
        return []
    lines = [
        "`--backend auto` (semphase's `load_model`: self-check on each backend, the faster that passes):",
        "",
        "| file | onnxruntime ms | OpenVINO ms | auto ms | auto chose | auto / the faster |",
        "|:--|--:|--:|--:|:--|--:|",
    ]
    for cid in autos:
        file = configs[cid]["file"]
        ort = tiles.get(configs[cid]["pair"]) or {}
        ov_id = next(
            (c for c, conf in configs.items() if conf["backend"] == "openvino" and conf["file"] == file
             and conf["hint"] == "default"),
            None,
        )  # fmt: skip
        ov = tiles.get(ov_id) or {}
        fastest = min((r["ms"] for r in (ort, ov) if r.get("status") == "ok" and r.get("ms")), default=None)
        auto = tiles[cid]
        lines.append(
            f"| {file} | {_fmt(ort.get('ms'), '.1f')} | {_fmt(ov.get('ms'), '.1f')} | {auto['ms']:.1f} "
            f"| {auto.get('backend_used')} ({auto.get('choice')}) "
            f"| {_fmt(fastest and auto['ms'] / fastest, '.2f')} |"
        )
    return lines


def _e2e_table(doc: dict) -> list[str]:
    s, configs = doc["settings"], doc["configs"]
    lines = [
        f"End to end: semphase's sliding window (tile {s['model_tile']}, overlap {s['model_overlap']}, batch "
        f"{s['batch']}, Gaussian blending), median of {s['e2e_repeats']} interleaved runs, one process each; "
        "peak RSS is that process's own.",
        "",
        "| micrograph | file | OpenVINO precision | onnxruntime s | OpenVINO s | OV faster by "
        "| MP/s: ORT / OV | peak RSS MiB: ORT / OV | agreement ORT vs OV | OV vs ORT FP32 |",
        "|:--|:--|:--|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for size, rows in doc["e2e"].items():
        mp = int(size) ** 2 / 1e6
        for cid, row in rows.items():
            if configs[cid]["backend"] != "openvino":
                continue
            pair_row = rows.get(configs[cid]["pair"]) or {"runs": []}
            ort_s, ov_s = _median(pair_row["runs"], "seconds"), _median(row["runs"], "seconds")
            failed = [r["reason"] for r in row["runs"] if r["status"] != "ok"]
            rss = [
                max((r["peak_rss_mb"] or 0 for r in x["runs"] if r["status"] == "ok"), default=None)
                for x in (pair_row, row)
            ]
            speed = ort_s / ov_s if ort_s and ov_s else None
            lines.append(
                f"| {size} x {size} | {_label(doc, cid)} | {_precision(doc, cid)} | {_fmt(ort_s, '.2f')} "
                f"| {_fmt(ov_s, '.2f')}{' (failed: ' + failed[-1] + ')' if failed else ''} "
                f"| {_fmt(speed, '.2f', 'x')} | {_fmt(ort_s and mp / ort_s, '.2f')} / "
                f"{_fmt(ov_s and mp / ov_s, '.2f')} | {_fmt(rss[0], '.0f')} / {_fmt(rss[1], '.0f')} "
                f"| {_pct(row.get('vs_pair'))} | {_pct(row.get('vs_ort_fp32'))} |"
            )
    return lines


def markdown(doc: dict) -> str:
    """The machine, the tile table, the end-to-end table and how OpenVINO was configured, as Markdown."""
    m, s, v = doc["machine"], doc["settings"], doc["machine"]["versions"]
    isa = ", ".join(k for k, on in {**m["instruction_sets"], **(m.get("bf16_flags") or {})}.items() if on)
    lines = [
        f"{m['cpu']} ({isa or 'no AVX2'}; OpenVINO's CPU capabilities: "
        f"{', '.join(m['openvino_cpu']['optimization_capabilities'])}), {s['threads']} threads; "
        f"onnxruntime {v['onnxruntime']}, OpenVINO {v['openvino']}, nncf {v['nncf'] or '-'}",
        "",
        *_tile_table(doc),
    ]
    auto = _auto_table(doc)
    if auto:
        lines += ["", *auto]
    if doc["e2e"]:
        lines += ["", *_e2e_table(doc)]
    lines += [
        "",
        "_OpenVINO: CPU device, PERFORMANCE_HINT LATENCY, INFERENCE_NUM_THREADS = threads; precision "
        "'default' is OpenVINO's own INFERENCE_PRECISION_HINT (the value it resolved in brackets: bf16 on "
        "CPUs with avx512_bf16 or AMX), 'f32' forces float32. onnxruntime: semphase's runtime, CPU "
        "provider, the session options of semphase's self-check._",
    ]
    nncf = doc.get("nncf")
    if nncf and nncf["status"] == "ok":
        how = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in nncf["settings"].items())
        lines.append(f"_NNCF INT8: quantized in {nncf['seconds']:.0f} s; {how}._")
    elif nncf:
        lines.append(f"_NNCF INT8: {nncf['status']}: {nncf['reason']}._")
    lines.append(f"_Load average at the end: {m.get('load_average')}._")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] in (["_child"], ["_quantize"]):
        return (_child if argv[0] == "_child" else _quantize)(json.loads(argv[1]))
    args = _parser().parse_args(argv)
    if min(args.repeats, args.first_repeats + 1, args.e2e_repeats, args.warmup + 1) < 1:
        print(
            "error: --repeats and --e2e-repeats must be >= 1, --warmup and --first-repeats >= 0",
            file=sys.stderr,
        )
        return 2
    if importlib.util.find_spec("openvino") is None:
        print("error: openvino is not installed (pip install openvino): nothing to compare", file=sys.stderr)
        return 2
    if not (args.models / "model.onnx").is_file():
        print(f"error: no model.onnx in {args.models}", file=sys.stderr)
        return 2
    from semphase.imageio import write_text_atomic

    try:
        doc = run(args, argv)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(f"error: {exc.code}", file=sys.stderr)
            return 2
        raise
    text = markdown(doc)
    write_text_atomic(args.out / "peer_openvino.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
