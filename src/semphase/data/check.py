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

from semphase.data.labels import (
    UNLABELLED_RAW,
    as_label_array,
    labelled_counts,
    labels_from_colours,
    labels_from_ids,
    unknown_ids,
)
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

    ``pixel_counts`` (int64, shape (C,)) sums the *labelled* class pixels of every pair that could be read
    and whose sizes agree; ``per_image_counts`` holds the same per sample name and ``per_image_pixels``
    each such image's pixel count, so a sparsely labelled field shows how much of it is labelled.
    ``n_images`` is the number of such pairs; ``ignored_pixels`` counts their pixels that carry no class
    (unlabelled, and raw ids the table lacks), ``unknown_pixels`` the latter alone. ``warnings`` say what
    is usable but worth knowing (a class with no labelled pixel, fields with none).
    """

    dataset: Dataset | None
    problems: list[Problem]
    pixel_counts: np.ndarray
    per_image_counts: dict[str, np.ndarray] = field(default_factory=dict)
    n_images: int = 0
    table: ClassTable = DEFAULT_TABLE
    ignored_pixels: int = 0
    per_image_pixels: dict[str, int] = field(default_factory=dict)
    unknown_pixels: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def fractions(self) -> np.ndarray:
        """Class pixel fractions, float64 shape (C,), over the labelled pixels; zeros when none."""
        total = int(self.pixel_counts.sum())
        if total == 0:
            return np.zeros(len(self.pixel_counts))
        return self.pixel_counts / total

    @property
    def labelled_fraction(self) -> float:
        """Labelled pixels over all pixels of the counted pairs (1.0 for dense masks without a data bar)."""
        total = sum(self.per_image_pixels.values())
        return float(self.pixel_counts.sum()) / total if total else 0.0

    @property
    def sparse(self) -> bool:
        """True when some counted field leaves pixels unlabelled (strokes rather than dense masks)."""
        return any(
            int(self.per_image_counts[name].sum()) < pixels for name, pixels in self.per_image_pixels.items()
        )

    def labelled_names(self) -> list[str]:
        """Counted samples with at least one labelled pixel (the only ones a split or training can use)."""
        return [name for name, counts in self.per_image_counts.items() if counts.sum() > 0]

    @property
    def ok(self) -> bool:
        """True when a dataset was found and no problem was reported."""
        return self.dataset is not None and not self.problems


def _format_ids(ids: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f" ... ({len(ids) - limit} more)" if len(ids) > limit else "")


def _read(path: Path, role: str, problems: list[Problem]) -> np.ndarray | None:
    """Read a micrograph as stored and check it is single-channel 8- or 16-bit; None (with a problem) if
    not."""
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


def _read_mask(path: Path, table: ClassTable, problems: list[Problem]) -> tuple[np.ndarray, int] | None:
    """Class ids of an index or colour mask and its pixels with unknown raw ids; None (with a problem)
    when it cannot be read or holds a colour that is no class."""
    try:
        arr = as_label_array(read_raw(path), path)
        if arr.ndim == 3:
            return labels_from_colours(arr, table, path), 0
    except InputError as exc:
        problems.append(Problem(path, exc.said_of(path)))
        return None
    except OSError as exc:
        problems.append(Problem(path, f"cannot read ({exc.strerror or exc})"))
        return None
    unknown = unknown_ids(arr, table)
    n_unknown = 0
    if unknown:
        n_unknown = int(np.isin(arr, unknown).sum())
        problems.append(
            Problem(
                path,
                f"raw ids not in the class table: {_format_ids(unknown)} "
                f"(table: {_format_ids(table.raw_ids)}; {UNLABELLED_RAW} = unlabelled); {n_unknown} "
                "pixels would be ignored",
            )
        )
    return labels_from_ids(arr, table), n_unknown


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
) -> tuple[np.ndarray, int, int] | None:
    """Labelled pixels per class (int64, (C,)) of one pair, its pixel count and its pixels with unknown
    raw ids, or None if not countable."""
    image = _read(image_path, "gray values", problems)
    read = _read_mask(mask_path, table, problems)
    if read is None or image is None:
        return None
    labels, n_unknown = read
    if image.shape != labels.shape:
        problems.append(
            Problem(
                mask_path,
                f"mask is {labels.shape[1]}x{labels.shape[0]} (WxH) but its image {image_path.name} is "
                f"{image.shape[1]}x{image.shape[0]}",
            )
        )
        return None
    return labelled_counts(labels, table.num_classes), labels.size, n_unknown


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
    per_pixels: dict[str, int] = {}
    ignored = unknown = 0
    for sample in dataset.samples:
        assert sample.mask_path is not None  # open_dataset only lists pairs
        counted = _check_pair(sample.image_path, sample.mask_path, table, problems)
        if counted is None:
            continue
        class_counts, pixels, n_unknown = counted
        per_image[sample.name], per_pixels[sample.name] = class_counts, pixels
        counts += class_counts
        ignored += pixels - int(class_counts.sum())
        unknown += n_unknown
    problems.sort(key=lambda p: str(p.path))  # stable: one file's problems stay in the order found
    report = CheckReport(
        dataset, problems, counts, per_image, len(per_image), table, ignored, per_pixels, unknown
    )
    report.warnings = label_warnings(report)
    return report


def label_warnings(report: CheckReport, split: dict[str, list[str]] | None = None) -> list[str]:
    """What a training run should know about the labels: classes without a labelled pixel (in the whole
    dataset, and in the train split when one is given) and fields with none (a split leaves them out)."""
    warnings = []
    names = report.table.names
    if report.n_images:
        missing = [names[c] for c in np.flatnonzero(report.pixel_counts == 0)]
        if missing:
            warnings.append(
                f"no labelled pixel of {', '.join(missing)} in the whole dataset: a model cannot learn "
                "what it never sees; label some strokes of it"
            )
    if split is not None:
        train = split_pixel_counts(report, {"train": split.get("train", [])})["train"]
        gone = [names[c] for c in np.flatnonzero((train == 0) & (report.pixel_counts > 0))]
        if gone:
            warnings.append(f"the train split has no labelled pixel of {', '.join(gone)}")
    empty = [name for name, c in report.per_image_counts.items() if c.sum() == 0]
    if empty:
        more = f" and {len(empty) - 3} more" if len(empty) > 3 else ""
        warnings.append(
            f"{len(empty)} fields have no labelled pixel ({', '.join(empty[:3])}{more}); "
            "splits and training leave them out"
        )
    return warnings


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
        "unknown_id_pixels": report.unknown_pixels,
        "unlabelled_pixels": report.ignored_pixels - report.unknown_pixels,
        "labelled_fraction": report.labelled_fraction,
        "sparse": report.sparse,
        "ignore_label": IGNORE,
        "problems": [{"path": str(p.path), "reason": p.reason} for p in report.problems],
        "warnings": list(report.warnings),
        "per_image_counts": {name: [int(c) for c in c_] for name, c_ in report.per_image_counts.items()},
        "per_image_pixels": dict(report.per_image_pixels),
    }


def pixel_table(report: CheckReport) -> Table:
    """The labelled pixels per class and their fractions as a text table (last rows for unlabelled pixels
    and unknown raw ids, if any)."""
    table = Table(
        "class_pixels",
        "Labelled class pixels",
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
    unlabelled = report.ignored_pixels - report.unknown_pixels
    if unlabelled:
        share = f"{100 * unlabelled / max(sum(report.per_image_pixels.values()), 1):.3f}% of all"
        table.rows.append(["", str(UNLABELLED_RAW), "(unlabelled)", f"{unlabelled:,}", share])
    if report.unknown_pixels:
        table.rows.append(["", "", "(unknown raw ids)", f"{report.unknown_pixels:,}", ""])
    return table


#: ``data check`` lists at most this many fields in its per-field table (all of them go to ``--json``).
FIELD_ROWS = 20


def field_table(report: CheckReport, limit: int = FIELD_ROWS) -> Table:
    """Labelled pixels per field and class, sparsest fields first (at most ``limit`` rows).

    What a user labelling strokes wants to see: how much of each field is labelled and which classes
    each field shows the model.
    """
    names = report.table.names
    table = Table(
        "field_labels",
        "Labelled pixels per field",
        ["field", "labelled", *names],
        text_columns=("field",),
    )
    order = sorted(
        report.per_image_counts,
        key=lambda n: (report.per_image_counts[n].sum() / max(report.per_image_pixels[n], 1), n),
    )
    for name in order[:limit]:
        counts = report.per_image_counts[name]
        share = 100 * counts.sum() / max(report.per_image_pixels[name], 1)
        table.rows.append([name, f"{share:.2f}%", *(f"{int(c):,}" if c else "-" for c in counts)])
    if len(order) > limit:
        table.rows.append([f"({len(order) - limit} more fields in --json)", "", *([""] * len(names))])
    return table


def split_table(
    split: dict[str, list[str]], group_regex: str | None, report: CheckReport | None = None
) -> Table:
    """Images and groups per split, and each split's labelled pixels and class fractions when a check
    report is at hand."""
    from semphase.data.split import SPLITS, groups_of

    names = report.table.names if report is not None else []
    extra = ["labelled px"] if report is not None else []
    table = Table("split", "Split", ["split", "images", "groups", *extra, *names], text_columns=("split",))
    class_counts = split_pixel_counts(report, split) if report is not None else None
    for side in SPLITS:
        cells = [side, str(len(split[side])), str(len(groups_of(split[side], group_regex)))]
        if class_counts is not None:
            counts = class_counts[side]
            total = int(counts.sum())
            cells += [f"{total:,}", *(f"{100 * c / total:.3f}%" if total else "-" for c in counts)]
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
