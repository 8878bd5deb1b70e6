"""The batch engine: micrographs into an output folder, one function for every way semphase runs them.

:func:`segment_many` owns a batch: gathering the inputs (files, folders, globs; an existing file is taken
literally whatever its name holds), the output folder, the per-file outcomes and their one-line reasons,
``summary.csv``, and, for an executor that keeps one, the folder's ledger (lock, journal, ``failed/``
notes, stale temporaries, resume: :mod:`semphase.runtime.ledger`). Who segments is the executor's part:

- :class:`InProcess` (``semphase segment``, ``serve``): this process, one micrograph at a time, each
  using the onnxruntime session's threads; no journal, like before: the same command again redoes
  everything.
- :class:`semphase.cluster.run.DaskExecutor` (``segment --cluster``): one task per micrograph on Dask
  workers; journaled, so the same command again skips what is done and redoes what changed.
- an :class:`Inbox` instead of a list of inputs (``semphase watch``): the watcher
  (:class:`semphase.runtime.watch.Watcher`) feeds files to the executor as they settle, with its own
  ledger (``watch-journal.jsonl``).

Everything is reported through one :class:`~semphase.progress.Progress` object: the bars (stage
``micrographs``, and each file's ``tiles``), and an :class:`~semphase.progress.Event` per input (``done``
with its phase table, ``failed`` with a one-line reason naming the file, ``skipped``). The CLI parses
options and renders these; it holds no loop of its own.

Example::

    from semphase.runtime import load_model
    from semphase.runtime.run import InProcess, segment_many

    model = load_model("models/ni-wc/model.int8.onnx")
    batch = segment_many(["micrographs/*.tif"], "out", executor=InProcess(model))
    print(batch.done, "done;", batch.failures)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from semphase.errors import InputError
from semphase.progress import SILENT, Event, Progress
from semphase.runtime.ledger.files import FileState, file_signature
from semphase.runtime.ledger.folder import Ledger
from semphase.runtime.ledger.lock import FolderLocked
from semphase.runtime.ledger.notes import output_paths

if TYPE_CHECKING:
    from semphase.runtime.model import SegmentationModel
    from semphase.runtime.segment import SegmentOptions


@dataclass(frozen=True)
class Job:
    """One input of a batch: its place in the input order, its path and output stem, and (journaled
    runs) its signature when the batch began."""

    index: int
    path: Path
    stem: str
    signature: tuple[int, int] | None = None


@dataclass
class WorkerStats:
    """One worker's share of a distributed run."""

    address: str
    host: str = ""
    tasks: int = 0
    done: int = 0
    failed: int = 0
    busy_seconds: float = 0.0
    load_seconds: float = 0.0
    model_loads: int = 0
    megapixels: float = 0.0
    threads: int | None = None

    def as_dict(self) -> dict:
        return {
            "address": self.address,
            "host": self.host,
            "tasks": self.tasks,
            "done": self.done,
            "failed": self.failed,
            "busy_seconds": round(self.busy_seconds, 3),
            "model_load_seconds": round(self.load_seconds, 3),
            "model_loads": self.model_loads,
            "megapixels": round(self.megapixels, 3),
            "onnxruntime_threads": self.threads,
        }


@dataclass
class Batch:
    """What a batch did: counts, every input's phase table or failure (in input order), the one-line
    failure messages, and per-worker shares for distributed executors."""

    files: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    changed: int = 0
    megapixels: float = 0.0
    results: dict[int, dict] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    workers: dict[str, WorkerStats] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def ordered(self) -> list[dict]:
        """Every input's summary row (its phase table, or ``status: failed`` and the reason), in order."""
        return [self.results[i] for i in sorted(self.results)]

    @property
    def succeeded(self) -> int:
        """Inputs done now or by an earlier run."""
        return self.done + self.skipped


