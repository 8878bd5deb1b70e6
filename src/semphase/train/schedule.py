"""Transfer-learning schedule (frozen encoder, then gradual unfreezing), early stopping and the time limit.

For the first ``freeze_epochs`` epochs only the decoder and head train; the encoder's weights are frozen and
its BatchNorm layers stay in eval mode (their running statistics are ImageNet's and must not drift towards
one small batch). Then one encoder stage is released per epoch, deepest first (layer4, layer3, layer2,
layer1, stem), at the reduced fine-tuning learning rate of the encoder's parameter group. The deep stages
hold the most task-specific features, the stem the most generic ones, so they move last.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from torch import nn

from semphase.train.models import encoder_of

#: ResNet encoder stages in the order they are unfrozen; each entry lists child module names.
RESNET_STAGES: tuple[tuple[str, ...], ...] = (
    ("layer4",),
    ("layer3",),
    ("layer2",),
    ("layer1",),
    ("conv1", "bn1"),
)


def trainable_stage_count(epoch: int, freeze_epochs: int, gradual: bool = True) -> int:
    """How many encoder stages train during 0-based ``epoch``.

    0 while frozen; then one more stage per epoch when ``gradual`` (pretrained weights), else all at once
    (a randomly initialized encoder has nothing to protect).
    """
    if epoch < freeze_epochs:
        return 0
    if not gradual:
        return len(RESNET_STAGES)
    return min(epoch - freeze_epochs + 1, len(RESNET_STAGES))


def apply_freeze_schedule(
    model: nn.Module, epoch: int, freeze_epochs: int, gradual: bool = True
) -> list[str] | None:
    """Set ``requires_grad`` of the encoder for 0-based ``epoch`` (see :func:`trainable_stage_count`).

    Returns
    -------
    The names of the encoder stages that train this epoch, or None when the model has no encoder (the
    scratch U-Net: everything trains).
    """
    encoder = encoder_of(model)
    if encoder is None:
        return None
    count = trainable_stage_count(epoch, freeze_epochs, gradual)
    trainable: list[str] = []
    for i, stage in enumerate(RESNET_STAGES):
        on = i < count
        for child in stage:
            for param in getattr(encoder, child).parameters():
                param.requires_grad_(on)
        if on:
            trainable.append("+".join(stage))
    return trainable


def keep_frozen_batchnorm_in_eval(model: nn.Module) -> None:
    """Put BatchNorm layers of frozen encoder stages in eval mode; call after every ``model.train()``."""
    encoder = encoder_of(model)
    if encoder is None:
        return
    for stage in RESNET_STAGES:
        for child in stage:
            module = getattr(encoder, child)
            frozen = not any(p.requires_grad for p in module.parameters())
            if frozen:
                for m in module.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()


#: The cosine schedule's warm-up (share of the planned steps) and its last learning rate (share of --lr).
WARMUP_SHARE = 0.05
FINAL_SHARE = 0.01


class CosineSchedule:
    """The learning-rate factor after ``step`` optimizer steps of ``total`` (``LambdaLR``'s lambda).

    A linear warm-up over the first :data:`WARMUP_SHARE` of the steps (Adam's moment estimates settle
    before the largest steps; it matters most when a trained network is fine-tuned on a few fields), then a
    cosine decay from 1 to :data:`FINAL_SHARE` at ``total``, held there beyond. ``total`` may be changed
    while training (a time-budgeted run re-plans its steps): the curve then ends at the new total.
    """

    def __init__(self, total_steps: int) -> None:
        self.total = max(int(total_steps), 1)

    def __call__(self, step: int) -> float:
        warmup = max(1, round(WARMUP_SHARE * self.total))
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(self.total - warmup, 1), 1.0)
        return FINAL_SHARE + (1.0 - FINAL_SHARE) * 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_schedule(total_steps: int) -> CosineSchedule:
    """The cosine schedule over ``total_steps`` (see :class:`CosineSchedule`)."""
    return CosineSchedule(total_steps)


class EarlyStopping:
    """Stop when the validation metric (higher is better) has not improved for ``patience`` epochs.

    Parameters
    ----------
    patience : epochs without improvement tolerated; 0 disables early stopping.
    min_delta : an improvement must exceed the best value by more than this.
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.best = -math.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record ``value`` for ``epoch``; True when this is a new best."""
        if value > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = float(value), int(epoch), 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])


class TimeLimit:
    """Training wall time of a run, and whether this invocation has used up its ``--time-limit``.

    The budget is checked between epochs, so a run stops after the epoch that reaches it (an epoch is never
    cut short: its checkpoint and validation score stay consistent). It counts from :meth:`start` in this
    invocation only, so a resumed run gets a fresh budget; :meth:`run_seconds` adds the training time of
    earlier invocations for the history.

    Parameters
    ----------
    minutes : the budget; None never stops.
    clock : seconds from an arbitrary origin (injectable so tests need not wait).
    earlier_seconds : training time of the run's earlier invocations (``--resume``).
    """

    def __init__(
        self,
        minutes: float | None,
        clock: Callable[[], float] = time.perf_counter,
        earlier_seconds: float = 0.0,
    ) -> None:
        self.minutes = minutes
        self.clock = clock
        self.earlier_seconds = float(earlier_seconds)
        self.started = clock()

    def start(self) -> None:
        """Start (or restart) this invocation's budget now."""
        self.started = self.clock()

    def seconds(self) -> float:
        """Training seconds of this invocation so far."""
        return self.clock() - self.started

    def run_seconds(self) -> float:
        """Training seconds of the whole run so far, earlier invocations included."""
        return self.earlier_seconds + self.seconds()

    @property
    def reached(self) -> bool:
        """True once this invocation has trained for ``minutes`` or longer."""
        return self.minutes is not None and self.seconds() >= 60.0 * self.minutes
