"""``--move-done``: moving an original out of the inbox after its done line is durable, resumably.

Order per file: outputs (atomic) -> done line (fsync'ed) -> move. A crash before the done line means the
file is processed again; a crash after it leaves the file in the inbox with a done line, and the next
start only finishes the move. A move across file systems copies to a ``.NAME.*.part`` temporary, renames
it into place and only then deletes the source, so a crash at any point leaves the original in at least
one complete place; a finished copy found at the destination (byte-identical) is recognised and
the source simply removed (only when byte-identical).
"""

from __future__ import annotations

import errno
import filecmp
import os
import shutil
from pathlib import Path

from semphase.imageio import atomic_path


def _identical(a: Path, b: Path) -> bool:
    # Byte comparison, not size+mtime: uncompressed TIFFs of one detector all have the same size, and
    # dropping a source that merely looks like the archived copy would lose an original.
    return a.stat().st_size == b.stat().st_size and filecmp.cmp(a, b, shallow=False)


def plan_destination(source: Path, move_dir: Path, rel: str) -> str:
    """Where ``source`` (inbox-relative ``rel``) goes under ``move_dir``, relative to it, ``/``-separated.

    The same relative path when free, or when it already holds this very file (a move interrupted after
    the copy); otherwise ``name (2).ext``, ``name (3).ext``, ... so an earlier original is never
    overwritten.
    """
    parent, _, name = rel.rpartition("/")
    stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
    n = 1
    while True:
        candidate_name = name if n == 1 else f"{stem} ({n}){dot}{ext}"
        candidate = f"{parent}/{candidate_name}" if parent else candidate_name
        target = move_dir / candidate
        if not target.exists() or _identical(source, target):
            return candidate
        n += 1


def move_original(source: Path, destination: Path) -> None:
    """Move ``source`` to ``destination`` without ever losing it; resumes an interrupted move.

    Raises
    ------
    OSError
        When the move is impossible (permissions, disk full); the source is then still in place.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        if not _identical(source, destination):
            raise FileExistsError(errno.EEXIST, "a different file is already there", str(destination))
        source.unlink()  # the copy of an interrupted move finished; only the source was left
        return
    try:
        os.rename(source, destination)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    with atomic_path(destination) as tmp:
        shutil.copy2(source, tmp)
        with open(tmp, "r+b") as fh:  # Windows fsyncs only writable handles
            os.fsync(fh.fileno())
    source.unlink()
