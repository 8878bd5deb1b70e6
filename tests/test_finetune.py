"""Fine-tuning from a checkpoint (`train --init`): class tables, the recipe, runs without a val split."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from semphase.cli.main import main
from semphase.errors import InputError
from semphase.phases import DEFAULT_TABLE, ClassTable
from semphase.train.checkpoint import read_checkpoint
from semphase.train.init import load_initial_model, parse_class_map, resolve_class_map
from semphase.train.options import FINETUNE_RECIPE, TrainOptions
from semphase.train.schedule import FINAL_SHARE, cosine_schedule
from test_train_fixtures import make_dataset
from test_train_run import FAST
from test_train_run import run_cli as run


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A dataset and a (barely) trained scratch checkpoint to start from."""
    root = tmp_path_factory.mktemp("finetune")
    data = make_dataset(root / "ds", groups=4)
    with pytest.raises(SystemExit) as info:
        main(["train", str(data), "--out", str(root / "base"), "--arch", "unet-scratch",
              "--encoder-weights", "none", "--epochs", "1", *FAST])  # fmt: skip
    assert info.value.code == 0
    return data, root / "base" / "best.pt"


def _table(names: list[str]) -> ClassTable:
    return ClassTable.from_dict({"classes": names})


def test_class_map_text_and_resolution():
    assert parse_class_map(" Pore=Void , Oxide=- ") == {"Pore": "Void", "Oxide": None}
    for bad in ("Pore", "=Void", "Pore=Void,Pore=Matrix", " , "):
        with pytest.raises(InputError):
            parse_class_map(bad)
    old = DEFAULT_TABLE
    assert resolve_class_map(old, old, None, "c.pt") == [0, 1, 2, 3, 4]
    new = _table(["Matrix", "Pore", "Oxide"])
    with pytest.raises(InputError, match="differ from the dataset's"):
        resolve_class_map(new, old, None, "c.pt")
    with pytest.raises(InputError, match="'Oxide' has no counterpart"):
        resolve_class_map(new, old, "Pore=Void", "c.pt")
    with pytest.raises(InputError, match="'Glass' is no class of the checkpoint"):
        resolve_class_map(new, old, "Pore=Glass,Oxide=-", "c.pt")
    assert resolve_class_map(new, old, "Pore=Void,Oxide=-", "c.pt") == [0, 2, None]


def test_a_mapped_head_starts_from_the_mapped_classes_and_keeps_every_other_weight(base):
    _, checkpoint = base
    stored = read_checkpoint(checkpoint)["state_dict"]
    model, config, record = load_initial_model(
        checkpoint, _table(["Matrix", "Pore", "Oxide"]), "Pore=Void,Oxide=-"
    )
    state = model.state_dict()
    head = [k for k in state if state[k].shape != stored[k].shape]
    assert len(head) == 2 and all(k.startswith("head.") for k in head)  # the scratch U-Net's last conv
    for key in state:
        if key not in head:
            assert torch.equal(state[key], stored[key]), key
    for key in head:
        assert torch.equal(state[key][0], stored[key][0]) and torch.equal(state[key][1], stored[key][2])
        assert not torch.equal(state[key][2], stored[key][0])  # Oxide: fresh
    assert record["class_map"] == {"Matrix": "Matrix", "Pore": "Void", "Oxide": None}
    assert record["classes"] == DEFAULT_TABLE.names and len(record["sha256"]) == 64
    assert config["arch"] == "unet-scratch"


def test_the_fine_tuning_recipe_applies_only_with_init_and_given_options_win():
    plain = TrainOptions.create("out", dataset="d")
    assert plain.schedule == "plateau" and plain.fractions == (0.7, 0.15, 0.15) and plain.epochs == 40
    tuned = TrainOptions.create("out", dataset="d", init="best.pt", epochs=3)
    assert tuned.epochs == 3 and tuned.schedule == FINETUNE_RECIPE["schedule"] == "cosine"
    assert tuned.fractions == (1.0, 0.0, 0.0) and tuned.encoder_weights == "none" and tuned.starts_trained
    from semphase.errors import OptionError

    with pytest.raises(OptionError, match="exclude each other"):
        TrainOptions.create("out", dataset="d", init="best.pt", encoder_weights="imagenet")
    with pytest.raises(OptionError, match="--class-map needs --init"):
        TrainOptions.create("out", dataset="d", class_map="A=B")


