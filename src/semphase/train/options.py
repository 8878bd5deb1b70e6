"""Every option of a training run, with the defaults of ``semphase train`` and their validation."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields

from semphase.errors import InputError, OptionError
from semphase.train.models import ARCHITECTURES, SIZE_MULTIPLE

#: Normalization for ImageNet-pretrained encoders: the means of ImageNet's RGB statistics, since a gray
#: image is what the three channels see after conv1 is summed over RGB.
IMAGENET_GRAY = {"mean": 0.449, "std": 0.226}

#: Options that only say how to run, not what to train: a resumed run may change them.
RUNTIME_OPTIONS = ("device", "threads", "workers", "precision", "time_limit")


@dataclass
class TrainOptions:
    """Options of one training run (see ``semphase train --help`` for each).

    ``freeze_epochs=None`` means 4 with pretrained encoder weights and 0 with ``encoder_weights="none"``
    (freezing a random encoder only wastes epochs). ``steps_per_epoch=None`` draws as many tiles per epoch
    as cover the training pixels once. ``time_limit`` (minutes, None = no limit) is a budget of training
    wall time for one invocation: the run stops after the epoch that reaches it.
    """

    dataset: str
    out: str
    arch: str = "unet-resnet34"
    encoder_weights: str = "imagenet"
    classes: str | None = None
    split_file: str | None = None
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
    group_regex: str | None = None
    epochs: int = 40
    batch_size: int = 8
    tile: int = 256
    steps_per_epoch: int | None = None
    lr: float = 1e-3
    lr_finetune: float = 1e-4
    freeze_epochs: int | None = None
    patience: int = 8
    time_limit: float | None = None
    weight_power: float = 0.5
    weight_clip: float = 10.0
    device: str = "auto"
    precision: str = "auto"
    seed: int = 0
    workers: int = 0
    threads: int | None = None
    resume: bool = False

    def validate(self) -> TrainOptions:
        """Check ranges; raise OptionError (naming the option) for values no run could use."""
        checks = [
            (
                self.arch in ARCHITECTURES,
                f"unknown --arch {self.arch!r}; choose one of: {', '.join(ARCHITECTURES)}",
            ),
            (self.epochs >= 1, "--epochs must be >= 1"),
            (self.batch_size >= 1, "--batch-size must be >= 1"),
            (
                self.tile >= SIZE_MULTIPLE and self.tile % SIZE_MULTIPLE == 0,
                f"--tile must be a positive multiple of {SIZE_MULTIPLE}, got {self.tile}",
            ),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "--steps-per-epoch must be >= 1"),
            (self.lr > 0 and self.lr_finetune > 0, "--lr and --lr-finetune must be > 0"),
            (self.freeze_epochs is None or self.freeze_epochs >= 0, "--freeze-epochs must be >= 0"),
            (self.patience >= 0, "--patience must be >= 0 (0 disables early stopping)"),
            (
                self.time_limit is None or (math.isfinite(self.time_limit) and self.time_limit > 0),
                f"--time-limit must be a number of minutes > 0, got {self.time_limit}",
            ),
            (self.weight_power >= 0, "--weight-power must be >= 0"),
            (self.weight_clip >= 1, "--weight-clip must be >= 1"),
            (
                self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                "--device: auto, cpu or cuda",
            ),
            (self.precision in ("auto", "fp32", "bf16"), "--precision: auto, fp32 or bf16"),
            (self.workers >= 0, "--workers must be >= 0"),
            (self.threads is None or self.threads >= 1, "--threads must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise OptionError(message)
        if self.arch == "unet-scratch" and self.encoder_weights not in ("none", "imagenet"):
            raise OptionError(
                "--encoder-weights PATH needs --arch unet-resnet34 (the scratch U-Net has no encoder)"
            )
        if self.encoder_weights not in ("imagenet", "none") and not os.path.isfile(self.encoder_weights):
            raise InputError(
                "no such encoder weights file (use imagenet, none or a file)", self.encoder_weights
            )
        return self

    @property
    def pretrained(self) -> bool:
        """True when the encoder starts from pretrained weights (ResNet34 with imagenet or a file)."""
        return self.arch == "unet-resnet34" and self.encoder_weights != "none"

    def effective_freeze_epochs(self) -> int:
        if self.freeze_epochs is not None:
            return self.freeze_epochs
        return 4 if self.pretrained else 0

    def to_dict(self) -> dict:
        """JSON-serializable copy (paths as given, tuples as lists)."""
        data = asdict(self)
        data["fractions"] = list(self.fractions)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> TrainOptions:
        """Inverse of :meth:`to_dict`; unknown keys are ignored (configs may carry more)."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        # a run config holds the class table itself under "classes" and the option under "classes_file"
        if "classes_file" in data or isinstance(kwargs.get("classes"), dict):
            kwargs["classes"] = data.get("classes_file")
        if "fractions" in kwargs:
            kwargs["fractions"] = tuple(kwargs["fractions"])
        return cls(**kwargs)
