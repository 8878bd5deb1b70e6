"""What a training run reports: the set-up summary and one line per epoch, as :mod:`semphase.progress` log
lines (the CLI prints them; the library never does)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from semphase.progress import Progress
from semphase.train.schedule import RESNET_STAGES

if TYPE_CHECKING:
    from semphase.train.run import Prepared


def stage_text(stages: list[str] | None) -> str:
    """The trainable encoder stages as the history records them."""
    if stages is None:
        return "all (no encoder)"
    if not stages:
        return "decoder only"
    return "all" if len(stages) == len(RESNET_STAGES) else "+".join(stages)


def describe(progress: Progress, run: Prepared, start_epoch: int) -> None:
    """Print what is about to train, on what, with which schedule and class weights."""
    options, config, split = run.options, run.config, run.data.split
    norm = config["normalization"]
    progress.log(
        f"{'resuming' if options.resume else 'training'} {options.arch} on {len(split['train'])} train / "
        f"{len(split['val'])} val / {len(split['test'])} test images; device {run.device}, "
        f"{'bf16 mixed' if run.amp_dtype else 'fp32'} precision, {torch.get_num_threads()} threads"
    )
    progress.log(
        f"encoder weights: {run.weights_source}; normalization mean {norm['mean'][0]:.4f} "
        f"std {norm['std'][0]:.4f} ({norm.get('source')})"
    )
    if options.arch == "unet-scratch":
        progress.log(
            "schedule: the scratch U-Net has no pretrained encoder to freeze; all layers train at --lr"
        )
    elif options.freeze_epochs:
        progress.log(
            f"schedule: encoder frozen for {options.freeze_epochs} epochs, then unfrozen one stage per "
            f"epoch (layer4 first) at --lr-finetune {options.lr_finetune:g}"
        )
    else:
        rate = "--lr-finetune" if options.starts_trained else "--lr"
        progress.log(f"schedule: encoder trains from the first epoch at {rate}")
    steps = options.epochs * options.steps_per_epoch
    if options.schedule == "cosine":
        encoder_lr = options.lr_finetune if options.starts_trained else options.lr
        progress.log(
            f"learning rate: cosine over {steps} steps ({options.epochs} epochs x "
            f"{options.steps_per_epoch}), from --lr {options.lr:g} (encoder {encoder_lr:g})"
        )
    init = config.get("init_from")
    if isinstance(init, dict):
        mapped = {k: v for k, v in init.get("class_map", {}).items() if v != k}
        note = f"; classes mapped: {mapped}" if mapped else ""
        digest = str(init.get("sha256"))[:12]
        progress.log(f"initialised from {init.get('checkpoint')} (sha256 {digest}){note}")
    labelled = sum(int((m.labels < run.table.num_classes).sum()) for m in run.train_set)
    total = sum(m.labels.size for m in run.train_set) or 1
    progress.log(
        f"labelled pixels: {100 * labelled / total:.2f}% of the training fields; crops: {options.sampler} "
        f"sampler, {options.batch_size} x {options.tile} px"
    )
    if run.replay_set:
        progress.log(
            f"replay: {len(run.replay_set)} fields of {options.replay} give {100 * options.replay_share:g} % "
            "of the training tiles (what the model learnt before, so that it is not forgotten)"
        )
    if not split["val"]:
        progress.log("no val split: nothing is validated, best.pt holds the last epoch's weights")
    weights = ", ".join(f"{n} {w:.2f}" for n, w in zip(run.table.names, config["class_weights"], strict=True))
    progress.log(f"class weights (power {options.weight_power:g}, clip {options.weight_clip:g}): {weights}")
    if options.time_limit is not None:
        progress.log(
            f"time limit: {options.time_limit:g} min of training in this invocation; training stops after "
            "the epoch that reaches it"
        )
    if start_epoch:
        progress.log(f"continuing after epoch {start_epoch}")


def epoch_line(progress: Progress, row: dict, names: list[str], improved: bool) -> None:
    """One summary line per epoch: losses, val mIoU (* = new best), per-class IoU, lr, seconds."""
    if math.isnan(row["val_miou"]) and math.isnan(row["val_loss"]):  # no val split
        progress.log(
            f"epoch {row['epoch']:3d}  train {row['train_loss']:.4f}  lr {row['lr']:.2g}  "
            f"{row['seconds']:.0f}s  ({row['trainable_stages']})"
        )
        return
    ious = " ".join(f"{n[:5]} {row[f'iou_{n}']:.3f}" for n in names)
    progress.log(
        f"epoch {row['epoch']:3d}  train {row['train_loss']:.4f}  val {row['val_loss']:.4f}  "
        f"mIoU {row['val_miou']:.4f}{' *' if improved else '  '}  [{ious}]  lr {row['lr']:.2g}  "
        f"{row['seconds']:.0f}s  ({row['trainable_stages']})"
    )
