"""What runs on a Dask worker: one micrograph per task, the model loaded once per worker process.

Workers read the inputs and write the outputs themselves (the same paths on every node: a shared
folder or network share), atomically as ``semphase segment`` does, with temporaries tagged by the run so
the client can remove what a killed worker left. A task never raises for a bad file: it returns the
one-line reason, and the client journals it. Only numpy, onnxruntime and the runtime are needed on a
worker (no torch).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from semphase.errors import InputError, one_line

#: Models this worker process has loaded: (path, provider, threads, verify, backend) -> SegmentationModel.
_MODELS: dict[tuple, object] = {}
_LOCK = threading.Lock()


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):  # not on a Dask worker (tests call the task directly)
        return f"pid:{os.getpid()}"


def worker_model(model: str, provider: str, threads: int, verify: bool, backend: str = "onnxruntime"):
    """The model for this worker process, loaded (and self-checked) on its first task only.

    Returns ``(model, load_seconds)``; ``load_seconds`` is None when it was already loaded.
    """
    from semphase.runtime.model import load_model

    key = (model, provider, threads, verify, backend)
    with _LOCK:
        if key in _MODELS:
            return _MODELS[key], None
        t0 = time.perf_counter()
        loaded = load_model(model, provider=provider, threads=threads, verify=verify, backend=backend)
        _MODELS[key] = loaded
        return loaded, time.perf_counter() - t0


def segment_one(job: dict) -> dict:
    """Segment ``job["path"]`` into ``job["out_dir"]``.

    ``job``: ``path``, ``out_dir``, ``stem``, ``options`` (SegmentOptions), ``model``, ``provider``,
    ``verify``, ``backend``, ``threads`` (None: cores / workers on this host, from ``host_workers``),
    ``host_workers`` (host -> worker processes there), ``tag`` (the run's temporary tag).

    Returns ``{"status": "done", "result": X.json's content, ...}`` or ``{"status": "failed", "reason"}``,
    with ``worker``, ``host``, ``seconds`` (this task), ``load_seconds`` (loading the model, first task).
    """
    from semphase.cluster.spec import threads_per_worker
    from semphase.imageio import tagged_temporaries
    from semphase.runtime.run import InProcess

    t0 = time.perf_counter()
    host = socket.gethostname()
    answer = {"worker": _worker_address(), "host": host, "pid": os.getpid(), "load_seconds": 0.0}
    threads = job.get("threads") or threads_per_worker((job.get("host_workers") or {}).get(host, 1))
    try:
        backend = job.get("backend", "onnxruntime")
        model, seconds = worker_model(job["model"], job["provider"], threads, job["verify"], backend)
        answer.update(load_seconds=seconds or 0.0, loaded_model=seconds is not None)
    except InputError as exc:  # the model itself: every task on this worker would fail the same way
        answer.update(status="failed", reason=f"model: {exc}", model_problem=True)
        answer["seconds"] = time.perf_counter() - t0
        return answer
    out_dir = Path(job["out_dir"])
    try:
        with tagged_temporaries([out_dir], job["tag"]):
            result = InProcess(model).segment(job["path"], out_dir, job["options"], stem=job["stem"])
        answer.update(status="done", result=result)
    except InputError as exc:
        answer.update(status="failed", reason=exc.said_of(job["path"]))
    except OSError as exc:
        answer.update(status="failed", reason=f"cannot read or write ({exc.strerror or exc})")
    except MemoryError:
        answer.update(status="failed", reason="out of memory on the worker; try a smaller --tile or --batch")
    except Exception as exc:  # one bad file must not stop an archive
        answer.update(
            status="failed", reason=f"segmentation failed: {exc.__class__.__name__}: {one_line(exc)}"
        )
    answer["threads"] = threads
    answer["seconds"] = time.perf_counter() - t0
    return answer


def check_access(model: str, folders: list[str], samples: list[str], out_dir: str) -> list[str]:
    """Run on every worker before any task: can it read the model, every input folder and one file of
    each, and write into the output folder? Returns the problems (empty: all fine)."""
    problems = []
    host = socket.gethostname()
    if not os.access(model, os.R_OK):
        problems.append(f"cannot read the model {model}")
    for folder in folders:
        if not os.path.isdir(folder):
            problems.append(f"cannot see the input folder {folder}")
    for sample in samples:
        try:
            with open(sample, "rb") as fh:
                fh.read(1)
        except OSError as exc:
            problems.append(f"cannot read {sample} ({exc.strerror or exc})")
    probe = Path(out_dir) / f".semphase-cluster-probe-{host}-{os.getpid()}"
    try:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        problems.append(f"cannot write into {out_dir} ({exc.strerror or exc})")
    return problems


def worker_identity() -> dict:
    """``{"host", "pid", "cores"}`` of the worker process this runs in (physical cores)."""
    from semphase.machine import physical_cores

    return {"host": socket.gethostname(), "pid": os.getpid(), "cores": physical_cores()}
