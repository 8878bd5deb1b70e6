"""Size `make demo` to this machine: how many epochs fit its time budget, and how large the later steps are.

Called twice by scripts/demo.sh:

``plan SPEED_JSON SPLIT_JSON --budget-min B --spent S``
    reads the training speed measured by ``python -m semphase.train.probe --json`` and the demo's split,
    prints the plan (to stderr) and the shell assignments demo.sh evaluates (to stdout): ``EPOCHS``,
    ``TIME_LIMIT`` (minutes, the safety net passed to ``semphase train --time-limit``), ``LARGE``,
    ``BENCH_SIZES``, ``BENCH_REPEAT``, ``BENCH_MAX_IMAGES``.
``reached RUN_DIR --epochs-fit N --max-epochs M ...``
    after training, says what a run cut short by the budget reached (test mIoU) and why.

Only the standard library: this runs before and after torch, in the demo's venv or any Python 3.10+.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

#: The demo's full settings: what a fast 2-core machine runs in about 8 minutes (test mIoU 0.90).
FULL_LARGE = 4096
FULL_BENCH_SIZES = (1024, 2048)
FULL_BENCH_REPEAT = 3

#: A slow machine's settings: a 2048 px micrograph (a quarter of the pixels, still 4 x 4 tiles with the
#: data bar and its blending seams), one end-to-end size, one timed repeat and 6 of the held-out images in
#: the benchmark. The report keeps every section (agreement, accuracy, latency, end-to-end) with less
#: statistics; what the demo is for, a trained model carried to the torch-free runtime, stays whole.
REDUCED_LARGE = 2048
REDUCED_BENCH_SIZES = (1024,)
REDUCED_BENCH_REPEAT = 1
REDUCED_BENCH_MAX_IMAGES = 6

#: The steps after training, in seconds per second of the probe's fp32 forward pass of a 512 px image
#: (``fp32_image_seconds``): they are mostly fp32 and INT8 inference (ONNX export and its validation,
#: segmenting, benchmarking), which the training step predicts badly (bf16 on AMX, and backward passes,
#: speed up differently from machine to machine). Measured: ~680 such passes after training on a quiet
#: 2-core Xeon with AMX (0.235 s each: 15 s train extras, 53 s export, 13 s large micrograph, 78 s
#: benchmark) and ~670 on the README's 2-core AVX-512 EPYC (0.173 s each, ~115 s); set ~15 % above.
#: The reduced benchmark measured 35 % of the full one on the Xeon.
#: ``train_extra``: semphase train outside its time limit (start-up, reading images, test evaluation,
#: figures); ``export``; ``large`` per 4096 x 4096 px (synth + segment + score); ``bench_fixed`` (loading
#: every variant, latency at --repeat 1), ``bench_repeat`` per further repeat, ``bench_image`` per held-out
#: image, ``bench_size`` per end-to-end size (a fresh process per variant), ``bench_mpix`` per megapixel
#: segmented end to end by every variant. ``package``: semphase package --czann of the ResNet34 (20.5 s
#: on the 2-core EPYC, 2026-12-02: writing, validating, bioimageio.core's test runs, the CZANN check).
COST = {
    "train_extra": 75.0,
    "export": 260.0,
    "package": 115.0,
    "large": 65.0,
    "bench_fixed": 41.0,
    "bench_repeat": 10.0,
    "bench_image": 6.2,
    "bench_size": 25.0,
    "bench_mpix": 30.0,
}

#: semphase train's default --patience, which the demo keeps: a run this many epochs past its best one
#: was ended by early stopping.
DEMO_PATIENCE = 8

#: Later steps may take at most this share of the budget at full size before they are reduced: beyond
#: it, the training they would crowd out costs more accuracy than their extra statistics are worth.
MAX_AFTER_SHARE = 0.3


@dataclass
class Plan:
    """How the demo runs on this machine (seconds unless named otherwise)."""

    epochs: int
    epochs_fit: int
    time_limit_min: float
    epoch_seconds: float
    train_budget: float
    after_seconds: float
    large: int
    bench_sizes: tuple[int, ...]
    bench_repeat: int
    bench_max_images: int
    reduced: bool


def after_training_seconds(
    fp32_image_seconds: float, large: int, sizes: tuple[int, ...], repeat: int, bench_images: int
) -> float:
    """Estimated seconds of everything after the time-limited epochs (see :data:`COST`)."""
    mpix = sum(s * s for s in sizes) / 1e6
    units = (
        COST["train_extra"]
        + COST["export"]
        + COST["package"]
        + COST["large"] * (large / 4096) ** 2
        + COST["bench_fixed"]
        + COST["bench_repeat"] * (repeat - 1)
        + COST["bench_image"] * bench_images
        + COST["bench_size"] * len(sizes)
        + COST["bench_mpix"] * mpix
    )
    return units * fp32_image_seconds


def make_plan(
    speed: dict,
    train_images: int,
    val_images: int,
    test_images: int,
    budget_seconds: float,
    spent_seconds: float,
    max_epochs: int,
    large: int | None = None,
) -> Plan:
    """Fit the epochs into what the budget leaves after the steps done and the steps to come.

    Parameters
    ----------
    speed : the probe's JSON (``step_seconds``, ``val_image_seconds``, ``fp32_image_seconds``, ``tile``,
        ``batch_size``, ``val_side``).
    train_images, val_images, test_images : the split's sizes (images of ``val_side`` px).
    budget_seconds : the whole demo's budget; ``spent_seconds`` of it are gone (probe, synth, check).
    max_epochs : the demo's epochs on a fast machine.
    large : a fixed large-micrograph side (DEMO_LARGE), or None to choose.
    """
    side, tile, batch = speed["val_side"], speed["tile"], speed["batch_size"]
    steps = max(1, math.ceil(train_images * side * side / (tile * tile * batch)))
    epoch = steps * speed["step_seconds"] + val_images * speed["val_image_seconds"]
    left = budget_seconds - spent_seconds

    def after(reduced: bool) -> float:
        return after_training_seconds(
            speed["fp32_image_seconds"],
            large or (REDUCED_LARGE if reduced else FULL_LARGE),
            REDUCED_BENCH_SIZES if reduced else FULL_BENCH_SIZES,
            REDUCED_BENCH_REPEAT if reduced else FULL_BENCH_REPEAT,
            min(REDUCED_BENCH_MAX_IMAGES, test_images) if reduced else test_images,
        )

    # reduce the later steps only when they would take a large share of the budget and cost epochs
    reduced = after(False) > MAX_AFTER_SHARE * budget_seconds and (left - after(False)) < max_epochs * epoch
    after_seconds = after(reduced)
    train_budget = left - after_seconds
    epochs_fit = max(0, int(train_budget // epoch))
    epochs = max(1, min(max_epochs, epochs_fit))
    # The run stops after the epoch that reaches the limit, so the limit leaves room for one more epoch:
    # an epoch slower than measured (a busy machine) ends the training before the budget, not one epoch
    # after it.
    limit_min = max(train_budget - epoch, 0.5 * epoch) / 60
    return Plan(
        epochs=epochs,
        epochs_fit=epochs_fit,
        time_limit_min=limit_min,
        epoch_seconds=epoch,
        train_budget=train_budget,
        after_seconds=after_seconds,
        large=large or (REDUCED_LARGE if reduced else FULL_LARGE),
        bench_sizes=REDUCED_BENCH_SIZES if reduced else FULL_BENCH_SIZES,
        bench_repeat=REDUCED_BENCH_REPEAT if reduced else FULL_BENCH_REPEAT,
        bench_max_images=min(REDUCED_BENCH_MAX_IMAGES, test_images) if reduced else test_images,
        reduced=reduced,
    )


def _plan(args: argparse.Namespace) -> int:
    speed = json.loads(Path(args.speed).read_text(encoding="utf-8"))
    split = json.loads(Path(args.split).read_text(encoding="utf-8"))
    budget = args.budget_min * 60
    plan = make_plan(
        speed,
        len(split["train"]),
        len(split["val"]),
        len(split["test"]),
        budget,
        args.spent,
        args.max_epochs,
        args.large,
    )
    say = lambda text: print(text, file=sys.stderr)  # noqa: E731
    say(
        f"one epoch here ~ {plan.epoch_seconds:.0f} s ({len(split['train'])} train images, "
        f"{speed['step_seconds']:.2f} s per step; {len(split['val'])} validation images); "
        f"budget {args.budget_min:g} min, {args.spent:.0f} s spent, about {plan.after_seconds / 60:.1f} min "
        f"needed after training -> {plan.train_budget / 60:.1f} min for training"
    )
    if plan.reduced:
        say(
            f"slow machine: the later steps are reduced to fit (large micrograph {plan.large} px, benchmark "
            f"sizes {','.join(map(str, plan.bench_sizes))}, --repeat {plan.bench_repeat}, "
            f"{plan.bench_max_images} held-out images)"
        )
    if plan.epochs_fit >= args.max_epochs:
        say(f"all {args.max_epochs} epochs fit (--time-limit {plan.time_limit_min:.1f} min as a safety net)")
    elif plan.epochs_fit == 0:
        say(
            f"not even one of {args.max_epochs} epochs fits the budget at this speed: training one anyway, "
            "the demo will run over; set DEMO_BUDGET_MIN higher"
        )
    else:
        say(
            f"only {plan.epochs} of {args.max_epochs} epochs fit the budget at this speed "
            f"(--time-limit {plan.time_limit_min:.1f} min); set DEMO_BUDGET_MIN higher to train them all"
        )
    print(f"EPOCHS={plan.epochs}")
    print(f"EPOCHS_FIT={plan.epochs_fit}")
    print(f"EPOCH_SECONDS={plan.epoch_seconds:.0f}")
    print(f"TIME_LIMIT={plan.time_limit_min:.2f}")
    print(f"LARGE={plan.large}")
    print(f"BENCH_SIZES={','.join(map(str, plan.bench_sizes))}")
    print(f"BENCH_REPEAT={plan.bench_repeat}")
    print(f"BENCH_MAX_IMAGES={plan.bench_max_images}")
    return 0


def _reached(args: argparse.Namespace) -> int:
    run = Path(args.run)
    miou = json.loads((run / "metrics_test.json").read_text(encoding="utf-8"))["summary"]["miou"]["mean"]
    with open(run / "history.csv", newline="", encoding="utf-8") as fh:
        val_miou = [float(row["val_miou"] or "nan") for row in csv.DictReader(fh)]
    trained = len(val_miou)
    if trained >= args.max_epochs:
        print(f"trained all {args.max_epochs} epochs: test mIoU {miou:.4f}")
        return 0
    best_epoch = 1 + max(range(trained), key=lambda i: val_miou[i] if math.isfinite(val_miou[i]) else -1.0)
    if trained - best_epoch >= DEMO_PATIENCE:
        why = f"early stopping ended training (no better val mIoU for {DEMO_PATIENCE} epochs)"
    elif trained < args.epochs_planned:
        why = (
            f"{trained} of the {args.epochs_planned} planned epochs ran before --time-limit stopped training "
            "(the machine was slower than measured, perhaps busy)"
        )
    else:
        fit = f"only {args.epochs_fit}" if args.epochs_fit else "not even one"
        why = (
            f"{fit} of {args.max_epochs} epochs fit the {args.budget_min:g}-min budget at the measured "
            f"{args.epoch_seconds:.0f} s per epoch"
        )
    enough = math.ceil(args.budget_min + (args.max_epochs - trained) * args.epoch_seconds / 60)
    print(
        f"reached test mIoU {miou:.4f} after {trained} of {args.max_epochs} epochs: {why}. A machine that "
        f"fits all {args.max_epochs} reaches about 0.90; DEMO_BUDGET_MIN={enough} would fit them here."
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo_plan.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="size the demo; prints shell assignments")
    plan.add_argument("speed", help="JSON written by python -m semphase.train.probe --json")
    plan.add_argument("split", help="the demo's split.json")
    plan.add_argument("--budget-min", type=float, required=True, help="the whole demo's budget in minutes")
    plan.add_argument("--spent", type=float, default=0.0, help="seconds of the budget already spent")
    plan.add_argument("--max-epochs", type=int, default=14, help="epochs on a fast machine")
    plan.add_argument("--large", type=int, help="fixed side of the large micrograph (default: chosen)")
    reached = commands.add_parser("reached", help="say what a run cut short by the budget reached")
    reached.add_argument("run", help="the training run folder")
    reached.add_argument("--epochs-planned", type=int, required=True, help="--epochs given to the run")
    reached.add_argument("--epochs-fit", type=int, required=True, help="epochs the plan found room for")
    reached.add_argument("--max-epochs", type=int, default=14)
    reached.add_argument("--budget-min", type=float, required=True)
    reached.add_argument("--epoch-seconds", type=float, required=True)
    args = parser.parse_args(argv)
    return _plan(args) if args.command == "plan" else _reached(args)


if __name__ == "__main__":
    sys.exit(main())
