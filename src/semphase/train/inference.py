"""Whole-image prediction with a torch model, as the training run's validation and test use it.

The network sees ``(pixel * scale - mean) / std`` with the values recorded in ``config["normalization"]``;
images are reflect-padded to a multiple of 32 and the logits cropped back. (Tiled inference for large
micrographs lives in the onnxruntime runtime, which never imports torch.)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from semphase import model_format
from semphase.imageio import to_uint8
from semphase.model_format import normalization_affine
from semphase.train.models import SIZE_MULTIPLE


def normalize_batch(images_u8: torch.Tensor | np.ndarray, normalization: dict) -> torch.Tensor:
    """uint8 images ``(N, H, W)`` or ``(N, 1, H, W)`` -> float32 ``(N, 1, H, W)`` the network sees.

    The same two float32 numbers as every other path (:func:`semphase.model_format.normalization_affine`),
    applied on whatever device the tensor lives on.
    """
    x = torch.as_tensor(images_u8)
    if x.ndim == 3:
        x = x[:, None]
    gain, offset = normalization_affine(normalization)
    return x.float() * float(gain) - float(offset)


def pad_to_multiple(image: np.ndarray, multiple: int = SIZE_MULTIPLE) -> tuple[np.ndarray, tuple[int, int]]:
    """:func:`semphase.model_format.pad_to_multiple`, with the original ``(H, W)`` to crop back to."""
    return model_format.pad_to_multiple(image, multiple), image.shape[:2]


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
