"""What a ledger writes besides the outputs: failure notes, output lists, and crash clean-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from semphase.imageio import is_tagged_temporary
from semphase.runtime.ledger.files import FileState

FAILED_DIR = "failed"


def failed_note_path(out_dir: Path, rel: str) -> Path:
    """``out_dir/failed/<rel>.txt``: the input's full name (suffix kept) so two failures never collide."""
    return out_dir.joinpath(FAILED_DIR, *rel.split("/")).with_name(rel.rsplit("/", 1)[-1] + ".txt")


def failed_note_text(state: FileState, reason: str) -> str:
    """The human-readable failure note: reason, file, size, mtime, when."""
    mtime = datetime.fromtimestamp(state.mtime_ns / 1e9).astimezone().isoformat(timespec="seconds")
    now = datetime.now().astimezone().isoformat(timespec="seconds")
    # file names with undecodable bytes (Linux) must not make the note itself unwritable
    name = state.rel.encode("utf-8", "backslashreplace").decode("utf-8")
    return (
        f"reason: {reason}\n"
        f"file: {name}\n"
        f"size: {state.size} bytes\n"
        f"mtime: {mtime} (mtime_ns {state.mtime_ns})\n"
        f"recorded: {now}\n"
        "The watcher retries this file only when it changes (new size or modification time).\n"
    )


def output_paths(result: Mapping[str, Any], out_dir: Path) -> list[str]:
    """The output files named in a segment_file result, relative to ``out_dir``, ``/``-separated."""
    found: list[str] = []
    for key, value in result.get("outputs", {}).items():
        if isinstance(value, str | os.PathLike) and key != "dir":
            found.append(_relative(Path(value), out_dir))
    return found


def _relative(path: Path, out_dir: Path) -> str:
    try:
        return Path(os.path.relpath(path, out_dir)).as_posix()
    except ValueError:  # another drive on Windows
        return path.as_posix()


def image_megapixels(result: Mapping[str, Any]) -> float | None:
    """Megapixels of the segmented image, from the result's width and height, when it states them."""
    width, height = result.get("width"), result.get("height")
    if isinstance(width, int) and isinstance(height, int):
        return width * height / 1e6
    return None


def remove_stale_temporaries(folder: Path, tag: str) -> int:
    """Delete the temporaries a dead watcher with owner ``tag`` left under ``folder``; returns how many.

    Only files named by :func:`semphase.imageio.temporary_beside` under ``tagged_temporaries(tag)`` are
    removed, and only while this watcher holds the lock that tag stands for: their writer is provably gone.
    Every other ``.part`` file (a ``semphase segment`` writing into a subfolder now, another program's
    upload in an inbox inside ``--out``) belongs to someone else and stays.
    """
    removed = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if is_tagged_temporary(name, tag):
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed
