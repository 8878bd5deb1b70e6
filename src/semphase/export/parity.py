"""Parity of the exported files with the PyTorch checkpoint on held-out micrographs, and CPU latency.

Every held-out image is cut into non-overlapping ``tile`` x ``tile`` blocks (edge blocks reflect-padded to
a multiple of 32); the same normalized blocks go through PyTorch and through each ONNX file, so logit
differences measure the export alone. Argmax label images are reassembled and scored against the masks
with :class:`semphase.metrics.Scorer`, for PyTorch and for every variant.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from semphase.export.imagesets import LabelledImage
from semphase.export.metadata import INPUT_NAME, OUTPUT_NAME
from semphase.model_format import RECOMMENDED_TILE, normalize, pad_to_multiple

#: Untimed runs before and timed runs of the latency measurement (the median is reported).
WARMUP_RUNS = 3
TIMED_RUNS = 10
SUMMARY_METRICS = ("miou", "mdice", "mbf1")


@dataclass
class _Accumulator:
    """Running logit-difference and argmax-agreement counts of one variant against PyTorch."""

    max_abs: float = 0.0
    abs_sum: float = 0.0
    values: int = 0
    agree: int = 0
    pixels: int = 0
    #: pixels whose label equals the FP32 ONNX file's (the reference of the reduced-precision variants)
    agree_fp32: int = 0
    labels: dict[str, np.ndarray] = field(default_factory=dict)

    def add(self, reference: np.ndarray, logits: np.ndarray) -> None:
        diff = np.abs(logits.astype(np.float64) - reference)
        self.max_abs = max(self.max_abs, float(diff.max()))
        self.abs_sum += float(diff.sum())
        self.values += diff.size
        self.agree += int((logits.argmax(0) == reference.argmax(0)).sum())
        self.pixels += reference.shape[1] * reference.shape[2]


def open_session(model: str | os.PathLike | bytes, threads: int, spinning: bool = True):
    """A CPU session for an exported file or a serialized graph still in memory, configured like the
    runtime's (:func:`semphase.runtime.session.create_session`); ``spinning=False`` for sessions that
    alternate with torch."""
    from semphase.runtime.session import NO_SPINNING, create_session

    return create_session(model, threads=threads, config=None if spinning else NO_SPINNING)


@contextlib.contextmanager
def torch_threads(threads: int):
    """Run torch with ``threads`` intra-op threads inside the block (OpenMP threads that outnumber the
    free cores busy-wait on each other and slow a forward pass by an order of magnitude)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _blocks(image: np.ndarray, tile: int):
    """(y, x, padded block) for non-overlapping ``tile`` x ``tile`` blocks covering ``image``."""
    h, w = image.shape
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            yield y, x, pad_to_multiple(image[y : y + tile, x : x + tile])


def _summary(result: dict) -> dict[str, float | None]:
    return {k: result["summary"][k]["mean"] for k in SUMMARY_METRICS}


def _compare_image(network, normalization, sample, tile, sessions, accumulators, scorers) -> None:
    """Run one held-out image block by block through torch and every session; score the label images."""
    h, w = sample.image.shape
    labels = {name: np.empty((h, w), np.uint8) for name in scorers}
    for y, x, block in _blocks(sample.image, tile):
        bh, bw = min(tile, h - y), min(tile, w - x)
        batch = normalize(block[None], normalization)
        with torch.inference_mode():
            reference = network(torch.from_numpy(batch)).numpy()[0, :, :bh, :bw].astype(np.float64)
        labels["pytorch"][y : y + bh, x : x + bw] = reference.argmax(0)
        for name, session in sessions.items():
            logits = session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0][0, :, :bh, :bw]
            accumulators[name].add(reference, logits)
            labels[name][y : y + bh, x : x + bw] = logits.argmax(0)
    for name, scorer in scorers.items():
        scorer.add(sample.name, sample.labels, labels[name])
    if "fp32" in labels:
        for name, acc in accumulators.items():
            acc.agree_fp32 += int((labels[name] == labels["fp32"]).sum())


def compare(
    network: nn.Module,
    normalization: dict,
    class_names: list[str],
    files: dict[str, Path],
    heldout: list[LabelledImage],
    *,
    tile: int = RECOMMENDED_TILE,
    threads: int = 2,
    progress=None,
) -> dict[str, dict]:
    """Logit differences, argmax agreement and held-out metrics of each ONNX file against PyTorch.

    Parameters
    ----------
    network : the checkpoint's torch module (eval mode, CPU).
    normalization : ``{"scale", "mean", "std"}`` of the training config.
    class_names : names in id order (for the scorer).
    files : variant name (``"fp32"``, ``"fp16"``, ``"int8"``) -> ONNX path.
    heldout : labelled images, uint8.
    tile : block size in pixels (a multiple of :data:`~semphase.model_format.SIZE_MULTIPLE`); export passes
        its recommended tile.
    threads : onnxruntime intra-op threads and torch threads.
    progress : optional callable ``progress(done: int, total: int)`` after each image.

    Returns
    -------
    ``{"pytorch": {"miou", "mdice", "mbf1", "scores"}, variant: {"max_abs_diff", "mean_abs_diff",
    "argmax_agreement_pct", "miou", "mdice", "mbf1", "delta_miou", "delta_mdice", "delta_mbf1",
    "scores", "vs_fp32"}}`` where ``scores`` is the full scoring-schema result, the deltas are against
    PyTorch, and ``vs_fp32`` (FP16 and INT8 only, when FP32 is among ``files``) holds the gate numbers
    against the FP32 file (:func:`semphase.gates.changes_against`).
    """
    from semphase.gates import changes_against
    from semphase.metrics import Scorer

    sessions = {name: open_session(path, threads, spinning=False) for name, path in files.items()}
    accumulators = {name: _Accumulator() for name in files}
    scorers = {name: Scorer(class_names) for name in ["pytorch", *files]}
    network = network.eval()
    with torch_threads(threads):
        for done, sample in enumerate(heldout, start=1):
            _compare_image(network, normalization, sample, tile, sessions, accumulators, scorers)
            if progress is not None:
                progress(done, len(heldout))
    results: dict[str, dict] = {}
    reference_scores = scorers["pytorch"].result()
    reference_summary = _summary(reference_scores)
    results["pytorch"] = {**reference_summary, "scores": reference_scores}
    for name, acc in accumulators.items():
        scores = scorers[name].result()
        summary = _summary(scores)
        deltas = {
            f"delta_{k}": None
            if summary[k] is None or reference_summary[k] is None
            else summary[k] - reference_summary[k]
            for k in SUMMARY_METRICS
        }
        results[name] = {
            "max_abs_diff": acc.max_abs,
            "mean_abs_diff": acc.abs_sum / max(acc.values, 1),
            "argmax_agreement_pct": 100.0 * acc.agree / max(acc.pixels, 1),
            **summary,
            **deltas,
            "scores": scores,
        }
    if "fp32" in files:
        for name, acc in accumulators.items():
            if name != "fp32":
                agreement = 100.0 * acc.agree_fp32 / max(acc.pixels, 1)
                results[name]["vs_fp32"] = changes_against(
                    results[name]["scores"], results["fp32"]["scores"], agreement
                )
    return results


def _median_seconds(run, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_latency(
    network: nn.Module,
    files: dict[str, Path],
    tile_input: np.ndarray,
    *,
    threads: int = 2,
    warmup: int = WARMUP_RUNS,
    runs: int = TIMED_RUNS,
) -> dict[str, float]:
    """Median CPU latency in milliseconds of one tile, for PyTorch and each ONNX file, measured in turn.

    Parameters
    ----------
    network : torch module (timed with ``torch.set_num_threads(threads)``).
    files : variant name -> ONNX path.
    tile_input : float32 (1, 1, tile, tile), a normalized tile.
    threads : CPU threads for onnxruntime (intra-op) and torch.

    Returns
    -------
    ``{"pytorch": ms, variant: ms, ...}``: median of ``runs`` timed runs after ``warmup`` untimed ones.
    """
    latency = {}
    tensor = torch.from_numpy(tile_input)
    with torch_threads(threads), torch.inference_mode():
        latency["pytorch"] = 1000 * _median_seconds(lambda: network(tensor), warmup, runs)
    for name, path in files.items():
        session = open_session(path, threads)
        feed = {INPUT_NAME: tile_input}
        latency[name] = 1000 * _median_seconds(
            lambda s=session, f=feed: s.run([OUTPUT_NAME], f), warmup, runs
        )
        del session
    return latency
