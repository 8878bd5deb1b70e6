"""Training data: decoded micrographs cached in memory, random augmented tiles, validation crops.

The datasets this toolkit is made for are small (the Zenodo set is 405 images of 512 x 512 = 106 MB as
uint8), so every pair is decoded once and kept. Training draws random ``tile`` x ``tile`` crops and augments
them with albumentations; each tile's randomness is derived from ``(seed, epoch, index)`` alone, so a run
is reproducible whatever the number of loader workers and a resumed run draws the tiles the
uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
from torch.utils.data import Dataset

from semphase.data.layout import Sample, load_pair
from semphase.errors import InputError
from semphase.imageio import to_uint8
from semphase.phases import IGNORE, ClassTable

#: Validation images larger than this (either side) are scored on a centred crop of this size.
MAX_VALIDATION_SIDE = 1024


@dataclass(frozen=True)
class Micrograph:
    """One decoded training pair: ``image`` uint8 (H, W) and ``labels`` uint8 (H, W), 255 = ignored."""

    name: str
    image: np.ndarray
    labels: np.ndarray


def load_micrographs(
    samples: list[Sample], table: ClassTable, on_loaded: Callable[[], None] | None = None
) -> list[Micrograph]:
    """Decode image/mask pairs into memory (16-bit micrographs mapped to uint8 linearly).

    Raises
    ------
    InputError
        From :func:`semphase.data.layout.load_pair` for unreadable or mismatched files.
    """
    loaded = []
    for sample in samples:
        image, labels = load_pair(sample, table)
        loaded.append(Micrograph(sample.name, to_uint8(image), labels))
        if on_loaded is not None:
            on_loaded()
    return loaded


def check_tile_fits(micrographs: list[Micrograph], tile: int, samples: list[Sample]) -> None:
    """Raise InputError naming the smallest training image when it is smaller than ``tile``."""
    smallest = min(range(len(micrographs)), key=lambda i: min(micrographs[i].image.shape))
    h, w = micrographs[smallest].image.shape
    if min(h, w) < tile:
        raise InputError(
            f"training image is {w}x{h} px, smaller than --tile {tile}; use --tile <= {min(h, w) // 32 * 32}",
            samples[smallest].image_path,
        )


def build_augmentation(tile: int) -> A.Compose:
    """Random crop plus the study's augmentations at moderate probabilities.

    Geometry (flips, 90-degree rotations, elastic or grid distortion) moves image and mask together with
    nearest-neighbour interpolation for the mask; photometry (brightness/contrast, Gaussian noise) touches
    the image only. Distortions reflect at the border so no fake background enters the tile.
    """
    reflect = cv2.BORDER_REFLECT_101
    return A.Compose(
        [
            A.RandomCrop(tile, tile),
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.OneOf(
                [
                    # albumentations scales its noise by the maximum: this moves pixels ~2.5 px (std).
                    A.ElasticTransform(alpha=400, sigma=10, border_mode=reflect),
                    A.GridDistortion(num_steps=5, distort_limit=0.25, border_mode=reflect),
                ],
                p=0.25,
            ),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.GaussNoise(std_range=(0.02, 0.08), p=0.3),
        ]
    )


class TileDataset(Dataset):
    """Random augmented tiles for one epoch.

    Parameters
    ----------
    micrographs : the training pairs.
    tile : side of the square crops (<= the smallest image side).
    length : tiles per epoch (``steps_per_epoch * batch_size``).
    seed : run seed; call :meth:`set_epoch` before each epoch.

    Items are ``(image uint8 (tile, tile), labels uint8 (tile, tile))`` numpy arrays.
    """

    def __init__(self, micrographs: list[Micrograph], tile: int, length: int, seed: int) -> None:
        self.micrographs = micrographs
        self.tile = int(tile)
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
        areas = np.array([m.image.size for m in micrographs], dtype=np.float64)
        self.pick_p = areas / areas.sum()  # large images yield proportionally more tiles
        self.augment = build_augmentation(self.tile)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        chosen = self.micrographs[int(rng.choice(len(self.micrographs), p=self.pick_p))]
        self.augment.set_random_seed(int(rng.integers(2**31)))
        out = self.augment(image=chosen.image, mask=chosen.labels)
        return np.ascontiguousarray(out["image"]), np.ascontiguousarray(out["mask"])


def validation_view(micrograph: Micrograph) -> tuple[np.ndarray, np.ndarray]:
    """The image and labels scored during validation: whole, or a centred crop when huge."""
    h, w = micrograph.image.shape
    ch, cw = min(h, MAX_VALIDATION_SIDE), min(w, MAX_VALIDATION_SIDE)
    top, left = (h - ch) // 2, (w - cw) // 2
    return (
        micrograph.image[top : top + ch, left : left + cw],
        micrograph.labels[top : top + ch, left : left + cw],
    )


def pad_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pad a label image at the bottom/right with IGNORE up to ``shape``."""
    h, w = labels.shape
    return np.pad(labels, ((0, shape[0] - h), (0, shape[1] - w)), constant_values=IGNORE)
