"""Watch folder: segment every micrograph that lands in an inbox, once, for weeks, across crashes.

:class:`Watcher` holds the scan / settle / decide logic and is driven by :meth:`Watcher.poll_once`, with
an injectable clock so tests never sleep; :meth:`Watcher.run` is the loop the CLI uses.

Life of an inbox file::

    seen -> settling (size+mtime unchanged for `settle` s) -> segmented -> done line (fsync) [-> moved]
                 ^                         |
                 +-- changed / undecodable +--> undecodable and unchanged for `fail_after` s -> failed

A file is read only after its signature (size, mtime) stayed the same for ``settle`` seconds, and its
result counts only if the signature is still the same after segmentation; anything else means the file
is still arriving. Only files whose latest journal line matches their current signature are skipped, so
a restart continues exactly where the last run stopped (see :mod:`.journal`).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semphase.errors import InputError, one_line
from semphase.imageio import tagged_temporaries
from semphase.progress import SILENT, Event, Progress
from semphase.runtime.ledger.files import FileState, file_signature
from semphase.runtime.ledger.folder import Ledger
from semphase.runtime.ledger.journal import DONE, WATCH_JOURNAL
from semphase.runtime.ledger.notes import image_megapixels, output_paths
from semphase.runtime.watch.move import move_original, plan_destination
from semphase.runtime.watch.scan import InboxScanner
from semphase.runtime.watch.stats import WatchStats

if TYPE_CHECKING:
    from semphase.runtime.model import SegmentationModel
    from semphase.runtime.segment import SegmentOptions

__all__ = ["Watcher", "WatchStats"]

#: ``segment(input_path, out_subdir) -> result dict`` as :func:`semphase.runtime.segment.segment_file`.
SegmentFn = Callable[[Path, Path], Mapping[str, Any]]


@dataclass
class _Arrival:
    """A file that is not handled yet: its signature, when that was first seen, when to try next."""

    signature: tuple[int, int]
    changed_at: float
    retry_at: float
    reason: str | None = None


class Watcher:
    """Segments each complete image file that appears in ``inbox`` into ``out_dir`` exactly once.

    Parameters
    ----------
    inbox : path
        Folder the acquisition software writes into.
    out_dir : path
        Output folder: ``X_mask.png``, ``X_overlay.png`` (``.ome.tif`` for montages), ``X.json`` per
        image (subfolders mirrored), ``watch-journal.jsonl``, ``failed/<name>.txt``, and the lock file.
    model : SegmentationModel, optional
        From :func:`semphase.runtime.model.load_model`; with ``options`` it feeds ``segment_file``. Both
        may be given later with :meth:`use` (after :meth:`open`, so a refused start never loads a model).
    options : SegmentOptions, optional
        Passed to :func:`semphase.runtime.segment.segment_file` unchanged.
    recursive : bool
        Watch subfolders too.
    patterns : sequence of str, optional
        File-name globs (case-insensitive); default: every image type semphase reads.
    settle : float
        Seconds a file's size and mtime must stay unchanged before it is read.
    fail_after : float
        Seconds an undecodable file must stay unchanged before it is recorded as failed.
    move_done : path, optional
        Move originals here (subfolders mirrored) after their done line is written.
    clock : callable
        Monotonic seconds; injected by tests.
    progress : Progress, optional
        Receives every :class:`~semphase.progress.Event` (:mod:`semphase.progress`; the kinds are listed
        there) and each file's ``tiles`` bar.
    segment : callable, optional
        ``segment(input_path, out_subdir) -> result dict``; default ``segment_file`` with ``model`` and
        ``options`` (what the batch engine's :class:`semphase.runtime.run.InProcess` runs).
    """

    def __init__(
        self,
        inbox: str | os.PathLike,
        out_dir: str | os.PathLike,
        model: SegmentationModel | None = None,
        options: SegmentOptions | None = None,
        *,
        recursive: bool = False,
        patterns: Sequence[str] | None = None,
        settle: float = 2.0,
        fail_after: float = 30.0,
        move_done: str | os.PathLike | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress: Progress = SILENT,
        segment: SegmentFn | None = None,
    ) -> None:
        self.inbox = Path(inbox)
        self.out_dir = Path(out_dir)
        self.move_done = Path(move_done) if move_done is not None else None
        self.settle = float(settle)
        self.fail_after = max(float(fail_after), self.settle)
        self.clock = clock
        self.stats = WatchStats()
        self.progress = progress
        #: one line per file that failed in this run, naming it (inbox-relative)
        self.failures: list[str] = []
        self.model = model
        self.options = options
        self._segment = segment if segment is not None else self._segment_file
        self._check_folders()
        excluded = [self.out_dir] + ([self.move_done] if self.move_done else [])
        self.scanner = InboxScanner(self.inbox, recursive=recursive, patterns=patterns, exclude=excluded)
        #: the lock, the journal (keys: inbox-relative paths), failed/ notes, and this watcher's temporaries
        #: (only a watcher holding this folder's lock writes them, so one found at start-up was left by a
        #: dead watcher and is removed; anything else's are kept)
        self.ledger = Ledger(self.out_dir, WATCH_JOURNAL, "watch", [self.move_done] if self.move_done else [])
        self.temporary_tag = self.ledger.tag
        self._tagging: contextlib.AbstractContextManager | None = None
        self._arrivals: dict[str, _Arrival] = {}
        self._move_failed: dict[str, tuple[int, int]] = {}
        self._inbox_down = False
        self._stop = threading.Event()
        self._wake = threading.Event()

    # ------------------------------------------------------------------------------ set-up / tear-down

    def _check_folders(self) -> None:
        if not self.inbox.is_dir():
            raise InputError("inbox is not a folder (missing, or a file)", self.inbox)
        inbox = os.path.realpath(self.inbox)
        if os.path.realpath(self.out_dir) == inbox:
            raise InputError("--out must not be the inbox itself (use a subfolder or another folder)", inbox)
        if self.move_done is not None and os.path.realpath(self.move_done) in (
            inbox,
            os.path.realpath(self.out_dir),
        ):
            raise InputError("--move-done must differ from the inbox and from --out", self.move_done)

    def open(self) -> Watcher:
        """Lock the output folder, remove stale temporaries, read the journal. Raises FolderLocked."""
        removed = self.ledger.open()
        try:
            folders = [self.out_dir] + ([self.move_done] if self.move_done is not None else [])
            self._tagging = tagged_temporaries(folders, self.temporary_tag)
            self._tagging.__enter__()
        except BaseException:
            self.ledger.close()
            raise
        if removed:
            self._emit("cleaned", None, f"removed {removed} stale temporary file(s) left by a crash")
        done = sum(o.status == DONE for o in self.ledger.outcomes.values())
        failed = len(self.ledger.outcomes) - done
        self._emit("start", None, f"journal: {done} done, {failed} failed before this run")
        return self

    def close(self) -> None:
        """Close the journal and release the lock."""
        if self._tagging is not None:
            self._tagging.__exit__(None, None, None)
            self._tagging = None
        self.ledger.close()

    def __enter__(self) -> Watcher:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def use(self, model: SegmentationModel, options: SegmentOptions | None = None) -> None:
        """Segment with ``model`` and ``options`` from now on (given after :meth:`open`: a start that the
        lock refuses never pays for loading a model)."""
        self.model = model
        self.options = options

    # ---------------------------------------------------------------------------------------- control

    def request_stop(self) -> None:
        """Finish the file being segmented, then return from :meth:`run` (safe from a signal handler)."""
        self._stop.set()
        self._wake.set()

    @property
    def stop_requested(self) -> bool:
        """True after :meth:`request_stop`."""
        return self._stop.is_set()

    @property
    def pending(self) -> list[str]:
        """Inbox-relative paths seen but not handled yet (settling, arriving, or waiting to be retried)."""
        return sorted(self._arrivals)

    def run(self, poll: float = 1.0, once: bool = False) -> WatchStats:
        """Poll until stopped; with ``once``, until every file present is handled (bounded).

        ``once`` waits for files to settle or to fail, but gives up on files still changing after
        ``settle + fail_after`` seconds (event ``left``); they are picked up by the next run.
        """
        deadline = self.clock() + self.settle + self.fail_after + poll
        while not self.stop_requested:
            self.poll_once()
            if once and not self._arrivals:
                break
            if once and self.clock() >= deadline:
                for rel in self.pending:
                    self._emit("left", rel, "still being written; left for the next run")
                break
            self._wake.wait(poll)
            self._wake.clear()
        self._emit("stop", None, f"{self.stats.done} done, {self.stats.failed} failed in this run")
        return self.stats

    # ------------------------------------------------------------------------------------- one poll

    def poll_once(self) -> int:
        """Scan the inbox once and segment every file that has settled; returns how many were handled."""
        if self.model is None and self._segment == self._segment_file:
            raise RuntimeError("no model: call Watcher.use(model, options) (or pass segment=) first")
        now = self.clock()
        try:
            seen = self.scanner.scan()
        except OSError as exc:
            if not self._inbox_down:
                self._emit("inbox-unreachable", None, f"{self.inbox}: {exc.strerror or exc}; waiting")
                self._inbox_down = True
            return 0
        if self._inbox_down:
            self._inbox_down = False
            self._emit("inbox-back", None, f"{self.inbox} is reachable again")
        for rel in [r for r in self._arrivals if r not in seen]:
            del self._arrivals[rel]
        ready: list[FileState] = []
        for rel, state in seen.items():
            outcome = self.ledger.handled(rel, state.signature)
            if outcome is not None:
                if outcome.status == DONE and self.move_done is not None:
                    self._move(state)  # a crash came between the done line and the move
                continue
            arrival = self._arrivals.get(rel)
            if arrival is None or arrival.signature != state.signature:
                self._arrivals[rel] = _Arrival(state.signature, now, now + self.settle)
            elif now >= arrival.retry_at:
                ready.append(state)
        self.stats.queued = len(self._arrivals)
        handled = 0
        # oldest first: the order the microscope acquired them
        for state in sorted(ready, key=lambda s: (s.mtime_ns, s.rel)):
            if self.stop_requested:
                break
            handled += self._process(state)
            self.stats.queued = len(self._arrivals)
        return handled

    def _process(self, state: FileState) -> int:
        started = self.clock()
        before = file_signature(state.path)
        if before != state.signature:
            return self._still_arriving(state.rel, before, started)
        out_sub = self.out_dir.joinpath(*state.rel.split("/")[:-1])
        result: Mapping[str, Any] | None = None
        reason: str | None = None
        retryable = False
        try:
            result = self._segment(state.path, out_sub)
        except InputError as exc:
            if self._is_output_problem(exc.path):
                raise
            reason, retryable = exc.said_of(state.path), True
        except OSError as exc:
            if self._is_output_problem(exc.filename):
                raise InputError(f"cannot write outputs ({exc.strerror or exc})", exc.filename) from None
            reason, retryable = f"cannot read ({exc.strerror or exc})", True
        except MemoryError:
            reason = "out of memory while segmenting; try a smaller --tile or --batch"
        except Exception as exc:  # one bad file must not stop weeks of watching
            reason = f"segmentation failed: {exc.__class__.__name__}: {one_line(exc)}"
        finished = self.clock()
        after = file_signature(state.path)
        if after is None and result is not None:
            # removed (moved away by someone) after it was read whole: the outputs are its outputs, and
            # without a journal line nothing would ever account for them
            return self._record_done(state, result, finished - started, vanished=True)
        if after != state.signature:
            # modified (or removed) while being read: whatever was written is replaced on the next pass
            return self._still_arriving(state.rel, after, finished)
        seconds = finished - started
        if result is not None:
            return self._record_done(state, result, seconds)
        assert reason is not None
        arrival = self._arrivals[state.rel]
        if retryable and finished - arrival.changed_at < self.fail_after:
            if arrival.reason is None:
                self._emit("waiting", state.rel, f"not decodable yet, retrying ({reason})")
            arrival.reason = reason
            arrival.retry_at = finished + self.settle
            return 0
        return self._record_failed(state, reason, seconds)

    def _segment_file(self, path: Path, out_dir: Path) -> Mapping[str, Any]:
        from semphase.runtime.segment import segment_file

        assert self.model is not None  # poll_once checks it before any file is read
        result = segment_file(self.model, path, out_dir, self.options, progress=self.progress)
        self.progress.finish("tiles")
        return result

    def _still_arriving(self, rel: str, signature: tuple[int, int] | None, now: float) -> int:
        if signature is None:
            self._arrivals.pop(rel, None)
            self._emit("vanished", rel, "removed before it was handled")
        else:
            self._arrivals[rel] = _Arrival(signature, now, now + self.settle)
            self._emit("changed", rel, "changed while being read; will be read again once it settles")
        return 0

    def _is_output_problem(self, path: str | os.PathLike | None) -> bool:
        if path is None:
            return False
        where = os.path.realpath(path)
        roots = [self.out_dir] + ([self.move_done] if self.move_done else [])
        return any(where == (r := os.path.realpath(root)) or where.startswith(r + os.sep) for root in roots)

    # ------------------------------------------------------------------------------------- outcomes

    def _record_done(
        self, state: FileState, result: Mapping[str, Any], seconds: float, vanished: bool = False
    ) -> int:
        outputs = output_paths(result, self.out_dir)
        missing = [o for o in outputs if not (self.out_dir / o).is_file()]
        if missing:
            return self._record_failed(state, f"outputs missing after segmentation: {missing}", seconds)
        moved_to = None
        if self.move_done is not None and not vanished:
            try:
                moved_to = plan_destination(state.path, self.move_done, state.rel)
            except OSError:
                moved_to = None  # the move itself reports what is wrong
        extra = {"moved_to": moved_to} if moved_to is not None else {}
        self.ledger.record_done(state.rel, state.signature, seconds, outputs, note_name=state.rel, **extra)
        self._arrivals.pop(state.rel, None)
        self.stats.done += 1
        self.stats.busy_seconds += seconds
        megapixels = image_megapixels(result)
        self.stats.megapixels += megapixels or 0.0
        message = f"{seconds:.2f} s" + (f", {megapixels:.2f} MP" if megapixels else "")
        message += "; it left the inbox meanwhile" if vanished else ""
        self._emit("done", state.rel, message, result)
        if self.move_done is not None and not vanished:
            self._move(state)
        return 1

    def _record_failed(self, state: FileState, reason: str, seconds: float) -> int:
        self.ledger.record_failed(state.rel, state, reason, seconds)
        self.failures.append(f"{state.rel}: {reason}")
        self._arrivals.pop(state.rel, None)
        self.stats.failed += 1
        self.stats.busy_seconds += seconds
        self._emit("failed", state.rel, reason)
        return 1

    def _move(self, state: FileState) -> None:
        assert self.move_done is not None
        if self._move_failed.get(state.rel) == state.signature:
            return  # reported once; retried when the file changes or on the next start
        try:
            dest = plan_destination(state.path, self.move_done, state.rel)
            move_original(state.path, self.move_done / dest)
        except FileNotFoundError:
            return  # someone else took it away: nothing left to move
        except OSError as exc:
            self._move_failed[state.rel] = state.signature
            self._emit("move-failed", state.rel, f"cannot move to {self.move_done}: {exc.strerror or exc}")
            return
        self._emit("moved", state.rel, f"moved to {self.move_done / dest}")

    def _emit(
        self, kind: str, rel: str | None, message: str, result: Mapping[str, Any] | None = None
    ) -> None:
        self.progress.event(Event(kind, rel, message, result))
