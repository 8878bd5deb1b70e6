"""Dataset integrity check: every problem with every file, and the class pixel counts.

The check never stops at the first problem: a user fixing a dataset wants the whole list. Only a missing
layout (nothing that looks like a dataset) yields a report without a dataset, as a single problem.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from semphase.data.layout import DATASET_SUFFIXES, Dataset, open_dataset
from semphase.errors import InputError
from semphase.imageio import read_raw, to_uint8, write_image
from semphase.phases import DEFAULT_TABLE, IGNORE, ClassTable
from semphase.tables import Table


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file (or with the dataset folder)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`.

    ``pixel_counts`` (int64, shape (C,)) sums the class pixels of every pair that could be read and whose
    sizes agree; ``per_image_counts`` holds the same per sample name. ``n_images`` is the number of such
    pairs; ``ignored_pixels`` counts their pixels with raw ids the table lacks.
    """

    dataset: Dataset | None
    problems: list[Problem]
    pixel_counts: np.ndarray
    per_image_counts: dict[str, np.ndarray] = field(default_factory=dict)
    n_images: int = 0
    table: ClassTable = DEFAULT_TABLE
    ignored_pixels: int = 0

    @property
    def fractions(self) -> np.ndarray:
        """Class pixel fractions, float64 shape (C,), over the known-class pixels; zeros when none."""
        total = int(self.pixel_counts.sum())
        if total == 0:
            return np.zeros(len(self.pixel_counts))
        return self.pixel_counts / total

    @property
    def ok(self) -> bool:
        """True when a dataset was found and no problem was reported."""
        return self.dataset is not None and not self.problems


def _format_ids(ids: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def _read(path: Path, role: str, problems: list[Problem]) -> np.ndarray | None:
    """Read a file as stored and check it is single-channel 8- or 16-bit; None (with a problem) if not."""
    try:
        arr = read_raw(path)
    except InputError as exc:
        problems.append(Problem(path, exc.said_of(path)))
        return None
    except OSError as exc:  # e.g. permission denied while reading
        problems.append(Problem(path, f"cannot read ({exc.strerror or exc})"))
        return None
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    fault = None
    if arr.ndim == 3:
        rgb = arr[:, :, :3]
        same = np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 1], rgb[:, :, 2])
        kind = "RGBA" if arr.shape[2] == 4 else "RGB"
        detail = "gray values stored as colour" if same else "colour"
        fault = f"{kind} image ({detail}); expected one channel of 8- or 16-bit {role}"
    elif arr.dtype not in (np.uint8, np.uint16):
        fault = f"pixel type {arr.dtype}; expected 8- or 16-bit unsigned integers"
    if fault is not None:
        problems.append(Problem(path, fault))
        return None
    return arr


@contextlib.contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own stderr lines about undecodable files: the report names them instead."""
    previous = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(previous)


def _check_pair(
    image_path: Path, mask_path: Path, table: ClassTable, problems: list[Problem]
) -> tuple[np.ndarray, int] | None:
    """Class pixel counts (int64, (C,)) of one pair and its ignored pixels, or None if not countable."""
    image = _read(image_path, "gray values", problems)
    raw = _read(mask_path, "class ids", problems)
    if raw is None:
        return None
    unknown = table.unknown_raw_ids(raw)
    if unknown:
        n_unknown = int(np.isin(raw, unknown).sum())
        problems.append(
            Problem(
                mask_path,
                f"raw ids not in the class table: {_format_ids(unknown)} "
                f"(table: {_format_ids(table.raw_ids)}); {n_unknown} pixels would be ignored",
            )
        )
    if image is None:
        return None
    if image.shape != raw.shape:
        problems.append(
            Problem(
                mask_path,
                f"mask is {raw.shape[1]}x{raw.shape[0]} (WxH) but its image {image_path.name} is "
                f"{image.shape[1]}x{image.shape[0]}",
            )
        )
        return None
    counts = np.bincount(table.remap(raw).ravel(), minlength=256)[: table.num_classes].astype(np.int64)
    return counts, raw.size - int(counts.sum())


def check_dataset(root: str | os.PathLike, table: ClassTable = DEFAULT_TABLE) -> CheckReport:
    """Check a dataset's files and count class pixels.

    Reported, each as a :class:`Problem` naming the file: an image without a mask and a mask without an
    image, files of other types in the dataset folders, two files with one stem, zero-byte, unreadable,
    corrupt or undecodable files, images or masks that are not single-channel 8-/16-bit, masks whose size
    differs from their image's, and raw mask ids the class table does not know (which ids).

    Parameters
    ----------
    root : dataset folder (see :func:`semphase.data.layout.open_dataset`).
    table : the class table that maps raw mask ids to classes.

    Returns
    -------
    CheckReport; when no dataset is found, ``dataset`` is None and the one problem says why.
    """
    with _quiet_opencv():
        return _check(root, table)


def _check(root: str | os.PathLike, table: ClassTable) -> CheckReport:
    problems: list[Problem] = []
    empty = np.zeros(table.num_classes, dtype=np.int64)
    try:
        dataset = open_dataset(root)
    except InputError as exc:
        path = Path(exc.path) if exc.path is not None else Path(root)
        problem = Problem(path, exc.said_of(path))
        return CheckReport(None, [problem], empty, table=table)

    suffixes = "/".join(DATASET_SUFFIXES)
    for path in dataset.unpaired_images:
        problems.append(Problem(path, f"image has no mask (no {path.stem}.* in {dataset.masks_dir})"))
    for path in dataset.unpaired_masks:
        problems.append(Problem(path, f"mask has no image (no {path.stem}.* in {dataset.images_dir})"))
    for path in dataset.ignored_files:
        problems.append(Problem(path, f"not a dataset file ({suffixes}); ignored"))
    for path in dataset.ambiguous_files:
        problems.append(Problem(path, "another file in this folder has the same stem; cannot pair it"))
    # Still read unpaired files: a zero-byte or corrupt one deserves its own line.
    for path in dataset.unpaired_images:
        _read(path, "gray values", problems)
    for path in dataset.unpaired_masks:
        _read(path, "class ids", problems)

    counts = empty.copy()
    per_image: dict[str, np.ndarray] = {}
    ignored = 0
    for sample in dataset.samples:
        assert sample.mask_path is not None  # open_dataset only lists pairs
        counted = _check_pair(sample.image_path, sample.mask_path, table, problems)
        if counted is None:
            continue
        per_image[sample.name], n_ignored = counted
        counts += counted[0]
        ignored += n_ignored
    problems.sort(key=lambda p: str(p.path))  # stable: one file's problems stay in the order found
    return CheckReport(dataset, problems, counts, per_image, len(per_image), table, ignored)


def split_pixel_counts(report: CheckReport, split: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Class pixel counts (int64, (C,)) per split, from the report's per-image counts.

    Names the report could not count (unreadable pairs) contribute nothing.
    """
    counts = {}
    for side, names in split.items():
        total = np.zeros(report.table.num_classes, dtype=np.int64)
        for name in names:
            if name in report.per_image_counts:
                total += report.per_image_counts[name]
        counts[side] = total
    return counts


