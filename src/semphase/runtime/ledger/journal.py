"""The journal: one JSON line per outcome, appended and fsync'ed, readable after any crash.

``DIR/watch-journal.jsonl`` (a watcher's) and ``DIR/segment-journal.jsonl`` (``segment --cluster``'s) are
an output folder's memory across restarts. Each line records one outcome for one
input file::

    {"file": "sub/a.tif", "size": 1234, "mtime_ns": 1700000000000000000, "status": "done",
     "reason": null, "seconds": 1.23, "outputs": ["sub/a_mask.png", ...], "time": "2026-...+01:00"}

A file counts as handled when its latest line has the same path, size and mtime as the file on disk; a
file that changed since is processed again. A crash mid-write can leave a torn last line; reading skips
any line that is not a complete JSON object, and appending first terminates such a fragment so the next
line starts clean.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from semphase.errors import InputError

#: The watcher's journal (keys: inbox-relative paths).
WATCH_JOURNAL = "watch-journal.jsonl"
#: A batch run's journal (``segment --cluster``; keys: absolute paths).
SEGMENT_JOURNAL = "segment-journal.jsonl"

DONE = "done"
FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """The latest journal line for one input file.

    Attributes
    ----------
    file : str
        Path relative to the inbox, ``/``-separated.
    size, mtime_ns : int
        The file's size in bytes and modification time (ns) when it was handled.
    status : str
        ``"done"`` or ``"failed"``.
    moved_to : str or None
        Where ``--move-done`` moves (or moved) the original, relative to the move folder.
    """

    file: str
    size: int
    mtime_ns: int
    status: str
    moved_to: str | None = None

    def matches(self, size: int, mtime_ns: int) -> bool:
        """True when the file on disk is the one this line describes."""
        return self.size == size and self.mtime_ns == mtime_ns


def iter_lines(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield every complete, well-formed line of a journal as a dict; skip torn or foreign lines.

    A missing journal yields nothing. A line counts when it is a JSON object with ``file`` (str),
    ``size`` and ``mtime_ns`` (int) and ``status`` in {done, failed}.
    """
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise InputError(f"cannot read the journal ({exc.strerror or exc})", path) from None
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue  # a torn line from a crash mid-write
        if _well_formed(record):
            yield record


def _well_formed(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and isinstance(record.get("file"), str)
        and isinstance(record.get("size"), int)
        and isinstance(record.get("mtime_ns"), int)
        and record.get("status") in (DONE, FAILED)
    )


def read_outcomes(path: str | os.PathLike) -> dict[str, Outcome]:
    """The latest outcome per input file (later lines win), keyed by the inbox-relative path."""
    outcomes: dict[str, Outcome] = {}
    for record in iter_lines(path):
        moved = record.get("moved_to")
        outcomes[record["file"]] = Outcome(
            record["file"],
            record["size"],
            record["mtime_ns"],
            record["status"],
            moved if isinstance(moved, str) else None,
        )
    return outcomes


class Journal:
    """Append-only writer of ``watch-journal.jsonl``; each line is flushed and fsync'ed before returning.

    Only the holder of the output folder's lock writes the journal, so lines never interleave.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fh: IO[bytes] | None = None

    def open(self) -> Journal:
        """Open for appending; terminate a torn last line left by a crash so it stays one bad line."""
        try:
            self._fh = open(self.path, "ab")  # noqa: SIM115 - held open for the watcher's lifetime
            if self._fh.tell() > 0 and not self._ends_with_newline():
                self._fh.write(b"\n")
                self._sync()
        except OSError as exc:
            raise InputError(f"cannot write the journal ({exc.strerror or exc})", self.path) from None
        return self

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def _sync(self) -> None:
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def append(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write one outcome line (``time`` is added when missing) and make it durable; returns the line."""
        if self._fh is None:
            raise RuntimeError("journal is not open")
        record = dict(record)
        record.setdefault("time", datetime.now().astimezone().isoformat(timespec="seconds"))
        # ASCII escapes keep any file name (even undecodable bytes on Linux) round-trippable
        line = json.dumps(record, separators=(", ", ": ")) + "\n"
        try:
            self._fh.write(line.encode("utf-8"))
            self._sync()
        except OSError as exc:
            raise InputError(f"cannot write the journal ({exc.strerror or exc})", self.path) from None
        return record

    def close(self) -> None:
        """Close the file (lines are already durable)."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Journal:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
