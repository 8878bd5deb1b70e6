"""scripts/demo_plan.py: how `make demo` splits its time budget between training and the later steps."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "demo_plan.py"
spec = importlib.util.spec_from_file_location("demo_plan", SCRIPT)
demo_plan = importlib.util.module_from_spec(spec)
sys.modules["demo_plan"] = demo_plan  # its dataclass looks its module up while being defined
spec.loader.exec_module(demo_plan)

SPLIT = {"val_images": 18, "test_images": 18}
BUDGET = 15 * 60


def speed(step_seconds: float, val_image_seconds: float, fp32_image_seconds: float | None = None) -> dict:
    return {
        "step_seconds": step_seconds,
        "val_image_seconds": val_image_seconds,
        "fp32_image_seconds": fp32_image_seconds or 2 * val_image_seconds,
        "tile": 256,
        "batch_size": 8,
        "val_side": 512,
    }


def test_a_fast_machine_gives_training_the_rest_and_keeps_the_full_later_steps():
    plan = demo_plan.make_plan(speed(0.5, 0.15, 0.17), **SPLIT, budget_seconds=BUDGET, spent_seconds=40)
    assert plan.tier.name == "full" and plan.tier.large == 4096 and plan.tier.package
    assert plan.after_seconds == pytest.approx(sum(plan.after_estimates.values()))
    assert plan.train_seconds == pytest.approx(BUDGET - 40 - plan.after_seconds)
    # the full training (504 steps, ten validations, the test) fits: --max-steps will stop it early
    assert plan.full_training_seconds == pytest.approx(504 * 0.5 + (180 + 18) * 0.15)
    assert plan.train_seconds > plan.full_training_seconds and not plan.over_budget


def test_a_slow_machine_shrinks_the_later_steps_and_trains_in_what_is_left():
    # about the busy 2-core EPYC of issue 28: 4.5 s per step, 0.9 s per fp32 image
    plan = demo_plan.make_plan(speed(4.5, 1.1, 0.9), **SPLIT, budget_seconds=BUDGET, spent_seconds=90)
    assert plan.tier.name != "full" and plan.tier.large < 4096
    assert 90 + plan.train_seconds + plan.after_seconds == pytest.approx(BUDGET)
    assert plan.tier.name == "minimal" and plan.train_seconds >= 0.45 * BUDGET


def test_a_tiny_budget_drops_packaging_and_still_trains_a_little():
    plan = demo_plan.make_plan(speed(0.7, 0.2, 0.17), **SPLIT, budget_seconds=4 * 60, spent_seconds=35)
    assert plan.tier.name == "minimal" and not plan.tier.package and plan.tier.large == 1024
    assert plan.train_seconds == pytest.approx(
        max(4 * 60 - 35 - plan.after_seconds, demo_plan.MIN_TRAIN_SECONDS)
    )
    starved = demo_plan.make_plan(speed(60.0, 10.0, 5.0), **SPLIT, budget_seconds=BUDGET, spent_seconds=300)
    assert starved.over_budget and starved.train_seconds == demo_plan.MIN_TRAIN_SECONDS


def test_the_plan_command_prints_shell_assignments_and_writes_the_plan(tmp_path, capsys):
    (tmp_path / "speed.json").write_text(json.dumps(speed(0.5, 0.15, 0.17)))
    split = {"train": ["a"] * 72, "val": ["b"] * 18, "test": ["c"] * 18}
    (tmp_path / "split.json").write_text(json.dumps(split))
    args = ["plan", str(tmp_path / "speed.json"), str(tmp_path / "split.json"), "--budget-min", "15",
            "--out", str(tmp_path / "plan.json")]  # fmt: skip
    assert demo_plan.main(args) == 0
    out, err = capsys.readouterr()
    assigned = dict(line.split("=", 1) for line in out.splitlines())
    assert (
        assigned["MAX_STEPS"] == "504"
        and assigned["BENCH_SIZES"] == "1024,2048"
        and assigned["PACKAGE"] == "1"
    )
    assert float(assigned["TRAIN_MINUTES"]) == pytest.approx(
        json.loads((tmp_path / "plan.json").read_text())["train_minutes"], abs=0.01
    )
    assert "--time-budget" in err


def test_reached_says_what_a_budget_cut_short_and_what_would_fit():
    config = {"tile": 256, "time_budget": {"minutes": 3.0, "steps_trained": 204, "seconds_used": 178,
                                            "plan": {"tile": 128, "step_seconds": 0.4}}}  # fmt: skip
    text = demo_plan.reached_text(config, 0.8123, 504, 8)
    assert "reached test mIoU 0.8123 after 204 steps of 128 px crops in 178 s" in text
    # 300 more steps at 0.4 s x (256 / 128)^2 = 480 s more: 8 + 8 min, plus one
    assert "DEMO_BUDGET_MIN=17" in text
    config["time_budget"]["steps_trained"] = 504
    assert demo_plan.reached_text(config, 0.9, 504, 8).endswith("the demo's full training (504 steps).")


def test_spent_compares_every_phase_with_its_plan(tmp_path, capsys):
    plan = {"spent_seconds": 40, "train_seconds": 500, "after_estimates": {"train_extra": 10, "export": 50,
            "package": 0.0, "large": 20}}  # fmt: skip
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "t.txt").write_text("before training 42\ntraining 505\nafter: export 61\nafter: large 18\n")
    assert (
        demo_plan.main(["spent", str(tmp_path / "plan.json"), str(tmp_path / "t.txt"), "--budget-min", "10"])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split() == ["training", "510", "505"]  # its start-up is planned with it
    assert "package" not in "".join(lines) and lines[-1].split()[:3] == ["total", "600", "626"]