def write_panels(
    report: CheckReport, folder: str | os.PathLike, n: int, group_regex: str | None = None
) -> list[Path]:
    """Write ``n`` image | mask | overlay panels (PNG) of counted pairs, spread over the crop groups.

    Returns the written paths. File names are the sample names with ``/`` as ``__`` and ``_panel.png``.
    """
    from semphase.data.layout import load_pair
    from semphase.data.overlay import panel
    from semphase.data.split import spread_over_groups

    if report.dataset is None:
        return []
    by_name = report.dataset.by_name()
    written = []
    for name in spread_over_groups(list(report.per_image_counts), n, group_regex):
        image, labels = load_pair(by_name[name], report.table)
        out = Path(folder) / (name.rsplit(".", 1)[0].replace("/", "__") + "_panel.png")
        write_image(out, panel(to_uint8(image), labels, report.table, name))
        written.append(out)
    return written


def report_to_dict(report: CheckReport) -> dict:
    """The report as a JSON-serializable dict: layout, counts, fractions, per-class names, problems."""
    ds = report.dataset
    table = report.table
    fractions = report.fractions
    return {
        "dataset": None if ds is None else str(ds.root),
        "layout": None if ds is None else ds.kind,
        "images_dir": None if ds is None else str(ds.images_dir),
        "masks_dir": None if ds is None else str(ds.masks_dir),
        "pairs": 0 if ds is None else len(ds.samples),
        "n_images": report.n_images,
        "ok": report.ok,
        "classes": [
            {
                "id": p.id,
                "raw_id": p.raw_id,
                "name": p.name,
                "pixels": int(report.pixel_counts[p.id]),
                "fraction": float(fractions[p.id]),
            }
            for p in table.phases
        ],
        "class_names": table.names,
        "pixel_counts": [int(c) for c in report.pixel_counts],
        "fractions": [float(f) for f in fractions],
        "ignored_pixels": report.ignored_pixels,
        "ignore_label": IGNORE,
        "problems": [{"path": str(p.path), "reason": p.reason} for p in report.problems],
        "per_image_counts": {name: [int(c) for c in c_] for name, c_ in report.per_image_counts.items()},
    }


def pixel_table(report: CheckReport) -> Table:
    """The class pixel counts and fractions as a text table (a last row for unknown raw ids, if any)."""
    table = Table(
        "class_pixels",
        "Class pixels",
        ["id", "raw id", "class", "pixels", "fraction"],
        text_columns=("class",),
    )
    for phase in report.table.phases:
        pixels = int(report.pixel_counts[phase.id])
        table.rows.append(
            [
                str(phase.id),
                str(phase.raw_id),
                phase.name,
                f"{pixels:,}",
                f"{100 * report.fractions[phase.id]:.3f}%",
            ]
        )
    if report.ignored_pixels:
        table.rows.append(["", "", "(unknown raw ids)", f"{report.ignored_pixels:,}", ""])
    return table


def split_table(
    split: dict[str, list[str]], group_regex: str | None, report: CheckReport | None = None
) -> Table:
    """Images and groups per split, and each split's class fractions when a check report is at hand."""
    from semphase.data.split import SPLITS, groups_of

    names = report.table.names if report is not None else []
    table = Table("split", "Split", ["split", "images", "groups", *names], text_columns=("split",))
    class_counts = split_pixel_counts(report, split) if report is not None else None
    for side in SPLITS:
        cells = [side, str(len(split[side])), str(len(groups_of(split[side], group_regex)))]
        if class_counts is not None:
            counts = class_counts[side]
            total = int(counts.sum())
            cells += [f"{100 * c / total:.3f}%" if total else "-" for c in counts]
        table.rows.append(cells)
    return table


def check_document(
    report: CheckReport, split: dict[str, list[str]] | None = None, split_info: dict | None = None
) -> dict:
    """The JSON document ``data check --json`` writes: :func:`report_to_dict`, plus the split's sizes and
    ``split_info`` (its path, seed and group pattern) when one was made."""
    document = report_to_dict(report)
    if split is not None:
        document["split"] = dict(split_info or {})
        document["split"].update({side: len(names) for side, names in split.items()})
    return document
