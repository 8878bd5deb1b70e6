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

#: ``--replay DATA``: the share of the training tiles drawn from DATA (the data the model learnt before).
REPLAY_SHARE = 0.3
#: ``--prior-correction`` choices (:mod:`semphase.train.prior`).
PRIOR_MODES = ("auto", "on", "off")

#: Options that only say how to run, not what to train: a resumed run may change them.
RUNTIME_OPTIONS = ("device", "threads", "workers", "precision", "time_limit")

#: Learning-rate schedules: ``plateau`` (the study's: ReduceLROnPlateau on val mIoU, needs a val split)
#: and ``cosine`` (per optimizer step: a short linear warm-up, then a cosine decay to 1 % over the planned
#: steps; needs no validation, the fine-tuning recipe's).
SCHEDULES = ("plateau", "cosine")

#: What ``--init`` changes in the defaults (each can still be given): the fine-tuning recipe, chosen by
#: measurement on a shifted synthetic domain (benchmarks/few_labels.py, benchmarks/RESULTS.md): train on
#: every labelled field (no val/test split; the cosine schedule needs none), a fixed number of steps.
FINETUNE_RECIPE = {
    "fractions": (1.0, 0.0, 0.0),
    "epochs": 10,
    "steps_per_epoch": 20,
    "lr": 3e-4,
    "lr_finetune": 1e-4,
    "freeze_epochs": 0,
    "patience": 0,
    "schedule": "cosine",
    "sampler": "auto",
}

#: ``--time-budget`` from random weights (no ``--init``, ``--encoder-weights none``) trains at this ``--lr``
#: unless one is given: measured on the demo's data (2-core EPYC, one seed, same steps and cosine
#: schedule; benchmarks/RESULTS.md "The demo within its budget"): 164 steps of 128 px reached test mIoU
#: 0.754 at 3e-3 against 0.726 at the study's 1e-3 (0.686 at 1e-2), 504 steps of 160 px 0.878 against
#: 0.857. The study's recipe (no budget) keeps 1e-3.
BUDGET_SCRATCH_LR = 3e-3


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
    init: str | None = None
    class_map: str | None = None
    schedule: str = "plateau"
    sampler: str = "auto"
    prior_correction: str = "auto"
    replay: str | None = None
    replay_share: float = REPLAY_SHARE
    augment: str = "study"
    time_budget: float | None = None
    max_steps: int | None = None

    @classmethod
    def create(cls, out: str, **given) -> TrainOptions:
        """Options of a new run from the options given (the rest default): the study's recipe, or with
        ``init`` the fine-tuning recipe :data:`FINETUNE_RECIPE` for every option not given. Validated."""
        base = {}
        if given.get("time_budget") is not None:
            from semphase.train.budget import FIRST_EPOCH_STEPS, MAX_EPOCHS

            # the planner decides epochs and steps after a measuring first epoch of a few steps
            clash = [
                f"--{k.replace('_', '-')}" for k in ("epochs", "steps_per_epoch", "time_limit") if k in given
            ]
            if clash:
                raise OptionError(f"--time-budget plans the steps itself; drop {', '.join(clash)}")
            base = {"schedule": "cosine", "patience": 0}
            if given.get("encoder_weights", cls.encoder_weights) == "none" and not given.get("init"):
                base["lr"] = BUDGET_SCRATCH_LR  # a short schedule from random weights wants a higher rate
            given = {**given, "epochs": 1 + MAX_EPOCHS, "steps_per_epoch": FIRST_EPOCH_STEPS}
        if given.get("init"):
            if given.get("encoder_weights") not in (None, "none"):
                raise OptionError("--encoder-weights and --init exclude each other (--init has all weights)")
            base = {**base, **FINETUNE_RECIPE, "encoder_weights": "none"}
            if given.get("time_budget") is not None:
                base = {k: v for k, v in base.items() if k not in ("epochs", "steps_per_epoch")}
        return cls(out=str(out), **{**base, **given}).validate()

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
            (self.schedule in SCHEDULES, f"--schedule: {' or '.join(SCHEDULES)}"),
            (self.sampler in ("auto", "uniform", "labelled"), "--sampler: auto, uniform or labelled"),
            (self.prior_correction in PRIOR_MODES, "--prior-correction: auto, on or off"),
            (self.augment in ("study", "light"), "--augment: study or light"),
            (0 < self.replay_share < 1, f"--replay-share must be between 0 and 1, got {self.replay_share}"),
            (self.class_map is None or self.init is not None, "--class-map needs --init CHECKPOINT"),
            (
                self.time_budget is None or (math.isfinite(self.time_budget) and self.time_budget > 0),
                f"--time-budget must be a number of minutes > 0, got {self.time_budget}",
            ),
            (
                self.time_budget is None or self.time_limit is None,
                "--time-budget and --time-limit exclude each other",
            ),
            (self.max_steps is None or self.time_budget is not None, "--max-steps needs --time-budget"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be >= 1"),
            (self.time_budget is None or self.schedule == "cosine", "--time-budget needs --schedule cosine"),
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
        return self.arch == "unet-resnet34" and self.encoder_weights != "none" and self.init is None

    @property
    def starts_trained(self) -> bool:
        """True when the encoder's weights were trained before this run (pretrained, or ``--init``): it then
        learns at ``lr_finetune``."""
        return self.pretrained or self.init is not None

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
