"""The generator's entry points: one micrograph in memory, and a dataset folder in the Zenodo layout.

:func:`synth_micrograph` renders one image and its labels; :func:`write_dataset` writes the base crops of
:func:`crop_specs` and their :data:`~semphase.data.synth.augment.VARIANTS` as BMP images and raw-id masks.
What the images show is described in :mod:`semphase.data.synth`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semphase.data.synth.augment import VARIANTS, augment
from semphase.data.synth.domains import domain_named
from semphase.data.synth.render import prepare
from semphase.data.synth.scribbles import scribble_labels
from semphase.errors import InputError
from semphase.imageio import write_image
from semphase.phases import DEFAULT_TABLE, IGNORE

#: Magnifications of the Zenodo file names; dataset groups cycle through them.
MAGNIFICATIONS = (600, 700, 800, 1000)
IMAGES_DIR, MASKS_DIR = "AugmentedImages", "AugmentedMasks"

#: ``on(done, total)``: called as images are written (:func:`semphase.progress.count_callback` makes one
#: from a :class:`semphase.progress.Progress`).
OnCount = Callable[[int, int], None]


def synth_micrograph(
    height: int, width: int, seed: int, magnification: int = 700, domain: str = "ni-wc"
) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic Ni-WC micrograph.

    Parameters
    ----------
    height, width : int, pixels (>= 1)
    seed : int >= 0
    magnification : int > 0; feature sizes scale with ``magnification / 700``
    domain : ``"ni-wc"`` (default) or ``"shifted"`` (another lab's look, :mod:`.domains`)

    Returns
    -------
    image : ndarray of uint8, shape (height, width)
    labels : ndarray of uint8, shape (height, width), class ids 0..4 of ``DEFAULT_TABLE``
    """
    _check_dims(height, width, seed, magnification)
    micrograph = prepare(height, width, seed, magnification, domain_named(domain))
    image = np.empty((height, width), np.uint8)
    labels = np.empty((height, width), np.uint8)
    for y0, y1 in micrograph.bands():
        image[y0:y1], labels[y0:y1] = micrograph.render(y0, y1)
    return image, labels


def _check_dims(height: int, width: int, seed: int, magnification: int) -> None:
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"image size must be positive, got {height} x {width}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if int(magnification) < 1:
        raise ValueError(f"magnification must be positive, got {magnification}")


@dataclass(frozen=True)
class CropSpec:
    """One base crop of a dataset: its name parts and the seed of its micrograph."""

    magnification: int
    x: int
    y: int
    seed: int

    @property
    def prefix(self) -> str:
        """``sem{mag}_x{X}_y{Y}``, the part of the file name shared by the crop's nine variants."""
        return f"sem{self.magnification}_x{self.x}_y{self.y}"

    def file_name(self, variant: str) -> str:
        return f"{self.prefix}_{variant}.bmp"


def crop_specs(groups: int, seed: int = 0) -> list[CropSpec]:
    """The base crops of a dataset of ``groups`` groups: distinct (magnification, X, Y), X and Y
    multiples of 32, magnifications cycling through :data:`MAGNIFICATIONS`.

    Each crop is an independent micrograph (its own seed), so groups share no pixels and a grouped
    split cannot leak.
    """
    if int(groups) < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC80]))
    taken: set[tuple[int, int, int]] = set()
    specs = []
    for g in range(int(groups)):
        mag = MAGNIFICATIONS[g % len(MAGNIFICATIONS)]
        while True:
            x, y = (int(v) * 32 for v in rng.integers(0, 64, 2))
            if (mag, x, y) not in taken:
                break
        taken.add((mag, x, y))
        crop_seed = int(np.random.SeedSequence([int(seed), g]).generate_state(1)[0])
        specs.append(CropSpec(mag, x, y, crop_seed))
    return specs


def write_dataset(
    out: str | os.PathLike,
    groups: int,
    size: int = 512,
    seed: int = 0,
    progress: OnCount | None = None,
    *,
    domain: str = "ni-wc",
    scribbles: float | None = None,
    variants: bool = True,
) -> list[Path]:
    """Write a synthetic dataset in the Zenodo layout.

    ``out/AugmentedImages/NAME`` and ``out/AugmentedMasks/NAME`` for every base crop and each of the nine
    :data:`VARIANTS`; 8-bit grayscale BMP, masks holding raw ids 1..5 (``DEFAULT_TABLE.to_raw``).
    Files are written atomically; existing files of the same name are replaced.

    Parameters
    ----------
    out : folder (created if missing)
    groups : number of base crops (>= 1); 9 * groups images (``groups`` without ``variants``)
    size : crop side in pixels (>= 16)
    seed : int >= 0
    progress : optional callback ``(done_groups, total_groups)``
    domain : ``"ni-wc"`` (default) or ``"shifted"`` (:mod:`semphase.data.synth.domains`)
    scribbles : share of each image's pixels to label with simulated strokes
        (:func:`semphase.data.synth.scribbles.scribble_labels`); the rest of the mask is unlabelled
        (255). None: dense masks.
    variants : False writes each base crop once (``{prefix}_base.bmp``) instead of its nine variants

    Returns
    -------
    list of Path: the image files, in writing order.
    """
    root = Path(out)
    if int(groups) < 1:
        raise InputError(f"--groups must be at least 1, got {groups}", root)
    if int(size) < 16:
        raise InputError(f"--size must be at least 16 pixels, got {size}", root)
    if int(seed) < 0:
        raise InputError(f"--seed must be >= 0, got {seed}", root)
    if root.exists() and not root.is_dir():
        raise InputError("exists and is not a folder", root)
    if scribbles is not None and not 0 < scribbles <= 1:
        raise InputError(f"--scribbles must be a share of the pixels in (0, 1], got {scribbles}", root)
    domain_named(domain)  # fails before anything is written
    written: list[Path] = []
    specs = crop_specs(groups, seed)
    for done, spec in enumerate(specs):
        image, labels = synth_micrograph(size, size, spec.seed, spec.magnification, domain)
        for k, variant in enumerate(VARIANTS if variants else ("base",)):
            if variant == "base":
                img_v, lab_v = image, labels
            else:
                img_v, lab_v = augment(image, labels, variant, spec.seed)
            if scribbles is not None:
                lab_v = scribble_labels(lab_v, scribbles, spec.seed + k, DEFAULT_TABLE.num_classes)
            name = spec.file_name(variant)
            write_image(root / IMAGES_DIR / name, img_v)
            write_image(root / MASKS_DIR / name, to_raw_ids(lab_v))
            written.append(root / IMAGES_DIR / name)
        if progress is not None:
            progress(done + 1, len(specs))
    return written


def to_raw_ids(labels: np.ndarray) -> np.ndarray:
    """Class ids -> the raw ids dataset masks hold (``DEFAULT_TABLE``); unlabelled stays 255."""
    raw = DEFAULT_TABLE.to_raw(labels)
    raw[labels == IGNORE] = IGNORE
    return raw
