"""Size `make demo` to this machine: the training time budget, and how large the later steps are.

Called three times by scripts/demo.sh:

``plan SPEED_JSON SPLIT_JSON --budget-min B --spent S --out PLAN_JSON``
    reads the speed measured by ``python -m semphase.train.probe --json`` and the demo's split, estimates
    what the steps after training will take, gives training the rest (``semphase train --time-budget``,
    which plans its optimizer steps, crop size and schedule from the speed it measures itself), prints the
    plan (to stderr) and the shell assignments demo.sh evaluates (to stdout): ``TRAIN_MINUTES``,
    ``MAX_STEPS``, ``LARGE``, ``BENCH_SIZES``, ``BENCH_REPEAT``, ``BENCH_MAX_IMAGES``, ``PACKAGE``.
``reached RUN_DIR --budget-min B``
    after training, says what the run reached (test mIoU, steps, crops) and, when the budget cut it short
    of the demo's full training, what budget would fit it.
``spent PLAN_JSON TIMINGS --budget-min B``
    at the end, how the budget was spent against the plan, phase by phase.

Only the standard library: this runs before and after torch, in the demo's venv or any Python 3.10+.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

#: What the demo trains on a fast machine: 14 epochs x 36 steps of 8 x 256 px (test mIoU ~0.90). With a
#: budget, training stops here even when more would fit.
MAX_STEPS = 504


@dataclass(frozen=True)
class Tier:
    """How large the steps after training are."""

    name: str
    large: int  # side of the large synthetic micrograph segmented with INT8
    bench_sizes: tuple[int, ...]  # end-to-end sizes of the benchmark
    bench_repeat: int
    bench_max_images: int | None  # held-out images the benchmark scores (None: all)
    package: bool  # bioimage.io + CZANN packaging (step 7)


#: Largest first. ``reduced``: a quarter of the large micrograph's pixels, one end-to-end size, one timed
#: repeat, 6 held-out images; ``minimal`` (a budget of a few minutes): a 1024 px micrograph, the benchmark
#: on 512 px and 3 images, no packaging. Every tier keeps what the demo is for: a trained model exported,
#: verified and run by the torch-free runtime.
TIERS = (
    Tier("full", 4096, (1024, 2048), 3, None, True),
    Tier("reduced", 2048, (1024,), 1, 6, True),
    Tier("minimal", 1024, (512,), 1, 3, False),
)

#: The steps after training: ``FIXED`` seconds (starting Python, importing torch and onnxruntime, reading
#: files: about the same on a fast and a slow machine) plus ``COST`` seconds per second of the probe's fp32
#: forward pass of a 512 px image (``fp32_image_seconds``): the work is mostly fp32 and INT8 inference
#: (ONNX export and its validation, segmenting, benchmarking), which the training step predicts badly
#: (bf16 on AMX, and backward passes, speed up differently from machine to machine). ``train_extra``:
#: semphase train outside its budget (start-up, reading the images); ``export``; ``package`` (semphase
#: package --czann); ``large`` per 4096 x 4096 px (synth + segment + score); ``quantify`` (six 768 px
#: fields segmented and quantified); ``bench_fixed`` (loading every variant, latency at --repeat 1),
#: ``bench_repeat`` per further repeat, ``bench_image`` per held-out image, ``bench_size`` per end-to-end
#: size (a fresh process per variant), ``bench_mpix`` per megapixel segmented end to end by every variant.
#: Fitted to the demos of 2026-12-05 on the 2-core AMD EPYC, idle (fp32 0.31-0.34 s) and with training
#: pinned to one core beside a busy loop (1.27 s) (benchmarks/RESULTS.md, "The demo within its budget"),
#: with about 10 % to spare: a single proportional cost overestimated the slow machine's later steps by
#: 75 % and left a quarter of its budget unused.
FIXED = {
    "train_extra": 8.0,
    "export": 20.0,
    "package": 5.0,
    "large": 0.0,
    "quantify": 6.0,
    "benchmark": 15.0,
}
COST = {
    "train_extra": 8.0,
    "export": 160.0,
    "package": 50.0,
    "large": 65.0,
    "quantify": 9.0,
    "bench_fixed": 20.0,
    "bench_repeat": 10.0,
    "bench_image": 6.2,
    "bench_size": 25.0,
    "bench_mpix": 30.0,
}

#: Training gets at least this long, even when the estimate says the budget is spent (the demo then runs
#: over and says so).
MIN_TRAIN_SECONDS = 45.0


@dataclass
class Plan:
    """How the demo runs on this machine (seconds unless named otherwise)."""

    budget_seconds: float
    spent_seconds: float
    train_seconds: float
    full_training_seconds: float
    after_seconds: float
    after_estimates: dict
    tier: Tier
    over_budget: bool

    @property
    def train_minutes(self) -> float:
        return self.train_seconds / 60


def after_training_estimates(fp32_image_seconds: float, tier: Tier, test_images: int) -> dict[str, float]:
    """Estimated seconds of each step after training at ``tier`` (see :data:`FIXED` and :data:`COST`); a
    step the tier leaves out costs nothing."""
    images = test_images if tier.bench_max_images is None else min(tier.bench_max_images, test_images)
    mpix = sum(s * s for s in tier.bench_sizes) / 1e6
    units = {
        "train_extra": COST["train_extra"],
        "export": COST["export"],
        "package": COST["package"] if tier.package else 0.0,
        "large": COST["large"] * (tier.large / 4096) ** 2,
        "quantify": COST["quantify"],
        "benchmark": COST["bench_fixed"]
        + COST["bench_repeat"] * (tier.bench_repeat - 1)
        + COST["bench_image"] * images
        + COST["bench_size"] * len(tier.bench_sizes)
        + COST["bench_mpix"] * mpix,
    }
    return {
        name: (FIXED[name] if value else 0.0) + value * fp32_image_seconds for name, value in units.items()
    }


def full_training_seconds(
    speed: dict, val_images: int, test_images: int, max_steps: int = MAX_STEPS
) -> float:
    """What the demo's full training takes here: its steps, ten validations and the test evaluation."""
    per_image = speed["val_image_seconds"]
    return max_steps * speed["step_seconds"] + (10 * val_images + test_images) * per_image


def make_plan(
    speed: dict,
    val_images: int,
    test_images: int,
    budget_seconds: float,
    spent_seconds: float,
    large: int | None = None,
    max_steps: int = MAX_STEPS,
) -> Plan:
    """Give training what the budget leaves after the steps done and (estimated) the steps to come.

    Parameters
    ----------
    speed : the probe's JSON (``step_seconds``, ``val_image_seconds``, ``fp32_image_seconds``).
    val_images, test_images : the split's sizes.
    budget_seconds : the whole demo's budget; ``spent_seconds`` of it are gone (probe, synth, check).
    large : a fixed large-micrograph side (DEMO_LARGE), or None to follow the tier.
    max_steps : the demo's full training.
    """
    left = budget_seconds - spent_seconds
    full = full_training_seconds(speed, val_images, test_images, max_steps)
    chosen = None
    for tier in TIERS:
        if large is not None:
            tier = Tier(
                tier.name, large, tier.bench_sizes, tier.bench_repeat, tier.bench_max_images, tier.package
            )
        estimates = after_training_estimates(speed["fp32_image_seconds"], tier, test_images)
        after = sum(estimates.values())
        chosen = (tier, estimates, after)
        if left - after >= full:  # the model first: the largest later steps beside the full training
            break
    tier, estimates, after = chosen
    train = left - after
    return Plan(
        budget_seconds=budget_seconds,
        spent_seconds=spent_seconds,
        train_seconds=max(train, MIN_TRAIN_SECONDS),
        full_training_seconds=full,
        after_seconds=after,
        after_estimates=estimates,
        tier=tier,
        over_budget=train < MIN_TRAIN_SECONDS,
    )


def _plan(args: argparse.Namespace) -> int:
    speed = json.loads(Path(args.speed).read_text(encoding="utf-8"))
    split = json.loads(Path(args.split).read_text(encoding="utf-8"))
    plan = make_plan(
        speed,
        len(split["val"]),
        len(split["test"]),
        args.budget_min * 60,
        args.spent,
        args.large,
        args.max_steps,
    )
    say = lambda text: print(text, file=sys.stderr)  # noqa: E731
    say(
        f"budget {args.budget_min:g} min: {args.spent:.0f} s spent, about {plan.after_seconds:.0f} s needed "
        f"after training ({plan.tier.name} later steps) -> {plan.train_seconds:.0f} s for training "
        f"(semphase train --time-budget {plan.train_minutes:.2f}); the demo's full training "
        f"({args.max_steps} steps) would take about {plan.full_training_seconds:.0f} s here "
        f"({speed['step_seconds']:.2f} s per step, {speed['val_image_seconds']:.2f} s per validation image)"
    )
    if plan.tier.name != "full":
        say(
            f"the later steps are made smaller to leave training more of the budget: large micrograph "
            f"{plan.tier.large} px, benchmark sizes {','.join(map(str, plan.tier.bench_sizes))}, --repeat "
            f"{plan.tier.bench_repeat}, {plan.tier.bench_max_images} held-out images"
            + ("" if plan.tier.package else ", packaging skipped")
        )
    if plan.over_budget:
        say(
            f"the budget is spent before training: training {MIN_TRAIN_SECONDS:.0f} s anyway, "
            "the demo will run over"
        )
    if args.out:
        document = {**asdict(plan), "train_minutes": plan.train_minutes, "max_steps": args.max_steps}
        Path(args.out).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    bench_images = plan.tier.bench_max_images or len(split["test"])
    print(f"TRAIN_MINUTES={plan.train_minutes:.2f}")
    print(f"MAX_STEPS={args.max_steps}")
    print(f"LARGE={plan.tier.large}")
    print(f"BENCH_SIZES={','.join(map(str, plan.tier.bench_sizes))}")
    print(f"BENCH_REPEAT={plan.tier.bench_repeat}")
    print(f"BENCH_MAX_IMAGES={min(bench_images, len(split['test']))}")
    print(f"PACKAGE={int(plan.tier.package)}")
    return 0