class Executor(Protocol):
    """Who segments the jobs of a batch (:class:`InProcess`, :class:`semphase.cluster.run.DaskExecutor`).

    - ``journal``: the journal's file name for a ledger (resume, exactly once), or None for none;
      ``owner``: the name in its temporaries' tag;
    - ``outputs``: other files it writes into the output folder (never to be an input);
    - ``summary_every``: seconds between rewrites of summary.csv while results arrive;
    - ``session(jobs, out_dir, options, progress)``: a context manager yielding an iterator of ``(job,
      answer)`` in completion order, where ``answer`` has ``status`` (done or failed), ``result`` (the
      phase table), ``reason`` (without the file's name), ``message`` (optional: the one line naming the
      file), ``seconds``, and optionally ``worker``, ``host``, ``load_seconds``, ``loaded_model``,
      ``threads``;
    - ``finish(out_dir, batch)``: after the last answer (a run record).
    """

    journal: str | None
    owner: str
    outputs: Sequence[str]
    summary_every: float

    def session(
        self, jobs: Sequence[Job], out_dir: Path, options: SegmentOptions, progress: Progress
    ) -> AbstractContextManager[Iterator[tuple[Job, dict]]]: ...

    def finish(self, out_dir: Path, batch: Batch) -> None: ...


class InProcess:
    """Segment in this process, one micrograph at a time (each uses all the session's threads).

    Parameters
    ----------
    model : SegmentationModel
        From :func:`semphase.runtime.model.load_model` (self-checked there).
    """

    journal: str | None = None
    owner = "segment"
    outputs: Sequence[str] = ()
    summary_every = 0.0  # one micrograph takes seconds: summary.csv is current after each

    def __init__(self, model: SegmentationModel) -> None:
        self.model = model

    @property
    def classes(self) -> list[str]:
        """The model's phase names."""
        return list(self.model.classes)

    def segment(
        self,
        path: str | os.PathLike,
        out_dir: str | os.PathLike,
        options: SegmentOptions | None = None,
        stem: str | None = None,
        progress: Progress = SILENT,
    ) -> dict:
        """One micrograph: :func:`semphase.runtime.segment.segment_file` (raises as it does)."""
        from semphase.runtime.segment import segment_file

        return segment_file(self.model, path, out_dir, options, stem=stem, progress=progress)

    def session(
        self, jobs: Sequence[Job], out_dir: Path, options: SegmentOptions, progress: Progress
    ) -> AbstractContextManager[Iterator[tuple[Job, dict]]]:
        return nullcontext(self._answers(jobs, out_dir, options, progress))

    def _answers(
        self, jobs: Sequence[Job], out_dir: Path, options: SegmentOptions, progress: Progress
    ) -> Iterator[tuple[Job, dict]]:
        progress.start("micrographs", "micrographs", len(jobs))
        for job in jobs:
            started = time.perf_counter()
            try:
                result = self.segment(job.path, out_dir, options, stem=job.stem, progress=progress)
                answer = {"status": "done", "result": result}
            except InputError as exc:
                answer = {"status": "failed", "reason": exc.said_of(job.path), "message": str(exc)}
            answer["seconds"] = time.perf_counter() - started
            progress.finish("tiles")
            yield job, answer

    def finish(self, out_dir: Path, batch: Batch) -> None:
        pass


@dataclass(frozen=True)
class Inbox:
    """A folder the microscope writes into, as the input of :func:`segment_many`: every image file that
    lands in it is segmented once it is complete (see :class:`semphase.runtime.watch.Watcher`, whose
    parameters these are). ``once``: handle what is there now and return."""

    folder: Path
    recursive: bool = False
    patterns: Sequence[str] | None = None
    settle: float = 2.0
    fail_after: float = 30.0
    move_done: Path | None = None
    poll: float = 1.0
    once: bool = False


