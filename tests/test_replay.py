"""``train --replay DATA``: a share of the fine-tuning tiles comes from the data the model learnt before."""

from __future__ import annotations

import json

import numpy as np
import pytest

import semphase.train.run as train_run
from semphase.cli.main import main
from semphase.train.datasets import Micrograph, ReplayTiles, TileDataset
from test_train_fixtures import make_dataset
from test_train_run import FAST
from test_train_run import run_cli as run


def _tiles(value: int, label: int, seed: int) -> TileDataset:
    micrographs = [
        Micrograph(f"m{value}", np.full((64, 64), value, np.uint8), np.full((64, 64), label, np.uint8))
    ]
    return TileDataset(micrographs, 32, 10, seed, sampler="uniform", num_classes=5, augment="light")


def test_replay_tiles_come_from_the_old_data_in_their_share_reproducibly():
    tiles = ReplayTiles(_tiles(50, 0, seed=3), _tiles(200, 1, seed=4), 0.3)
    tiles.length = 2000
    assert len(tiles) == tiles.new.length == tiles.old.length == 2000
    tiles.set_epoch(1)
    old = [int(tiles[i][1][0, 0] == 1) for i in range(2000)]
    assert abs(np.mean(old) - 0.3) < 0.04
    assert [int(tiles[i][1][0, 0] == 1) for i in range(50)] == old[:50]  # the same index, the same tile
    tiles.set_epoch(2)
    assert tiles.new.epoch == tiles.old.epoch == 2
    assert [int(tiles[i][1][0, 0] == 1) for i in range(2000)] != old  # another epoch, other draws
    with pytest.raises(ValueError, match="between 0 and 1"):
        ReplayTiles(_tiles(50, 0, 0), _tiles(200, 1, 0), 1.0)


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    new = make_dataset(root / "new", groups=2, seed=1)
    old = make_dataset(root / "old", groups=3, seed=2)
    with pytest.raises(SystemExit) as info:
        main(["train", str(old), "--out", str(root / "base"), "--arch", "unet-scratch",
              "--encoder-weights", "none", "--epochs", "1", *FAST])  # fmt: skip
    assert info.value.code == 0
    return new, old, root / "base" / "best.pt"


def test_a_replay_run_trains_on_tiles_of_both_and_records_the_replayed_data(
    start, tmp_path, capsys, monkeypatch
):
    new, old, checkpoint = start
    made = []

    class Spy(ReplayTiles):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)
            self.served_old = 0

        def __getitem__(self, index):
            item = super().__getitem__(index)
            rng = np.random.default_rng([self.new.seed, self.new.epoch, index, 0x8E9])
            self.served_old += rng.random() < self.share
            return item

    monkeypatch.setattr(train_run, "ReplayTiles", Spy)
    out = tmp_path / "tuned"
    args = [
        new,
        "--out",
        out,
        "--init",
        checkpoint,
        "--replay",
        old,
        "--replay-share",
        "0.5",
        "--epochs",
        "2",
    ]
    code, text, err = run([*args, *FAST], capsys)
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())
    assert config["replay"] == str(old) and config["replay_share"] == 0.5 and config["replay_fields"] == 9
    assert sum(config["replay_pixel_fractions"]) == pytest.approx(1.0)
    assert "replay: 9 fields of" in text
    assert len(made) == 1 and len(made[0].old.micrographs) == 9 and len(made[0].new.micrographs) == 6
    assert made[0].served_old > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--replay", "MISSING"], "MISSING"),
        (["--replay", "OLD", "--replay-share", "1.5"], "--replay-share must be between 0 and 1"),
    ],
)
def test_a_bad_replay_is_one_line_and_exit_2(start, tmp_path, capsys, extra, message):
    new, old, checkpoint = start
    extra = [str(tmp_path / "missing") if e == "MISSING" else str(old) if e == "OLD" else e for e in extra]
    message = str(tmp_path / "missing") if message == "MISSING" else message
    code, _, err = run([new, "--out", tmp_path / "x", "--init", checkpoint, *extra, *FAST], capsys)
    assert code == 2 and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
