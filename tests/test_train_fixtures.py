"""Tiny datasets in the Zenodo layout for the training tests (numpy + OpenCV only), and their own checks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from semphase.phases import DEFAULT_TABLE

#: Mean gray level of each class (Matrix, Carbide, Void, Reprecipitate, Dilution): separable with noise.
CLASS_GRAY = (40, 90, 220, 130, 175)
VARIANTS = ("HorizontalFlip", "VerticalFlip", "brightness_1")


def tiny_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One micrograph-like image and its class ids: a matrix, a bright disc with a ring, blocks, specks."""
    labels = np.zeros((size, size), np.uint8)
    cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
    r = int(rng.integers(size // 8, size // 5))
    cv2.circle(labels, (int(cx), int(cy)), r + 4, 3, -1)  # reprecipitate ring
    cv2.circle(labels, (int(cx), int(cy)), r, 2, -1)  # void / particle
    for _ in range(3):
        y, x = rng.integers(0, size - 8, 2)
        if labels[y : y + 8, x : x + 8].max() == 0:
            labels[y : y + 8, x : x + 8] = 4  # dilution blocks
    for _ in range(2):
        y, x = rng.integers(0, size - 3, 2)
        if labels[y : y + 3, x : x + 3].max() == 0:
            labels[y : y + 3, x : x + 3] = 1  # rare carbide specks
    gray = np.asarray(CLASS_GRAY, np.float32)[labels] + rng.normal(0, 12, labels.shape)
    return np.clip(gray, 0, 255).astype(np.uint8), labels


def make_dataset(root: Path, groups: int = 4, size: int = 64, seed: int = 0) -> Path:
    """Write ``groups`` x 3 pairs as AugmentedImages/ + AugmentedMasks/ BMPs (raw mask ids 1..5)."""
    rng = np.random.default_rng(seed)
    (root / "AugmentedImages").mkdir(parents=True, exist_ok=True)
    (root / "AugmentedMasks").mkdir(parents=True, exist_ok=True)
    for g in range(groups):
        image, labels = tiny_scene(rng, size)
        for variant in VARIANTS:
            if variant == "HorizontalFlip":
                img_v, lab_v = image[:, ::-1], labels[:, ::-1]
            elif variant == "VerticalFlip":
                img_v, lab_v = image[::-1], labels[::-1]
            else:
                img_v, lab_v = np.clip(image.astype(np.int16) + 10, 0, 255).astype(np.uint8), labels
            name = f"sem700_x{32 * g}_y0_{variant}.bmp"
            cv2.imwrite(str(root / "AugmentedImages" / name), np.ascontiguousarray(img_v))
            cv2.imwrite(
                str(root / "AugmentedMasks" / name), np.ascontiguousarray(DEFAULT_TABLE.to_raw(lab_v))
            )
    return root


def test_tiny_dataset_has_the_zenodo_layout_and_all_classes(tmp_path):
    from semphase.data.layout import load_pair, open_dataset

    dataset = open_dataset(make_dataset(tmp_path / "ds", groups=3))
    assert dataset.kind == "zenodo" and len(dataset.samples) == 9
    seen = set()
    for sample in dataset.samples:
        image, labels = load_pair(sample, DEFAULT_TABLE)
        assert image.shape == labels.shape == (64, 64)
        seen |= set(np.unique(labels).tolist())
    assert seen == {0, 1, 2, 3, 4}
