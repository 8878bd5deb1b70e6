"""``--time-budget``: the planner's arithmetic, the re-plan after a slow epoch, and what a run records.

No test depends on the machine's speed: the planner is fed step times, and the runs read a fake clock
that advances a fixed number of seconds per training step.
"""

from __future__ import annotations

import csv
import json

import pytest

from semphase.errors import OptionError
from semphase.progress import Silent
from semphase.train import rundir
from semphase.train.budget import (
    FIRST_EPOCH_STEPS,
    MIN_EPOCHS,
    TARGET_STEPS,
    BudgetRun,
    plan_steps,
    replan_epoch_steps,
    robust_step_seconds,
    step_seconds_at,
)
from semphase.train.options import TrainOptions
from test_train_fixtures import make_dataset


def test_a_fast_machine_keeps_its_crops_and_a_slow_one_trains_more_smaller_steps():
    # the demo's fast 2-core machine: 0.67 s per 256 px step, 12 min to spend, 20 s per validation
    fast = plan_steps(720, 256, 0.67, val_seconds=20, reserve_seconds=30, max_tile=256)
    assert fast.tile == 256 and fast.steps >= TARGET_STEPS
    assert fast.epochs == max(MIN_EPOCHS, round(0.1 * 690 / (20 + 3)))  # validations: about a tenth
    assert fast.steps * fast.step_seconds + fast.epochs * 23 <= 690
    # the busy EPYC of the issue: ~4.5 s per step, 11 min: 256 px would give ~130 steps
    slow = plan_steps(660, 256, 4.5, val_seconds=40, reserve_seconds=60, max_tile=256)
    assert slow.tile < 256 and slow.step_seconds == pytest.approx(step_seconds_at(slow.tile, 256, 4.5))
    assert slow.steps >= TARGET_STEPS or slow.tile == 128
    assert slow.steps * slow.step_seconds + slow.epochs * 43 <= 600
    assert slow.tile >= 128 and slow.tile % 32 == 0


def test_step_cost_scales_with_the_crops_pixels_plus_a_fixed_share():
    assert step_seconds_at(256, 256, 2.0) == pytest.approx(2.0)
    assert step_seconds_at(128, 256, 2.0) == pytest.approx(2.0 * (0.1 + 0.9 / 4))


def test_warm_up_and_a_load_spike_do_not_decide_the_pace():
    assert robust_step_seconds([9.0, 1.0, 1.1, 6.0, 0.9, 1.0]) == pytest.approx(1.0)
    assert robust_step_seconds([3.0]) == 3.0


def test_max_steps_caps_a_fast_machine_and_nothing_fitting_still_trains_once():
    capped = plan_steps(3600, 256, 0.5, 10, 20, max_tile=256, max_steps=300)
    assert capped.tile == 256 and capped.steps <= 300
    starved = plan_steps(10, 256, 30.0, 5, 20, max_tile=256)
    assert starved.epochs == 1 and starved.steps_per_epoch == 1 and starved.tile == 128


def test_replan_after_a_slow_epoch_shrinks_the_remaining_epochs():
    planned = replan_epoch_steps(400, 4, step_seconds=1.0, val_seconds=10, reserve_seconds=20)
    slower = replan_epoch_steps(400, 4, step_seconds=2.0, val_seconds=10, reserve_seconds=20)
    assert planned == (400 - 20 - 4 * (10 + 3)) // 4 and slower == planned // 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_run_on_large_images_may_fall_back_to_the_smallest_crops():
    # the demo's data: 512 px images, --tile 256; a slow machine must be allowed 128 px crops (min_tile
    # was once the smaller of --tile and the smallest image, which left 256 px as the only crop)
    from types import SimpleNamespace

    import numpy as np

    from semphase.train.run import new_budget

    image = SimpleNamespace(image=np.zeros((512, 512), np.uint8), labels=np.zeros((512, 512), np.uint8))
    run = SimpleNamespace(
        options=SimpleNamespace(time_budget=1.2, tile=256, max_steps=504),
        train_set=[image] * 4, val_set=[image], data=SimpleNamespace(samples={"test": [0, 1]}), clock=None,
    )  # fmt: skip
    budget = new_budget(run)
    assert (budget.max_tile, budget.min_tile) == (256, 128)
    # 60 s left at 1.2 s per 256 px step: only 128 px crops give the most steps
    plan = plan_steps(60, 256, 1.2, 3.3, 12, budget.max_tile, budget.min_tile, 498)
    assert plan.tile == 128 and plan.steps > 60 / 1.2


def test_a_plan_at_smaller_crops_is_not_cut_by_the_pace_of_the_larger_first_epoch():
    # the demo at 4 minutes: the first epoch runs 256 px crops at 1.2 s per step, the plan picks 128 px
    # (~0.39 s); asked again before any 128 px step ran (as train does), the plan must keep its steps and
    # its deadline, not re-plan them at the 256 px pace (which once trained 56 of 162 planned steps)
    clock = FakeClock()
    budget = BudgetRun(1.5, max_tile=256, min_tile=128, val_pixels=10, test_pixels=10, clock=clock)
    budget.start()
    budget.next_epoch()
    clock.now += FIRST_EPOCH_STEPS * 1.2 + 3
    budget.finished_epoch([1.2] * FIRST_EPOCH_STEPS, FIRST_EPOCH_STEPS, 3.0)
    steps, tile = budget.next_epoch()
    assert tile == 128 and steps == budget.plan.steps_per_epoch and budget.plan.steps > 100
    assert budget.next_epoch() == (steps, 128) and not budget.replans
    assert budget.plan_pace() == pytest.approx(step_seconds_at(128, 256, 1.2))
    assert budget.deadline() == pytest.approx(
        90 - budget.plan.reserve_seconds - budget.plan.epochs * (3 + budget.overhead)
        - (budget.plan.epochs - 1) * steps * budget.plan_pace()
    )  # fmt: skip


