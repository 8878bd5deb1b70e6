"""An input file as the ledger knows it: its key, location and signature (size, mtime)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileState:
    """One candidate file as seen by a scan.

    Attributes
    ----------
    rel : str
        The journal key: the path relative to the inbox (watch), ``/``-separated.
    location : str
        Full path as listed (:attr:`path` gives it as a Path).
    size, mtime_ns : int
        Size in bytes and modification time in ns; together the file's signature.
    """

    rel: str
    location: str
    size: int
    mtime_ns: int

    @property
    def path(self) -> Path:
        """Full path."""
        return Path(self.location)

    @property
    def signature(self) -> tuple[int, int]:
        """``(size, mtime_ns)``: a file whose signature changed is a different file."""
        return (self.size, self.mtime_ns)


def file_signature(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file now (:attr:`FileState.signature`'s form), or None when it cannot be
    stat'ed: the batch engine and the watcher compare it before and after segmenting."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)
