"""How fast this machine trains: seconds per training step, and what an epoch will take.

Times a few real training steps of the network ``semphase train`` builds, the way a run takes them
(random augmented tiles drawn in the main process, channels-last, AdamW, the hybrid loss, the precision
``--precision auto`` picks), a validation pass over one whole image, and a plain fp32 forward pass of that
image (the kind of work that follows training: ONNX export and validation, segmenting, benchmarking), so
that a run can be sized before it starts: ``make demo`` fits its epochs into a time budget with it. The
pixels are random: the cost of a step does not depend on what the image shows.

``python -m semphase.train.probe --help`` prints the measurement for the demo's settings (the ResNet34
U-Net, batch 8, 256 px tiles, 512 px images) or for others.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from semphase.phases import DEFAULT_TABLE
from semphase.train.datasets import Micrograph, TileDataset
from semphase.train.device import cpu_thread_count, resolve_device, resolve_precision
from semphase.train.inference import normalize_batch
from semphase.train.loop import train_one_epoch, validate
from semphase.train.losses import HybridLoss
from semphase.train.models import build_model

#: Normalization of the probe's random pixels (any centring does; only the cost is measured).
PROBE_NORMALIZATION = {"scale": 1.0 / 255.0, "mean": [0.5], "std": [0.25]}


@dataclass
class TrainingSpeed:
    """What one training step and one validation image cost on this machine.

    ``step_seconds`` is the median of the timed steps (``step_runs``); the first ``warmup`` steps, which
    also pay for memory allocation and kernel selection, are left out. ``val_image_seconds`` is the median
    validation time of one ``val_side`` x ``val_side`` image (forward pass, loss and confusion matrix, in
    the training precision). ``fp32_image_seconds`` is the median fp32 inference forward pass of such an
    image: with bf16 training on AMX CPUs it is ~3x the validation time, and it is what predicts the
    fp32/INT8 inference of the steps after training.
    """

    arch: str
    batch_size: int
    tile: int
    precision: str
    threads: int
    device: str
    step_seconds: float
    step_runs: list[float]
    val_side: int
    val_image_seconds: float
    fp32_image_seconds: float

    def epoch_seconds(self, steps_per_epoch: int, val_images: int) -> float:
        """Estimated seconds of one epoch: ``steps_per_epoch`` steps, then ``val_images`` validated.

        Leaves out the checkpoint saves between epochs (well under a second each).
        """
        return steps_per_epoch * self.step_seconds + val_images * self.val_image_seconds

    def to_dict(self) -> dict:
        """JSON-serializable copy."""
        return asdict(self)


def steps_per_epoch_for(train_images: int, image_side: int, tile: int, batch_size: int) -> int:
    """Steps of ``semphase train``'s default epoch (tiles covering the training pixels about once) for
    ``train_images`` square images of ``image_side`` px."""
    return max(1, math.ceil(train_images * image_side * image_side / (tile * tile * batch_size)))


def measure_training_speed(
    arch: str = "unet-resnet34",
    batch_size: int = 8,
    tile: int = 256,
    steps: int = 5,
    warmup: int = 1,
    val_side: int = 512,
    val_images: int = 5,
    threads: int | None = None,
    precision: str = "auto",
    device: str = "cpu",
    clock: Callable[[], float] = time.perf_counter,
) -> TrainingSpeed:
    """Time ``warmup + steps`` training steps, ``1 + val_images`` validation images and as many fp32
    forward passes.

    Parameters
    ----------
    arch, batch_size, tile, precision, device : as ``semphase train`` takes them.
    steps : timed training steps (the median is reported).
    warmup : untimed steps first.
    val_side : side of the square validation images in px (a multiple of 32 avoids padding).
    val_images : timed validation images (and fp32 forward passes), after one untimed.
    threads : torch CPU threads (default: every core this process may use, as ``semphase train``).

    Returns
    -------
    TrainingSpeed

    Notes
    -----
    Sets torch's thread count and flush-denormal mode for the process, as ``semphase train`` does.
    """
    if steps < 1 or warmup < 0 or val_images < 1:
        raise ValueError("steps and val_images must be >= 1, warmup >= 0")
    torch.set_num_threads(cpu_thread_count(threads))
    torch.set_flush_denormal(True)  # as in training: subnormal Adam moments would slow the steps
    torch.manual_seed(0)
    target = resolve_device(device)
    amp_dtype = resolve_precision(precision, target)
    num_classes = DEFAULT_TABLE.num_classes
    model = build_model({"arch": arch, "in_channels": 1, "num_classes": num_classes})
    model.to(target).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = HybridLoss(np.ones(num_classes, np.float32)).to(target)
    side = max(tile, val_side)
    rng = np.random.default_rng(0)
    images = [random_micrograph(rng, side, num_classes, f"probe{i}") for i in range(2)]
    tiles = TileDataset(images, tile, (warmup + steps) * batch_size, seed=0)
    loader = torch.utils.data.DataLoader(tiles, batch_size=batch_size, num_workers=0, drop_last=True)

    # the loader is iterated inside train_one_epoch, so each step's time includes drawing its tiles
    marks = [clock()]
    train_one_epoch(
        model,
        loader,
        loss_fn,
        optimizer,
        target,
        amp_dtype,
        PROBE_NORMALIZATION,
        lambda _: marks.append(clock()),
    )
    step_runs = [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)][warmup:]

    val_set = [random_micrograph(rng, val_side, num_classes, "probe-val")]
    val_runs = []
    for _ in range(1 + val_images):
        t0 = clock()
        validate(model, val_set, loss_fn, target, amp_dtype, PROBE_NORMALIZATION, num_classes)
        val_runs.append(clock() - t0)
    fp32_runs = time_fp32_forward(model, val_set[0], target, 1 + val_images, clock)
    return TrainingSpeed(
        arch=arch,
        batch_size=batch_size,
        tile=tile,
        precision="bf16 mixed" if amp_dtype is not None else "fp32",
        threads=torch.get_num_threads(),
        device=str(target),
        step_seconds=statistics.median(step_runs),
        step_runs=step_runs,
        val_side=val_side,
        val_image_seconds=statistics.median(val_runs[1:]),
        fp32_image_seconds=statistics.median(fp32_runs[1:]),
    )


def time_fp32_forward(
    model: torch.nn.Module,
    micrograph: Micrograph,
    device: torch.device,
    runs: int,
    clock: Callable[[], float] = time.perf_counter,
) -> list[float]:
    """Seconds of ``runs`` fp32 inference forward passes of the whole image (no autocast)."""
    x = normalize_batch(torch.from_numpy(micrograph.image[None]), PROBE_NORMALIZATION)
    x = x.to(device, memory_format=torch.channels_last)
    model.eval()
    seconds = []
    with torch.inference_mode():
        for _ in range(runs):
            t0 = clock()
            model(x)
            seconds.append(clock() - t0)
    return seconds


def random_micrograph(rng: np.random.Generator, side: int, num_classes: int, name: str) -> Micrograph:
    """A square uint8 image of noise and random class ids: the probe's stand-in for a training pair."""
    image = rng.integers(0, 256, (side, side), dtype=np.uint8)
    labels = rng.integers(0, num_classes, (side, side), dtype=np.uint8)
    return Micrograph(name, image, labels)


def describe_speed(speed: TrainingSpeed) -> str:
    """One line: the settings and the two measured costs."""
    return (
        f"{speed.arch}, batch {speed.batch_size} x {speed.tile} px tiles, {speed.precision}, "
        f"{speed.threads} threads on {speed.device}: {speed.step_seconds:.2f} s per training step "
        f"(median of {len(speed.step_runs)}), {speed.val_image_seconds:.2f} s per "
        f"{speed.val_side} px validation image ({speed.fp32_image_seconds:.2f} s as an fp32 inference)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m semphase.train.probe",
        description="Measure seconds per training step on this machine and estimate an epoch "
        "(defaults: the demo's ResNet34 U-Net, batch 8, 256 px tiles, 72 train / 18 val images of 512 px).",
    )
    parser.add_argument("--arch", default="unet-resnet34", help="unet-resnet34 or unet-scratch")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per training step")
    parser.add_argument("--tile", type=int, default=256, help="training tile side in px")
    parser.add_argument("--image-size", type=int, default=512, help="side of the dataset's images in px")
    parser.add_argument("--train-images", type=int, default=72, help="training images (sets steps per epoch)")
    parser.add_argument("--val-images", type=int, default=18, help="validation images per epoch")
    parser.add_argument("--steps-per-epoch", type=int, help="override the steps derived from --train-images")
    parser.add_argument(
        "--steps", type=int, default=5, help="timed training steps after one warm-up (the median is kept)"
    )
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16, as semphase train")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: all cores)")
    parser.add_argument("--json", help="also write the measurement and the estimate to this JSON file")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print the measurement and the epoch estimate; exit code 0."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.steps < 1 or args.train_images < 1 or args.val_images < 1:
        parser.error("--steps, --train-images and --val-images must be >= 1")
    speed = measure_training_speed(
        args.arch,
        args.batch_size,
        args.tile,
        steps=args.steps,
        val_side=args.image_size,
        threads=args.threads,
        precision=args.precision,
    )
    steps = args.steps_per_epoch or steps_per_epoch_for(
        args.train_images, args.image_size, args.tile, args.batch_size
    )
    epoch = speed.epoch_seconds(steps, args.val_images)
    print(describe_speed(speed))
    print(
        f"estimated epoch: {steps} steps + {args.val_images} validation images = {epoch:.0f} s "
        f"({epoch / 60:.1f} min)"
    )
    if args.json:
        document = {
            **speed.to_dict(),
            "steps_per_epoch": steps,
            "val_images": args.val_images,
            "epoch_seconds": epoch,
        }
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=1)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
