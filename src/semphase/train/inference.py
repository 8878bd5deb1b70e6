"""Prediction with a torch network: the one way semphase predicts with a training checkpoint.

The network sees ``pixel * gain - offset`` with the values recorded in ``config["normalization"]``
(:func:`semphase.model_format.normalization_affine`, the same float32 numbers as the ONNX runtime).

- :func:`predict_logits` / :func:`predict_labels`: a whole image in one pass, reflect-padded to a multiple
  of 32 and cropped back. Training's validation and test, and ``semphase evaluate best.pt``, use it: the
  test crops of a dataset are small, and the study scored them so.
- :class:`CheckpointModel` (from :func:`load_checkpoint_model`): a checkpoint as a tile model with the
  runtime model's attributes, so :func:`semphase.runtime.sliding.segment_array` runs it with exactly the
  tiling and blending of the ONNX files (``semphase benchmark`` compares them so); its
  :meth:`~CheckpointModel.predict_whole` is :func:`predict_labels`; it is also what
  :func:`semphase.evaluation.load_predictor` asks of a checkpoint (its ``open_checkpoint``), so evaluation
  needs no import of this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from semphase import model_format
from semphase.imageio import to_uint8
from semphase.model_format import normalization_affine
from semphase.train.device import resolve_device
from semphase.train.models import SIZE_MULTIPLE

if TYPE_CHECKING:
    import os


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


@dataclass
class CheckpointModel:
    """A training checkpoint's network with the runtime model's attributes (a ``TileModel``).

    Attributes
    ----------
    network : torch module in eval mode, on ``device``.
    config : the training config (``normalization`` is applied in :meth:`logits`).
    classes, colors : from the config's class table.
    input : ``{"channels", "scale", "mean", "std", "size_multiple"}`` as in the ONNX metadata.
    tile_size, overlap : tiling for ``segment_array``.
    device : where the network runs.
    variant : ``"pytorch"``; providers : ``["torch-<device>"]``.
    """

    network: nn.Module
    config: dict
    classes: list[str]
    colors: list[tuple[int, int, int]]
    input: dict
    tile_size: int
    overlap: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    variant: str = "pytorch"
    providers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.providers = self.providers or [f"torch-{self.device.type}"]

    @property
    def size_multiple(self) -> int:
        return int(self.input["size_multiple"])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def logits(self, batch_u8: np.ndarray) -> np.ndarray:
        """Class scores of uint8 tiles ``(N, H, W)`` (multiples of 32) as float32 ``(N, C, H, W)``."""
        with torch.inference_mode():
            x = normalize_batch(np.ascontiguousarray(batch_u8), self.config["normalization"]).to(self.device)
            return self.network(x).float().cpu().numpy()

    def predict_whole(self, image_u8: np.ndarray) -> np.ndarray:
        """Labels of a whole image in one pass (:func:`predict_labels`)."""
        return predict_labels(self.network, self.config, image_u8, self.device)


def load_checkpoint_model(
    checkpoint: str | os.PathLike,
    device: str = "cpu",
    threads: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
) -> CheckpointModel:
    """Load ``best.pt`` / ``last.pt`` for prediction.

    Parameters
    ----------
    device : ``cpu``, ``cuda`` or ``auto``.
    threads : torch intra-op threads (None: torch's default).
    tile, overlap : tiling for ``segment_array`` (None: the recommended 512 and 32; the benchmark passes
        the ONNX files' own).

    Raises
    ------
    InputError
        for a missing, corrupt or foreign checkpoint, or a config without a usable class table.
    """
    from semphase.errors import InputError
    from semphase.phases import ClassTable
    from semphase.train.checkpoint import load_checkpoint

    if threads:
        torch.set_num_threads(int(threads))
    torch_device = resolve_device(device)
    network, config, _ = load_checkpoint(checkpoint, torch_device)
    try:
        table = ClassTable.from_dict(config["classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"checkpoint config has no valid class table ({exc})", checkpoint) from None
    norm = config["normalization"]
    return CheckpointModel(
        network=network,
        config=config,
        classes=table.names,
        colors=table.colors,
        input={
            "channels": 1,
            "scale": float(norm["scale"]),
            "mean": list(norm["mean"]),
            "std": list(norm["std"]),
            "size_multiple": SIZE_MULTIPLE,
        },
        tile_size=int(tile or model_format.RECOMMENDED_TILE),
        overlap=int(overlap if overlap is not None else model_format.RECOMMENDED_OVERLAP),
        device=torch_device,
    )
