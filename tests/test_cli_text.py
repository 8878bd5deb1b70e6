"""Text that reaches the console is printed as it is, never read as markup.

File names, folder names and class names come from users and instruments; ``[/]`` or ``[bold]`` in them
once crashed the CLI with a rich MarkupError traceback (exit 1) or silently changed what was printed. Every
command is run here with such names, on its error path and on its success path.
"""

from __future__ import annotations

import numpy as np
import pytest

from _cli import run_semphase
from _runtime_models import build_blur_classifier, micrograph, with_class_names
from semphase.cli import common
from semphase.imageio import write_image

ODD = "x[/]y[bold]z"  # as a path: folder "x[" holding "]y[bold]z"
FILE = "m[bold]x[red]"  # a file name that rich would silently turn into styles
NAMES = ["Matrix", "[/]", "Void", "[bold]Repre", "Dilution"]


run = run_semphase


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m") / ODD
    return with_class_names(build_blur_classifier(folder / f"{ODD}.onnx", tile=64, overlap=16), NAMES)


@pytest.mark.parametrize(
    "argv",
    [
        ["segment", "{missing}.onnx", "{missing}.png", "--out", "{tmp}/o"],
        ["info", "{missing}.onnx"],
        ["watch", "{missing}", "--model", "{model}", "--out", "{tmp}/o", "--once"],
        ["score", "{missing}", "{missing}2"],
        ["data", "check", "{missing}"],
        ["export", "{missing}.pt", "--out", "{tmp}/o"],
        ["benchmark", "{missing}", "--data", "{missing}", "--out", "{tmp}/o"],
        ["evaluate", "{missing}.onnx", "{missing}", "--out", "{tmp}/o"],
    ],
    ids=lambda argv: " ".join(argv[:2]),
)
def test_a_missing_file_with_markup_in_its_name_is_named_literally(tmp_path, capsys, odd_model, argv):
    missing = tmp_path / ODD
    argv = [a.format(missing=missing, tmp=tmp_path, model=odd_model) for a in argv]
    code, _out, err = run(argv, capsys)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and ODD in err, err
    assert "Traceback" not in err and "MarkupError" not in err


def test_segment_info_and_watch_print_markup_like_names_as_text(tmp_path, capsys, odd_model, monkeypatch):
    monkeypatch.setattr(common.console, "width", 300)  # table cells unwrapped, so names are found whole
    inbox, out = tmp_path / f"in{ODD}", tmp_path / f"out{ODD}"
    write_image(inbox / f"{FILE}.png", micrograph(64, 64))

    code, stdout, err = run(["segment", odd_model, inbox, "--out", out], capsys)
    flat = "".join(stdout.split())  # the table may wrap long names
    assert code == 0, err
    assert "[/]" in flat and "[bold]Repre" in flat and f"{FILE}.png" in flat and f"out{ODD}" in flat

    code, stdout, err = run(["info", odd_model], capsys)
    flat = "".join(stdout.split())
    assert code == 0, err
    assert '"[/]"' in flat and "[bold]Repre" in flat and f"{ODD}.onnx" in flat

    argv = ["watch", inbox, "--model", odd_model, "--out", tmp_path / f"w{ODD}", "--once", "--settle", "0"]
    code, stdout, err = run(argv, capsys)
    assert code == 0, err
    assert f"{FILE}.png" in stdout and f"w{ODD}" in "".join(stdout.split())
    assert "Traceback" not in stdout + err


def test_data_check_prints_a_dataset_root_with_markup_as_text(tmp_path, capsys):
    root = tmp_path / f"ds{ODD}"
    for name in ("a.png", "b.png"):
        write_image(root / "images" / name, np.full((16, 16), 90, np.uint8))
        write_image(root / "masks" / name, np.ones((16, 16), np.uint8))
    code, stdout, err = run(["data", "check", root], capsys)
    assert code == 0, err + stdout
    assert f"ds{ODD}" in "".join(stdout.split())


@pytest.mark.parametrize(
    "command, extra", [("package", "interop"), ("serve", "serve"), ("segment", "cluster")]
)
def test_help_shows_the_extras_install_line_with_its_brackets(command, extra, capsys, monkeypatch):
    """``semphase[serve]`` in a help text is rich markup unless escaped: the brackets would vanish."""
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0 and f"semphase[{extra}]" in out, out
