"""The nine augmentation variants of the Zenodo Ni-WC dataset, implemented with OpenCV.

Geometric variants warp image and labels with the same map (labels with nearest-neighbour, so no new
ids appear); photometric variants change the image only. Randomness comes from an explicit seed, so a
variant is reproducible.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Variant names as they appear in Zenodo file names, in the order the dataset writer uses.
VARIANTS = (
    "ElasticTransform",
    "GridDistortion",
    "HorizontalFlip",
    "VerticalFlip",
    "RandomRotate90",
    "brightness_1",
    "brightness_2",
    "contrast_1",
    "contrast_2",
)
GEOMETRIC = VARIANTS[:5]


def _remap_pair(image: np.ndarray, labels: np.ndarray, map_x: np.ndarray, map_y: np.ndarray):
    border = cv2.BORDER_REFLECT_101
    warped = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=border)
    warped_labels = cv2.remap(labels, map_x, map_y, cv2.INTER_NEAREST, borderMode=border)
    return warped, warped_labels


def _elastic_maps(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random displacement (Simard et al. 2003): uniform noise blurred, a few pixels at most."""
    sigma = rng.uniform(9.0, 14.0)
    amplitude = rng.uniform(3.0, 6.0)
    fields = []
    for _ in range(2):
        d = cv2.GaussianBlur(rng.uniform(-1.0, 1.0, (h, w)).astype(np.float32), (0, 0), sigma)
        d *= np.float32(amplitude / max(float(np.abs(d).max()), 1e-6))
        fields.append(d)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return xx + fields[0], yy + fields[1]


def _grid_axis(rng: np.random.Generator, n: int, steps: int, limit: float) -> np.ndarray:
    """Source coordinate for each output coordinate along one axis: piecewise linear, cells stretched."""
    cell = n / steps
    knots_out = np.linspace(0, n - 1, steps + 1)
    lengths = cell * (1.0 + rng.uniform(-limit, limit, steps))
    knots_src = np.concatenate([[0.0], np.cumsum(lengths)])
    knots_src *= (n - 1) / knots_src[-1]
    return np.interp(np.arange(n), knots_out, knots_src).astype(np.float32)


def augment(image: np.ndarray, labels: np.ndarray, variant: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply one named variant.

    Parameters
    ----------
    image : ndarray of uint8, shape (H, W)
    labels : ndarray of uint8, shape (H, W), class ids
    variant : one of :data:`VARIANTS`
    seed : int, drives the random parameters of the variant

    Returns
    -------
    (image, labels) : uint8 arrays; shape (H, W), or (W, H) after an odd ``RandomRotate90``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, VARIANTS.index(variant), 0xA06]))
    h, w = image.shape
    if variant == "ElasticTransform":
        return _remap_pair(image, labels, *_elastic_maps(rng, h, w))
    if variant == "GridDistortion":
        xs = _grid_axis(rng, w, 5, 0.3)
        ys = _grid_axis(rng, h, 5, 0.3)
        map_x = np.ascontiguousarray(np.broadcast_to(xs[None, :], (h, w)))
        map_y = np.ascontiguousarray(np.broadcast_to(ys[:, None], (h, w)))
        return _remap_pair(image, labels, map_x, map_y)
    if variant == "HorizontalFlip":
        return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(labels[:, ::-1])
    if variant == "VerticalFlip":
        return np.ascontiguousarray(image[::-1]), np.ascontiguousarray(labels[::-1])
    if variant == "RandomRotate90":
        k = int(rng.integers(1, 4))  # 0 would repeat the base crop
        return np.ascontiguousarray(np.rot90(image, k)), np.ascontiguousarray(np.rot90(labels, k))
    level = image.astype(np.float32)
    if variant.startswith("brightness"):
        # _1 darker, _2 brighter, as a microscope operator's brightness knob
        delta = rng.uniform(12.0, 30.0) * (-1.0 if variant.endswith("_1") else 1.0)
        level += np.float32(delta)
    else:
        factor = rng.uniform(0.72, 0.88) if variant.endswith("_1") else rng.uniform(1.15, 1.35)
        mean = np.float32(level.mean())
        level = (level - mean) * np.float32(factor) + mean
    return np.clip(np.rint(level), 0, 255).astype(np.uint8), labels.copy()
