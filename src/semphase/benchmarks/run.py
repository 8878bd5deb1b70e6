"""``semphase benchmark``: accuracy parity and speed of the exported variants on this machine, one report.

Order: check every input first (model folder, dataset, split, output folder) so bad input fails in
seconds; load the variants (a file that fails is reported, the others run); score them on the held-out
images; time tiles; segment large synthetic micrographs in child processes (time, throughput, peak RSS)
and score those against their truth; then write ``report.json``, the figures, ``report.md`` and
``report.html``. torch is imported only when a checkpoint is given.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from semphase.benchmarks.accuracy import ParityRun, failed_row, heldout_parity
from semphase.benchmarks.speed import end_to_end, measure_latency
from semphase.benchmarks.variants import Variant, find_variants, load_checkpoint_variant, load_onnx_variant
from semphase.errors import InputError, OptionError
from semphase.imageio import ensure_output_folder, read_label, write_text_atomic
from semphase.machine import machine_info, physical_cores
from semphase.progress import SILENT, Progress
from semphase.runtime.sliding import DEFAULT_BATCH

REPORT_FORMAT = "semphase-benchmark/1"
REPORT_JSON, REPORT_MD, REPORT_HTML = "report.json", "report.md", "report.html"
DEFAULT_SIZES = (1024, 4096, 8192)


@dataclass
class BenchmarkOptions:
    """Everything ``semphase benchmark`` can be told; defaults are the command's defaults.

    Attributes
    ----------
    data : dataset folder with the held-out images and masks.
    out : report folder (created if missing).
    checkpoint : PyTorch training checkpoint to compare with (imports torch), or None.
    split_file, split : which images are held out (see :func:`semphase.evaluation.select_samples`).
    classes : class-table file for the masks' raw ids (None: the checkpoint's, else ids 1..C).
    sizes : sides of the square synthetic micrographs segmented end to end.
    threads : CPU threads for every model (None: all logical CPUs).
    repeat, warmup : timed and untimed calls per tile-latency measurement.
    e2e_repeat : timed runs of each end-to-end segmentation (the median is reported).
    batch : tiles per inference call (the runtime's default batch).
    provider : onnxruntime execution provider (``auto``, ``cpu``, ``cuda``, ...).
    backend : what runs each model (:mod:`semphase.runtime.backends`: ``onnxruntime``, ``openvino`` or
        ``auto``); the report's tables name the backend each variant ran on.
    max_images : score at most this many held-out images (None: all).
    seed : seed of the synthetic micrographs.
    """

    data: Path
    out: Path
    checkpoint: Path | None = None
    split_file: Path | None = None
    split: str | None = None
    classes: Path | None = None
    sizes: tuple[int, ...] = DEFAULT_SIZES
    threads: int | None = None
    repeat: int = 10
    warmup: int = 2
    e2e_repeat: int = 1
    batch: int = DEFAULT_BATCH
    provider: str = "auto"
    backend: str = "onnxruntime"
    max_images: int | None = None
    seed: int = 0
    notes: list[str] = field(default_factory=list)

    def validate(self) -> None:
        """Raise OptionError for options that cannot work."""
        if not self.sizes or any(int(s) < 32 for s in self.sizes):
            raise OptionError(f"--sizes must be image sides of at least 32 pixels, got {list(self.sizes)}")
        for name, value, low in (
            ("--threads", self.threads, 1),
            ("--repeat", self.repeat, 1),
            ("--warmup", self.warmup, 0),
            ("--e2e-repeat", self.e2e_repeat, 1),
            ("--batch", self.batch, 1),
            ("--max-images", self.max_images, 1),
            ("--seed", self.seed, 0),
        ):
            if value is not None and int(value) < low:
                raise OptionError(f"{name} must be at least {low}, got {value}")


def _class_table(variants: list[Variant], classes_file: Path | None):
    """The masks' class table, and the variants whose class count does not fit it marked failed."""
    from semphase.phases import ClassTable, load_class_table

    ok = [v for v in variants if v.ok]
    if classes_file is not None:
        table = load_class_table(classes_file)
    elif any(v.name == "pytorch" for v in ok):
        table = ClassTable.from_dict(next(v for v in ok if v.name == "pytorch").model.config["classes"])
    elif ok:
        m = ok[0].model
        entries = [{"name": n, "color": list(c)} for n, c in zip(m.classes, m.colors, strict=False)]
        table = ClassTable.from_dict({"classes": entries})
    else:
        return None
    for v in ok:
        names = list(v.model.classes)
        if len(names) != table.num_classes:
            v.fail(f"predicts {len(names)} classes ({', '.join(names)}), the masks have {table.num_classes}")
    return table


def _select(options: BenchmarkOptions, dataset) -> tuple[list, str]:
    from semphase.evaluation import select_samples

    own_split = None
    if options.checkpoint is not None and (options.checkpoint.parent / "split.json").is_file():
        own_split = options.checkpoint.parent / "split.json"
    samples, selection = select_samples(dataset, options.split, options.split_file, own_split)
    if options.max_images is not None and len(samples) > options.max_images:
        samples = samples[: options.max_images]
        selection += f", first {options.max_images} scored"
    return samples, selection


def _predictor(variant: Variant, batch: int):
    from semphase.runtime.segment import segment_array

    model = variant.model

    def predict(image_u8: np.ndarray) -> np.ndarray:
        return segment_array(model, image_u8, batch=batch, window="gaussian")

    return predict


def _large_image_parity(
    size: int, runs: dict[str, Path], failed: dict[str, str], truth_path: Path, class_names: list[str]
) -> list[dict]:
    """Score the saved labels of one micrograph size against its truth and against each other."""
    parity = ParityRun(class_names, list(runs) + [v for v in failed if v not in runs])
    for variant, reason in failed.items():
        parity.fail(variant, reason)
    truth = read_label(truth_path)
    predictions = {v: np.load(p, mmap_mode="r") for v, p in runs.items()}
    try:
        parity.add(f"synthetic {size} x {size}", truth, predictions)
    finally:
        predictions.clear()
    return parity.rows(extra={"size": size, "width": size, "height": size})


def _speed_and_large_parity(
    variants: list[Variant],
    options: BenchmarkOptions,
    threads: int,
    tile: int,
    overlap: int,
    class_names: list[str],
    steps: Progress,
) -> tuple[list[dict], list[dict]]:
    from semphase.data.synth import write_large

    speed, large = [], []
    with tempfile.TemporaryDirectory(prefix="semphase-benchmark-") as work:
        for size in options.sizes:
            steps.say(f"writing a {size} x {size} synthetic micrograph")
            tif, truth = write_large(Path(work) / f"synthetic_{size}.tif", size, seed=options.seed)
            steps.advance("end-to-end")
            runs: dict[str, Path] = {}
            failed: dict[str, str] = {}
            for v in variants:
                steps.say(f"segmenting {size} x {size} with {v.name} in a child process")
                labels = Path(work) / f"labels_{v.name}_{size}.npy"
                model_path = v.path
                row = end_to_end(
                    v.name,
                    model_path,
                    tif,
                    threads=threads,
                    provider=options.provider,
                    backend=options.backend,
                    batch=options.batch,
                    repeat=options.e2e_repeat,
                    tile=tile,
                    overlap=overlap,
                    labels_out=labels,
                    size=(size, size),
                )
                speed.append(row)
                if row["status"] == "ok":
                    runs[v.name] = labels
                else:
                    failed[v.name] = row["reason"]
                steps.advance("end-to-end")
            large += _large_image_parity(size, runs, failed, truth, class_names)
            for path in runs.values():
                path.unlink(missing_ok=True)
            tif.unlink(missing_ok=True)
    return speed, large


def _figures(report: dict, results: dict[str, dict], out: Path) -> None:
    from semphase.benchmarks import plots

    figures: dict = {"confusion": {}}
    try:
        if any(r.get("status") == "ok" for r in report["speed"]):
            figures["throughput"] = plots.plot_throughput(report["speed"], out / plots.THROUGHPUT_NAME).name
        ref = report["settings"]["reference"]
        if ref and sum(r.get("summary") is not None for r in report["accuracy"]) > 1:
            path = out / plots.DELTAS_NAME
            figures["accuracy_deltas"] = plots.plot_accuracy_deltas(
                report["accuracy"], report["classes"], ref, path
            ).name
        for variant, result in results.items():
            path = out / f"confusion_{variant}.png"
            figures["confusion"][variant] = plots.plot_confusion_matrix(result, path).name
    except ModuleNotFoundError as exc:  # matplotlib is not part of the base install
        report["figures_skipped"] = str(exc)
    report["figures"] = figures


def write_reports(report: dict, out: Path) -> None:
    """Write ``report.json``, then ``report.md`` and ``report.html`` (which embeds the figures)."""
    from semphase.benchmarks.report_html import write_html
    from semphase.benchmarks.report_md import write_markdown

    write_text_atomic(out / REPORT_JSON, json.dumps(report, indent=1, allow_nan=False) + "\n")
    write_markdown(report, out / REPORT_MD)
    write_html(report, out / REPORT_HTML)


def run_benchmark(
    model_dir: str | os.PathLike,
    options: BenchmarkOptions,
    command: str | None = None,
    progress: Progress = SILENT,
) -> dict:
    """Measure accuracy parity and speed of the variants in ``model_dir`` and write the report.

    Parameters
    ----------
    model_dir : folder with any of ``model.onnx``, ``model.fp16.onnx``, ``model.int8.onnx``.
    options : see :class:`BenchmarkOptions`.
    command : the command line, recorded in the report.
    progress : receives the stages and what runs now (:mod:`semphase.progress`).

    Returns
    -------
    The report dict as written to ``report.json`` (keys ``format``, ``created``, ``command``,
    ``model_dir``, ``checkpoint``, ``data``, ``settings``, ``classes``, ``machine``, ``variants``,
    ``accuracy``, ``large_image``, ``latency``, ``speed``, ``figures``, ``notes``).

    Raises
    ------
    InputError
        for a missing model folder without variants, an unreadable dataset or split, bad options or an
        unwritable output folder. A variant that fails is reported, not raised.
    """
    from semphase.data.layout import open_dataset

    options.validate()
    model_dir, out = Path(model_dir), Path(options.out)
    files = find_variants(model_dir)
    if options.checkpoint is not None and not Path(options.checkpoint).is_file():
        raise InputError("no such checkpoint file", options.checkpoint)
    dataset = open_dataset(options.data)
    ensure_output_folder(out)
    threads = int(options.threads or physical_cores())
    notes = list(options.notes)
    load_at_start = _load_average()

    steps = progress
    steps.say("loading the models")
    variants, tile, overlap = _load_variants(files, options, threads)
    table = _class_table(variants, options.classes)
    if table is None:
        raise InputError(
            "no model could be loaded: " + "; ".join(f"{v.path.name}: {v.reason}" for v in variants),
            model_dir,
        )
    samples, selection = _select(options, dataset)
    if not samples:
        raise InputError("no held-out images to score", options.data)
    ok = [v for v in variants if v.ok]
    if any(v.name == "pytorch" for v in ok):
        notes.append(
            "PyTorch runs the checkpoint on the CPU through the same tiling and Gaussian blending as the "
            "ONNX variants, so agreement measures export and quantization alone."
        )
    names = {v.name for v in ok}
    reference = "pytorch" if "pytorch" in names else ("fp32" if "fp32" in names else None)
    parity, accuracy = _accuracy(variants, samples, table, options, steps)
    ok = [v for v in variants if v.ok]
    batches = sorted({1, options.batch})
    latency = _latency(ok, batches, options, steps)
    described = [v.describe() for v in variants]
    for v in ok:  # the children load their own copy: free this process's sessions first
        v.model = None
    steps.start("end-to-end", "end-to-end", len(options.sizes) * (1 + len(ok)))
    speed, large = _speed_and_large_parity(ok, options, threads, tile, overlap, table.names, steps)

    report = {
        "format": REPORT_FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "model_dir": str(model_dir),
        "checkpoint": None if options.checkpoint is None else str(options.checkpoint),
        "data": {"root": str(options.data), "selection": selection, "images": len(samples)},
        "settings": _settings(options, threads, described, batches, tile, overlap, reference),
        "classes": table.names,
        "machine": {**machine_info(threads, options.provider), "load_average_at_start": load_at_start},
        "variants": described,
        "accuracy": accuracy,
        "large_image": large,
        "latency": latency,
        "speed": speed,
        "notes": notes,
    }
    _figures(report, parity.results(), out)
    write_reports(report, out)
    return report


def _settings(options: BenchmarkOptions, threads: int, described, batches, tile, overlap, reference) -> dict:
    """The report's ``settings``: how everything was measured."""
    return {
        "threads": threads,
        "provider": options.provider,
        "providers_used": sorted({p for d in described if d["status"] == "ok" for p in d["providers"]}),
        "backend": options.backend,
        "repeat": options.repeat,
        "warmup": options.warmup,
        "e2e_repeat": options.e2e_repeat,
        "batch": options.batch,
        "latency_batches": batches,
        "sizes": list(options.sizes),
        "tile": tile,
        "overlap": overlap,
        "window": "gaussian",
        "reference": reference,
        "seed": options.seed,
    }


def _load_variants(files: dict[str, Path], options: BenchmarkOptions, threads: int):
    """The ONNX variants (and the checkpoint, on the ONNX files' tiling); returns (variants, tile,
    overlap). A variant that cannot be loaded is kept as failed, with its reason."""
    variants = [load_onnx_variant(n, p, options.provider, threads, options.backend) for n, p in files.items()]
    first_ok = next((v.model for v in variants if v.ok), None)
    tile = int(first_ok.tile_size) if first_ok is not None else None
    overlap = int(first_ok.overlap) if first_ok is not None else None
    if options.checkpoint is not None:
        variants.insert(0, load_checkpoint_variant(Path(options.checkpoint), threads, tile, overlap))
    return variants, tile, overlap


def _accuracy(variants: list[Variant], samples, table, options: BenchmarkOptions, steps: Progress):
    """Held-out parity of every loaded variant; a variant that cannot segment the images is failed (and
    so not timed). Returns (the parity runner, the accuracy rows in variant order)."""
    ok = [v for v in variants if v.ok]
    steps.start("accuracy", "held-out images", len(samples) * len(ok))
    parity = heldout_parity(
        {v.name: _predictor(v, options.batch) for v in ok},
        samples,
        table,
        lambda: steps.advance("accuracy"),
    )
    accuracy = parity.rows()
    accuracy += [_failed_accuracy(v, table.names) for v in variants if not v.ok]
    accuracy.sort(key=lambda r: [v.name for v in variants].index(r["variant"]))
    for v in ok:
        if v.name in parity.failed:
            v.fail(parity.failed[v.name])
    return parity, accuracy


def _latency(ok: list[Variant], batches: list[int], options: BenchmarkOptions, steps: Progress) -> list[dict]:
    """Tile latency of each variant at each batch size, in this process."""
    steps.start("latency", "tile latency", len(ok))
    latency = []
    for v in ok:
        steps.say(f"timing {v.name} tiles")
        latency += measure_latency(v.model, v.name, batches, options.warmup, options.repeat, options.seed)
        steps.advance("latency")
    return latency


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # Windows
        return None


def _failed_accuracy(variant: Variant, class_names: list[str]) -> dict:
    return failed_row(variant.name, variant.status, variant.reason or "", class_names)


__all__ = ["DEFAULT_SIZES", "REPORT_FORMAT", "BenchmarkOptions", "run_benchmark", "write_reports"]
