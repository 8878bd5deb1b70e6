"""The client of ``semphase segment --cluster``: journal, submission, verification, progress, tables.

The client is the only writer of ``DIR/segment-journal.jsonl`` (the watch journal's format and code:
one fsync'ed JSON line per outcome with the input's size and mtime). Workers segment and write the
outputs; the client journals a file ``done`` only after the worker said so **and** every output it names
is on disk (and the input did not change meanwhile). So:

- a re-run of the same command skips every input whose latest line is ``done`` with the same size and
  mtime (and whose ``X.json`` is still there), and redoes what changed, what failed and what never
  finished;
- killing the client (Ctrl-C or kill -9) loses nothing that was journaled and doubles nothing: an input
  segmented but not yet journaled is segmented again and its outputs replaced atomically;
- killing a worker loses nothing: Dask gives its task to another worker; a task that kills workers
  repeatedly (Dask's ``allowed-failures``) is journaled as failed with that reason.

The client holds the output folder's lock (the watcher's), so one run (or watcher) writes a folder at a
time, and temporaries carry the run's tag so that those a killed worker left are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from semphase.cluster import tasks
from semphase.cluster.spec import ClusterSpec, threads_per_worker
from semphase.errors import InputError, one_line
from semphase.imageio import write_text_atomic
from semphase.progress import SILENT, Progress
from semphase.runtime.segment import SegmentOptions
from semphase.runtime.watch.journal import DONE, FAILED, Journal, read_outcomes
from semphase.runtime.watch.lock import FolderLocked, OutputFolderLock
from semphase.runtime.watch.notes import (
    failed_note_path,
    failed_note_text,
    output_paths,
    remove_stale_temporaries,
)
from semphase.runtime.watch.scan import FileState, file_signature

JOURNAL_NAME = "segment-journal.jsonl"
RUN_NAME = "cluster-run.json"
#: summary.csv is rewritten at most this often while results arrive (and always at the end).
SUMMARY_EVERY_S = 5.0


@dataclass
class ClusterOptions:
    """Where and how to run: the cluster, the model and how workers open it."""

    spec: ClusterSpec
    model: Path
    provider: str = "auto"
    #: onnxruntime threads per worker; None: the host's cores / its worker processes
    threads: int | None = None
    verify: bool = True
    #: seconds to reach a scheduler (an unreachable address fails after this)
    connect_timeout: float = 5.0
    #: seconds to wait for the first worker of an existing scheduler
    worker_timeout: float = 60.0


@dataclass
class WorkerStats:
    """One worker's share of a run."""

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
class RunState:
    """What the run has done so far (the CLI reads it for its table and exit code)."""

    files: int = 0
    skipped: int = 0
    done: int = 0
    failed: int = 0
    changed: int = 0
    megapixels: float = 0.0
    results: dict[int, dict] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    workers: dict[str, WorkerStats] = field(default_factory=dict)

    def fail(self, index: int, path: Path, message: str, on_failure=None, reason: str | None = None) -> None:
        """Input ``index`` failed: ``message`` (one line naming it) is said and kept; its summary row
        says ``reason`` (default: the message). The caller counts it (failed or changed)."""
        self.failures.append(message)
        self.results[index] = {"input": str(path), "status": "failed", "reason": reason or message}
        if on_failure:
            on_failure(message)


