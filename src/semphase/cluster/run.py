"""The Dask executor of the batch engine: ``semphase segment --cluster``.

:func:`semphase.runtime.run.segment_many` owns the batch (inputs, lock, journal
``DIR/segment-journal.jsonl``, failure notes, summary); :class:`DaskExecutor` submits one task per
micrograph to Dask workers, which segment and write the outputs, and hands their answers back as they
complete. The engine journals a file ``done`` only after the worker said so **and** every output it names
is on disk (and the input did not change meanwhile). So:

- a re-run of the same command skips every input whose latest line is ``done`` with the same size and
  mtime (and whose ``X.json`` is still there), and redoes what changed, what failed and what never
  finished;
- killing the client (Ctrl-C or kill -9) loses nothing that was journaled and doubles nothing: an input
  segmented but not yet journaled is segmented again and its outputs replaced atomically;
- killing a worker loses nothing: Dask gives its task to another worker; a task that kills workers
  repeatedly (Dask's ``allowed-failures``) is answered as failed with that reason.

The engine holds the output folder's lock (the watcher's), so one run (or watcher) writes a folder at a
time, and temporaries carry the run's tag so that those a killed worker left are removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from semphase.cluster import tasks
from semphase.cluster.spec import ClusterSpec, threads_per_worker
from semphase.errors import InputError, one_line
from semphase.imageio import write_text_atomic
from semphase.progress import Progress
from semphase.runtime.ledger.folder import temporary_tag
from semphase.runtime.ledger.journal import SEGMENT_JOURNAL
from semphase.runtime.run import Batch, Job
from semphase.runtime.segment import SegmentOptions

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
    #: what runs the network on each worker (:mod:`semphase.runtime.backends`; ``auto`` measures per host)
    backend: str = "onnxruntime"
    #: seconds to reach a scheduler (an unreachable address fails after this)
    connect_timeout: float = 5.0
    #: seconds to wait for the first worker of an existing scheduler
    worker_timeout: float = 60.0


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


class DaskExecutor:
    """Segment each job as one Dask task (:func:`semphase.cluster.tasks.segment_one`); see the module
    docstring.

    Parameters
    ----------
    cluster : ClusterOptions
        The cluster, the model and how workers open it.
    classes : list of str, optional
        The model's phase names (summary.csv's columns even before a worker answers).
    """

    journal = SEGMENT_JOURNAL
    owner = "cluster"
    outputs: Sequence[str] = (RUN_NAME,)
    summary_every = SUMMARY_EVERY_S

    def __init__(self, cluster: ClusterOptions, classes: list[str] | None = None) -> None:
        self.cluster = cluster
        self.classes = classes

    @contextmanager
    def session(
        self, jobs: Sequence[Job], out_dir: Path, options: SegmentOptions, progress: Progress
    ) -> Iterator[Iterator[tuple[Job, dict]]]:
        """Connect (or start a local cluster), check that every worker sees the paths, submit every job;
        yields the answers as they complete, and cancels what is left when the batch stops early."""
        with _Cluster(self.cluster) as dask:
            client = dask.client
            identities = client.run(tasks.worker_identity)
            _check_workers(client, jobs, out_dir, self.cluster)
            futures, by_key = self._submit(client, identities, jobs, out_dir, options)
            progress.start("micrographs", f"micrographs on {len(identities)} workers", len(jobs))
            try:
                yield self._answers(futures, by_key)
            except BaseException:
                with contextlib.suppress(Exception):
                    client.cancel(futures)
                raise

    def _submit(self, client, identities: dict, jobs: Sequence[Job], out_dir: Path, options: SegmentOptions):
        host_workers = Counter(info["host"] for info in identities.values())
        threads = self.cluster.threads
        if threads is None and self.cluster.spec.is_local:
            threads = threads_per_worker(self.cluster.spec.workers or 1)
        run_id = uuid.uuid4().hex[:8]
        futures, by_key = [], {}
        for job in jobs:
            task = {
                "path": os.path.abspath(job.path),
                "out_dir": os.path.abspath(out_dir),
                "stem": job.stem,
                "options": options,
                "model": os.path.abspath(self.cluster.model),
                "provider": self.cluster.provider,
                "verify": self.cluster.verify,
                "backend": self.cluster.backend,
                "threads": threads,
                "host_workers": dict(host_workers),
                "tag": temporary_tag(out_dir, self.owner),
            }
            future = client.submit(tasks.segment_one, task, key=f"semphase-{run_id}-{job.index}", pure=False)
            futures.append(future)
            by_key[future.key] = job
        return futures, by_key

    @staticmethod
    def _answers(futures: list, by_key: dict) -> Iterator[tuple[Job, dict]]:
        from distributed import as_completed

        for future in as_completed(futures):
            job = by_key[future.key]
            answer = _answer(future)
            future.release()
            yield job, answer

    def finish(self, out_dir: Path, batch: Batch) -> None:
        """Write ``cluster-run.json``: the run's counts, throughput and every worker's share."""
        wall = batch.wall_seconds
        document = {
            "cluster": self.cluster.spec.text,
            "model": str(self.cluster.model),
            "files": batch.files,
            "skipped_done_before": batch.skipped,
            "done": batch.done,
            "failed": batch.failed,
            "changed_while_segmented": batch.changed,
            "wall_seconds": round(wall, 3),
            "megapixels": round(batch.megapixels, 3),
            "megapixels_per_second": round(batch.megapixels / wall, 4) if wall > 0 else None,
            "images_per_minute": round(batch.done / wall * 60, 2) if wall > 0 else None,
            "workers": [w.as_dict() for w in batch.workers.values()],
            "journal": SEGMENT_JOURNAL,
        }
        write_text_atomic(out_dir / RUN_NAME, json.dumps(document, indent=2) + "\n")


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


def _check_workers(client, jobs: Sequence[Job], out_dir: Path, cluster: ClusterOptions) -> None:
    """Every worker must see the model, the input folders and write the output folder: checked once,
    before any task, so that a node without the share fails in one line instead of file by file."""
    folders = sorted({os.path.abspath(job.path.parent) for job in jobs})
    samples, seen = [], set()
    for job in jobs:
        path = job.path
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
