"""Training for a fixed amount of time (``semphase train --time-budget MIN``): plan steps, not epochs.

With a budget, what makes a model good is the number of optimizer steps and a learning-rate schedule that
ends when the time does, not an epoch count chosen for a fast machine. The run therefore:

1. trains a short first epoch of :data:`FIRST_EPOCH_STEPS` steps at the largest crop (``--tile``) and times
   each step (the first, which pays for memory allocation and kernel selection, is left out; the median
   of the rest is kept, so a momentary load spike does not decide the plan), then its validation pass;
2. plans the rest (:func:`plan_steps`): of the crop sizes ``--tile``, 224, 192, 160 and 128 px, the largest
   that still leaves :data:`TARGET_STEPS` steps in the budget (a slow machine trains more, cheaper steps:
   smaller crops cost in proportion to their pixels, plus a fixed share per step); the validations (about
   a tenth of the budget, at most :data:`MAX_EPOCHS` of them) cut the steps into epochs; the time the final
   test evaluation will take is set aside; the cosine learning rate runs over the planned steps;
3. re-plans after every epoch from the pace measured so far, so a machine that gets busier (or idler) on
   the way ends training in time (or uses what it gained): the remaining epochs get fewer (or more) steps
   and the schedule's end moves with them.

``--max-steps`` caps the plan (a fast machine stops when it has trained enough, before the budget). What
was planned and what was spent is recorded in ``config.json`` (``time_budget``) and in the history
(``planned_steps``, ``budget_left_seconds``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

#: Steps of the first epoch, which measures the speed (all of them train the model).
FIRST_EPOCH_STEPS = 6
#: Fewer planned steps than this at a crop size make the planner try a smaller crop.
TARGET_STEPS = 400
#: Crop sizes the planner may fall back to (never larger than ``--tile``), largest first.
CROP_SIZES = (256, 224, 192, 160, 128)
#: Share of a step's time that does not shrink with the crop (data loading, optimizer, Python).
FIXED_STEP_SHARE = 0.1
#: Validation may take about this share of the training time; the number of epochs follows from it.
VALIDATION_SHARE = 0.1
MAX_EPOCHS = 10
#: At least this many epochs when they fit in a third of the budget: the plan is re-made between epochs,
#: so more epochs follow a machine whose speed changes more closely.
MIN_EPOCHS = 4
#: Seconds an epoch costs besides steps and validation (checkpoint saves, history, the curves figure),
#: until measured between the first and the second epoch.
EPOCH_OVERHEAD_SECONDS = 3.0
#: Seconds of the test evaluation besides its inference (its figures, overlays and files).
TEST_OVERHEAD_SECONDS = 8.0


def step_seconds_at(tile: int, measured_tile: int, measured_seconds: float) -> float:
    """Seconds of one step at crop ``tile`` from a step measured at ``measured_tile``: a fixed share plus a
    share in proportion to the crop's pixels."""
    return measured_seconds * (FIXED_STEP_SHARE + (1 - FIXED_STEP_SHARE) * (tile / measured_tile) ** 2)


def robust_step_seconds(step_times: list[float]) -> float:
    """The median step time without the first step (warm-up); the only step when there is one."""
    timed = step_times[1:] if len(step_times) > 1 else step_times
    if not timed:
        raise ValueError("no step was timed")
    return float(statistics.median(timed))


@dataclass
class StepPlan:
    """The steps planned for what is left of a budget.

    ``tile`` is the crop side; ``step_seconds`` a step at that crop; ``steps_per_epoch`` x ``epochs`` the
    steps still to train; ``reserve_seconds`` what the test evaluation will take; ``reason`` one line on
    why this crop.
    """

    tile: int
    step_seconds: float
    steps_per_epoch: int
    epochs: int
    val_seconds: float
    reserve_seconds: float
    seconds_left: float
    reason: str

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def to_dict(self) -> dict:
        return {**asdict(self), "steps": self.steps}


