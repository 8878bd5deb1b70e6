"""scripts/demo_plan.py: how `make demo` fits its epochs and later steps into its time budget."""

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

DEMO_SPLIT = {"train_images": 72, "val_images": 18, "test_images": 18}
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


def test_a_fast_machine_trains_all_epochs_at_full_size():
    plan = demo_plan.make_plan(speed(0.5, 0.15), **DEMO_SPLIT, budget_seconds=BUDGET, spent_seconds=40,
                               max_epochs=14)  # fmt: skip
    assert plan.epochs == 14 and not plan.reduced
    assert plan.large == 4096 and plan.bench_sizes == (1024, 2048) and plan.bench_repeat == 3
    assert plan.epoch_seconds == pytest.approx(36 * 0.5 + 18 * 0.15)
    # the time limit is only a safety net here: far beyond the 14 epochs
    assert plan.time_limit_min * 60 > 14 * plan.epoch_seconds


def test_a_slow_machine_trains_what_fits_and_shrinks_the_later_steps():
    # about the 2-core AVX2 EPYC of issue 10: 236 s per epoch
    plan = demo_plan.make_plan(speed(6.0, 1.1, 0.4), **DEMO_SPLIT, budget_seconds=BUDGET, spent_seconds=90,
                               max_epochs=14)  # fmt: skip
    assert plan.reduced and plan.large == 2048 and plan.bench_sizes == (1024,) and plan.bench_repeat == 1
    assert plan.epoch_seconds == pytest.approx(235.8)
    assert plan.epochs == plan.epochs_fit == 2
    # the planned demo fits the budget, and an epoch slower than measured still stops within it
    assert 90 + plan.epochs * plan.epoch_seconds + plan.after_seconds <= BUDGET
    assert plan.time_limit_min * 60 + plan.epoch_seconds == pytest.approx(plan.train_budget)


def test_at_least_one_epoch_runs_and_a_fixed_large_size_is_kept():
    plan = demo_plan.make_plan(speed(60.0, 10.0), **DEMO_SPLIT, budget_seconds=BUDGET, spent_seconds=300,
                               max_epochs=14, large=1024)  # fmt: skip
    assert plan.epochs == 1 and plan.epochs_fit == 0 and plan.large == 1024
    assert plan.time_limit_min > 0


def test_the_plan_command_prints_shell_assignments(tmp_path, capsys):
    (tmp_path / "speed.json").write_text(json.dumps(speed(0.5, 0.15)))
    split = {"train": ["a"] * 72, "val": ["b"] * 18, "test": ["c"] * 18}
    (tmp_path / "split.json").write_text(json.dumps(split))
    args = ["plan", str(tmp_path / "speed.json"), str(tmp_path / "split.json"), "--budget-min", "15"]
    assert demo_plan.main(args) == 0
    out, err = capsys.readouterr()
    assigned = dict(line.split("=", 1) for line in out.splitlines())
    assert (
        assigned["EPOCHS"] == "14" and assigned["BENCH_SIZES"] == "1024,2048" and assigned["LARGE"] == "4096"
    )
    assert "all 14 epochs fit" in err


def reached(tmp_path, capsys, val_miou: list[float], planned: int, fit: int) -> str:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "metrics_test.json").write_text(json.dumps({"summary": {"miou": {"mean": 0.7123}}}))
    rows = "".join(f"{i + 1},{v}\n" for i, v in enumerate(val_miou))
    (run / "history.csv").write_text("epoch,val_miou\n" + rows)
    args = ["reached", str(run), "--epochs-planned", str(planned), "--epochs-fit", str(fit)]
    assert demo_plan.main([*args, "--budget-min", "15", "--epoch-seconds", "240"]) == 0
    return capsys.readouterr().out


def test_a_run_cut_short_says_what_it_reached_and_why(tmp_path, capsys):
    out = reached(tmp_path, capsys, [0.5, 0.7], planned=2, fit=2)
    assert "reached test mIoU 0.7123 after 2 of 14 epochs" in out
    assert "only 2 of 14 epochs fit the 15-min budget at the measured 240 s per epoch" in out
    assert "DEMO_BUDGET_MIN=63" in out  # 15 min + 12 epochs x 4 min
    # the time limit stopped it before the planned epochs: the machine was slower than measured
    assert "2 of the 4 planned epochs ran before --time-limit" in reached(tmp_path, capsys, [0.5, 0.7], 4, 4)
    assert "not even one of 14 epochs fit" in reached(tmp_path, capsys, [0.2], planned=1, fit=0)
    late = [0.8] + [0.7] * 8
    assert "early stopping ended training" in reached(tmp_path, capsys, late, planned=14, fit=14)
    assert "trained all 14 epochs: test mIoU 0.7123" in reached(tmp_path, capsys, [0.5] * 14, 14, 14)