def segment_many(
    inputs: Iterable[str | os.PathLike] | Inbox,
    out_dir: str | os.PathLike,
    options: SegmentOptions | None = None,
    executor: Executor | None = None,
    progress: Progress = SILENT,
) -> Batch:
    """Segment ``inputs`` into ``out_dir`` with ``executor``; see the module docstring.

    Parameters
    ----------
    inputs : files (taken as given when they exist), folders (their image files) and glob patterns; or
        an :class:`Inbox` to watch.
    out_dir : the output folder (created if needed).
    options : :class:`semphase.runtime.segment.SegmentOptions` (default: the defaults).
    executor : :class:`InProcess` (an inbox needs one) or :class:`semphase.cluster.run.DaskExecutor`.
    progress : bars and an :class:`~semphase.progress.Event` per input (:mod:`semphase.progress`).

    Returns
    -------
    :class:`Batch`. An input that fails is in ``failures`` (one line naming it) and in ``results`` with
    ``status: failed``; the others go on.

    Raises
    ------
    InputError
        for what stops the whole batch: an output folder that cannot be created or is in use by another
        writer, an input that is also an output of the batch, an executor that cannot start.
    """
    from semphase.runtime.segment import SegmentOptions

    options = options or SegmentOptions()
    if executor is None:
        raise ValueError("segment_many needs an executor: InProcess(model) or a DaskExecutor")
    if isinstance(inputs, Inbox):
        return _watch(inputs, Path(out_dir), options, executor, progress)
    return _BatchRun(Path(out_dir), options, executor, progress).run(inputs)


def gather_inputs(
    inputs: Iterable[str | os.PathLike],
    out_dir: Path,
    options: SegmentOptions,
    outputs: Sequence[str] = (),
) -> tuple[list[Path], list[str], list[tuple[str, str]]]:
    """The input files, their distinct output stems, and ``(spec, reason)`` for specs that named nothing.

    Raises
    ------
    InputError
        for an input that is also a file the batch writes (``outputs``: its own files in ``out_dir``).
    """
    from semphase.runtime.inputs import expand_inputs, output_stems
    from semphase.runtime.segment import check_inputs_are_not_outputs

    files, problems = expand_inputs(inputs, exclude=[out_dir])
    stems = output_stems(files)
    check_inputs_are_not_outputs(files, stems, out_dir, options, extra=list(outputs))
    return files, stems, problems


def _key(path: Path) -> str:
    """The journal key of a batch's input: its absolute path, ``/``-separated."""
    return Path(os.path.abspath(path)).as_posix()