def reached_text(config: dict, test_miou: float, max_steps: int, budget_min: float) -> str:
    """What a budgeted run reached and, when it trained less than the demo's full training, why."""
    budget = config.get("time_budget") or {}
    steps = int(budget.get("steps_trained", 0))
    plan = budget.get("plan") or {}
    tile = plan.get("tile", config.get("tile"))
    used = budget.get("seconds_used", 0.0)
    text = (
        f"reached test mIoU {test_miou:.4f} after {steps} steps of {tile} px crops in {used:.0f} s "
        f"(--time-budget {budget.get('minutes', 0):.2f} min)"
    )
    if steps >= max_steps:
        return text + f": the demo's full training ({max_steps} steps)."
    pace = plan.get("step_seconds") or 0.0
    more = (max_steps - steps) * pace * (256 / tile) ** 2 if tile else 0.0
    return text + (
        f"; the demo trains {max_steps} steps of 256 px crops on a fast machine (test mIoU about 0.90): "
        f"DEMO_BUDGET_MIN={int(budget_min + more / 60) + 1} would fit them here."
    )


def _reached(args: argparse.Namespace) -> int:
    run = Path(args.run)
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    miou = json.loads((run / "metrics_test.json").read_text(encoding="utf-8"))["summary"]["miou"]["mean"]
    print(reached_text(config, miou, args.max_steps, args.budget_min))
    return 0


def spent_table(plan: dict, timings: dict[str, float], budget_min: float) -> list[str]:
    """Lines of a table: each phase's planned and actual seconds, and the whole against the budget."""
    estimates = dict(plan["after_estimates"])
    # semphase train's start-up and reading of the images happen in the training phase, outside its budget
    planned = {"before training": plan["spent_seconds"]}
    planned["training"] = plan["train_seconds"] + estimates.pop("train_extra", 0.0)
    planned.update({f"after: {name}": value for name, value in estimates.items() if value})
    lines = [f"{'phase':<24}{'planned s':>10}{'actual s':>10}"]
    for name in dict.fromkeys([*planned, *timings]):
        want = planned.get(name)
        have = timings.get(name)
        want_text = "" if want is None else f"{want:.0f}"
        have_text = "" if have is None else f"{have:.0f}"
        lines.append(f"{name:<24}{want_text:>10}{have_text:>10}")
    total = sum(timings.values())
    budget = 60 * budget_min
    lines.append(f"{'total':<24}{budget:>10.0f}{total:>10.0f}  ({100 * total / budget:.0f} % of the budget)")
    return lines


def _spent(args: argparse.Namespace) -> int:
    plan = json.loads(Path(args.plan).read_text(encoding="utf-8"))
    timings: dict[str, float] = {}
    for line in Path(args.timings).read_text(encoding="utf-8").splitlines():
        name, _, seconds = line.rpartition(" ")
        if name:
            timings[name] = timings.get(name, 0.0) + float(seconds)
    print("\n".join(spent_table(plan, timings, args.budget_min)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo_plan.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    plan = commands.add_parser("plan", help="size the demo; prints shell assignments")
    plan.add_argument("speed", help="JSON written by python -m semphase.train.probe --json")
    plan.add_argument("split", help="the demo's split.json")
    plan.add_argument("--budget-min", type=float, required=True, help="the whole demo's budget in minutes")
    plan.add_argument("--spent", type=float, default=0.0, help="seconds of the budget already spent")
    plan.add_argument("--max-steps", type=int, default=MAX_STEPS, help="the demo's full training, in steps")
    plan.add_argument("--large", type=int, help="fixed side of the large micrograph (default: by tier)")
    plan.add_argument("--out", help="also write the plan to this JSON file (for 'spent')")
    reached = commands.add_parser("reached", help="say what a budgeted training run reached")
    reached.add_argument("run", help="the training run folder")
    reached.add_argument("--budget-min", type=float, required=True)
    reached.add_argument("--max-steps", type=int, default=MAX_STEPS)
    spent = commands.add_parser("spent", help="how the budget was spent against the plan")
    spent.add_argument("plan", help="the JSON 'plan --out' wrote")
    spent.add_argument("timings", help="lines 'PHASE SECONDS' written by demo.sh")
    spent.add_argument("--budget-min", type=float, required=True)
    args = parser.parse_args(argv)
    return {"plan": _plan, "reached": _reached, "spent": _spent}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
