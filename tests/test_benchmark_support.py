"""Helpers for the benchmark tests (no tests here): a tiny untrained checkpoint in the semphase format."""

from __future__ import annotations

from pathlib import Path

from semphase.phases import DEFAULT_TABLE


def make_checkpoint(path: Path) -> dict:
    """Write a seeded scratch U-Net (8 channels wide) checkpoint and return its config.

    The head's biases are spread so that the untrained network still predicts several classes, which
    gives the confusion matrices and per-class deltas something to show.
    """
    import torch

    from semphase.train.checkpoint import save_checkpoint
    from semphase.train.models import build_model

    torch.manual_seed(0)
    config = {
        "arch": "unet-scratch",
        "in_channels": 1,
        "num_classes": DEFAULT_TABLE.num_classes,
        "classes": DEFAULT_TABLE.to_dict(),
        "normalization": {"scale": 1 / 255, "mean": [0.449], "std": [0.226]},
        "encoder_weights": "none",
        "tile": 64,
        "scratch_base": 8,
    }
    model = build_model(config)
    with torch.no_grad():
        model.head.bias.copy_(torch.linspace(-0.05, 0.05, DEFAULT_TABLE.num_classes))
    save_checkpoint(path, model, config, epoch=1, best_val_miou=0.5)
    return config
