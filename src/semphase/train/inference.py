"""Whole-image prediction with a torch model, as the training run's validation and test use it.

The network sees ``(pixel * scale - mean) / std`` with the values recorded in ``config["normalization"]``;
images are reflect-padded to a multiple of 32 and the logits cropped back. (Tiled inference for large
micrographs lives in the onnxruntime runtime, which never imports torch.)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from semphase.imageio import to_uint8
from semphase.train.models import SIZE_MULTIPLE


def normalize_batch(images_u8: torch.Tensor | np.ndarray, normalization: dict) -> torch.Tensor:
    """uint8 images ``(N, H, W)`` or ``(N, 1, H, W)`` -> float32 ``(N, 1, H, W)`` the network sees."""
    x = torch.as_tensor(images_u8)
    if x.ndim == 3:
        x = x[:, None]
    scale = float(normalization["scale"])
    mean = float(normalization["mean"][0])
    std = float(normalization["std"][0])
    return (x.float() * scale - mean) / std


def pad_to_multiple(image: np.ndarray, multiple: int = SIZE_MULTIPLE) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad a 2-D image at the bottom and right to multiples of ``multiple``.

    Returns
    -------
    (padded image, (H, W) of the original). Images thinner than 2 px are edge-padded (reflection
    needs two pixels).
    """
    h, w = image.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return image, (h, w)
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(image, ((0, ph), (0, pw)), mode=mode), (h, w)


def predict_logits(
    model: nn.Module, config: dict, image_u8: np.ndarray, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Class scores of one micrograph.

    Parameters
    ----------
    model : network from :func:`~semphase.train.models.build_model` or a checkpoint (put in eval mode here).
    config : the training config (``normalization`` is used).
    image_u8 : ndarray (H, W) uint8 (uint16 is mapped with :func:`semphase.imageio.to_uint8`).
    device : torch device the model lives on.

    Returns
    -------
    ndarray float32 (C, H, W): logits.
    """
    if image_u8.ndim != 2:
        raise ValueError(f"expected a 2-D gray image, got shape {image_u8.shape}")
    image_u8 = to_uint8(image_u8)
    padded, (h, w) = pad_to_multiple(image_u8)
    model.eval()
    with torch.inference_mode():
        x = normalize_batch(padded[None], config["normalization"]).to(device)
        logits = model(x)[0, :, :h, :w]
    return logits.float().cpu().numpy()


def predict_labels(
    model: nn.Module, config: dict, image_u8: np.ndarray, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Phase label image of one micrograph: argmax of :func:`predict_logits`.

    Returns
    -------
    ndarray uint8 (H, W): class ids 0..C-1.
    """
    return predict_logits(model, config, image_u8, device).argmax(axis=0).astype(np.uint8)
