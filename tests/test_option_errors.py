"""A bad option is one error, found once, before any file is touched, in one format.

``error: <the option and why> (see 'semphase CMD --help')``, exit code 2, for click's own checks and for
semphase's (a --tile the model cannot take, an unknown --window) alike. Before, a bad --tile was blamed on
every input in turn and `watch` wrote a failed/ note for each inbox file.
"""

from __future__ import annotations

import numpy as np
import pytest

from _cli import run_semphase
from _runtime_models import build_blur_classifier, micrograph
from semphase.imageio import write_image

run = run_semphase


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_blur_classifier(tmp_path_factory.mktemp("m") / "blur.onnx", tile=64, overlap=16)


@pytest.fixture
def inbox(tmp_path):
    for i in range(3):
        write_image(tmp_path / "in" / f"m{i}.png", micrograph(64, 64, seed=i))
    return tmp_path / "in"


def assert_usage_line(code: int, err: str, command: str, option: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {option}") or f"'{option}'" in err, err
    assert err.rstrip().endswith(f"(see 'semphase {command} --help')"), err


@pytest.mark.parametrize(
    "extra, option",
    [
        (["--tile", "100"], "--tile"),  # not a multiple of the model's 32: known only once it is loaded
        (["--overlap", "64"], "--overlap"),
        (["--window", "foo"], "--window"),
        (["--batch", "0"], "--batch"),
        (["--databar", "half"], "--databar"),
        (["--max-megapixels", "0"], "--max-megapixels"),
    ],
)
def test_segment_bad_option_fails_once_before_any_file(tmp_path, capsys, model, inbox, extra, option):
    out = tmp_path / "out"
    code, stdout, err = run(
        ["segment", model, inbox / "m0.png", inbox / "m1.png", "--out", out, *extra], capsys
    )
    assert_usage_line(code, err, "segment", option)
    assert "m0.png" not in err and "m1.png" not in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("extra, option", [(["--tile", "100"], "--tile"), (["--window", "x"], None)])
def test_watch_bad_option_fails_once_and_writes_no_failed_notes(
    tmp_path, capsys, model, inbox, extra, option
):
    out, log = tmp_path / "out", tmp_path / "watch.log"
    argv = ["watch", inbox, "--model", model, "--out", out, "--once", "--settle", "0", "--log", log, *extra]
    code, stdout, err = run(argv, capsys)
    if option is None:  # watch has no --window: click's own usage error, in the same form
        assert code == 2 and err.count("\n") == 1 and "(see 'semphase watch --help')" in err
        return
    assert_usage_line(code, err, "watch", option)
    # the log says the flag too, as the console does (the library's error names the argument, tile)
    assert f"error    - {option} must be" in log.read_text()
    assert not (out / "failed").exists()
    journal = out / "watch-journal.jsonl"
    assert not journal.exists() or journal.read_text().strip() == ""
    assert sorted(p.name for p in inbox.iterdir()) == ["m0.png", "m1.png", "m2.png"]


def test_a_bad_size_limit_in_the_environment_is_one_line(tmp_path, capsys, model, inbox, monkeypatch):
    monkeypatch.setenv("SEMPHASE_MAX_MEGAPIXELS", "lots")
    code, _, err = run(["segment", model, inbox, "--out", tmp_path / "out"], capsys)
    assert code == 2 and err.count("\n") == 1 and "SEMPHASE_MAX_MEGAPIXELS" in err and "'lots'" in err


def test_export_and_train_options_use_the_same_form(tmp_path, capsys):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"not read: the options fail first")
    code, _, err = run(["export", checkpoint, "--out", tmp_path / "o", "--tile", "100"], capsys)
    assert_usage_line(code, err, "export", "--tile")
    assert not (tmp_path / "o").exists()
    code, _, err = run(["train", tmp_path / "ds", "--out", tmp_path / "run", "--tile", "100"], capsys)
    assert_usage_line(code, err, "train", "--tile")
    assert not (tmp_path / "run").exists()


def test_data_check_bad_option_form(tmp_path, capsys):
    (tmp_path / "ds" / "images").mkdir(parents=True)
    write_image(tmp_path / "ds" / "images" / "a.png", np.zeros((8, 8), np.uint8))
    code, _, err = run(["data", "check", tmp_path / "ds", "--max-megapixels", "-1"], capsys)
    assert_usage_line(code, err, "data check", "--max-megapixels")
