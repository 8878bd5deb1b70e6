"""A PyTorch checkpoint behind the runtime's model interface, so the same tiling can drive it.

``semphase.runtime.segment.segment_array`` needs ``logits(batch_u8)``, ``tile_size``, ``overlap`` and the
descriptive attributes of :class:`semphase.runtime.model.SegmentationModel`; :class:`TorchTileModel`
provides them on top of a training checkpoint. This module imports torch (through :mod:`semphase.train`)
only when a checkpoint is loaded: the benchmark uses it only when ``--checkpoint`` is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from semphase.model_format import RECOMMENDED_OVERLAP, RECOMMENDED_TILE

#: Tiling used when neither the caller nor the checkpoint's config says (the export default).
DEFAULT_TILE, DEFAULT_OVERLAP = RECOMMENDED_TILE, RECOMMENDED_OVERLAP


@dataclass
class TorchTileModel:
    """A training checkpoint's network on the CPU with the runtime model's attributes.

    Attributes
    ----------
    network : torch module in eval mode.
    config : the training config (``normalization`` is applied in :meth:`logits`).
    classes, colors : from the config's class table.
    input : ``{"channels", "scale", "mean", "std", "size_multiple"}`` as in the ONNX metadata.
    tile_size, overlap : tiling for ``segment_array``.
    variant : ``"pytorch"``; providers : ``["torch-cpu"]``.
    """

    network: object
    config: dict
    classes: list[str]
    colors: list[tuple[int, int, int]]
    input: dict
    tile_size: int
    overlap: int
    variant: str = "pytorch"
    providers: list[str] = field(default_factory=lambda: ["torch-cpu"])

    @property
    def size_multiple(self) -> int:
        return int(self.input["size_multiple"])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def logits(self, batch_u8: np.ndarray) -> np.ndarray:
        """Class scores of a batch of tiles.

        Parameters
        ----------
        batch_u8 : uint8 (N, H, W), H and W multiples of 32.

        Returns
        -------
        float32 (N, C, H, W).
        """
        import torch

        from semphase.train.inference import normalize_batch

        with torch.inference_mode():
            x = normalize_batch(np.ascontiguousarray(batch_u8), self.config["normalization"])
            return self.network(x).float().numpy()


def load_torch_tile_model(
    checkpoint: str | os.PathLike,
    threads: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
) -> TorchTileModel:
    """Load a training checkpoint for tiled CPU inference.

    Parameters
    ----------
    checkpoint : ``best.pt`` / ``last.pt``.
    threads : torch intra-op threads (None: torch's default).
    tile, overlap : tiling (None: 512 and 32, the export defaults; the benchmark passes the ONNX
        models' own).

    Raises
    ------
    InputError
        for a missing, corrupt or foreign checkpoint (from :func:`semphase.train.checkpoint.load_checkpoint`).
    """
    import torch

    from semphase.phases import ClassTable
    from semphase.train.checkpoint import load_checkpoint

    if threads:
        torch.set_num_threads(int(threads))
    network, config, _ = load_checkpoint(checkpoint, "cpu")
    table = ClassTable.from_dict(config["classes"])
    norm = config["normalization"]
    return TorchTileModel(
        network=network,
        config=config,
        classes=table.names,
        colors=table.colors,
        input={
            "channels": 1,
            "scale": float(norm["scale"]),
            "mean": list(norm["mean"]),
            "std": list(norm["std"]),
            "size_multiple": 32,
        },
        tile_size=int(tile or DEFAULT_TILE),
        overlap=int(overlap if overlap is not None else DEFAULT_OVERLAP),
    )
