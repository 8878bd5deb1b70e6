"""`semphase segment` end to end: inputs, outputs, summary.csv, exit codes, bad input, and no torch."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _runtime_models import build_blur_classifier, micrograph, with_class_names
from semphase.cli.main import main
from semphase.imageio import read_label, write_image
from test_layering import BLOCKER, TORCH_NAMES


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_blur_classifier(tmp_path_factory.mktemp("m") / "blur.onnx", tile=64, overlap=16)


def run(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["segment", *[str(a) for a in args]])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_folder_and_glob_inputs_give_outputs_a_summary_and_a_table(tmp_path, model, capsys):
    for i in range(2):
        write_image(tmp_path / "in" / f"m{i}.png", micrograph(80, 100, seed=i))
    write_image(tmp_path / "more" / "z.tif", micrograph(70, 90, seed=5))
    (tmp_path / "in" / "readme.txt").write_text("not an image")
    code, out, err = run(
        [model, tmp_path / "in", tmp_path / "more" / "*.tif", "--out", tmp_path / "out"], capsys
    )
    assert code == 0, err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(
        ["m0.json", "m0_mask.png", "m0_overlay.png", "m1.json", "m1_mask.png", "m1_overlay.png"]
        + ["z.json", "z_mask.png", "z_overlay.png", "summary.csv"]
    )
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert [Path(r["input"]).name for r in rows] == ["m0.png", "m1.png", "z.tif"]
    assert all(r["status"] == "done" for r in rows)
    fractions = [
        float(rows[0][f"{n}_fraction"]) for n in ("Matrix", "Carbide", "Void", "Reprecipitate", "Dilution")
    ]
    assert sum(fractions) == pytest.approx(1.0, abs=1e-5)
    assert "Phase fractions" in out and "m0.png" in out


def test_bad_inputs_are_named_the_others_still_run_and_the_exit_code_is_2(tmp_path, model, capsys):
    write_image(tmp_path / "good.png", micrograph(64, 64, seed=1))
    (tmp_path / "empty.tif").write_bytes(b"")
    good = (tmp_path / "good.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 3])
    (tmp_path / "text.bmp").write_text("hello, not a bitmap")
    args = [model, tmp_path / "empty.tif", tmp_path / "cut.png", tmp_path / "good.png", tmp_path / "text.bmp"]
    code, out, err = run([*args, tmp_path / "missing.tif", "--out", tmp_path / "out", "--quiet"], capsys)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    for name in ("empty.tif", "cut.png", "text.bmp", "missing.tif"):
        assert sum(name in line for line in lines) == 1, err
    assert "4 input(s) failed, 1 succeeded" in err
    assert read_label(tmp_path / "out" / "good_mask.png").shape == (64, 64)
    rows = {Path(r["input"]).name: r for r in csv.DictReader((tmp_path / "out" / "summary.csv").open())}
    assert rows["good.png"]["status"] == "done" and rows["cut.png"]["status"] == "failed"
    assert "empty" in rows["empty.tif"]["reason"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_a_foreign_model_and_an_unwritable_output_folder_are_one_line_exit_2(tmp_path, model, capsys):
    write_image(tmp_path / "m.png", micrograph(64, 64))
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07garbage")
    code, _, err = run([tmp_path / "model.onnx", tmp_path / "m.png", "--out", tmp_path / "o"], capsys)
    assert code == 2 and err.count("\n") == 1 and "model.onnx" in err
    (tmp_path / "file").write_text("x")
    code, _, err = run([model, tmp_path / "m.png", "--out", tmp_path / "file" / "sub"], capsys)
    assert code == 2 and err.count("\n") == 1 and "cannot be written" in err


# `python -m semphase ...` with torch and friends unimportable (the layering test's import blocker).
BLOCKED = (
    BLOCKER
    + """
