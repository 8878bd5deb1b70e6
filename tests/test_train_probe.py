"""The training-speed probe: real steps of a tiny network, the epoch estimate, the command line."""

from __future__ import annotations

import itertools
import json

import pytest

from semphase.train.probe import TrainingSpeed, main, measure_training_speed, steps_per_epoch_for

TINY = {
    "arch": "unet-scratch",
    "batch_size": 2,
    "tile": 32,
    "val_side": 64,
    "threads": 1,
    "precision": "fp32",
}


def test_the_probe_times_real_steps_and_leaves_out_the_warm_up():
    # a clock that advances one second per reading: every timed interval is exactly one reading apart
    ticks = itertools.count()
    speed = measure_training_speed(**TINY, steps=3, warmup=1, val_images=2, clock=lambda: float(next(ticks)))
    assert speed.step_runs == [1.0, 1.0, 1.0] and speed.step_seconds == 1.0
    assert speed.val_image_seconds == 1.0 and speed.fp32_image_seconds == 1.0
    assert speed.precision == "fp32" and speed.threads == 1 and speed.device == "cpu"


def test_the_epoch_estimate_adds_steps_and_validation_images():
    speed = TrainingSpeed("unet-resnet34", 8, 256, "fp32", 2, "cpu", 0.5, [0.5], 512, 0.25, 0.2)
    assert speed.epoch_seconds(36, 18) == pytest.approx(36 * 0.5 + 18 * 0.25)
    # the demo: 72 train images of 512 px, batch 8 of 256 px tiles cover them once in 36 steps
    assert steps_per_epoch_for(72, 512, 256, 8) == 36
    assert steps_per_epoch_for(1, 64, 256, 8) == 1


def test_the_command_prints_and_writes_the_estimate(tmp_path, capsys):
    out = tmp_path / "speed.json"
    args = "--arch unet-scratch --batch-size 2 --tile 32 --image-size 64 --steps 1 --train-images 4"
    args += " --val-images 3 --threads 1 --precision fp32 --json"
    assert main([*args.split(), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "s per training step" in printed and "estimated epoch: 8 steps + 3 validation images" in printed
    document = json.loads(out.read_text())
    assert document["steps_per_epoch"] == 8 and document["step_seconds"] > 0
    assert document["epoch_seconds"] == pytest.approx(
        8 * document["step_seconds"] + 3 * document["val_image_seconds"]
    )
