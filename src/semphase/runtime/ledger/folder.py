"""An output folder's ledger: who writes it (the lock), what is done (the journal), what failed and why
(``failed/`` notes), and the temporaries a dead writer left.

One :class:`Ledger` per run that writes a folder exactly once per input: ``segment --cluster`` (through
:func:`semphase.runtime.run.segment_many`) and the watcher. Opening it takes the folder's lock (one writer
at a time, released by the OS however the process ends), removes the temporaries that only a writer
holding that lock can have left (their owner is provably dead), and reads the journal back; recording an
outcome writes one fsync'ed journal line (and for a failure its note) before anyone is told.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from semphase.errors import InputError
from semphase.imageio import write_text_atomic
from semphase.runtime.ledger.files import FileState
from semphase.runtime.ledger.journal import DONE, FAILED, Journal, Outcome, read_outcomes
from semphase.runtime.ledger.lock import OutputFolderLock
from semphase.runtime.ledger.notes import failed_note_path, failed_note_text, remove_stale_temporaries


def temporary_tag(out_dir: str | os.PathLike, owner: str) -> str:
    """The tag of the temporaries ``owner`` (``watch``, ``cluster``) writes while holding ``out_dir``'s
    lock: ``semphase-OWNER-`` and 8 hex digits of the folder's real path."""
    digest = hashlib.sha256(os.path.realpath(out_dir).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"semphase-{owner}-{digest}"


class Ledger:
    """The lock, journal, failure notes and temporaries of one output folder.

    Parameters
    ----------
    out_dir : path
        The output folder (created when missing).
    journal_name : str
        :data:`~semphase.runtime.ledger.journal.WATCH_JOURNAL` or
        :data:`~semphase.runtime.ledger.journal.SEGMENT_JOURNAL`.
    owner : str
        Who writes (``watch``, ``cluster``): names the temporaries' tag (:func:`temporary_tag`).
    extra_folders : sequence of path
        Other folders this writer puts temporaries in (the watcher's ``--move-done``).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        journal_name: str,
        owner: str,
        extra_folders: Sequence[str | os.PathLike] = (),
    ) -> None:
        self.out_dir = Path(out_dir)
        self.lock = OutputFolderLock(self.out_dir)
        self.journal = Journal(self.out_dir / journal_name)
        self.tag = temporary_tag(self.out_dir, owner)
        self.extra_folders = [Path(f) for f in extra_folders]
        #: the latest outcome per journal key, as read at :meth:`open` and recorded since
        self.outcomes: dict[str, Outcome] = {}

    @property
    def journal_path(self) -> Path:
        """``out_dir/journal_name``."""
        return self.journal.path

    def open(self) -> int:
        """Take the lock (raises :class:`~semphase.runtime.ledger.lock.FolderLocked`), remove the stale
        temporaries, read the journal; returns how many temporaries were removed."""
        self.lock.acquire()
        try:
            removed = remove_stale_temporaries(self.out_dir, self.tag)
            for folder in self.extra_folders:
                if folder.is_dir():
                    removed += remove_stale_temporaries(folder, self.tag)
            self.outcomes = read_outcomes(self.journal.path)
            self.journal.open()
        except BaseException:
            self.journal.close()
            self.lock.release()
            raise
        return removed

    def close(self) -> None:
        """Close the journal (its lines are durable already) and release the lock."""
        self.journal.close()
        self.lock.release()

    def __enter__(self) -> Ledger:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def done(self, key: str, signature: tuple[int, int]) -> bool:
        """True when ``key``'s latest outcome is done with this signature (size, mtime)."""
        outcome = self.outcomes.get(key)
        return outcome is not None and outcome.status == DONE and outcome.matches(*signature)

    def handled(self, key: str, signature: tuple[int, int]) -> Outcome | None:
        """``key``'s latest outcome (done or failed) when it is for this signature, else None."""
        outcome = self.outcomes.get(key)
        return outcome if outcome is not None and outcome.matches(*signature) else None

    def remove_temporaries(self) -> int:
        """Remove this writer's temporaries now (a batch's end: those its killed workers left)."""
        return remove_stale_temporaries(self.out_dir, self.tag)

    def record_done(
        self,
        key: str,
        signature: tuple[int, int],
        seconds: float,
        outputs: list[str],
        note_name: str | None = None,
        **extra: Any,
    ) -> dict:
        """Journal ``key`` as done; removes an older failure note ``note_name`` (the watcher's); returns
        the line. ``extra`` fields (``moved_to``, ``worker``) follow the standard ones."""
        if note_name is not None:
            with contextlib.suppress(FileNotFoundError):
                failed_note_path(self.out_dir, note_name).unlink()
        line = _line(key, signature, DONE, None, seconds, outputs, extra)
        self.journal.append(line)
        self.outcomes[key] = Outcome(key, signature[0], signature[1], DONE, extra.get("moved_to"))
        return line

    def record_failed(
        self, key: str, state: FileState, reason: str, seconds: float, strict: bool = True, **extra: Any
    ) -> dict:
        """Write ``failed/<state.rel>.txt`` and journal ``key`` as failed; returns the line. With ``strict``
        False a note that cannot be written is skipped (the journal line still says why)."""
        try:
            write_text_atomic(failed_note_path(self.out_dir, state.rel), failed_note_text(state, reason))
        except InputError:
            if strict:
                raise
        line = _line(key, state.signature, FAILED, reason, seconds, [], extra)
        self.journal.append(line)
        self.outcomes[key] = Outcome(key, state.size, state.mtime_ns, FAILED)
        return line


def _line(
    key: str,
    signature: tuple[int, int],
    status: str,
    reason: str | None,
    seconds: float,
    outputs: list[str],
    extra: dict,
) -> dict:
    return {
        "file": key,
        "size": signature[0],
        "mtime_ns": signature[1],
        "status": status,
        "reason": reason,
        "seconds": round(seconds, 3),
        "outputs": outputs,
        **extra,
    }