def _read_result(result_json: Path) -> dict | None:
    import json

    try:
        value = json.loads(result_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _verified(result: Mapping[str, Any]) -> str | None:
    """None when every output the result names is on disk and X.json is readable, else what is wrong."""
    outputs = result.get("outputs") or {}
    for key, value in outputs.items():
        if key == "dir" or not isinstance(value, str):
            continue
        try:
            if os.stat(value).st_size == 0:
                return f"output {value} is empty"
        except OSError:
            return f"output {value} is missing after the worker reported it written"
    json_path = outputs.get("json")
    if isinstance(json_path, str) and _read_result(Path(json_path)) is None:
        return f"{json_path} is not readable JSON"
    return None


class _BatchRun:
    """One :func:`segment_many` over a list of inputs."""

    def __init__(self, out_dir: Path, options: SegmentOptions, executor: Executor, progress: Progress):
        self.out_dir = out_dir
        self.options = options
        self.executor = executor
        self.progress = progress
        self.batch = Batch()
        self.ledger: Ledger | None = None
        self.classes: list[str] | None = getattr(executor, "classes", None)

    def run(self, inputs: Iterable[str | os.PathLike]) -> Batch:
        from semphase.imageio import ensure_output_folder
        from semphase.runtime.outputs import SUMMARY_NAME

        started = time.perf_counter()
        ensure_output_folder(self.out_dir)
        own = [
            SUMMARY_NAME,
            *([self.executor.journal] if self.executor.journal else []),
            *self.executor.outputs,
        ]
        files, stems, problems = gather_inputs(inputs, self.out_dir, self.options, own)
        self.batch.files = len(files)
        for spec, reason in problems:
            self._fail(None, Path(spec), f"{spec}: {reason}")
        jobs = [Job(i, path, stem) for i, (path, stem) in enumerate(zip(files, stems, strict=True))]
        with self._ledger():
            todo = self._not_done(jobs)
            if todo:
                self._segment(todo)
            if self.ledger is not None:
                self.ledger.remove_temporaries()  # those of workers killed mid-write
            self._write_summary()
            self.batch.wall_seconds = time.perf_counter() - started
            self.executor.finish(self.out_dir, self.batch)
        return self.batch

    def _ledger(self) -> AbstractContextManager:
        if self.executor.journal is None:
            return nullcontext()
        ledger = Ledger(self.out_dir, self.executor.journal, self.executor.owner)
        try:
            removed = ledger.open()
        except FolderLocked as exc:
            raise InputError(
                f"in use by {ledger.lock.holder()} (a watcher or another run); one at a time", self.out_dir
            ) from exc
        if removed:
            self.progress.log(f"removed {removed} temporary file(s) a stopped run left behind")
        self.ledger = ledger
        return closing(ledger)  # opened above: the block only has to close it

    def _not_done(self, jobs: list[Job]) -> list[Job]:
        """The jobs to segment: all of them, or (with a ledger) those not done with the same signature."""
        if self.ledger is None:
            return jobs
        todo = []
        for job in jobs:
            signature = file_signature(job.path)
            if signature is None:
                self._fail(job.index, job.path, f"{job.path}: cannot read (missing or unreadable)")
                self.batch.failed += 1
                continue
            previous = None
            if self.ledger.done(_key(job.path), signature):  # only done files' X.json is read
                previous = _read_result(self.out_dir / f"{job.stem}.json")
            if previous is not None:
                previous["status"] = "done"
                self.batch.results[job.index] = previous
                self.batch.skipped += 1
                self.progress.event(Event("skipped", str(job.path), "done by an earlier run", previous))
                continue
            todo.append(Job(job.index, job.path, job.stem, signature))
        if todo:
            self.progress.log(
                f"{len(todo)} to segment, {self.batch.skipped} done by an earlier run (journal "
                f"{self.ledger.journal_path})"
            )
        return todo

    def _segment(self, todo: list[Job]) -> None:
        last_summary = started = time.perf_counter()
        finished = 0
        with self.executor.session(todo, self.out_dir, self.options, self.progress) as answers:
            for job, answer in answers:
                self._record(job, answer)
                finished += 1
                self.progress.advance("micrographs")
                if self.batch.workers:
                    self.progress.say(_status(self.batch, time.perf_counter() - started, len(todo), finished))
                if time.perf_counter() - last_summary >= self.executor.summary_every:
                    self._write_summary()
                    last_summary = time.perf_counter()

    def _record(self, job: Job, answer: dict) -> None:
        worker = self._worker(answer)
        extra = {"worker": answer.get("worker")} if "worker" in answer else {}  # the journal line's
        result = answer.get("result") if answer.get("status") == "done" else None
        reason = answer.get("reason")
        if self.ledger is not None:
            if result is not None:
                reason = _verified(result)
                if reason is not None:
                    result = None
            assert job.signature is not None
            if file_signature(job.path) != job.signature:
                # changed while it was segmented: nothing is journaled, the next run does it again
                self.batch.changed += 1
                message = f"{job.path}: changed while it was segmented; run again to segment the new version"
                self._fail(job.index, job.path, message, reason="changed while segmented")
                return
        seconds = float(answer.get("seconds") or 0.0)
        if result is not None:
            if self.ledger is not None:
                outputs = output_paths(result, self.out_dir)
                self.ledger.record_done(_key(job.path), job.signature, seconds, outputs, **extra)
                if "worker" in answer:
                    result["worker"] = answer.get("worker")
            result["status"] = "done"
            self.batch.results[job.index] = result
            self.batch.done += 1
            megapixels = result["width"] * result["height"] / 1e6
            self.batch.megapixels += megapixels
            if worker is not None:
                worker.done += 1
                worker.megapixels += megapixels
            self.progress.event(Event("done", str(job.path), f"{seconds:.2f} s", result))
            return
        reason = reason or "failed"
        if self.ledger is not None:
            state = FileState(f"{job.stem}{job.path.suffix}", str(job.path), *job.signature)
            self.ledger.record_failed(_key(job.path), state, reason, seconds, strict=False, **extra)
        message = answer.get("message") or (reason if str(job.path) in reason else f"{job.path}: {reason}")
        row_reason = answer.get("reason") if answer.get("message") else None
        self.batch.failed += 1
        if worker is not None:
            worker.failed += 1
        self._fail(job.index, job.path, message, reason=row_reason)

    def _worker(self, answer: dict) -> WorkerStats | None:
        if "worker" not in answer:
            return None
        address = answer.get("worker") or "?"
        worker = self.batch.workers.setdefault(address, WorkerStats(address))
        worker.host = answer.get("host") or worker.host
        worker.tasks += 1
        worker.busy_seconds += float(answer.get("seconds") or 0.0)
        worker.load_seconds += float(answer.get("load_seconds") or 0.0)
        worker.model_loads += int(bool(answer.get("loaded_model")))
        worker.threads = answer.get("threads", worker.threads)
        return worker

    def _fail(self, index: int | None, path: Path, message: str, reason: str | None = None) -> None:
        """Input ``index`` (None: a spec that named nothing) failed: ``message`` names it in one line; its
        summary row says ``reason`` (default: the message)."""
        self.batch.failures.append(message)
        if index is not None:
            self.batch.results[index] = {"input": str(path), "status": "failed", "reason": reason or message}
        self.progress.event(Event("failed", str(path), message))

    def _write_summary(self) -> None:
        from semphase.runtime.outputs import SUMMARY_NAME, write_summary

        ordered = self.batch.ordered
        classes = self.classes or _classes(ordered)
        if classes and ordered:
            write_summary(self.out_dir / SUMMARY_NAME, ordered, classes)


def _classes(results: list[dict]) -> list[str] | None:
    for r in results:
        model = r.get("model") or {}
        if r.get("status") == "done" and model.get("classes"):
            return list(model["classes"])
    return None


def _status(batch: Batch, elapsed: float, total: int, finished: int) -> str:
    rate = batch.megapixels / elapsed if elapsed > 0 else 0.0
    left = total - finished
    eta = elapsed / finished * left if finished else float("nan")
    eta_text = f"{int(eta // 60)}:{int(eta % 60):02d}" if finished else "?"
    counts = ", ".join(
        f"{w.address.rsplit(':', 1)[-1] if w.address else '?'}: {w.tasks}" for w in batch.workers.values()
    )
    return f"{rate:.2f} MP/s, ETA {eta_text}; tasks per worker (port): {counts}"


def _watch(inbox: Inbox, out_dir: Path, options: SegmentOptions, executor: Executor, progress: Progress):
    """An inbox: the watcher feeds settled files to ``executor`` (in-process) until stopped or, with
    ``once``, until what is there now is handled."""
    from semphase.runtime.watch import Watcher

    if not isinstance(executor, InProcess):
        raise ValueError("an Inbox is segmented in this process: pass executor=InProcess(model)")

    def segment(path: Path, out_sub: Path) -> Mapping[str, Any]:
        result = executor.segment(path, out_sub, options, progress=progress)
        progress.finish("tiles")
        return result

    watcher = Watcher(
        inbox.folder,
        out_dir,
        executor.model,
        options,
        segment=segment,
        recursive=inbox.recursive,
        patterns=inbox.patterns,
        settle=inbox.settle,
        fail_after=inbox.fail_after,
        move_done=inbox.move_done,
        progress=progress,
    )
    started = time.perf_counter()
    with watcher:
        stats = watcher.run(poll=inbox.poll, once=inbox.once)
    return Batch(
        files=stats.done + stats.failed,
        done=stats.done,
        failed=stats.failed,
        megapixels=stats.megapixels,
        failures=list(watcher.failures),
        wall_seconds=time.perf_counter() - started,
    )