def test_budget_run_plans_after_the_first_epoch_and_follows_a_machine_that_slows_down():
    clock = FakeClock()
    budget = BudgetRun(10, max_tile=256, min_tile=128, val_pixels=10, test_pixels=10, clock=clock)
    budget.start()
    assert budget.next_epoch() == (FIRST_EPOCH_STEPS, 256)
    clock.now += FIRST_EPOCH_STEPS * 1.0 + 5  # 1 s per step, then a 5 s validation
    budget.finished_epoch([3.0] + [1.0] * (FIRST_EPOCH_STEPS - 1), FIRST_EPOCH_STEPS, 5.0)
    steps, tile = budget.next_epoch()
    plan = budget.plan
    assert tile == 256 and steps == plan.steps_per_epoch and plan.epochs >= MIN_EPOCHS
    assert budget.planned_total() == FIRST_EPOCH_STEPS + plan.steps
    deadline = budget.deadline()
    assert deadline < 600 and deadline == pytest.approx(
        600 - plan.reserve_seconds - plan.epochs * (5 + budget.overhead) - (plan.epochs - 1) * steps * 1.0
    )
    # the machine gets twice as slow: the next epochs get about half the steps
    clock.now += steps * 2.0 + 5
    budget.finished_epoch([2.0] * steps, steps, 5.0)
    clock.now += 3
    later, _ = budget.next_epoch()
    assert later < 0.6 * steps and budget.replans[-1]["step_seconds"] == 2.0
    assert budget.overhead == pytest.approx(3.0)


def test_options_refuse_what_the_budget_plans_itself():
    base = {"dataset": "d", "time_budget": 5.0}
    assert TrainOptions.create("o", **base).schedule == "cosine"
    for extra, flag in (({"epochs": 3}, "--epochs"), ({"time_limit": 2.0}, "--time-limit")):
        with pytest.raises(OptionError, match=flag):
            TrainOptions.create("o", **base, **extra)
    with pytest.raises(OptionError, match="--max-steps needs --time-budget"):
        TrainOptions.create("o", dataset="d", max_steps=10)
    with pytest.raises(OptionError, match="--time-budget must be"):
        TrainOptions.create("o", dataset="d", time_budget=-1.0)


def test_a_budget_from_random_weights_trains_at_the_higher_rate_and_nothing_else_does():
    from semphase.train.options import BUDGET_SCRATCH_LR

    scratch = {"dataset": "d", "encoder_weights": "none"}
    assert TrainOptions.lr < BUDGET_SCRATCH_LR
    assert TrainOptions.create("o", **scratch, time_budget=4.0).lr == BUDGET_SCRATCH_LR
    assert TrainOptions.create("o", **scratch, time_budget=4.0, lr=5e-4).lr == 5e-4  # given: kept
    assert TrainOptions.create("o", **scratch).lr == TrainOptions.lr  # the study's recipe
    assert TrainOptions.create("o", dataset="d", time_budget=4.0).lr == TrainOptions.lr  # imagenet encoder
    tuned = TrainOptions.create("o", dataset="d", time_budget=4.0, init="best.pt")  # the fine-tuning recipe's
    assert tuned.lr == 3e-4


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("budget-data") / "ds", groups=4, size=96)


def test_a_budgeted_run_records_its_plan_and_ends_within_the_budget(dataset, tmp_path, monkeypatch):
    import semphase.train.run as run_module

    clock = FakeClock()
    real_step = run_module.train_one_epoch
    taken = []

    def steps_taking_time(*args, **kwargs):
        on_step = args[7] if len(args) > 7 else kwargs.get("on_step")

        def timed(loss):
            # the measuring epoch's steps take 2 s; then the machine gets busy: 20 s per step
            clock.now += 2.0 if len(taken) < FIRST_EPOCH_STEPS else 20.0
            taken.append(clock.now)
            on_step(loss)

        args = list(args)
        if len(args) > 7:
            args[7] = timed
        else:
            kwargs["on_step"] = timed
        return real_step(*args, **kwargs)

    monkeypatch.setattr(run_module, "train_one_epoch", steps_taking_time)
    options = TrainOptions.create(
        str(tmp_path / "run"), dataset=str(dataset), arch="unet-scratch", encoder_weights="none",
        tile=64, batch_size=2, threads=1, precision="fp32", time_budget=2.0, max_steps=40,
    )  # fmt: skip
    result = run_module.train(options, Silent(), clock=clock)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    record = config["time_budget"]
    assert record["minutes"] == 2.0 and record["plan"]["tile"] in (64, 32)
    # the plan expected 2 s steps; the epochs after it were cut at their deadlines instead of overrunning
    assert record["steps_trained"] <= 40 and record["seconds_used"] <= 120 + 20  # one step over, at most
    with open(tmp_path / "run" / rundir.HISTORY_NAME, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert int(rows[0]["steps"]) == FIRST_EPOCH_STEPS and rows[-1]["planned_steps"]
    assert sum(int(r["steps"]) for r in rows) == record["steps_trained"]
    assert (
        result["stopped"] == "time budget"
        and result["time_budget"]["steps_trained"] == record["steps_trained"]
    )
