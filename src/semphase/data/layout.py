"""Dataset layouts on disk: finding image/mask pairs and the crop groups they belong to.

Two layouts are recognized (folder names match case-insensitively):

- **zenodo**: ``AugmentedImages/`` and ``AugmentedMasks/`` with the same file names in both, as in the Ni-WC
  SEM set of Safdar (2025), doi:10.5281/zenodo.17315241.
- **generic**: ``images/`` and ``masks/``; an image and its mask are matched by file stem (relative path
  without suffix), so ``images/a.tif`` pairs with ``masks/a.png``.

Files may sit in subfolders; a sample's name is then its relative path with ``/`` separators. Files and
folders whose names start with ``.`` are skipped (temporary ``.part`` files, ``.DS_Store``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from semphase.data.labels import read_labels
from semphase.errors import InputError
from semphase.imageio import read_gray
from semphase.phases import ClassTable

#: Suffixes of dataset files (lower case). JPEG is left out: its compression alters mask ids.
DATASET_SUFFIXES = (".png", ".bmp", ".tif", ".tiff")

#: (kind, image folder name, mask folder name), lower case; the first that matches wins.
LAYOUTS = (("zenodo", "augmentedimages", "augmentedmasks"), ("generic", "images", "masks"))

_EXPECTED = (
    "expected AugmentedImages/ + AugmentedMasks/ (Zenodo layout) or images/ + masks/ (generic layout, "
    "matched by file stem), in this folder or in exactly one of its subfolders"
)

#: Zenodo file names: ``sem{mag}_x{X}_y{Y}_{augmentation}``; the group is the base crop.
ZENODO_NAME = re.compile(r"^(sem\d+_x-?\d+_y-?\d+)_.+$", re.IGNORECASE)
#: Regions that ``semphase suggest`` cut from a micrograph: ``{stem}__y{Y}_x{X}``; the group is the stem.
REGION_NAME = re.compile(r"^(.+)__y\d+_x\d+$")


@dataclass(frozen=True)
class Sample:
    """One image of a dataset and its mask.

    ``name`` is the image's path relative to the images folder, with ``/`` separators and its suffix,
    e.g. ``"sem700_x0_y0_HorizontalFlip.bmp"``.
    """

    name: str
    image_path: Path
    mask_path: Path | None


@dataclass
class Dataset:
    """A dataset found on disk.

    ``samples`` holds the paired images only, sorted by name. Files that could not be paired are listed
    separately so that :func:`semphase.data.check.check_dataset` can report each one.
    """

    root: Path
    kind: str  # "zenodo" | "generic"
    images_dir: Path
    masks_dir: Path
    samples: list[Sample]
    unpaired_images: list[Path]
    unpaired_masks: list[Path]
    #: Files in the image/mask folders that are not dataset files (unsupported suffix); never read.
    ignored_files: list[Path] = field(default_factory=list)
    #: Files whose stem another file in the same folder shares (``a.png`` + ``a.tif``): left unpaired.
    ambiguous_files: list[Path] = field(default_factory=list)

    def by_name(self) -> dict[str, Sample]:
        """Samples keyed by name."""
        return {s.name: s for s in self.samples}

    def select(self, names: list[str]) -> list[Sample]:
        """The samples with these names, in the given order.

        Raises
        ------
        InputError
            naming the first name that is not a paired sample of this dataset.
        """
        index = self.by_name()
        missing = next((n for n in names if n not in index), None)
        if missing is not None:
            raise InputError(f"not an image/mask pair of the dataset in {self.root}", missing)
        return [index[n] for n in names]


def _subdirs(folder: Path) -> dict[str, list[Path]]:
    """Non-hidden subfolders keyed by lower-case name (a list, since names may differ only by case)."""
    found: dict[str, list[Path]] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise InputError(f"cannot list folder ({exc.strerror or exc})", folder) from None
    for entry in entries:
        if not entry.name.startswith(".") and entry.is_dir():
            found.setdefault(entry.name.lower(), []).append(entry)
    return found


def _layout_in(folder: Path) -> tuple[str, Path, Path] | None:
    """The layout whose two folders both exist directly in ``folder``, or None."""
    subdirs = _subdirs(folder)
    for kind, images_name, masks_name in LAYOUTS:
        images, masks = subdirs.get(images_name, []), subdirs.get(masks_name, [])
        if images and masks:
            if len(images) > 1 or len(masks) > 1:
                names = ", ".join(p.name for p in images + masks)
                raise InputError(f"folder names differ only by case ({names}); keep one of each", folder)
            return kind, images[0], masks[0]
    return None


def _find_layout(root: Path) -> tuple[str, Path, Path]:
    if not root.exists():
        raise InputError(f"no such folder; {_EXPECTED}", root)
    if not root.is_dir():
        raise InputError(f"not a folder; {_EXPECTED}", root)
    found = _layout_in(root)
    if found is not None:
        return found
    # Pointed at the image or mask folder itself: the dataset is its parent.
    if any(root.name.lower() in names[1:] for names in LAYOUTS):
        found = _layout_in(root.parent)
        if found is not None:
            return found
    candidates = []
    for paths in _subdirs(root).values():
        for sub in paths:
            layout = _layout_in(sub)
            if layout is not None:
                candidates.append(layout)
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        names = ", ".join(str(c[1].parent.name) for c in candidates)
        raise InputError(f"several datasets found ({names}); point at one of them", root)
    present = _subdirs(root)
    halves = [
        f"found {present[have][0].name}/ but no {want}/"
        for _, images_name, masks_name in LAYOUTS
        for have, want in ((images_name, masks_name), (masks_name, images_name))
        if have in present and want not in present
    ]
    hint = f" ({'; '.join(halves)})" if halves else ""
    raise InputError(f"no dataset found{hint}; {_EXPECTED}", root)


def _scan(folder: Path) -> tuple[dict[str, Path], list[Path]]:
    """Dataset files under ``folder`` keyed by relative posix path, and the files that are not."""
    files: dict[str, Path] = {}
    ignored: list[Path] = []

    def on_error(exc: OSError) -> None:
        raise InputError(f"cannot list folder ({exc.strerror or exc})", exc.filename or folder)

    for dirpath, dirnames, filenames in os.walk(folder, onerror=on_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            if fname.startswith("."):
                continue
            path = Path(dirpath) / fname
            if path.suffix.lower() in DATASET_SUFFIXES:
                files[path.relative_to(folder).as_posix()] = path
            else:
                ignored.append(path)
    return files, ignored


def _stem(path: Path, folder: Path) -> str:
    """Relative posix path without suffix: what pairs an image with its mask."""
    return path.relative_to(folder).with_suffix("").as_posix()


def _by_stem(files: dict[str, Path]) -> tuple[dict[str, tuple[str, Path]], list[Path]]:
    """Files keyed by relative path without suffix; files sharing a stem are returned apart."""
    groups: dict[str, list[tuple[str, Path]]] = {}
    for rel, path in files.items():
        stem = str(PurePosixPath(rel).with_suffix(""))  # same as _stem(path, folder)
        groups.setdefault(stem, []).append((rel, path))
    unique = {stem: items[0] for stem, items in groups.items() if len(items) == 1}
    ambiguous = [path for items in groups.values() if len(items) > 1 for _, path in items]
    return unique, ambiguous


def open_dataset(root: str | os.PathLike) -> Dataset:
    """Find a dataset's layout under ``root`` and pair its images with their masks.

    Parameters
    ----------
    root : folder holding the two dataset folders, or a folder with exactly one such dataset folder in
        it, or the image/mask folder itself.

    Returns
    -------
    Dataset with ``samples`` sorted by name.

    Raises
    ------
    InputError
        when ``root`` is missing, holds no recognizable layout (the message names both layouts), or its
        image folder holds no dataset images.
    """
    kind, images_dir, masks_dir = _find_layout(Path(root))
    image_files, ignored_images = _scan(images_dir)
    mask_files, ignored_masks = _scan(masks_dir)
    if not image_files:
        other = f" ({len(ignored_images)} other files ignored)" if ignored_images else ""
        suffixes = "/".join(DATASET_SUFFIXES)
        raise InputError(f"no images ({suffixes}) in this folder{other}; {_EXPECTED}", images_dir)
    images, ambiguous_images = _by_stem(image_files)
    masks, ambiguous_masks = _by_stem(mask_files)
    # A file whose partner is ambiguous is reported with that ambiguity, not as lacking a partner.
    ambiguous_stems = {_stem(p, images_dir) for p in ambiguous_images}
    ambiguous_stems |= {_stem(p, masks_dir) for p in ambiguous_masks}
    samples = [
        Sample(name=rel, image_path=path, mask_path=masks[stem][1])
        for stem, (rel, path) in images.items()
        if stem in masks
    ]
    return Dataset(
        root=images_dir.parent,
        kind=kind,
        images_dir=images_dir,
        masks_dir=masks_dir,
        samples=sorted(samples, key=lambda s: s.name),
        unpaired_images=sorted(
            path for stem, (_, path) in images.items() if stem not in masks and stem not in ambiguous_stems
        ),
        unpaired_masks=sorted(
            path for stem, (_, path) in masks.items() if stem not in images and stem not in ambiguous_stems
        ),
        ignored_files=sorted(ignored_images + ignored_masks),
        ambiguous_files=sorted(ambiguous_images + ambiguous_masks),
    )


def group_key(name: str, regex: str | None = None) -> str:
    """The crop group a sample belongs to; variants of one crop share a group and must share a split.

    Parameters
    ----------
    name : sample name (relative path with suffix, ``/`` separators).
    regex : optional pattern searched in ``name``; the group is its first capture group, or the whole
        match when it has none. Overrides the built-in rules.

    Returns
    -------
    ``sem{mag}_x{X}_y{Y}`` for Zenodo names, the micrograph's stem for regions ``suggest`` cut from it
    (``{stem}__y{Y}_x{X}``), else the name without its suffix (each prefixed by its subfolder, if any).

    Raises
    ------
    InputError
        when ``regex`` is invalid or does not match ``name``: falling back silently would put variants of
        one crop into different splits.
    """
    if regex is not None:
        try:
            pattern = re.compile(regex)
        except re.error as exc:
            raise InputError(f"invalid group regex {regex!r}: {exc}") from None
        match = pattern.search(name)
        key = None if match is None else (match.group(1) if pattern.groups else match.group(0))
        if not key:
            raise InputError(f"group regex {regex!r} does not match this name", name)
        return key
    path = PurePosixPath(name)
    match = ZENODO_NAME.match(path.stem) or REGION_NAME.match(path.stem)
    base = match.group(1) if match else path.stem
    return str(path.parent / base) if path.parent != PurePosixPath(".") else base


def load_pair(sample: Sample, table: ClassTable) -> tuple[np.ndarray, np.ndarray]:
    """Read a sample's micrograph and its mask remapped to class ids.

    Returns
    -------
    image : ndarray of uint8 or uint16, shape (H, W), as stored (colour files are converted to gray).
    labels : ndarray of uint8, shape (H, W): class ids ``0..C-1``; 255 where unlabelled (sparse labels,
        data bar) or for raw ids the table lacks. The mask may be an index or a colour mask
        (:mod:`semphase.data.labels`).

    Raises
    ------
    InputError
        for unreadable files, a missing mask, a colour that is no class, or an image and mask of
        different sizes.
    """
    if sample.mask_path is None:
        raise InputError("image has no mask", sample.image_path)
    image = read_gray(sample.image_path)
    labels = read_labels(sample.mask_path, table)
    if labels.shape != image.shape:
        raise InputError(
            f"mask is {labels.shape[1]}x{labels.shape[0]} (WxH) but its image {sample.image_path.name} is "
            f"{image.shape[1]}x{image.shape[0]}",
            sample.mask_path,
        )
    return image, labels


def labelled_pixels(samples: list[Sample], table: ClassTable) -> dict[str, int]:
    """Labelled pixels of each sample's mask (what a split balances; 0 for a field with none).

    Raises
    ------
    InputError
        naming a mask that cannot be read or holds a colour that is no class.
    """
    counts = {}
    for sample in samples:
        if sample.mask_path is None:
            raise InputError("image has no mask", sample.image_path)
        labels = read_labels(sample.mask_path, table)
        counts[sample.name] = int(np.count_nonzero(labels < table.num_classes))
    return counts
