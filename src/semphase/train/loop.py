"""One epoch of training and one pass of validation, and the device/precision choices they run under."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from semphase.metrics import confusion_matrix
from semphase.train.datasets import Micrograph, pad_labels, validation_view
from semphase.train.inference import normalize_batch, pad_to_multiple
from semphase.train.schedule import keep_frozen_batchnorm_in_eval


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    from semphase.errors import InputError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """True on CPUs whose matrix units run bfloat16 natively (AMX or AVX-512 BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (None = plain fp32).

    ``auto`` picks bfloat16 mixed precision where the hardware runs it natively (CUDA with bf16 support,
    CPUs with AMX/AVX-512 BF16: 3-4x faster training steps measured on a Xeon with AMX), else fp32.
    Weights, BatchNorm and the loss stay fp32 under autocast.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_fast_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast context for ``dtype`` on ``device``, or a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def cpu_thread_count(threads: int | None) -> int:
    """``threads`` or every core this process may use."""
    if threads:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
