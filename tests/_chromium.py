"""Headless Chromium for the tests that open a report the way a person would (skipped when absent)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path


def chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def run_chromium(page: Path, *args: str) -> subprocess.CompletedProcess:
    """Open ``page`` offline in headless Chromium with a throw-away profile; ``args`` say what to do
    (``--dump-dom``, ``--screenshot=...``)."""
    with tempfile.TemporaryDirectory(prefix="semphase-chromium-") as profile:
        return subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                f"--user-data-dir={profile}",
                *args,
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