sys.argv = ['semphase'] + sys.argv[1:]
import runpy
runpy.run_module('semphase', run_name='__main__')
"""
)


def test_segment_runs_with_torch_unimportable(tmp_path, model):
    write_image(tmp_path / "m.png", micrograph(96, 96))
    code = BLOCKED.format(names=set(TORCH_NAMES))
    args = ["segment", str(model), str(tmp_path / "m.png"), "--out", str(tmp_path / "out"), "--uncertainty"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "m_mask.png").exists() and (tmp_path / "out" / "m_uncertainty.png").exists()


def _with_classes(tmp_path, names) -> Path:
    path = build_blur_classifier(tmp_path / f"m{abs(hash(tuple(names)))}.onnx", tile=64, overlap=16)
    return with_class_names(path, names)


def test_markup_in_class_names_and_paths_is_printed_as_text(tmp_path, capsys):
    names = ["Matrix", "[/]", "Void", "[bold]Repre", "Dilution"]
    model = _with_classes(tmp_path, names)
    write_image(tmp_path / "m.png", np.full((64, 64), 128, np.uint8))
    out = tmp_path / "o[bold]x"
    code, stdout, err = run([model, tmp_path / "m.png", "--out", out], capsys)
    assert code == 0, err
    flat = "".join(stdout.split())
    assert "[/]" in flat and "[bold]Repre" in flat and "o[bold]x" in flat


@pytest.mark.parametrize(
    "names, reason",
    [
        (["Matrix", "\x1b[31mred", "Void", "R", "D"], "printable"),
        (["Matrix", "Matrix", "Void", "R", "D"], "unique"),
        (["Matrix", " ", "Void", "R", "D"], "not blank"),
    ],
)
def test_class_names_with_control_characters_duplicates_or_blanks_are_refused(
    tmp_path, capsys, names, reason
):
    from semphase.imageio import write_image

    model = _with_classes(tmp_path, names)
    write_image(tmp_path / "m.png", np.full((64, 64), 128, np.uint8))
    code, _, err = run([model, tmp_path / "m.png", "--out", tmp_path / "o"], capsys)
    assert code == 2 and err.count("\n") == 1 and reason in err and "\x1b" not in err


def test_sigterm_mid_segmentation_removes_partial_outputs_and_says_so(tmp_path, capsys, monkeypatch):
    # SIGTERM (a service manager, kill) arrives while the third batch of tiles runs: the command unwinds
    # like Ctrl-C, removes its temporaries, keeps the earlier finished input, one line, exit 2.
    import os
    import signal

    from semphase.runtime.model import SegmentationModel

    model = build_blur_classifier(tmp_path / "m.onnx", tile=64, overlap=16)
    write_image(tmp_path / "in" / "a.png", micrograph(64, 64))
    write_image(tmp_path / "in" / "b.png", micrograph(256, 256, seed=1))
    real, calls = SegmentationModel.logits, []

    def logits(self, batch):
        calls.append(batch.shape)
        if len(calls) == 6:  # a.png took one call (plus the load probe); b.png is under way
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, batch)

    monkeypatch.setattr(SegmentationModel, "logits", logits)
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = run(
        [model, tmp_path / "in" / "a.png", tmp_path / "in" / "b.png", "--out", tmp_path / "o", "--probs"],
        capsys,
    )
    assert code == 2 and err.count("\n") == 1 and "stopped (SIGTERM)" in err, err
    left = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert not [n for n in left if n.endswith(".part")], left
    assert "a_mask.png" in left and "b_mask.png" not in left
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the command's only


def test_an_input_that_is_also_an_output_of_the_run_is_refused_before_anything_is_written(
    tmp_path, model, capsys
):
    out = tmp_path / "out"
    write_image(tmp_path / "a.png", micrograph(64, 64, seed=1))
    out.mkdir()
    (out / "summary.csv").write_text("the previous run's results\n")
    write_image(out / "a_mask.png", micrograph(64, 64, seed=2))  # a user's file that happens to look so
    for clash in ("summary.csv", "a_mask.png"):
        before = {p.name: p.read_bytes() for p in out.iterdir()}
        code, _, err = run([model, tmp_path / "a.png", out / clash, "--out", out], capsys)
        assert code == 2 and err.count("\n") == 1
        assert f"{out / clash}: is also an output of this run ({clash})" in err
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
