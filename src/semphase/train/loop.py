"""One epoch of training and one pass of validation (device and precision: :mod:`semphase.train.device`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from semphase.metrics import confusion_matrix
from semphase.train.datasets import Micrograph, pad_labels, validation_view
from semphase.train.device import autocast
from semphase.train.inference import normalize_batch, pad_to_multiple
from semphase.train.schedule import keep_frozen_batchnorm_in_eval


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    normalization: dict,
    on_step: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> float:
    """Run one epoch of optimization.

    Parameters
    ----------
    batches : yields ``(images uint8 (N, T, T), labels uint8 (N, T, T))`` tensors.
    on_step : called with each step's loss (progress display).
    should_stop : asked after each step; True ends the epoch there (a time budget's deadline).

    Returns
    -------
    float: mean training loss over the steps (NaN when there were none).
    """
    model.train()
    keep_frozen_batchnorm_in_eval(model)
    total, steps = 0.0, 0
    for images, labels in batches:
        x = normalize_batch(images, normalization).to(device, memory_format=torch.channels_last)
        y = labels.to(device).long()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, amp_dtype):
            logits = model(x)
        loss = loss_fn(logits, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss.item()}; lower --lr")
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        total += value
        steps += 1
        if on_step is not None:
            on_step(value)
        if should_stop is not None and should_stop():
            break
    return total / steps if steps else math.nan


@dataclass
class Validation:
    """Validation scores: mean loss, per-image mean IoU (absent classes left out) and per-class IoU.

    ``class_iou`` is from the confusion matrix summed over the images (NaN for a class absent from truth
    and prediction everywhere), as in the scoring schema.
    """

    loss: float
    miou: float
    class_iou: list[float]


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU from a (C, C) confusion matrix (rows truth); NaN where the class never occurs."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def validate(
    model: nn.Module,
    micrographs: list[Micrograph],
    loss_fn: nn.Module,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    normalization: dict,
    num_classes: int,
    on_image: Callable[[], None] | None = None,
) -> Validation:
    """Score whole validation images (reflect-padded to a multiple of 32, padding ignored)."""
    model.eval()
    losses, mious = [], []
    total = np.zeros((num_classes, num_classes), dtype=np.int64)
    with torch.inference_mode():
        for micrograph in micrographs:
            image, labels = validation_view(micrograph)
            padded, (h, w) = pad_to_multiple(image)
            x = normalize_batch(padded[None], normalization).to(device, memory_format=torch.channels_last)
            y = torch.from_numpy(pad_labels(labels, padded.shape)[None]).to(device).long()
            with autocast(device, amp_dtype):
                logits = model(x)
            losses.append(float(loss_fn(logits, y)))
            pred = logits[0, :, :h, :w].argmax(dim=0).to(torch.uint8).cpu().numpy()
            confusion = confusion_matrix(labels, pred, num_classes)
            total += confusion
            image_iou = iou_from_confusion(confusion)
            if not np.isnan(image_iou).all():
                mious.append(float(np.nanmean(image_iou)))
            if on_image is not None:
                on_image()
    miou = float(np.mean(mious)) if mious else math.nan
    return Validation(
        float(np.mean(losses)) if losses else math.nan, miou, iou_from_confusion(total).tolist()
    )
