"""Run a test in a child pytest process instead of this one.

For tests that load OpenVINO: its runtime keeps threads (and signal state) in the process for good, and
a later test of this session that sends SIGTERM to its own process (tests/test_segment_cli.py) then hung
or crashed the whole run (seen under `make test`). In a child, OpenVINO leaves with the child.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_CHILD = "SEMPHASE_ISOLATED_TEST"


def ran_in_child(request) -> bool:
    """In the session's process: run this test in a child pytest, assert it passed, return True (the
    caller returns). In that child: return False (the caller runs the test's body)."""
    node = request.node.nodeid
    if os.environ.get(_CHILD) == node:
        return False
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", node],
        cwd=ROOT,
        env={**os.environ, _CHILD: node},
        capture_output=True,
        text=True,
        timeout=900,
    )
    said = f"{done.stdout[-4000:]}{done.stderr[-2000:]}"
    assert done.returncode == 0, f"{node} failed in its child process:\n{said}"
    return True
