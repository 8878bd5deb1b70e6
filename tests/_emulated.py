"""Running a Python script here or with the CPUID of an AVX2-only CPU, for the tests that compare the two.

QEMU user mode (`qemu-x86_64 -cpu EPYC-Rome`, Debian's qemu-user) runs this machine's Python with the
CPUID of an AVX2-only AMD Zen 2: numpy, onnxruntime and OpenVINO then pick the kernels a lab PC without
AVX-512/VNNI picks, whatever CPU runs the test. ``MARKS`` skips such a test where QEMU is not installed
(`.ci/run` installs it) or the machine is not x86-64.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

QEMU = shutil.which("qemu-x86_64")
#: What QEMU emulates: an AVX2-only AMD Zen 2.
CPU = "EPYC-Rome"
MARKS = [
    pytest.mark.slow,
    pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 only"),
    pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not installed (apt-get install qemu-user)"),
]


def run_script(script: Path, args: list, emulate: bool, env: dict[str, str] | None = None) -> str:
    """Run ``python SCRIPT ARGS`` (under QEMU's AVX2-only CPU when ``emulate``) with ``env`` added to this
    process's environment; assert it succeeded and return its standard output."""
    command = [sys.executable, str(script), *map(str, args)]
    if emulate:
        command = [QEMU, "-cpu", CPU, *command]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env={**os.environ, **(env or {})}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout
