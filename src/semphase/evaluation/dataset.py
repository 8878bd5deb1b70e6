"""Evaluating a model on a dataset: predict, score, and write metrics.json, per_image.csv and figures.

Torch-free, and below the training side: :func:`run_evaluation` takes any ``predict(image_u8) -> labels``
callable, so training, the CLI and benchmarks share it. :func:`load_predictor` opens an ONNX model through
the onnxruntime runtime; a training checkpoint is opened by whoever can (the training side:
``open_checkpoint=semphase.train.inference.load_checkpoint_model``), and evaluation only asks the result
for what :class:`CheckpointPredictor` names. So :mod:`semphase.train` may import evaluation (training tests
its best checkpoint with it) and evaluation never imports training.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from semphase.data.layout import Dataset, Sample, load_pair
from semphase.errors import InputError
from semphase.imageio import to_uint8, write_text_atomic
from semphase.metrics import DEFAULT_TOLERANCE, Scorer
from semphase.phases import ClassTable
from semphase.progress import SILENT, Progress, tracked

Predict = Callable[[np.ndarray], np.ndarray]

PER_IMAGE_NAME = "per_image.csv"
CONFUSION_NAME = "confusion.png"
FREQUENCY_NAME = "frequency_vs_iou.png"
OVERLAY_DIR = "overlays"
SPLIT_CHOICES = ("test", "val", "train", "all")

#: File suffixes of training checkpoints (opened by the training side, see :func:`load_predictor`).
CHECKPOINT_SUFFIXES = (".pt", ".pth")


class CheckpointPredictor(Protocol):
    """A training checkpoint opened for prediction, as evaluation uses it.

    :class:`semphase.train.inference.CheckpointModel` is one; evaluation names only these attributes so
    that it never imports the training side (torch).

    Attributes
    ----------
    config : the training config: ``classes`` (a ``ClassTable.to_dict()``) and, when known, ``split_file``.
    device : where the network runs (its ``str()`` is reported).
    """

    config: dict
    device: object

    def predict_whole(self, image_u8: np.ndarray) -> np.ndarray:
        """uint8 (H, W) micrograph -> uint8 (H, W) class ids, the whole image in one pass."""
        ...


OpenCheckpoint = Callable[[Path, str, int | None], CheckpointPredictor]


class _Extremes:
    """The ``n`` best and ``n`` worst images by mIoU seen so far, with their pixels (bounded memory)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._best: list[tuple] = []  # min-heap on mIoU: the weakest of the best is popped
        self._worst: list[tuple] = []  # min-heap on -mIoU
        self._order = 0

    def offer(self, miou: float, mbf1: float, name: str, arrays: tuple[np.ndarray, ...]) -> None:
        if self.n <= 0 or not np.isfinite(miou):
            return
        self._order += 1  # ties keep the earlier image; arrays are never compared
        for heap, key in ((self._best, miou), (self._worst, -miou)):
            entry = (key, -self._order, name, mbf1, arrays)
            if len(heap) < self.n:
                heapq.heappush(heap, entry)
            elif entry[:2] > heap[0][:2]:
                heapq.heapreplace(heap, entry)

    def items(self) -> list:
        from semphase.evaluation.report import OverlayItem

        best = sorted(self._best, key=lambda e: e[:2], reverse=True)
        taken = {e[2] for e in best}
        worst = [e for e in sorted(self._worst, key=lambda e: e[:2], reverse=True) if e[2] not in taken]
        out = []
        for tag, entries, sign in (("best", best, 1.0), ("worst", worst, -1.0)):
            for rank, (key, _, name, mbf1, (image, truth, pred)) in enumerate(entries, start=1):
                out.append(OverlayItem(f"{tag}-{rank}", name, image, truth, pred, sign * key, mbf1))
        return out


def run_evaluation(
    predict: Predict,
    samples: list[Sample],
    table: ClassTable,
    out_dir: str | os.PathLike | None,
    absent_as_study: bool = False,
    metrics_name: str = "metrics.json",
    n_overlays: int = 3,
    progress: Progress = SILENT,
    tolerance: int = DEFAULT_TOLERANCE,
    extra: dict | None = None,
) -> dict:
    """Predict every sample, score it against its mask and write the evaluation files.

    Parameters
    ----------
    predict : ``predict(image_u8)``: uint8 (H, W) micrograph -> uint8 (H, W) class ids ``0..C-1``.
    samples : dataset samples with masks (raw ids, remapped through ``table``).
    table : class table; its names label the result.
    out_dir : folder for ``metrics_name`` (scoring-schema JSON), ``per_image.csv``, ``confusion.png``,
        ``frequency_vs_iou.png`` and ``overlays/overlay_{best,worst}-K_NAME.png``; None writes nothing.
    absent_as_study : the study's convention for absent classes (comparison only).
    metrics_name : file name of the JSON (training writes ``metrics_test.json``).
    n_overlays : how many best and how many worst images (by mIoU) get an overlay figure.
    progress : one step per image, stage ``"images"`` (:mod:`semphase.progress`).
    tolerance : boundary F1 tolerance in pixels.
    extra : keys merged into the result before it is written (e.g. model and split descriptions).

    Returns
    -------
    The scoring-result dict; with ``out_dir`` it also holds ``outputs`` (file names relative to
    ``out_dir``) and, when matplotlib is missing, ``figures_skipped``.

    Raises
    ------
    InputError
        for no samples, unreadable or mismatched image/mask files, or an unwritable ``out_dir``.
    ValueError
        when ``predict`` returns something other than an integer (H, W) label image.
    """
    if not samples:
        raise InputError("no images to evaluate")
    scorer = Scorer(table.names, absent_as_study=absent_as_study, tolerance=tolerance)
    extremes = _Extremes(n_overlays if out_dir is not None else 0)
    for sample in tracked(samples, progress, "images", "evaluating"):
        image, truth = load_pair(sample, table)
        image_u8 = to_uint8(image)
        pred = np.asarray(predict(image_u8))
        if pred.shape != truth.shape or pred.dtype.kind not in "ui":
            raise ValueError(
                f"{sample.name}: the predictor returned {pred.dtype} {pred.shape}, "
                f"expected integer labels of shape {truth.shape}"
            )
        score = scorer.add(sample.name, truth, pred)
        extremes.offer(
            score.miou, score.mbf1, sample.name, (image_u8, truth, np.minimum(pred, 255).astype(np.uint8))
        )
    result = scorer.result()
    result.update(extra or {})
    if out_dir is not None:
        _write_outputs(result, extremes, table, Path(out_dir), metrics_name)
    return result


def _write_outputs(
    result: dict, extremes: _Extremes, table: ClassTable, out: Path, metrics_name: str
) -> None:
    from semphase.evaluation.report import (
        plot_confusion,
        plot_frequency_vs_iou,
        write_overlay_panels,
        write_per_image_csv,
    )

    # The numbers first: a figure that fails must not cost the evaluation.
    write_text_atomic(out / metrics_name, json.dumps(result, indent=1) + "\n")
    write_per_image_csv(result, out / PER_IMAGE_NAME)
    outputs = {"metrics": metrics_name, "per_image": PER_IMAGE_NAME}
    try:
        plot_confusion(result, out / CONFUSION_NAME)
        plot_frequency_vs_iou(result, out / FREQUENCY_NAME)
        overlays = write_overlay_panels(extremes.items(), table, out / OVERLAY_DIR)
    except ModuleNotFoundError as exc:  # matplotlib is not part of the base (microscope PC) install
        result["figures_skipped"] = str(exc)
    else:
        outputs.update(
            confusion=CONFUSION_NAME,
            frequency_vs_iou=FREQUENCY_NAME,
            overlays=[p.relative_to(out).as_posix() for p in overlays],
        )
    result["outputs"] = outputs
    write_text_atomic(out / metrics_name, json.dumps(result, indent=1) + "\n")


# ---------------------------------------------------------------------------------------- models


def _table_for(names: list[str], colors: list, classes: ClassTable | None, path: Path) -> ClassTable:
    """The model's class table, or ``classes`` when given (it must have as many classes)."""
    if classes is None:
        entries = [{"name": n, "color": list(c)} for n, c in zip(names, colors, strict=False)]
        return ClassTable.from_dict({"classes": entries})
    if classes.num_classes != len(names):
        raise InputError(
            f"the model predicts {len(names)} classes ({', '.join(names)}) but the class table has "
            f"{classes.num_classes}",
            path,
        )
    return classes


