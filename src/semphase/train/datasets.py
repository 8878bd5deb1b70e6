"""Training data: decoded micrographs cached in memory, random augmented tiles, validation crops.

The datasets this toolkit is made for are small (the Zenodo set is 405 images of 512 x 512 = 106 MB as
uint8), so every pair is decoded once and kept. Training draws random ``tile`` x ``tile`` crops and augments
them with albumentations; each tile's randomness is derived from ``(seed, epoch, index)`` alone, so a run
is reproducible whatever the number of loader workers and a resumed run draws the tiles the
uninterrupted one would have.

Two samplers place the crops (:data:`SAMPLERS`):

- ``uniform`` (the study's): a micrograph drawn in proportion to its area, a crop anywhere in it. Right for
  dense masks, where every crop is labelled.
- ``labelled`` (sparse labels, strokes): every crop is anchored on a labelled pixel. Half the tiles pick
  that pixel's class uniformly among the classes that have labels, half in proportion to their labelled
  pixels, so a rare phase painted in a few strokes is still seen in about one tile in ``2 C``; the micrograph
  is then drawn in proportion to its pixels of that class, and the crop is placed at random around the
  anchor. A tile that augmentation leaves without a labelled pixel is drawn again. The crops depend on
  the labels alone, never on the pixels of unlabelled areas.
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
#: How training crops are placed (see the module docstring); ``auto`` picks by the labels' density.
SAMPLERS = ("auto", "uniform", "labelled")
#: ``auto`` anchors crops on labelled pixels when fewer than this share of the training pixels is labelled.
SPARSE_BELOW = 0.9
#: Anchor candidates kept per class and micrograph (a uniform subsample; the counts stay exact).
ANCHORS_PER_CLASS = 4096
#: Draws of one tile before a tile without a labelled pixel is accepted (it then adds nothing to the loss).
MAX_DRAWS = 8


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


def labelled_share(micrographs: list[Micrograph], num_classes: int) -> float:
    """Labelled pixels over all pixels of the micrographs (1.0 for dense masks)."""
    total = sum(m.labels.size for m in micrographs)
    labelled = sum(int(np.count_nonzero(m.labels < num_classes)) for m in micrographs)
    return labelled / total if total else 0.0


def resolve_sampler(sampler: str, micrographs: list[Micrograph], num_classes: int) -> str:
    """``uniform`` or ``labelled``: ``auto`` anchors crops when less than :data:`SPARSE_BELOW` of the
    training pixels is labelled."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if sampler != "auto":
        return sampler
    return "labelled" if labelled_share(micrographs, num_classes) < SPARSE_BELOW else "uniform"


#: Augmentation sets: ``study`` (the study's, below) and ``light`` (flips, 90-degree rotations and
#: brightness/contrast only: no warps, no added noise).
AUGMENTATIONS = ("study", "light")


