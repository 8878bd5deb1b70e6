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