def plan_steps(
    seconds_left: float,
    measured_tile: int,
    measured_step_seconds: float,
    val_seconds: float,
    reserve_seconds: float,
    max_tile: int,
    min_tile: int = CROP_SIZES[-1],
    max_steps: int | None = None,
    overhead: float = EPOCH_OVERHEAD_SECONDS,
) -> StepPlan:
    """Plan the remaining training.

    Parameters
    ----------
    seconds_left : the budget not yet spent.
    measured_tile, measured_step_seconds : a step's time at a crop size, measured on this run.
    val_seconds : one validation pass (0 without a val split).
    reserve_seconds : kept for what follows training (the test evaluation).
    max_tile : the largest crop (``--tile``); ``min_tile`` the smallest (the smallest training image).
    max_steps : at most this many steps (None: as many as fit).
    overhead : seconds each epoch costs besides its steps and validation (checkpoints, history).

    Returns
    -------
    StepPlan; at least one epoch of one step, even when nothing fits (the caller says so).
    """
    usable = max(seconds_left - reserve_seconds, 0.0)
    sizes = [t for t in CROP_SIZES if min_tile <= t <= max_tile] or [max_tile]
    if max_tile not in sizes:
        sizes.insert(0, max_tile)
    chosen = None
    for tile in sizes:
        step = step_seconds_at(tile, measured_tile, measured_step_seconds)
        epochs, steps = _epochs_and_steps(usable, step, val_seconds, overhead)
        if max_steps is not None:
            steps = min(steps, max_steps)
        chosen = (tile, step, epochs, steps)
        if steps >= TARGET_STEPS or (max_steps is not None and steps >= max_steps):
            break
    tile, step, epochs, steps = chosen
    epochs = max(1, min(epochs, steps)) if steps else 1
    per_epoch = max(1, steps // epochs) if steps else 1
    if tile == max_tile:
        reason = f"{steps} steps of {tile} px crops fit"
    elif steps >= TARGET_STEPS:
        reason = f"{tile} px crops: the largest at which {TARGET_STEPS}+ steps fit (here {steps})"
    else:
        reason = f"only {steps} steps fit even at {tile} px crops (fewer than {TARGET_STEPS})"
    return StepPlan(tile, step, per_epoch, epochs, val_seconds, reserve_seconds, seconds_left, reason)


def _epochs_and_steps(usable: float, step: float, val_seconds: float, overhead: float) -> tuple[int, int]:
    """Epochs (validations) and steps that fit ``usable`` seconds."""
    per_epoch = val_seconds + overhead
    epochs = 1
    if per_epoch > 0:
        epochs = int(min(MAX_EPOCHS, max(1, round(VALIDATION_SHARE * usable / per_epoch))))
    if epochs < MIN_EPOCHS and MIN_EPOCHS * per_epoch <= usable / 3:
        epochs = MIN_EPOCHS
    train_time = usable - epochs * per_epoch
    if train_time < step:  # not even one step beside the epochs' validations: validate once
        epochs = 1
        train_time = usable - per_epoch
    return epochs, max(0, int(train_time // step))


def replan_epoch_steps(
    seconds_left: float,
    epochs_left: int,
    step_seconds: float,
    val_seconds: float,
    reserve_seconds: float,
    overhead: float = EPOCH_OVERHEAD_SECONDS,
) -> int:
    """Steps for each of the ``epochs_left`` remaining epochs so that they end within ``seconds_left``
    (after ``reserve_seconds``), at the pace measured so far; at least 1."""
    if epochs_left < 1:
        return 0
    usable = seconds_left - reserve_seconds - epochs_left * (val_seconds + overhead)
    return max(1, int(usable // (step_seconds * epochs_left)))


def describe(plan: StepPlan, minutes: float) -> str:
    """One line for the log."""
    return (
        f"time budget {minutes:g} min: {plan.steps} more steps planned ({plan.epochs} epochs x "
        f"{plan.steps_per_epoch}) at {plan.step_seconds:.2f} s per step ({plan.reason}), validation "
        f"{plan.val_seconds:.1f} s per epoch, {plan.reserve_seconds:.0f} s kept for the test evaluation, "
        f"{plan.seconds_left:.0f} s left"
    )


def test_seconds(
    val_seconds: float, val_pixels: int, test_pixels: int, step_seconds: float, tile: int
) -> float:
    """Seconds the final test evaluation will take: the validation's pace per pixel, or without a val
    split about a third of a training step's pace (a forward pass without backward)."""
    if not test_pixels:
        return 0.0
    if val_pixels and val_seconds > 0:
        return TEST_OVERHEAD_SECONDS + 1.2 * val_seconds * test_pixels / val_pixels
    return TEST_OVERHEAD_SECONDS + step_seconds / 3 * test_pixels / max(tile * tile, 1) * 1.5


@dataclass
class BudgetRun:
    """The time budget of one training invocation, epoch by epoch (see the module docstring).

    Call :meth:`start` before the first epoch, :meth:`next_epoch` before each one (it plans, or re-plans
    from what was measured, the time between epochs included) and :meth:`finished_epoch` after each.

    Parameters
    ----------
    minutes : the budget.
    max_tile, min_tile : the crop sizes allowed (``--tile``; the smallest training image).
    val_pixels, test_pixels : pixels of a validation pass and of the test evaluation.
    max_steps : cap on the steps of the whole run (None: as many as fit).
    clock : seconds from an arbitrary origin (tests replace it).
    """

    minutes: float
    max_tile: int
    min_tile: int
    val_pixels: int
    test_pixels: int
    max_steps: int | None = None
    clock: Callable[[], float] = time.perf_counter
    started: float = 0.0
    plan: StepPlan | None = None
    epochs_left: int = 1
    epoch_steps: int = FIRST_EPOCH_STEPS
    steps_done: int = 0
    pace: float = 0.0  # seconds per step, as last measured (at crop ``pace_tile``)
    pace_tile: int = 0
    epoch_tile: int = 0  # the crop of the epoch under way
    val_seconds: float = 0.0
    overhead: float = EPOCH_OVERHEAD_SECONDS  # seconds between a validation's end and the next epoch
    ended: float | None = None
    replans: list[dict] = field(default_factory=list)

    def start(self) -> None:
        self.started = self.clock()

    @property
    def seconds(self) -> float:
        return 60.0 * self.minutes

    def seconds_left(self) -> float:
        return self.seconds - (self.clock() - self.started)

    def next_epoch(self) -> tuple[int, int]:
        """(steps, crop side) of the next epoch: the measuring first epoch, then the plan's, re-planned
        from the pace so far; (0, side) when the plan is done."""
        if self.ended is not None:
            self.overhead = max(self.clock() - self.ended, 0.0)
            self.ended = None
        if self.steps_done == 0:
            first = FIRST_EPOCH_STEPS if self.max_steps is None else min(FIRST_EPOCH_STEPS, self.max_steps)
            self.epoch_tile = self.max_tile
            return first, self.max_tile
        cap = None if self.max_steps is None else max(self.max_steps - self.steps_done, 0)
        if self.plan is None:
            if cap == 0:
                self.epochs_left = 0
                return 0, self.max_tile
            reserve = test_seconds(
                self.val_seconds, self.val_pixels, self.test_pixels, self.pace, self.max_tile
            )
            self.plan = plan_steps(
                self.seconds_left(),
                self.max_tile,
                self.pace,
                self.val_seconds,
                reserve,
                self.max_tile,
                self.min_tile,
                cap,
                overhead=self.overhead,
            )
            self.epochs_left, self.epoch_steps = self.plan.epochs, self.plan.steps_per_epoch
            self.epoch_tile = self.plan.tile
            return self.epoch_steps, self.plan.tile
        if self.epochs_left <= 0:
            return 0, self.plan.tile
        steps_each = replan_epoch_steps(
            self.seconds_left(), self.epochs_left, self.plan_pace(), self.val_seconds,
            self.plan.reserve_seconds, self.overhead,
        )  # fmt: skip
        if cap is not None:
            steps_each = max(1, min(steps_each, cap // self.epochs_left))
        if steps_each != self.epoch_steps:
            self.replans.append(
                {
                    "after_steps": self.steps_done,
                    "step_seconds": self.plan_pace(),
                    "steps_per_epoch": steps_each,
                }
            )
        self.epoch_steps = steps_each
        self.epoch_tile = self.plan.tile
        return self.epoch_steps, self.plan.tile

    def plan_pace(self) -> float:
        """Seconds per step at the plan's crop: as measured when an epoch ran at it, else the measured
        pace scaled from the crop it was measured at (right after planning, the first epoch's crop)."""
        if self.plan is None or self.pace_tile in (0, self.plan.tile):
            return self.pace
        return step_seconds_at(self.plan.tile, self.pace_tile, self.pace)

    def finished_epoch(self, step_times: list[float], steps: int, val_seconds: float) -> None:
        """Record an epoch of ``steps`` steps (their times) and its validation."""
        self.steps_done += steps
        self.pace = robust_step_seconds(step_times)
        self.pace_tile = self.epoch_tile
        self.val_seconds = val_seconds
        if self.plan is not None:
            self.epochs_left -= 1
        self.ended = self.clock()

    def deadline(self) -> float | None:
        """Clock time by which the current epoch's steps must end so that the epochs after it, every
        validation and the test evaluation still fit: the run cuts an epoch short at it when the machine
        slows down mid-epoch (None for the measuring first epoch)."""
        if self.plan is None:
            return None
        later = (self.epochs_left - 1) * self.epoch_steps * self.plan_pace()
        rest = self.plan.reserve_seconds + self.epochs_left * (self.val_seconds + self.overhead) + later
        return self.started + self.seconds - rest

    @property
    def done(self) -> bool:
        """True when the plan has no epoch left."""
        return self.plan is not None and self.epochs_left <= 0

    def planned_total(self) -> int:
        """Steps of the whole run as planned now."""
        if self.plan is None:
            return max(
                self.steps_done, TARGET_STEPS if self.max_steps is None else min(TARGET_STEPS, self.max_steps)
            )
        return self.steps_done + self.epochs_left * self.epoch_steps

    def record(self) -> dict:
        """What config.json keeps of the budget."""
        return {
            "minutes": self.minutes,
            "max_steps": self.max_steps,
            "first_epoch_steps": FIRST_EPOCH_STEPS,
            "plan": None if self.plan is None else self.plan.to_dict(),
            "replans": list(self.replans),
            "epoch_overhead_seconds": self.overhead,
        }
