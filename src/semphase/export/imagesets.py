"""The micrographs an export uses: calibration tiles for INT8 and labelled held-out images for parity.

Default: calibrate on the checkpoint's own training split and validate on its test split, when the
training dataset is still reachable. With ``--calib DATASET`` the calibration images come from that
dataset; the held-out images are then the checkpoint's test split if reachable, else whole crop groups of
the calibration dataset set aside before calibration (variants of one crop never land on both sides).
A run without a test split (a fine-tuning run on a few fields) is validated on its val split, or on its
training fields when it has neither: the gates compare FP16/INT8 with FP32 pixel by pixel, which needs
micrographs, not unseen ones; the report says which set it was.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semphase.data.layout import Dataset, Sample, load_pair, open_dataset
from semphase.data.split import groups_of, load_split
from semphase.errors import InputError
from semphase.imageio import read_gray, to_uint8
from semphase.model_format import normalize, pad_to_multiple
from semphase.phases import ClassTable

#: Share of the crop groups of a --calib dataset held out for validation when no test split is known.
HELDOUT_GROUP_FRACTION = 0.25


@dataclass
class LabelledImage:
    """A held-out micrograph: ``image`` uint8 (H, W) and ``labels`` uint8 (H, W), 255 = ignored."""

    name: str
    image: np.ndarray
    labels: np.ndarray


@dataclass
class ImageSets:
    """Calibration image files and held-out labelled images, with where they came from."""

    calibration: list[Path]
    calibration_source: str
    heldout: list[LabelledImage]
    heldout_source: str


def calibration_tiles(
    paths: list[Path], *, tile: int, count: int, normalization: dict, seed: int = 0
) -> list[np.ndarray]:
    """Normalized calibration tiles: ``count`` random ``tile`` x ``tile`` crops, one from each of ``count``
    images, or, when there are fewer images (a model fine-tuned on a handful of fields), several from each
    (spread as evenly as the count allows), so that calibration always sees about ``count`` tiles.

    Images are drawn without replacement with ``seed``; an image no larger than ``tile`` is used whole,
    reflect-padded to a multiple of 32, and only once.

    Returns
    -------
    list of float32 arrays (1, 1, h, w), h and w multiples of 32, at most ``tile``.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))
    if count <= len(paths):
        crops = {int(i): 1 for i in order[:count]}
    else:
        each, extra = divmod(count, len(paths))
        crops = {int(i): each + (k < extra) for k, i in enumerate(order)}
    tiles = []
    for index in sorted(crops):
        image = to_uint8(read_gray(paths[index]))
        h, w = image.shape
        for _ in range(crops[index] if h > tile or w > tile else 1):
            y = int(rng.integers(0, h - tile + 1)) if h > tile else 0
            x = int(rng.integers(0, w - tile + 1)) if w > tile else 0
            crop = pad_to_multiple(image[y : y + tile, x : x + tile])
            tiles.append(normalize(crop[None], normalization))
    return tiles


def _training_dataset(checkpoint_path: Path, config: dict) -> tuple[Dataset, dict[str, list[str]]] | None:
    """The checkpoint's dataset and split, or None when either cannot be found any more."""
    root = config.get("dataset")
    if not isinstance(root, str) or not root:
        return None
    candidates = [Path(root)]
    if not Path(root).is_absolute():
        candidates.append(checkpoint_path.parent / root)
    dataset = None
    for candidate in candidates:
        try:
            dataset = open_dataset(candidate)
            break
        except InputError:
            continue
    if dataset is None:
        return None
    split_file = config.get("split_file")
    split_paths = [Path(split_file)] if isinstance(split_file, str) and split_file else []
    split_paths.append(checkpoint_path.parent / "split.json")
    for split_path in split_paths:
        if split_path.is_file():
            try:
                return dataset, load_split(split_path, dataset)
            except InputError:
                continue
    split = config.get("split")
    if isinstance(split, dict) and all(isinstance(split.get(k), list) for k in ("train", "test")):
        known = dataset.by_name()
        if all(n in known for k in ("train", "test") for n in split[k]):
            return dataset, split
    return None


