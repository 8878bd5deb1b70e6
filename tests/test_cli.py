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