def load_predictor(
    model_path: str | os.PathLike,
    device: str = "auto",
    threads: int | None = None,
    classes: ClassTable | None = None,
    open_checkpoint: OpenCheckpoint | None = None,
) -> tuple[Predict, ClassTable, dict]:
    """Open a model file and return a label predictor for whole micrographs.

    Parameters
    ----------
    model_path : ``.onnx`` (runs on onnxruntime; torch is never imported) or a ``.pt`` / ``.pth``
        checkpoint (opened with ``open_checkpoint``).
    device : ``auto``, ``cpu`` or ``cuda``.
    threads : CPU threads for inference (None: the library's default).
    classes : class table to use instead of the model's own (same number of classes). An ONNX file stores
        names and colours but no raw mask ids, so without it raw ids are taken as ``1..C`` (the Zenodo
        convention).
    open_checkpoint : ``open_checkpoint(path, device, threads) -> CheckpointPredictor``, called only for a
        checkpoint: :func:`semphase.train.inference.load_checkpoint_model` (the train extra). Evaluation
        does not import the training side itself, so a checkpoint without it is an InputError.

    Returns
    -------
    (predict, table, info): ``predict(image_u8 (H, W) uint8) -> (H, W) uint8`` class ids; the class table;
    ``info`` with ``kind`` (``"onnx"`` or ``"checkpoint"``), ``path``, ``device`` and, for a checkpoint,
    ``split_file`` (its training split when known, else None) and ``config``.

    Raises
    ------
    InputError
        for a missing file, an unknown suffix, a checkpoint without ``open_checkpoint``, or a file the
        loader rejects.
    """
    path = Path(model_path)
    if not path.is_file():
        raise InputError("no such model file" if not path.exists() else "not a file", path)
    suffix = path.suffix.lower()
    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"device must be auto, cpu or cuda, got {device!r}")
    if suffix == ".onnx":
        from semphase.runtime.model import load_model
        from semphase.runtime.segment import segment_array

        model = load_model(path, provider=device, threads=threads)
        table = _table_for(list(model.classes), list(model.colors), classes, path)

        def predict_onnx(image_u8: np.ndarray) -> np.ndarray:
            return segment_array(model, image_u8)

        info = {"kind": "onnx", "path": str(path), "device": ",".join(getattr(model, "providers", [device]))}
        return predict_onnx, table, info
    if suffix in CHECKPOINT_SUFFIXES:
        if open_checkpoint is None:
            raise InputError(
                "a training checkpoint needs the training side to open it (open_checkpoint="
                "semphase.train.inference.load_checkpoint_model)",
                path,
            )
        return _checkpoint_predictor(open_checkpoint(path, device, threads), path, classes)
    raise InputError(f"unknown model type {path.suffix!r}; expected .onnx or a .pt checkpoint", path)


def _checkpoint_predictor(
    model: CheckpointPredictor, path: Path, classes: ClassTable | None
) -> tuple[Predict, ClassTable, dict]:
    """:func:`load_predictor`'s answer for a checkpoint already opened from ``path``.

    The predictor is ``model.predict_whole`` (whole images, as training scored its test split); the table
    is the checkpoint's own (raw ids included) or ``classes``; ``info["split_file"]`` is the training
    split the config records, or ``split.json`` beside the checkpoint, when either exists.
    """
    config, torch_device = model.config, model.device
    own = ClassTable.from_dict(config["classes"])  # the loader checked it; raw ids included
    table = own if classes is None else _table_for(own.names, list(own.colors), classes, path)

    split_file = None
    recorded = config.get("split_file")
    for candidate in ([Path(recorded), path.parent / recorded] if recorded else []) + [
        path.parent / "split.json"
    ]:
        if candidate.is_file():
            split_file = candidate
            break
    info = {"kind": "checkpoint", "path": str(path), "device": str(torch_device), "split_file": split_file}
    info["config"] = config
    return model.predict_whole, table, info


# ---------------------------------------------------------------------------------------- splits


def select_samples(
    dataset: Dataset,
    split: str | None = None,
    split_file: str | os.PathLike | None = None,
    model_split_file: str | os.PathLike | None = None,
) -> tuple[list[Sample], str]:
    """The samples to evaluate and a sentence saying which they are.

    Parameters
    ----------
    dataset : the opened dataset.
    split : ``test``, ``val``, ``train`` or ``all``; None: ``test`` when a split file is known, else ``all``.
    split_file : a split JSON given by the user (its names must be samples of ``dataset``).
    model_split_file : the model's own training split, used when ``split_file`` is None. If its names
        do not fit this dataset and no split was asked for, every sample is evaluated instead.

    Raises
    ------
    InputError
        for an unknown split name, a split asked for without a split file, or an invalid split file.
    """
    from semphase.data.split import load_split

    if split is not None and split not in SPLIT_CHOICES:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_CHOICES)}")
    if split == "all":
        return list(dataset.samples), f"all {len(dataset.samples)} images of the dataset"
    chosen = split or "test"
    if split_file is not None:
        names = load_split(split_file, dataset)[chosen]
        source = f"split file {split_file}"
    elif model_split_file is not None:
        try:
            names = load_split(model_split_file, dataset)[chosen]
        except InputError as exc:
            if split is not None:
                raise
            note = f"the model's split does not fit this dataset ({exc}); "
            return list(dataset.samples), note + f"all {len(dataset.samples)} images of the dataset"
        source = f"the model's training split {model_split_file}"
    elif split is not None:
        raise InputError(f"--split {split} needs a split file (--split-file); this model does not name one")
    else:
        return list(
            dataset.samples
        ), f"all {len(dataset.samples)} images of the dataset (no split file known)"
    if not names:
        raise InputError(f"the '{chosen}' split is empty", split_file or model_split_file)
    return dataset.select(names), f"'{chosen}' split ({len(names)} images) of {source}"
