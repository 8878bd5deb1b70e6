"""``--time-limit``: a run stops after the epoch that reaches its budget and is finished like any other.

The run reads every time from an injectable clock; these tests advance a fake clock by a fixed number of
seconds per epoch (at validation, once per epoch), so no test depends on how fast the machine is.
"""

from __future__ import annotations

import csv
import json
import math

import pytest

from semphase.progress import SILENT, Silent
from semphase.train import rundir
from semphase.train.options import TrainOptions
from semphase.train.setup import resume_options
from test_train_fixtures import make_dataset
from test_train_run import SCRATCH, run_cli

EPOCH_SECONDS = 60.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("time-limit-data") / "ds", groups=4)


@pytest.fixture
def epoch_clock(monkeypatch):
    """A clock that stands still except that each epoch's validation takes EPOCH_SECONDS."""
    import semphase.train.run as run_module

    now = [1000.0]
    real_validate = run_module.validate

    def validate_taking_a_minute(*args, **kwargs):
        now[0] += EPOCH_SECONDS
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(run_module, "validate", validate_taking_a_minute)
    return lambda: now[0]


def tiny_options(dataset, out, **changes) -> TrainOptions:
    options = TrainOptions(
        dataset=str(dataset),
        out=str(out),
        arch="unet-scratch",
        encoder_weights="none",
        tile=32,
        batch_size=2,
        steps_per_epoch=2,
        threads=1,
        precision="fp32",
        epochs=10,
    )
    for name, value in changes.items():
        setattr(options, name, value)
    return options.validate()


class Lines(Silent):
    """Collects the log lines a training run reports."""

    def __init__(self) -> None:
        self.text = ""

    def log(self, message: str) -> None:
        self.text += message + "\n"


def history(run_dir) -> list[dict]:
    with open(run_dir / rundir.HISTORY_NAME, newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_run_stops_after_the_epoch_that_reaches_the_limit_and_is_finished_as_usual(
    dataset, tmp_path, epoch_clock
):
    from semphase.train.run import train

    run = tmp_path / "run"
    lines = Lines()
    result = train(tiny_options(dataset, run, time_limit=2.5), lines, epoch_clock)
    # 60 s per epoch: 120 s < 150 s after epoch 2, 180 s >= 150 s after epoch 3
    assert result["stopped"] == "time limit" and result["epochs_run"] == 3
    assert result["train_seconds"] == pytest.approx(180.0)
    assert "time limit: 3.0 min of training reached --time-limit 2.5 min after epoch 3 of 10" in lines.text
    assert json.loads((run / "config.json").read_text())["time_limit"] == 2.5
    rows = history(run)
    assert [float(r["elapsed_seconds"]) for r in rows] == [60.0, 120.0, 180.0]
    assert [float(r["seconds"]) for r in rows] == [60.0, 60.0, 60.0]
    for name in ("best.pt", "last.pt", "metrics_test.json", "training_curves.png"):
        assert (run / name).is_file(), name
    assert result["test"]["summary"]["miou"]["mean"] >= 0


def test_resume_has_a_fresh_budget_and_no_inherited_limit(dataset, tmp_path, epoch_clock):
    from semphase.train.run import train

    run = tmp_path / "run"
    quiet = SILENT
    assert train(tiny_options(dataset, run, time_limit=1.0), quiet, epoch_clock)["epochs_run"] == 1
    # a fresh 2-minute budget: two more epochs, although the run has trained for a minute already
    again = train(resume_options(run, {"time_limit": 2.0}), quiet, epoch_clock)
    assert again["stopped"] == "time limit" and again["epochs_run"] == 3
    # no --time-limit on resume: no limit, the run goes on to --epochs
    done = train(resume_options(run, {"epochs": 4}), quiet, epoch_clock)
    assert done["stopped"] == "epochs" and done["epochs_run"] == 4
    assert json.loads((run / "config.json").read_text())["time_limit"] is None
    assert [float(r["elapsed_seconds"]) for r in history(run)] == [60.0, 120.0, 180.0, 240.0]


def test_the_cli_records_the_limit_and_says_why_it_stopped(dataset, tmp_path, capsys):
    # a budget far below one epoch's real time, so the first epoch always reaches it
    run = tmp_path / "run"
    code, out, err = run_cli(
        [dataset, "--out", run, *SCRATCH, "--epochs", "5", "--time-limit", "1e-6"], capsys
    )
    assert code == 0, err
    assert "time limit: " in out and "done: 1 epochs (time limit)" in out
    assert json.loads((run / "config.json").read_text())["time_limit"] == 1e-6
    (row,) = history(run)
    assert float(row["elapsed_seconds"]) >= float(row["seconds"]) > 0
    assert (run / "best.pt").is_file() and (run / "metrics_test.json").is_file()


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_a_time_limit_that_is_not_positive_is_refused(dataset, tmp_path, capsys, value):
    code, _, err = run_cli([dataset, "--out", tmp_path / "run", *SCRATCH, f"--time-limit={value}"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "--time-limit must be a number of minutes > 0" in lines[0]
    assert not (tmp_path / "run").exists()


def test_histories_without_the_elapsed_column_still_read_and_resume(tmp_path):
    old = "epoch,train_loss,val_loss,val_miou,lr,lr_encoder,trainable_stages,seconds\n"
    old += "1,0.9,0.8,0.5,0.001,,all,20.5\n2,0.7,0.6,0.6,0.001,,all,21.5\n"
    (tmp_path / rundir.HISTORY_NAME).write_text(old)
    rows = rundir.read_history(tmp_path, 2)
    assert [r["epoch"] for r in rows] == [1, 2] and "elapsed_seconds" not in rows[0]
    # the run's earlier training time: the epochs' own seconds, when nothing better was recorded
    assert rundir.training_seconds(rows) == pytest.approx(42.0)
    rows.append({**rows[-1], "epoch": 3, "seconds": 20.0, "elapsed_seconds": 62.5})
    rundir.write_history(tmp_path, rundir.history_columns([]), rows)
    reread = rundir.read_history(tmp_path, 3)
    assert math.isnan(reread[0]["elapsed_seconds"]) and reread[2]["elapsed_seconds"] == 62.5
    assert rundir.training_seconds(reread) == 62.5
    assert rundir.training_seconds([]) == 0.0
