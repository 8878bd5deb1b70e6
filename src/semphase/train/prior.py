"""The label-prior correction of a model trained on sparse labels (``train --prior-correction``).

Strokes do not sample the phases in proportion to their area: a user paints every phase, the rare ones
included, and corrects where the overlay is wrong, so a phase that covers 0.7 % of the micrographs may
hold 10 % of the labelled pixels. A network trained on those pixels learns their class shares as its
prior and then over-predicts the rare phases everywhere (measured on the shifted synthetic domain: models
fine-tuned on strokes paint 5-7 % of the pixels Carbide where 0.7 % are; benchmarks/RESULTS.md).

After training, :func:`correct_prior` removes that bias, the way a classifier is adjusted to new class
priors (Saerens, Latinne and Decaestecker, Neural Computation 14, 2002):

1. The network's posteriors on the training micrographs, every pixel (labelled or not; a sample of them,
   :func:`sample_posteriors`), are taken as posteriors under the prior it was trained with, the
   labelled-pixel shares ``n_c`` times the loss's class weights ``w_c`` (normalised).
2. Expectation-maximisation (:func:`estimate_prior`) finds the class shares ``f_c`` of the micrographs
   themselves: re-weight each posterior by ``f_c / (n_c w_c)``, average, repeat until ``f`` is fixed.
3. The bias ``log(f_c / n_c)`` (mean zero) is added to the output layer's bias. The network then
   behaves as if its labels had had the micrographs' own class shares (as dense labels would), the class
   weights of the recipe still applied; nothing else changes, so export, ONNX and the runtime carry the
   correction with no code of their own.

With dense labels ``n`` is already the micrographs' share and the correction is close to nothing;
``auto`` (the default) applies it when under half of the training pixels are labelled (:data:`AUTO_MAX_SHARE`)
and every class has labelled pixels (a class without any has no trained prior to correct: skipped, said
why). The record (shares, bias, pixels, iterations) goes into best.pt's and config.json's
``prior_correction_result``; ``off`` leaves the network as trained.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from semphase.phases import ClassTable
from semphase.train.checkpoint import load_checkpoint, save_checkpoint
from semphase.train.datasets import MAX_VALIDATION_SIDE
from semphase.train.options import PRIOR_MODES

#: Where best.pt's config and config.json keep the record (``prior_correction`` is the option).
RECORD_KEY = "prior_correction_result"
#: ``auto`` corrects when at most this share of the training pixels is labelled.
AUTO_MAX_SHARE = 0.5
#: At most this many training micrographs (evenly spaced) are read for the estimate.
MAX_IMAGES = 64
#: Each read micrograph gives about this many pixels (a regular grid) to the estimate.
PIXELS_PER_IMAGE = 65_536
#: EM stops when no class share moves more than this, or after :data:`MAX_ITERATIONS`.
TOLERANCE = 1e-7
MAX_ITERATIONS = 1000


def estimate_prior(
    posteriors: np.ndarray, trained_prior: np.ndarray, tol: float = TOLERANCE, max_iter: int = MAX_ITERATIONS
) -> tuple[np.ndarray, int]:
    """The class shares of the pixels whose posteriors are given (EM of Saerens et al. 2002).

    Parameters
    ----------
    posteriors : ndarray (C, N), each column a pixel's class probabilities under ``trained_prior``.
    trained_prior : ndarray (C,) > 0, the class prior the posteriors were learnt with.

    Returns
    -------
    (shares (C,) summing to 1, iterations run)
    """
    p = np.asarray(posteriors, dtype=np.float64)
    s = np.asarray(trained_prior, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != s.size or p.shape[1] == 0:
        raise ValueError(f"posteriors must be (C, N>0) with C={s.size}, got {p.shape}")
    if np.any(s <= 0):
        raise ValueError("every class needs a positive trained prior")
    s = s / s.sum()
    f = s.copy()
    for iteration in range(1, max_iter + 1):
        q = p * (f / s)[:, None]
        q /= q.sum(axis=0, keepdims=True)
        new = q.mean(axis=1)
        moved = float(np.max(np.abs(new - f)))
        f = new
        if moved < tol:
            return f, iteration
    return f, max_iter


def correction_bias(shares: np.ndarray, label_shares: np.ndarray) -> np.ndarray:
    """``log(shares / label_shares)`` with mean zero: what moves a network's prior from its labels' class
    shares to ``shares`` (float32, one per class)."""
    b = np.log(np.asarray(shares, np.float64)) - np.log(np.asarray(label_shares, np.float64))
    return (b - b.mean()).astype(np.float32)


def output_conv(model: torch.nn.Module) -> torch.nn.Conv2d:
    """The convolution that writes the class logits (smp's ``segmentation_head``, the scratch U-Net's
    ``head``)."""
    head = getattr(model, "segmentation_head", None)
    head = head[0] if head is not None else getattr(model, "head", None)
    if not isinstance(head, torch.nn.Conv2d) or head.bias is None:
        raise ValueError(f"{type(model).__name__} has no output convolution with a bias to correct")
    return head


def sample_posteriors(model: torch.nn.Module, config: dict, images: list[np.ndarray], device) -> np.ndarray:
    """Class probabilities (C, N) float32 of a regular grid of about :data:`PIXELS_PER_IMAGE` pixels of
    each image (at most :data:`MAX_IMAGES` of them, evenly spaced); an image larger than
    :data:`~semphase.train.datasets.MAX_VALIDATION_SIDE` px on a side (validation's bound on what the
    network sees whole) is read in its central window of that side."""
    from semphase.train.inference import predict_logits

    if len(images) > MAX_IMAGES:
        images = [images[i] for i in np.linspace(0, len(images) - 1, MAX_IMAGES).round().astype(int)]
    columns = []
    for image in images:
        h, w = image.shape
        side = MAX_VALIDATION_SIDE
        y0, x0 = max((h - side) // 2, 0), max((w - side) // 2, 0)
        window = image[y0 : y0 + side, x0 : x0 + side]
        logits = torch.from_numpy(predict_logits(model, config, window, device))
        step = max(1, math.isqrt(window.size // PIXELS_PER_IMAGE))
        probs = torch.softmax(logits[:, ::step, ::step], dim=0)
        columns.append(probs.reshape(probs.shape[0], -1).numpy())
    return np.concatenate(columns, axis=1)


def correct_prior(
    best_path: Path,
    images: list[np.ndarray],
    mode: str,
    labelled_share: float,
    device,
    label_shares: np.ndarray | None = None,
) -> dict:
    """Correct best.pt's prior in place (module docstring) and return the record stored in its config.

    ``images`` are the training micrographs; ``labelled_share`` their labelled pixels over all pixels;
    ``label_shares`` the class shares of the pixels the network learnt from (default: the config's
    ``train_pixel_fractions``; ``--replay`` mixes in the replayed data's). The record has ``applied``
    (bool) and, when not applied, ``reason``."""
    if mode not in PRIOR_MODES:
        raise ValueError(f"prior correction must be one of {PRIOR_MODES}, got {mode!r}")
    model, config, ckpt = load_checkpoint(best_path, device)
    if config.get(RECORD_KEY, {}).get("applied"):
        return {**config[RECORD_KEY], "reason": "best.pt is corrected already"}
    record = {"mode": mode, "applied": False, "labelled_share": labelled_share}
    if label_shares is None:
        label_shares = config["train_pixel_fractions"]
    label_shares = np.asarray(label_shares, np.float64)
    if mode == "off":
        record["reason"] = "--prior-correction off"
    elif mode == "auto" and labelled_share > AUTO_MAX_SHARE:
        record["reason"] = (
            f"{100 * labelled_share:.0f} % of the training pixels are labelled (auto corrects at most "
            f"{100 * AUTO_MAX_SHARE:.0f} %)"
        )
    elif np.any(label_shares <= 0):
        names = ClassTable.from_dict(config["classes"]).names
        missing = [names[i] if i < len(names) else str(i) for i in np.flatnonzero(label_shares <= 0)]
        record["reason"] = f"no labelled pixel of {', '.join(missing)}: no trained prior to correct"
    if "reason" in record:
        return record
    t0 = time.perf_counter()
    posteriors = sample_posteriors(model, config, images, device)
    weights = np.asarray(config["class_weights"], np.float64)
    shares, iterations = estimate_prior(posteriors, label_shares * weights)
    bias = correction_bias(shares, label_shares)
    with torch.no_grad():
        conv = output_conv(model)
        conv.bias += torch.as_tensor(bias, dtype=conv.bias.dtype, device=conv.bias.device)
    record.update(
        applied=True,
        label_shares=label_shares.tolist(),
        estimated_shares=shares.tolist(),
        bias=bias.tolist(),
        pixels=int(posteriors.shape[1]),
        iterations=iterations,
        seconds=time.perf_counter() - t0,
    )
    config = {**config, RECORD_KEY: record}
    extra = {k: v for k, v in ckpt.items() if k not in ("format", "state_dict", "config")}
    save_checkpoint(best_path, model, config, **extra)
    return record


def describe_prior(record: dict, names: list[str]) -> str:
    """One line for the training log: what the correction did, or why it did nothing."""
    if record["applied"] and record.get("reason"):
        return f"prior correction: {record['reason']}, left as it is"
    if not record["applied"]:
        return f"prior correction: not applied ({record['reason']})"
    pairs = ", ".join(
        f"{name} {100 * a:.1f} -> {100 * b:.1f} %"
        for name, a, b in zip(names, record["label_shares"], record["estimated_shares"], strict=True)
    )
    return (
        f"prior correction ({100 * record['labelled_share']:.1f} % of the pixels labelled): class shares of "
        f"the labels -> of the micrographs (EM, {record['pixels']} pixels, {record['iterations']} "
        f"iterations, {record['seconds']:.1f} s): {pairs}"
    )
