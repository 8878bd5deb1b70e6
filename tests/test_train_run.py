"""End-to-end training runs on tiny datasets: outputs, resume, Ctrl-C, split reuse, bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from semphase.cli.main import main
from semphase.train.checkpoint import load_checkpoint
from semphase.train.inference import predict_labels
from semphase.train.loop import train_one_epoch
from semphase.train.losses import HybridLoss
from semphase.train.models import build_model
from test_train_fixtures import make_dataset, tiny_scene

FAST = [
    "--tile",
    "32",
    "--batch-size",
    "2",
    "--steps-per-epoch",
    "2",
    "--threads",
    "1",
    "--precision",
    "fp32",
]
SCRATCH = ["--arch", "unet-scratch", "--encoder-weights", "none", *FAST]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("train-data") / "ds", groups=4)


def run_cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["train", *map(str, args)])
    out, err = capsys.readouterr()
    return info.value.code, out, err


def history(run_dir) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("arch", ["unet-scratch", "unet-resnet34"])
def test_both_architectures_learn_and_the_loss_falls(arch):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    pairs = [tiny_scene(rng, 64) for _ in range(4)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs]))
    labels = torch.from_numpy(np.stack([p[1] for p in pairs]))
    model = build_model({"arch": arch, "in_channels": 1, "num_classes": 5})
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    norm = {"scale": 1 / 255, "mean": [0.5], "std": [0.25]}
    loss_fn = HybridLoss(np.ones(5, np.float32))
    for _ in range(12):
        batches = [(images, labels)]
        train_one_epoch(model, batches, loss_fn, optimizer, torch.device("cpu"), None, norm, losses.append)
    assert losses[-1] < 0.75 * losses[0], losses
    assert max(losses[-3:]) < min(losses[:3]), losses


def test_run_writes_the_run_folder_and_scores_the_best_checkpoint(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli([dataset, "--out", run, *SCRATCH, "--epochs", "2"], capsys)
    assert code == 0, err
    for name in ("config.json", "split.json", "history.csv", "best.pt", "last.pt", "training_curves.png",
                 "metrics_test.json"):  # fmt: skip
        assert (run / name).is_file(), name
    rows = history(run)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    names = ["Matrix", "Carbide", "Void", "Reprecipitate", "Dilution"]
    assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "val_miou", *[f"iou_{n}" for n in names],
                             "lr", "lr_encoder", "trainable_stages", "seconds",
                             "elapsed_seconds", "steps", "tile", "planned_steps",
                             "budget_left_seconds"]  # fmt: skip
    assert rows[0]["trainable_stages"] == "all (no encoder)"
    assert (rows[0]["steps"], rows[0]["tile"], rows[0]["planned_steps"]) == ("2", "32", "")
    assert out.count("epoch   ") >= 2 and "no pretrained encoder to freeze" in out
    config = json.loads((run / "config.json").read_text())
    assert config["arch"] == "unet-scratch" and config["tile"] == 32 and config["num_classes"] == 5
    assert config["classes"]["classes"][1]["name"] == "Carbide"
    assert config["normalization"]["source"] == "training-split"
    split = json.loads((run / "split.json").read_text())
    assert sum(len(split[s]) for s in ("train", "val", "test")) == 12

    best = torch.load(run / "best.pt", weights_only=True)
    metrics = json.loads((run / "metrics_test.json").read_text())
    assert best["test_metrics"]["summary"] == metrics["summary"]
    assert len(metrics["per_image"]) == len(split["test"])
    model, cfg, ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["best_val_miou"] == pytest.approx(max(float(r["val_miou"]) for r in rows))
    labels = predict_labels(model, cfg, np.zeros((64, 64), np.uint8))
    assert labels.shape == (64, 64)


@pytest.mark.slow
def test_resume_continues_the_same_run(dataset, tmp_path, capsys):
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert run_cli([dataset, "--out", whole, *SCRATCH, "--epochs", "2"], capsys)[0] == 0
    assert run_cli([dataset, "--out", part, *SCRATCH, "--epochs", "1"], capsys)[0] == 0
    first = torch.load(part / "last.pt", weights_only=True)
    assert first["epoch"] == 1 and first["stopped"] == "epochs"
    code, out, err = run_cli([dataset, "--out", part, "--resume", "--epochs", "2", "--threads", "1"], capsys)
    assert code == 0, err
    assert "continuing after epoch 1" in out
    last = torch.load(part / "last.pt", weights_only=True)
    assert last["epoch"] == 2
    steps = [s["step"] for s in last["optimizer"]["state"].values()]
    assert all(float(s) == 4 for s in steps)  # 2 epochs x 2 steps: Adam's state carried over
    assert (part / "split.json").read_bytes() == (whole / "split.json").read_bytes()
    # same seed, same tiles per epoch: the resumed run reproduces the uninterrupted one
    losses = [(r["epoch"], r["train_loss"], r["val_miou"]) for r in history(part)]
    assert losses == [(r["epoch"], r["train_loss"], r["val_miou"]) for r in history(whole)]


def test_ctrl_c_leaves_a_resumable_last_pt(dataset, tmp_path, capsys, monkeypatch):
    import semphase.train.run as run_module

    real_validate = run_module.validate
    calls = []

    def validate_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(run_module, "validate", validate_then_interrupt)
    run = tmp_path / "run"
    code, _, err = run_cli([dataset, "--out", run, *SCRATCH, "--epochs", "3"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "interrupted" in err
    saved = torch.load(run / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["stopped"] is None
    monkeypatch.setattr(run_module, "validate", real_validate)
    code, _, err = run_cli([dataset, "--out", run, "--resume", "--threads", "1"], capsys)
    assert code == 0, err
    assert [r["epoch"] for r in history(run)] == ["1", "2", "3"]


def test_split_file_reuse_gives_an_identical_split(dataset, tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    assert run_cli([dataset, "--out", first, *SCRATCH, "--epochs", "1", "--seed", "3"], capsys)[0] == 0
    code, _, err = run_cli(
        [dataset, "--out", second, *SCRATCH, "--epochs", "1", "--split-file", first / "split.json"], capsys
    )
    assert code == 0, err
    assert (second / "split.json").read_bytes() == (first / "split.json").read_bytes()


def _bad_cases(dataset, tmp_path):
    no_val = tmp_path / "no_val.json"  # fine without a test split; without a val split, plateau cannot work
    names = sorted(p.name for p in (dataset / "AugmentedImages").iterdir())
    no_val.write_text(json.dumps({"train": names[:6], "val": [], "test": names[6:]}))
    no_train = tmp_path / "no_train.json"
    no_train.write_text(json.dumps({"train": [], "val": names[:6], "test": names[6:]}))
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text(json.dumps({"arch": "unet-scratch", "dataset": str(dataset)}))
    (corrupt / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    return [
        ([tmp_path / "nowhere", "--out", tmp_path / "r1", *SCRATCH], "nowhere"),
        ([dataset, "--out", tmp_path / "r2", *SCRATCH, "--arch", "unet-vit"], "unet-resnet34"),
        ([dataset, "--out", tmp_path / "r3", *SCRATCH, "--tile", "128"], "smaller than --tile 128"),
        ([dataset, "--out", tmp_path / "r4", *SCRATCH, "--split-file", no_val], "--schedule plateau"),
        ([dataset, "--out", tmp_path / "r8", *SCRATCH, "--split-file", no_train], "train split is empty"),
        ([dataset, "--out", corrupt, "--resume"], "last.pt"),
        ([dataset, "--out", tmp_path / "r5", "--resume"], "not a semphase training run"),
        ([dataset, "--out", tmp_path / "r6", *SCRATCH, "--fractions", "0.5,0.5"], "three numbers"),
        ([dataset, "--out", tmp_path / "r7", *SCRATCH, "--encoder-weights", tmp_path / "no.pth"], "--arch"),
    ]


def test_bad_inputs_exit_2_with_one_line(dataset, tmp_path, capsys):
    for args, expected in _bad_cases(dataset, tmp_path):
        code, _, err = run_cli(args, capsys)
        lines = err.strip().splitlines()
        assert code == 2, (args, err)
        assert len(lines) == 1 and expected in lines[0], (args, err)


def test_a_finished_run_is_not_overwritten_and_resume_refuses_other_options(dataset, tmp_path, capsys):
    run = tmp_path / "run"
    assert run_cli([dataset, "--out", run, *SCRATCH, "--epochs", "1"], capsys)[0] == 0
    code, _, err = run_cli([dataset, "--out", run, *SCRATCH, "--epochs", "1"], capsys)
    assert code == 2 and "--resume" in err
    code, _, err = run_cli([dataset, "--out", run, "--resume", "--tile", "64"], capsys)
    assert code == 2 and "tile=32" in err


@pytest.mark.slow
def test_pretrained_encoder_is_frozen_then_released_stage_by_stage(dataset, tmp_path, capsys):
    import torchvision

    weights = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), weights)
    run = tmp_path / "run"
    code, out, err = run_cli(
        [dataset, "--out", run, "--encoder-weights", weights, *FAST, "--epochs", "3", "--freeze-epochs", "1",
         "--lr-finetune", "2e-4"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    rows = history(run)
    assert [r["trainable_stages"] for r in rows] == ["decoder only", "layer4", "layer4+layer3"]
    assert all(float(r["lr_encoder"]) == pytest.approx(2e-4) for r in rows)
    config = json.loads((run / "config.json").read_text())
    assert config["normalization"]["source"] == "imagenet-gray"
    assert config["encoder_weights_file"] == str(weights)
    assert "frozen for 1 epochs" in out
