"""Helpers shared by the export tests (no tests here): tiny checkpoints and datasets, in-process CLI runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semphase.cli.main import main
from semphase.phases import DEFAULT_TABLE

#: Normalization of the test checkpoints (the ImageNet gray statistics the trainer uses).
NORMALIZATION = {"scale": 1 / 255, "mean": [0.449], "std": [0.226]}

#: Gates wide enough for an *untrained* network: its five logits are near ties almost everywhere, so INT8
#: rounding flips a percent or two of pixels that a trained model keeps (the product's defaults, 99.5 %
#: agreement and 0.5 pp, are for trained models). Tests that are about files, metadata and reports export
#: with these; the gates themselves are tested with constructed numbers (test_gates.py) and with variants
#: damaged on purpose (test_export_errors.py).
UNTRAINED_GATES = {
    "min_int8_agreement": 95.0,
    "max_delta_miou": 0.05,
    "max_delta_class_iou": 0.1,
    "max_fraction_change_pp": 3.0,
}
#: The small-model export settings of the tests: 64 px tiles, 4 calibration crops, one thread.
SMALL_EXPORT_ARGS = ["--tile", 64, "--overlap", 16, "--calib-images", 4, "--threads", 1]
UNTRAINED_GATE_ARGS = [
    "--min-int8-agreement",
    95,
    "--max-delta-miou",
    0.05,
    "--max-delta-class-iou",
    0.1,
    "--max-fraction-change",
    3,
]


def make_checkpoint(path: Path, arch: str = "unet-scratch", **config_extra) -> dict:
    """Write an untrained checkpoint (seeded weights) and return its config."""
    import torch

    from semphase.train.checkpoint import save_checkpoint
    from semphase.train.models import build_model

    torch.manual_seed(0)
    config = {
        "arch": arch,
        "in_channels": 1,
        "num_classes": DEFAULT_TABLE.num_classes,
        "classes": DEFAULT_TABLE.to_dict(),
        "normalization": NORMALIZATION,
        "encoder_weights": "none",
        "tile": 64,
        "scratch_base": 8,
        **config_extra,
    }
    model = build_model(config)
    # Spread the head's biases so an untrained network still predicts several classes.
    with torch.no_grad():
        head = model.head if hasattr(model, "head") else model.segmentation_head[0]
        head.bias.copy_(torch.linspace(-0.05, 0.05, DEFAULT_TABLE.num_classes))
    save_checkpoint(path, model, config, epoch=1, best_val_miou=0.5)
    return config


def make_dataset(root: Path, groups: int = 4, size: int = 64) -> Path:
    """A synthetic Zenodo-layout dataset of ``groups`` crops x 9 variants."""
    from semphase.data.synth import write_dataset

    write_dataset(root, groups=groups, size=size, seed=0)
    return root


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``semphase ARGS`` in this process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def torch_logits(checkpoint: Path, batch: np.ndarray) -> np.ndarray:
    """PyTorch logits of a float32 (N, 1, H, W) batch from a checkpoint."""
    import torch

    from semphase.train.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(checkpoint)
    with torch.inference_mode():
        return model(torch.from_numpy(batch)).numpy()