def build_augmentation(tile: int, crop: bool = True, strength: str = "study") -> A.Compose:
    """Random crop (unless ``crop`` is False: the sampler cropped already) plus the study's augmentations
    at moderate probabilities (``strength="light"``: only the flips, rotations and brightness/contrast).

    Geometry (flips, 90-degree rotations, elastic or grid distortion) moves image and mask together with
    nearest-neighbour interpolation for the mask; photometry (brightness/contrast, Gaussian noise) touches
    the image only. Distortions reflect at the border so no fake background enters the tile.
    """
    if strength not in AUGMENTATIONS:
        raise ValueError(f"augmentation must be one of {AUGMENTATIONS}, got {strength!r}")
    reflect = cv2.BORDER_REFLECT_101
    if strength == "light":
        return A.Compose(
            [
                *([A.RandomCrop(tile, tile)] if crop else []),
                A.HorizontalFlip(p=0.5),
                A.VerticalFlip(p=0.5),
                A.RandomRotate90(p=0.5),
                A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            ]
        )
    return A.Compose(
        [
            *([A.RandomCrop(tile, tile)] if crop else []),
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


class Anchors:
    """Where labelled pixels are, per class and micrograph: exact counts and a uniform subsample of flat
    indices (at most :data:`ANCHORS_PER_CLASS`), drawn once with ``seed``."""

    def __init__(self, micrographs: list[Micrograph], num_classes: int, seed: int) -> None:
        rng = np.random.default_rng([seed, 0xA9C])
        self.counts = np.zeros((num_classes, len(micrographs)), np.int64)
        self.indices: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
        for i, m in enumerate(micrographs):
            flat = m.labels.ravel()
            for c in range(num_classes):
                where = np.flatnonzero(flat == c)
                self.counts[c, i] = where.size
                if where.size > ANCHORS_PER_CLASS:
                    where = np.sort(rng.choice(where, ANCHORS_PER_CLASS, replace=False))
                self.indices[c].append(where)
        per_class = self.counts.sum(axis=1)
        self.classes = np.flatnonzero(per_class > 0)
        if self.classes.size == 0:
            raise ValueError("no labelled pixel in the training micrographs")
        self.proportional = per_class[self.classes] / per_class[self.classes].sum()

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """(micrograph index, flat pixel index) of an anchor: its class uniform among the labelled classes
        or in proportion to their pixels (half the time each)."""
        if rng.random() < 0.5:
            c = int(self.classes[rng.integers(self.classes.size)])
        else:
            c = int(self.classes[rng.choice(self.classes.size, p=self.proportional)])
        counts = self.counts[c]
        i = int(rng.choice(counts.size, p=counts / counts.sum()))
        candidates = self.indices[c][i]
        return i, int(candidates[rng.integers(candidates.size)])


def anchored_crop(shape: tuple[int, int], flat_index: int, tile: int, rng: np.random.Generator) -> tuple:
    """Top-left (y, x) of a ``tile`` x ``tile`` crop of an image of ``shape`` that contains the pixel at
    ``flat_index``, its position in the crop uniformly random (clamped at the borders)."""
    h, w = shape
    ay, ax = divmod(int(flat_index), w)
    y = min(max(ay - int(rng.integers(tile)), 0), h - tile)
    x = min(max(ax - int(rng.integers(tile)), 0), w - tile)
    return y, x


class TileDataset(Dataset):
    """Random augmented tiles for one epoch.

    Parameters
    ----------
    micrographs : the training pairs.
    tile : side of the square crops (<= the smallest image side).
    length : tiles per epoch (``steps_per_epoch * batch_size``).
    seed : run seed; call :meth:`set_epoch` before each epoch.
    sampler : ``"uniform"`` or ``"labelled"`` (see the module docstring; resolve ``auto`` first with
        :func:`resolve_sampler`).
    num_classes : C, for the ``labelled`` sampler (labels >= C are unlabelled).
    augment : ``"study"`` or ``"light"`` (:data:`AUGMENTATIONS`).

    Items are ``(image uint8 (tile, tile), labels uint8 (tile, tile))`` numpy arrays.
    """

    def __init__(
        self,
        micrographs: list[Micrograph],
        tile: int,
        length: int,
        seed: int,
        sampler: str = "uniform",
        num_classes: int | None = None,
        augment: str = "study",
    ) -> None:
        if sampler not in ("uniform", "labelled"):
            raise ValueError(f"sampler must be uniform or labelled, got {sampler!r}")
        self.micrographs = micrographs
        self.tile = int(tile)
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
        self.sampler = sampler
        self.num_classes = num_classes
        areas = np.array([m.image.size for m in micrographs], dtype=np.float64)
        self.pick_p = areas / areas.sum()  # large images yield proportionally more tiles
        if sampler == "labelled":
            if num_classes is None:
                raise ValueError("the labelled sampler needs num_classes")
            self.anchors = Anchors(micrographs, num_classes, self.seed)
        self.augment = build_augmentation(self.tile, crop=sampler == "uniform", strength=augment)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.sampler == "uniform":
            chosen = self.micrographs[int(rng.choice(len(self.micrographs), p=self.pick_p))]
            self.augment.set_random_seed(int(rng.integers(2**31)))
            out = self.augment(image=chosen.image, mask=chosen.labels)
            return np.ascontiguousarray(out["image"]), np.ascontiguousarray(out["mask"])
        for _ in range(MAX_DRAWS):
            image, labels = self.crop(rng)
            self.augment.set_random_seed(int(rng.integers(2**31)))
            out = self.augment(image=image, mask=labels)
            if np.any(out["mask"] < self.num_classes):
                break
        return np.ascontiguousarray(out["image"]), np.ascontiguousarray(out["mask"])

    def crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """An un-augmented crop anchored on a labelled pixel (the ``labelled`` sampler)."""
        i, flat = self.anchors.draw(rng)
        m = self.micrographs[i]
        y, x = anchored_crop(m.labels.shape, flat, self.tile, rng)
        t = self.tile
        return m.image[y : y + t, x : x + t], m.labels[y : y + t, x : x + t]


class ReplayTiles(Dataset):
    """Tiles of the new labels, a ``share`` of them replaced by tiles of the data learnt before
    (``train --replay``), so that fine-tuning does not forget what the model knew.

    Each index draws (from the new set's seed, the epoch and the index) which of the two
    :class:`TileDataset` gives its tile; both get the epoch and the length.
    """

    def __init__(self, new: TileDataset, old: TileDataset, share: float) -> None:
        if not 0 < share < 1:
            raise ValueError(f"share must be between 0 and 1, got {share}")
        self.new, self.old, self.share = new, old, float(share)

    @property
    def length(self) -> int:
        return self.new.length

    @length.setter
    def length(self, value: int) -> None:
        self.new.length = self.old.length = int(value)

    def set_epoch(self, epoch: int) -> None:
        self.new.set_epoch(epoch)
        self.old.set_epoch(epoch)

    def __len__(self) -> int:
        return self.new.length

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.new.seed, self.new.epoch, index, 0x8E9])
        return (self.old if rng.random() < self.share else self.new)[index]


