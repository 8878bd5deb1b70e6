"""Scoring a folder of label images (any tool's: semphase, ilastik, hand masks) against truth masks.

Torch-free. Truth is either a dataset (see :mod:`semphase.data.layout`; its masks hold raw ids) or a plain
folder of label images. Predictions are matched to truth by file stem: for a truth image ``X`` the
prediction may be ``X.png`` or ``X_mask.png`` (also ``_labels``, ``_pred``, ``_prediction``,
``_segmentation`` and ilastik's ``_Simple Segmentation``), in the same relative subfolder or, when that
is unique, anywhere under the prediction folder.

Label values are either contiguous class ids ``0..C-1`` or the table's raw ids (ilastik's simple
segmentation writes ``1..N``; the Zenodo masks hold ``1..5``); when not told, the values found in the
files decide, and the reason is recorded in the result.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from semphase.data.layout import DATASET_SUFFIXES, open_dataset
from semphase.errors import InputError
from semphase.imageio import read_label
from semphase.metrics import DEFAULT_TOLERANCE, Scorer
from semphase.phases import IGNORE, ClassTable
from semphase.progress import SILENT, Progress, tracked

#: Name endings that a prediction may add to its image's stem (compared case-insensitively).
PREDICTION_ENDINGS = (
    "_mask",
    "_labels",
    "_label",
    "_pred",
    "_prediction",
    "_segmentation",
    "_simple segmentation",
)

ID_KINDS = ("auto", "raw", "contiguous")


@dataclass
class Pairing:
    """Truth masks matched with predictions.

    ``pairs`` holds (name, truth path, prediction path); ``problems`` holds (name, what is wrong) for truth
    masks that cannot be scored; ``unused_predictions`` the prediction files no truth mask claimed.
    ``truth_is_dataset`` tells whether the truth folder was read as a dataset (raw-id masks).
    """

    pairs: list[tuple[str, Path, Path]]
    problems: list[tuple[str, str]] = field(default_factory=list)
    unused_predictions: list[Path] = field(default_factory=list)
    truth_is_dataset: bool = False


def _label_files(folder: Path) -> dict[str, Path]:
    """Label images under ``folder`` keyed by relative posix path (hidden files and folders skipped)."""
    if not folder.is_dir():
        raise InputError("no such folder" if not folder.exists() else "not a folder", folder)
    found: dict[str, Path] = {}

    def on_error(exc: OSError) -> None:
        raise InputError(f"cannot list folder ({exc.strerror or exc})", exc.filename or folder)

    for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            if not fname.startswith(".") and path.suffix.lower() in DATASET_SUFFIXES:
                found[path.relative_to(folder).as_posix()] = path
    return found


def _stem(rel: str) -> str:
    return str(PurePosixPath(rel).with_suffix(""))


def _prediction_keys(rel: str) -> set[str]:
    """Truth stems a prediction file may stand for: its own stem and the stem without a known ending."""
    stem = _stem(rel)
    keys = {stem}
    for ending in PREDICTION_ENDINGS:
        if stem.lower().endswith(ending) and len(stem) > len(ending):
            keys.add(stem[: -len(ending)])
    return keys


def _truth_masks(truth_dir: Path) -> tuple[list[tuple[str, Path]], bool]:
    """(name, mask path) of every truth mask, and whether ``truth_dir`` is a dataset."""
    if not truth_dir.is_dir():
        raise InputError("no such folder" if not truth_dir.exists() else "not a folder", truth_dir)
    try:
        dataset = open_dataset(truth_dir)
    except InputError as exc:
        # A layout that is there but unclear must not be read as a folder of label images.
        if any(reason in str(exc) for reason in ("several datasets", "differ only by case")):
            raise
        files = _label_files(truth_dir)
        if not files:
            suffixes = "/".join(DATASET_SUFFIXES)
            raise InputError(
                f"no truth label images ({suffixes}) and no dataset layout here", truth_dir
            ) from None
        return sorted(files.items()), False
    masks = [(s.name, s.mask_path) for s in dataset.samples]
    # Masks without their micrograph can still be scored.
    masks += [(p.relative_to(dataset.masks_dir).as_posix(), p) for p in dataset.unpaired_masks]
    return sorted(masks), True


def pair_predictions(pred_dir: str | os.PathLike, truth_dir: str | os.PathLike) -> Pairing:
    """Match prediction files to truth masks by stem.

    Parameters
    ----------
    pred_dir : folder of prediction label images (searched recursively).
    truth_dir : a dataset (any layout :func:`semphase.data.layout.open_dataset` finds) or a folder of
        truth label images.

    Returns
    -------
    Pairing, pairs sorted by name. A truth mask with no prediction, or with several that fit equally
    well (``X.png`` and ``X_mask.png``), is listed in ``problems``.

    Raises
    ------
    InputError
        when a folder is missing or the truth folder holds no label images.
    """
    truth, is_dataset = _truth_masks(Path(truth_dir))
    predictions = _label_files(Path(pred_dir))
    if not predictions:
        raise InputError(f"no prediction label images ({'/'.join(DATASET_SUFFIXES)}) here", pred_dir)
    by_key: dict[str, list[str]] = {}
    by_base: dict[str, list[str]] = {}
    for rel in predictions:
        for key in _prediction_keys(rel):
            by_key.setdefault(key.lower(), []).append(rel)
            by_base.setdefault(PurePosixPath(key).name.lower(), []).append(rel)
    pairing = Pairing(pairs=[], truth_is_dataset=is_dataset)
    used: set[str] = set()
    truth_bases: dict[str, int] = {}
    for name, _ in truth:
        base = PurePosixPath(_stem(name)).name.lower()
        truth_bases[base] = truth_bases.get(base, 0) + 1
    for name, mask_path in truth:
        stem = _stem(name)
        base = PurePosixPath(stem).name.lower()
        candidates = sorted(set(by_key.get(stem.lower(), [])))
        if not candidates and truth_bases[base] == 1:
            # the same file name in another subfolder, e.g. a flat prediction folder
            candidates = sorted(set(by_base.get(base, [])))
        if len(candidates) == 1:
            pairing.pairs.append((name, mask_path, predictions[candidates[0]]))
            used.add(candidates[0])
        elif not candidates:
            pairing.problems.append((name, "no prediction found"))
        else:
            pairing.problems.append((name, f"several predictions fit: {', '.join(candidates[:4])}"))
    pairing.unused_predictions = [predictions[rel] for rel in sorted(predictions) if rel not in used]
    return pairing


# ------------------------------------------------------------------------------------ label ids


def value_counts(labels: np.ndarray) -> dict[int, int]:
    """Pixel count of every value in a label image (uint8 or uint16)."""
    if labels.dtype == np.uint8:
        counts = np.bincount(labels.ravel(), minlength=256)
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    values, counts = np.unique(labels, return_counts=True)
    return {int(v): int(n) for v, n in zip(values, counts, strict=True)}


def choose_id_kind(counts: dict[int, int], table: ClassTable, prefer: str) -> tuple[str, str]:
    """Decide whether label values are raw ids or contiguous class ids.

    Parameters
    ----------
    counts : pixel count per value over all files of one side (255 is "no data" either way).
    table : the class table.
    prefer : ``"raw"`` or ``"contiguous"``, taken when the values fit both or neither equally.

    Returns
    -------
    (kind, reason): kind is ``"raw"`` or ``"contiguous"``; reason is a sentence for the user.
    """
    contiguous = set(range(table.num_classes))
    raw = set(table.raw_ids)
    if contiguous == raw:
        return "contiguous", "the table's raw ids equal its class ids"
    values = {v for v, n in counts.items() if n and v != IGNORE}
    shown = _show(values)
    fits_contiguous, fits_raw = values <= contiguous, values <= raw
    if fits_contiguous and not fits_raw:
        return "contiguous", f"values {shown} are class ids 0..{table.num_classes - 1}, not all raw ids"
    if fits_raw and not fits_contiguous:
        return "raw", f"values {shown} are raw ids {_show(raw)}, not all class ids"
    if fits_raw and fits_contiguous:
        return prefer, f"values {shown} fit both raw ids and class ids; assumed {prefer}"
    unknown_contiguous = sum(n for v, n in counts.items() if v not in contiguous and v != IGNORE)
    unknown_raw = sum(n for v, n in counts.items() if v not in raw and v != IGNORE)
    kind = prefer
    if unknown_contiguous != unknown_raw:
        kind = "contiguous" if unknown_contiguous < unknown_raw else "raw"
    known = contiguous if kind == "contiguous" else raw
    return kind, f"values {shown} fit neither; assumed {kind}, and {_show(values - known)} count as no data"


def _show(values: Iterable[int], limit: int = 12) -> str:
    ordered = sorted(values)
    text = ",".join(str(v) for v in ordered[:limit])
    return "{" + text + (",..." if len(ordered) > limit else "") + "}"


def to_class_ids(labels: np.ndarray, kind: str, table: ClassTable) -> np.ndarray:
    """Label image -> uint8 class ids ``0..C-1``, 255 for anything else (raw ids via the table)."""
    if kind == "raw":
        return table.remap(labels)
    if labels.dtype == np.uint8 and int(labels.max(initial=0)) < table.num_classes:
        return labels
    return np.where(labels < table.num_classes, labels, IGNORE).astype(np.uint8)


# ------------------------------------------------------------------------------------- scoring


def _collect_counts(paths: Iterable[Path], progress: Progress) -> tuple[dict[int, int], list]:
    total: dict[int, int] = {}
    unreadable = []
    for path in tracked(paths, progress, "values", "reading label values"):
        try:
            for v, n in value_counts(read_label(path)).items():
                total[v] = total.get(v, 0) + n
        except InputError as exc:
            unreadable.append((path, str(exc)))
    return total, unreadable


def _id_kinds(pairing, table: ClassTable, truth_ids: str, pred_ids: str, problems: list, progress: Progress):
    """``{"truth": (kind, reason), "pred": (kind, reason)}`` and the names whose files could not be read
    (each added to ``problems``)."""
    bad: set[str] = set()
    kinds = {}
    for side, requested, prefer, column in (
        ("truth", truth_ids, "raw", 1),
        ("pred", pred_ids, "contiguous", 2),
    ):
        if requested != "auto":
            kinds[side] = (requested, "as requested")
        elif side == "truth" and pairing.truth_is_dataset:
            kinds[side] = ("raw", "dataset masks hold raw ids")
        else:
            counts, unreadable = _collect_counts((p[column] for p in pairing.pairs), progress)
            kinds[side] = choose_id_kind(counts, table, prefer)
            for path, message in unreadable:
                name = next(p[0] for p in pairing.pairs if p[column] == path)
                problems.append((name, message))
                bad.add(name)
    return kinds, bad


def score_folders(
    pred_dir: str | os.PathLike,
    truth_dir: str | os.PathLike,
    table: ClassTable,
    truth_ids: str = "auto",
    pred_ids: str = "auto",
    absent_as_study: bool = False,
    tolerance: int = DEFAULT_TOLERANCE,
    progress: Progress = SILENT,
) -> dict:
    """Score every prediction in ``pred_dir`` that has a truth mask in ``truth_dir``.

    Parameters
    ----------
    pred_dir, truth_dir : see :func:`pair_predictions`.
    table : class names and raw ids.
    truth_ids, pred_ids : ``"raw"``, ``"contiguous"`` or ``"auto"``. For truth from a dataset ``auto``
        means raw (datasets store raw ids); otherwise the values in the files decide, preferring raw for
        truth and contiguous for predictions when they fit both.
    absent_as_study, tolerance : see :class:`semphase.metrics.Scorer`.
    progress : one step per file read, stages ``"values"`` and ``"scoring"`` (:mod:`semphase.progress`).

    Returns
    -------
    The scoring-result dict (schema of ``docs/dataset-and-metrics.md``) with extras: ``truth_ids`` and
    ``pred_ids`` (``{"kind", "reason"}``), ``problems`` (``[{"name", "problem"}]`` per file not scored),
    ``unused_predictions`` (count) and ``truth_is_dataset``.

    Raises
    ------
    InputError
        for missing folders, and when not a single pair could be scored.
    """
    for option, value in (("truth_ids", truth_ids), ("pred_ids", pred_ids)):
        if value not in ID_KINDS:
            raise ValueError(f"{option} must be one of {ID_KINDS}, got {value!r}")
    pairing = pair_predictions(pred_dir, truth_dir)
    problems = list(pairing.problems)
    kinds, bad = _id_kinds(pairing, table, truth_ids, pred_ids, problems, progress)
    scorer = Scorer(table.names, absent_as_study=absent_as_study, tolerance=tolerance)
    pairs = [p for p in pairing.pairs if p[0] not in bad]
    for name, truth_path, pred_path in tracked(pairs, progress, "scoring", "scoring"):
        try:
            truth = to_class_ids(read_label(truth_path), kinds["truth"][0], table)
            pred = to_class_ids(read_label(pred_path), kinds["pred"][0], table)
        except InputError as exc:
            problems.append((name, str(exc)))
            continue
        if truth.shape != pred.shape:
            problems.append(
                (
                    name,
                    f"prediction {pred_path.name} is {pred.shape[1]}x{pred.shape[0]} (WxH) but the truth is "
                    f"{truth.shape[1]}x{truth.shape[0]}",
                )
            )
            continue
        scorer.add(name, truth, pred)
    if not scorer.images:
        first = f"; first: {problems[0][0]}: {problems[0][1]}" if problems else ""
        raise InputError(f"nothing could be scored against the truth in {truth_dir}{first}", pred_dir)
    result = scorer.result()
    result["truth_ids"] = {"kind": kinds["truth"][0], "reason": kinds["truth"][1]}
    result["pred_ids"] = {"kind": kinds["pred"][0], "reason": kinds["pred"][1]}
    result["problems"] = [{"name": n, "problem": p} for n, p in sorted(problems)]
    result["unused_predictions"] = len(pairing.unused_predictions)
    result["truth_is_dataset"] = pairing.truth_is_dataset
    return result
