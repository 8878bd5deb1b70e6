"""Running the ``semphase`` command in-process, as the tests of its messages and exit codes do."""

from __future__ import annotations

import pytest

from semphase.cli.main import main


def run_semphase(argv, capsys) -> tuple[int, str, str]:
    """``semphase ARGV`` -> (exit code, stdout, stderr); every argument is passed as ``str``."""
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err
