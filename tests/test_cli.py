"""The command's contract with the shell: help, version, and one-line errors with exit code 2."""

import subprocess
import sys

import pytest

from semphase.cli.main import main


def run(args):
    return subprocess.run(
        [sys.executable, "-m", "semphase", *args], capture_output=True, text=True, timeout=120
    )


def test_module_and_help_work():
    out = run(["--help"])
    assert out.returncode == 0
    for command in (
        "synth",
        "data",
        "score",
        "train",
        "evaluate",
        "export",
        "info",
        "segment",
        "watch",
        "benchmark",
    ):
        assert command in out.stdout


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert "semphase" in capsys.readouterr().out


def test_unknown_command_exits_2_without_traceback():
    out = run(["no-such-command"])
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "No such command 'no-such-command'" in out.stderr


@pytest.mark.parametrize(
    "args, reason",
    [
        (["segment", "--batch", "0", "m.onnx", "a.png", "--out", "o"], "'--batch'"),
        (["export", "x.pt", "--tile", "100", "--out", "o"], "tile must be a positive multiple of 32"),
        (["segment", "m.onnx"], "Missing argument"),
    ],
)
def test_usage_errors_are_one_line_naming_the_option_and_the_help(args, reason, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    assert reason in err and f"(see 'semphase {args[0]} --help')" in err


def _label_folders(tmp_path):
    import cv2
    import numpy as np

    labels = np.zeros((16, 16), np.uint8)
    labels[4:, :] = 2
    for name in ("pred", "truth"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "a.png"), labels)
    return tmp_path / "pred", tmp_path / "truth"


def test_an_internal_error_is_one_line_with_exit_1_and_debug_shows_the_traceback(
    tmp_path, monkeypatch, capsys
):
    import semphase.metrics

    def broken(*args, **kwargs):
        raise RuntimeError("planted bug")

    pred, truth = _label_folders(tmp_path)
    monkeypatch.setattr(semphase.metrics.Scorer, "add", broken)
    monkeypatch.delenv("SEMPHASE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as info:
        main(["score", str(pred), str(truth)])
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert err.count("\n") == 1 and "internal error: RuntimeError: planted bug" in err
    assert "SEMPHASE_DEBUG=1" in err and "Traceback" not in err
    monkeypatch.setenv("SEMPHASE_DEBUG", "1")
    with pytest.raises(RuntimeError, match="planted bug"):  # the traceback reaches the developer
        main(["score", str(pred), str(truth)])


def test_segment_and_watch_share_every_segmentation_option_with_the_same_help_and_default():
    import typer.main

    from semphase.cli.main import app

    commands = typer.main.get_command(app).commands
    shared = [
        "--tile",
        "--overlap",
        "--batch",
        "--window",
        "--threads",
        "--provider",
        "--databar",
        "--pixel-size-um",
        "--normalize",
        "--uncertainty",
        "--probs",
        "--tta",
        "--verify",
        "--max-megapixels",
    ]

    def options(command):
        return {p.opts[0]: (p.help, p.default, p.secondary_opts) for p in commands[command].params if p.opts}

    segment, watch = options("segment"), options("watch")
    for name in shared:
        assert name in segment and name in watch, name
        assert segment[name] == watch[name], name