def _load_labelled(samples: list[Sample], table: ClassTable) -> list[LabelledImage]:
    out = []
    for sample in samples:
        image, labels = load_pair(sample, table)
        out.append(LabelledImage(sample.name, to_uint8(image), labels))
    return out


def resolve_image_sets(
    checkpoint_path: str | os.PathLike, config: dict, calib: str | os.PathLike | None, table: ClassTable
) -> ImageSets:
    """Find the calibration and held-out images for an export.

    Parameters
    ----------
    checkpoint_path : the checkpoint file (its folder may hold the run's ``split.json``).
    config : the checkpoint's training config (``dataset``, ``split_file`` / ``split``).
    calib : a dataset folder given with ``--calib``, or None for the checkpoint's own training split.
    table : class table used to read the held-out masks.

    Returns
    -------
    ImageSets with at least one calibration file and one held-out image.

    Raises
    ------
    InputError
        when no calibration dataset can be found (the message asks for ``--calib``), a calibration or
        held-out set is empty, or a file cannot be read.
    """
    checkpoint_path = Path(checkpoint_path)
    training = _training_dataset(checkpoint_path, config)
    heldout_samples: list[Sample] | None = None
    heldout_source = ""
    if training is not None:
        dataset, split = training
        # A fine-tuning run on a few fields may have no test (or val) split: its parity is then measured on
        # the fields it trained on, which still shows whether FP16/INT8 give FP32's phases.
        side = next((s for s in ("test", "val", "train") if split.get(s)), "test")
        heldout_samples = dataset.select(split[side])
        heldout_source = f"{side} split of {dataset.root} ({len(heldout_samples)} images)"
        if side != "test":
            heldout_source += "; the run has no test split"
    if calib is None:
        if training is None:
            raise InputError(
                "the checkpoint's training dataset or split is not reachable; pass --calib DATASET "
                "(images to calibrate INT8 and validate on)",
                checkpoint_path,
            )
        dataset, split = training
        calibration = [s.image_path for s in dataset.select(split["train"])]
        calibration_source = f"train split of {dataset.root}"
    else:
        calib_set = open_dataset(calib)
        same = training is not None and calib_set.root.resolve() == training[0].root.resolve()
        if same:
            calibration = [s.image_path for s in calib_set.select(training[1]["train"])]
            calibration_source = f"train split of {calib_set.root}"
        elif heldout_samples is not None:
            calibration = [s.image_path for s in calib_set.samples] + list(calib_set.unpaired_images)
            calibration_source = f"{calib_set.root}"
        else:
            calibration, heldout_samples = _set_groups_aside(calib_set, Path(calib))
            calibration_source = f"{calib_set.root} (groups not held out)"
            heldout_source = f"crop groups of {calib_set.root} set aside before calibration"
    if not calibration:
        raise InputError(
            "calibration set is empty (no images)", calib if calib is not None else checkpoint_path
        )
    if not heldout_samples:
        raise InputError("held-out set is empty (no labelled test images)", calib or checkpoint_path)
    heldout = _load_labelled(heldout_samples, table)
    return ImageSets(sorted(calibration), calibration_source, heldout, f"{heldout_source}")


def _set_groups_aside(dataset: Dataset, path: Path) -> tuple[list[Path], list[Sample]]:
    """Split a --calib dataset by crop group into calibration files and held-out samples."""
    groups = groups_of([s.name for s in dataset.samples])
    if len(groups) < 2:
        raise InputError(
            f"needs image/mask pairs from at least 2 crop groups to calibrate and validate on separate "
            f"images, found {len(groups)} group(s) in {len(dataset.samples)} pair(s)",
            path,
        )
    keys = list(groups)
    order = np.random.default_rng(0).permutation(len(keys))
    n_held = max(1, round(HELDOUT_GROUP_FRACTION * len(keys)))
    held = {keys[i] for i in order[:n_held]}
    by_name = dataset.by_name()
    heldout = [by_name[n] for k in keys if k in held for n in groups[k]]
    calibration = [by_name[n].image_path for k in keys if k not in held for n in groups[k]]
    calibration += list(dataset.unpaired_images)
    return calibration, heldout