def test_cosine_schedule_warms_up_then_decays_to_its_floor():
    f = cosine_schedule(100)
    assert f(0) == pytest.approx(0.2) and f(4) == pytest.approx(1.0)  # 5 warm-up steps
    values = [f(s) for s in range(5, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert f(100) == pytest.approx(FINAL_SHARE) and f(500) == pytest.approx(FINAL_SHARE)
    assert f(52) == pytest.approx(FINAL_SHARE + (1 - FINAL_SHARE) * 0.5, abs=0.02)  # half way


def test_init_run_records_its_start_trains_everything_and_skips_val_and_test(base, tmp_path, capsys):
    data, checkpoint = base
    out = tmp_path / "tuned"
    code, text, err = run([data, "--out", out, "--init", checkpoint, "--epochs", "2", *FAST], capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["init_from"]["checkpoint"] == str(checkpoint) and config["schedule"] == "cosine"
    assert config["normalization"]["mean"] == read_checkpoint(checkpoint)["config"]["normalization"]["mean"]
    split = json.loads((out / "split.json").read_text())
    assert split["val"] == split["test"] == [] and len(split["train"]) == 12
    best, last = read_checkpoint(out / "best.pt"), read_checkpoint(out / "last.pt")
    assert best["epoch"] == last["epoch"] == 2 and best["config"]["init_from"]["sha256"]
    for key in best["state_dict"]:
        assert torch.equal(best["state_dict"][key], last["state_dict"][key]), key
    assert "no val split" in text and "no test split" in text and "test mIoU" not in text
    import csv

    with open(out / "history.csv", newline="") as fh:
        lrs = [float(row["lr"]) for row in csv.DictReader(fh)]
    assert lrs[0] == pytest.approx(3e-4) and lrs[1] < lrs[0]  # cosine, per step, from the recipe's --lr


def test_init_with_another_class_table_is_refused_in_one_line_or_mapped(base, tmp_path, capsys):
    data, checkpoint = base
    table = tmp_path / "classes.json"
    names = ["Matrix", "Carbide", "Pore", "Reprecipitate", "Dilution"]
    table.write_text(json.dumps({"classes": names}))
    code, _, err = run(
        [data, "--out", tmp_path / "a", "--init", checkpoint, "--classes", table, *FAST], capsys
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--class-map" in err and "Void" in err
    code, _, err = run(
        [data, "--out", tmp_path / "b", "--init", checkpoint, "--classes", table, "--class-map", "Pore=Void",
         "--epochs", "1", *FAST],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert (
        config["init_from"]["class_map"]["Pore"] == "Void"
        and config["classes"]["classes"][2]["name"] == "Pore"
    )


def test_exported_files_name_what_the_model_was_fine_tuned_from():
    from semphase.export.metadata import build_metadata

    config = {
        "classes": DEFAULT_TABLE.to_dict(),
        "num_classes": 5,
        "normalization": {"scale": 1 / 255, "mean": [0.5], "std": [0.2]},
        "init_from": {"checkpoint": "base/best.pt", "sha256": "ab" * 32, "class_map": {"Matrix": "Matrix"}},
    }
    meta = build_metadata(config, {}, variant="fp32", checkpoint_sha256="cd" * 32)
    assert json.loads(meta["semphase.source"])["init_from"]["sha256"] == "ab" * 32
    del config["init_from"]
    assert "init_from" not in json.loads(
        build_metadata(config, {}, variant="fp32", checkpoint_sha256="0")["semphase.source"]
    )


def test_a_run_without_val_needs_a_schedule_that_needs_none(base, tmp_path, capsys):
    data, _ = base
    code, _, err = run([data, "--out", tmp_path / "r", "--arch", "unet-scratch", "--encoder-weights", "none",
                        "--fractions", "1,0,0", *FAST], capsys)  # fmt: skip
    assert code == 2 and "--schedule plateau" in err
    np.testing.assert_equal(len(err.strip().splitlines()), 1)


def test_the_resnet34_u_nets_segmentation_head_is_mapped_too(tmp_path):
    from semphase.train.checkpoint import save_checkpoint
    from semphase.train.models import build_model

    config = {
        "arch": "unet-resnet34",
        "in_channels": 1,
        "num_classes": 5,
        "classes": DEFAULT_TABLE.to_dict(),
        "normalization": {"scale": 1 / 255, "mean": [0.5], "std": [0.2]},
    }
    torch.manual_seed(0)
    model = build_model(config)
    save_checkpoint(tmp_path / "c.pt", model, config)
    mapped, _, _ = load_initial_model(tmp_path / "c.pt", _table(["Void", "Oxide"]), "Oxide=-")
    old, new = model.segmentation_head[0], mapped.segmentation_head[0]
    assert new.out_channels == 2
    assert torch.equal(new.weight[0], old.weight[2]) and torch.equal(new.bias[0], old.bias[2])
    assert torch.equal(mapped.encoder.conv1.weight, model.encoder.conv1.weight)


def test_a_run_without_test_split_is_exported_against_its_training_fields(base, tmp_path, capsys):
    from semphase.export.imagesets import resolve_image_sets

    data, checkpoint = base
    out = tmp_path / "tuned"
    assert run([data, "--out", out, "--init", checkpoint, "--epochs", "1", *FAST], capsys)[0] == 0
    config = read_checkpoint(out / "best.pt")["config"]
    sets = resolve_image_sets(out / "best.pt", config, None, DEFAULT_TABLE)
    assert sets.heldout_source.startswith("train split of") and "no test split" in sets.heldout_source
    assert len(sets.heldout) == 12 and len(sets.calibration) == 12