def validation_view(micrograph: Micrograph) -> tuple[np.ndarray, np.ndarray]:
    """The image and labels scored during validation: whole, or when huge a crop of at most
    ``MAX_VALIDATION_SIDE`` a side centred on its labelled pixels (their weighted median row and column),
    so that strokes painted away from the middle of a large micrograph are still scored; densely labelled
    micrographs get the centred crop."""
    h, w = micrograph.image.shape
    ch, cw = min(h, MAX_VALIDATION_SIDE), min(w, MAX_VALIDATION_SIDE)
    if (ch, cw) == (h, w):
        return micrograph.image, micrograph.labels
    labelled = micrograph.labels != IGNORE
    top = _window_start(labelled.sum(axis=1), ch)
    left = _window_start(labelled.sum(axis=0), cw)
    return (
        micrograph.image[top : top + ch, left : left + cw],
        micrograph.labels[top : top + ch, left : left + cw],
    )


def _window_start(counts: np.ndarray, size: int) -> int:
    """Start of a window of ``size`` along an axis of ``counts`` (labelled pixels per row or column),
    centred on their weighted median (on the middle when nothing is labelled), inside the axis."""
    n = counts.size
    total = int(counts.sum())
    centre = n // 2 if total == 0 else int(np.searchsorted(np.cumsum(counts), total / 2, side="right"))
    return min(max(centre - size // 2, 0), n - size)


def pad_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pad a label image at the bottom/right with IGNORE up to ``shape``."""
    h, w = labels.shape
    return np.pad(labels, ((0, shape[0] - h), (0, shape[1] - w)), constant_values=IGNORE)