def temporary_tag(out_dir: Path) -> str:
    """The run's temporary tag: only a cluster run holding this folder's lock writes such temporaries."""
    digest = hashlib.sha256(os.path.realpath(out_dir).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"semphase-cluster-{digest}"


def _key(path: Path) -> str:
    """The journal key of an input: its absolute path, ``/``-separated."""
    return Path(os.path.abspath(path)).as_posix()


def _read_result(result_json: Path) -> dict | None:
    try:
        value = json.loads(result_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _verified(result: dict) -> str | None:
    """None when every output the worker named is on disk and X.json is readable, else what is wrong."""
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


class _Cluster:
    """A Dask client on a LocalCluster or an existing scheduler; closed on exit."""

    def __init__(self, options: ClusterOptions) -> None:
        self.options = options
        self.client = None
        self.cluster = None

    def __enter__(self) -> _Cluster:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise InputError(f"--cluster needs Dask: pip install 'semphase[cluster]' ({exc})") from None
        spec = self.options.spec
        if spec.is_local:
            self.cluster = LocalCluster(
                n_workers=spec.workers,
                threads_per_worker=1,  # one micrograph at a time per worker; onnxruntime uses the cores
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
            )
            self.client = Client(self.cluster)
            return self
        timeout = self.options.connect_timeout
        try:
            self.client = Client(spec.address, timeout=f"{timeout}s")
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"cannot reach the Dask scheduler at {spec.address} within {timeout:g} s "
                f"({one_line(exc, 160)}); is 'dask scheduler' running there and the port open?"
            ) from None
        try:
            self.client.wait_for_workers(1, timeout=self.options.worker_timeout)
        except (OSError, TimeoutError):
            self.close()
            raise InputError(
                f"the Dask scheduler at {spec.address} has no workers after "
                f"{self.options.worker_timeout:g} s; start some: dask worker {spec.address} --nthreads 1"
            ) from None
        return self

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.client is not None:
                self.client.close(timeout=10)
        with contextlib.suppress(Exception):
            if self.cluster is not None:
                self.cluster.close(timeout=10)
        self.client = self.cluster = None

    def __exit__(self, *exc: object) -> None:
        self.close()


def segment_on_cluster(
    files: Sequence[Path],
    stems: Sequence[str],
    out_dir: Path,
    options: SegmentOptions,
    cluster: ClusterOptions,
    progress: Progress = SILENT,
    on_failure: Callable[[str], None] | None = None,
) -> RunState:
    """Segment ``files`` on a Dask cluster into ``out_dir``; see the module docstring.

    Returns the run's :class:`RunState` (results in input order via ``results``), and writes
    ``summary.csv`` (every input, including those done by earlier runs) and ``cluster-run.json``.

    Raises
    ------
    InputError
        for an unreachable scheduler, a folder in use, a worker that cannot see the inputs, the model or
        the output folder (before any task runs), or a model every worker refuses.
    """
    out_dir = Path(out_dir)
    state = RunState(files=len(files))
    lock = OutputFolderLock(out_dir)
    try:
        lock.acquire()
    except FolderLocked as exc:
        raise InputError(
            f"in use by {lock.holder()} (a watcher or another run); one at a time", out_dir
        ) from exc
    started = time.perf_counter()
    try:
        tag = temporary_tag(out_dir)
        cleaned = remove_stale_temporaries(out_dir, tag)
        if cleaned:
            progress.log(f"removed {cleaned} temporary file(s) a stopped run left behind")
        outcomes = read_outcomes(out_dir / JOURNAL_NAME)
        todo: list[tuple[int, Path, str, tuple[int, int]]] = []
        for index, (path, stem) in enumerate(zip(files, stems, strict=True)):
            signature = file_signature(path)
            if signature is None:
                state.failed += 1
                state.fail(index, path, f"{path}: cannot read (missing or unreadable)", on_failure)
                continue
            outcome = outcomes.get(_key(path))
            done = outcome is not None and outcome.status == DONE and outcome.matches(*signature)
            previous = _read_result(out_dir / f"{stem}.json") if done else None  # only done files are read
            if previous is not None:
                previous["status"] = "done"
                state.results[index] = previous
                state.skipped += 1
                continue
            todo.append((index, path, stem, signature))
        if todo:
            progress.log(
                f"{len(todo)} to segment, {state.skipped} done by an earlier run (journal "
                f"{out_dir / JOURNAL_NAME})"
            )
            with _Cluster(cluster) as dask, Journal(out_dir / JOURNAL_NAME) as journal:
                _run(dask, todo, out_dir, options, cluster, tag, journal, state, progress, on_failure)
        remove_stale_temporaries(out_dir, tag)
        _write_summary(out_dir, state)
        _write_run(out_dir, cluster, state, time.perf_counter() - started)
    finally:
        lock.release()
    return state


def _classes(results: list[dict]) -> list[str] | None:
    for r in results:
        model = r.get("model") or {}
        if r.get("status") == "done" and model.get("classes"):
            return list(model["classes"])
    return None


def _run(dask, todo, out_dir, options, cluster, tag, journal, state, progress, on_failure) -> None:
    from distributed import as_completed

    client = dask.client
    identities = client.run(tasks.worker_identity)
    host_workers = Counter(info["host"] for info in identities.values())
    for address, info in identities.items():
        state.workers[address] = WorkerStats(address, info["host"])
    _check_workers(client, todo, out_dir, cluster)
    model = os.path.abspath(cluster.model)
    threads = cluster.threads
    if threads is None and cluster.spec.is_local:
        threads = threads_per_worker(cluster.spec.workers or 1)
    run_id = uuid.uuid4().hex[:8]
    futures, info = [], {}
    for index, path, stem, signature in todo:
        job = {
            "path": os.path.abspath(path),
            "out_dir": os.path.abspath(out_dir),
            "stem": stem,
            "options": options,
            "model": model,
            "provider": cluster.provider,
            "verify": cluster.verify,
            "threads": threads,
            "host_workers": dict(host_workers),
            "tag": tag,
        }
        future = client.submit(tasks.segment_one, job, key=f"semphase-{run_id}-{index}", pure=False)
        futures.append(future)
        info[future.key] = (index, path, stem, signature)
    progress.start("micrographs", f"micrographs on {len(identities)} workers", len(todo))
    t0 = last_summary = time.perf_counter()
    finished = 0
    try:
        for future in as_completed(futures):
            index, path, stem, signature = info[future.key]
            _record(_answer(future), index, path, stem, signature, out_dir, journal, state, on_failure)
            future.release()
            finished += 1
            progress.advance("micrographs")
            progress.say(_status(state, time.perf_counter() - t0, len(todo), finished))
            if time.perf_counter() - last_summary > SUMMARY_EVERY_S:
                _write_summary(out_dir, state)
                last_summary = time.perf_counter()
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel(futures)
        raise


def _write_summary(out_dir: Path, state: RunState) -> None:
    from semphase.runtime.outputs import SUMMARY_NAME, write_summary

    ordered = [state.results[i] for i in sorted(state.results)]
    classes = _classes(ordered)
    if classes:
        write_summary(out_dir / SUMMARY_NAME, ordered, classes)


def _answer(future) -> dict:
    """The task's answer, or a failure naming why Dask gave up on it."""
    try:
        return future.result()
    except Exception as exc:
        name = exc.__class__.__name__
        if name == "KilledWorker":
            reason = (
                "the workers segmenting this file died repeatedly (out of memory, or killed); not retried"
            )
        else:
            reason = f"the task failed on the cluster: {name}: {one_line(exc, 200)}"
        return {"status": "failed", "reason": reason, "worker": "", "host": "", "seconds": 0.0}


def _record(answer, index, path, stem, signature, out_dir, journal, state, on_failure) -> None:
    worker = state.workers.setdefault(answer.get("worker") or "?", WorkerStats(answer.get("worker") or "?"))
    worker.host = answer.get("host") or worker.host
    worker.tasks += 1
    worker.busy_seconds += float(answer.get("seconds") or 0.0)
    worker.load_seconds += float(answer.get("load_seconds") or 0.0)
    worker.model_loads += int(bool(answer.get("loaded_model")))
    worker.threads = answer.get("threads", worker.threads)
    reason = answer.get("reason")
    result = answer.get("result") if answer.get("status") == "done" else None
    if result is not None:
        reason = _verified(result)
        if reason is not None:
            result = None
    after = file_signature(path)
    if after != signature:
        # changed while it was segmented: nothing is journaled, the next run does it again
        state.changed += 1
        message = f"{path}: changed while it was segmented; run again to segment the new version"
        state.fail(index, path, message, on_failure, reason="changed while segmented")
        return
    line = {
        "file": _key(path),
        "size": signature[0],
        "mtime_ns": signature[1],
        "status": DONE if result is not None else FAILED,
        "reason": None if result is not None else reason,
        "seconds": round(float(answer.get("seconds") or 0.0), 3),
        "outputs": output_paths(result, out_dir) if result is not None else [],
        "worker": answer.get("worker"),
    }
    if result is not None:
        journal.append(line)
        result["status"] = "done"
        result["worker"] = answer.get("worker")
        state.results[index] = result
        state.done += 1
        worker.done += 1
        megapixels = result["width"] * result["height"] / 1e6
        worker.megapixels += megapixels
        state.megapixels += megapixels
        return
    reason = reason or "failed"
    rel = f"{stem}{path.suffix}"
    file_state = FileState(rel, str(path), signature[0], signature[1])
    with contextlib.suppress(InputError):
        write_text_atomic(failed_note_path(out_dir, rel), failed_note_text(file_state, reason))
    journal.append(line)
    state.failed += 1
    worker.failed += 1
    state.fail(index, path, reason if str(path) in reason else f"{path}: {reason}", on_failure)


def _status(state: RunState, elapsed: float, total: int, finished: int) -> str:
    rate = state.megapixels / elapsed if elapsed > 0 else 0.0
    left = total - finished
    eta = elapsed / finished * left if finished else float("nan")
    eta_text = f"{int(eta // 60)}:{int(eta % 60):02d}" if finished else "?"
    counts = ", ".join(
        f"{w.address.rsplit(':', 1)[-1] if w.address else '?'}: {w.tasks}" for w in state.workers.values()
    )
    return f"{rate:.2f} MP/s, ETA {eta_text}; tasks per worker (port): {counts}"


def _check_workers(client, todo, out_dir: Path, cluster: ClusterOptions) -> None:
    """Every worker must see the model, the input folders and write the output folder: checked once,
    before any task, so that a node without the share fails in one line instead of file by file."""
    folders = sorted({os.path.abspath(path.parent) for _, path, _, _ in todo})
    samples, seen = [], set()
    for _, path, _, _ in todo:
        parent = os.path.abspath(path.parent)
        if parent not in seen:
            seen.add(parent)
            samples.append(os.path.abspath(path))
    answers = client.run(
        tasks.check_access,
        os.path.abspath(cluster.model),
        folders[:200],
        samples[:200],
        os.path.abspath(out_dir),
    )
    for address, problems in sorted(answers.items()):
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise InputError(
                f"worker {address}: {problems[0]}{more}; every worker needs the same paths as this PC (a "
                "shared folder or network share mounted at the same place)"
            )


def _write_run(out_dir: Path, cluster: ClusterOptions, state: RunState, wall: float) -> None:
    document = {
        "cluster": cluster.spec.text,
        "model": str(cluster.model),
        "files": state.files,
        "skipped_done_before": state.skipped,
        "done": state.done,
        "failed": state.failed,
        "changed_while_segmented": state.changed,
        "wall_seconds": round(wall, 3),
        "megapixels": round(state.megapixels, 3),
        "megapixels_per_second": round(state.megapixels / wall, 4) if wall > 0 else None,
        "images_per_minute": round(state.done / wall * 60, 2) if wall > 0 else None,
        "workers": [w.as_dict() for w in state.workers.values()],
        "journal": JOURNAL_NAME,
    }
    write_text_atomic(out_dir / RUN_NAME, json.dumps(document, indent=2) + "\n")
