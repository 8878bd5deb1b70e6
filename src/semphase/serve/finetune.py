"""Fine-tuning from the label view: train on the project, export, check, serve, roll back (no torch here).

The server itself never imports torch: a job runs ``semphase train PROJECT --init CHECKPOINT`` and then
``semphase export`` as child processes (the server needs the ``train`` extra installed for them; without
it the page shows the label view with fine-tuning off and says why), one job at a time, in
``PROJECT/.semphase/models/vN/``:

1. **train**: the fine-tuning recipe of ``train --init`` (labelled pixels only) from the checkpoint of
   the model being served. With two or more labelled micrographs (crop groups, as ``train`` splits
   them), one in five of them (at least one) is **held out** by default: it is the run's val split, so
   every epoch is scored on labels the network never trained on, and ``best.pt`` is the epoch that
   scored best there. The held-out micrographs stay the same from job to job (recorded in
   ``index.json``; new ones join only when the project grows), so versions are compared on the same
   labels; ``holdout=False`` trains on every labelled micrograph instead. Progress is read from the
   run's ``history.csv`` (epoch, training loss, held-out mIoU);
2. **export**: FP32 and the variant being served (FP32 is every reduced variant's reference), at the
   served model's tiling, with export's gates; FP32 and the served variant must pass theirs;
3. **check**: the new file of that variant is loaded with its self-check on this machine (a file that
   misses its stored reference is never served);
4. **compare**: the old and the new model segment the project's labelled fields and are scored on the
   labelled pixels (mIoU), separately on the trained micrographs (this says it learnt them) and on the
   held-out ones (this says it generalises; mildly optimistic, since ``best.pt`` was picked on them).
   When the run corrected its prior (``train --prior-correction``, strokes being sparse), each labelled
   class weighs as its estimated share of the micrographs, not of the strokes (:func:`share_weighted`):
   strokes over-sample rare phases and would otherwise favour the model that paints them too often;
5. **serve**: the new model replaces the old one in the running service (requests in flight finish on
   the old one), unless it scores lower than the served one on the held-out labels (on the trained
   labels when nothing was held out): then it is kept (state ``kept``), listed, and served only when the
   user picks it. The old files stay; any version can
   be served again from the page (rollback).

Cancel stops the child process (its process group) and leaves the version folder with its log, marked
cancelled; the served model never changes on a cancelled or failed job. The versions are listed in
``PROJECT/.semphase/models/index.json``; version 0 is the model the server was started with. A restarted
server serves the model on its command line again: serve a fine-tuned version with ``semphase serve
PROJECT/.semphase/models/vN/export/model.int8.onnx --checkpoint PROJECT/.semphase/models/vN/run/best.pt``.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from semphase.data.layout import group_key
from semphase.data.split import save_split
from semphase.errors import InputError, one_line
from semphase.imageio import file_sha256, read_gray, to_uint8, write_text_atomic
from semphase.metrics import confusion_counts, iou_dice
from semphase.phases import IGNORE
from semphase.serve.project import STATE_DIR, Project

#: The export file of each variant.
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}

#: One labelled micrograph (crop group) in this many is held out, at least one when there are two.
HOLDOUT_EVERY = 5


def choose_holdout(files: dict[str, str], previous: list[str] | tuple = ()) -> list[str]:
    """The labelled micrographs to hold out of a job (sorted names; empty when fewer than two groups).

    Parameters
    ----------
    files : labelled micrograph name -> its file name in images/ (what ``train`` groups by: regions that
        ``suggest`` cut from one micrograph are one group and go to one side together).
    previous : names held out by the jobs before: their groups stay held out (while at least one group is
        left to train on), so that versions are compared on the same labels; further groups join, in a
        fixed pseudo-random order, only as the project grows to need them.
    """
    groups: dict[str, list[str]] = {}
    for name, file in sorted(files.items()):
        groups.setdefault(group_key(file), []).append(name)
    if len(groups) < 2:
        return []
    was = set(previous)
    kept = [g for g, names in groups.items() if was.intersection(names)]
    fresh = sorted((g for g in groups if g not in kept), key=lambda g: hashlib.sha256(g.encode()).hexdigest())
    want = min(max(1, len(groups) // HOLDOUT_EVERY, len(kept)), len(groups) - 1)
    return sorted(name for g in (kept + fresh)[:want] for name in groups[g])


class JobRefused(InputError):
    """A fine-tuning that cannot start (HTTP 409): one running, no labels, no checkpoint, no torch."""


def training_unavailable() -> str | None:
    """Why this server cannot fine-tune (None when it can): the ``train`` extra must be installed."""
    missing = [m for m in ("torch", "segmentation_models_pytorch") if not _installed(m)]
    if missing:
        return (
            f"fine-tuning needs the train extra on the server ({', '.join(missing)} not installed: "
            "pip install 'semphase[train]'); labelling works without it"
        )
    return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked installation counts as missing
        return False


@dataclass
class Job:
    """One fine-tuning: its version folder, stage, progress and outcome."""

    version: int
    folder: str
    init: str
    variant: str
    state: str = "running"  # running | succeeded | kept (not served: scored lower) | failed | cancelled
    stage: str = "train"
    epoch: int = 0
    epochs: int | None = None
    loss: float | None = None
    heldout: list = field(default_factory=list)  # names scored each epoch and never trained on
    val_miou: float | None = None  # held-out mIoU of the latest epoch
    best_val_miou: float | None = None  # and the best so far (the epoch best.pt keeps)
    started: float = field(default_factory=time.time)
    finished: float | None = None
    message: str = ""
    labels: dict = field(default_factory=dict)  # name -> label version trained on (or held out)
    files: dict = field(default_factory=dict)  # name -> its file in images/ (as the split names it)
    before: dict | None = None  # scores of the served and the new model on the trained labels
    after: dict | None = None
    heldout_before: dict | None = None  # ... and on the held-out labels
    heldout_after: dict | None = None
    class_shares: list | None = None  # the run's estimated class shares the scores weigh the strokes by

    def as_dict(self) -> dict:
        d = asdict(self)
        d["seconds"] = round((self.finished or time.time()) - self.started, 1)
        return d


def labelled_score(model, project: Project, names: list[str], class_shares=None) -> dict:
    """mIoU of ``model`` on the labelled pixels of ``names`` (per class and mean over labelled classes).

    ``class_shares`` (the micrographs' class shares, as ``train --prior-correction`` estimated them): each
    labelled class then weighs as its share of the micrographs instead of its share of the strokes
    (:func:`share_weighted`)."""
    from semphase.runtime.sliding import segment_array

    c = project.table.num_classes
    counts = np.zeros((c, c + 1), np.int64)  # rows: labelled class; unlabelled pixels are in no cell
    for name in names:
        labels, _ = project.labels(name)
        if not (labels != IGNORE).any():
            continue
        image = to_uint8(read_gray(project.entry(name).path))
        counts += confusion_counts(labels, segment_array(model, image), c)
    iou, _, _ = iou_dice(counts if class_shares is None else share_weighted(counts, class_shares))
    labelled = counts.sum(axis=1)
    # scored where the user labelled the class (so its union is never empty)
    ious = {name: float(iou[i]) for i, name in enumerate(project.table.names) if labelled[i]}
    values = list(ious.values())
    return {"miou": float(np.mean(values)) if values else None, "iou": ious, "pixels": int(counts.sum())}


def share_weighted(counts: np.ndarray, class_shares) -> np.ndarray:
    """Confusion counts (rows: labelled class) with each row scaled by the class's share of the micrographs
    over its share of the labelled pixels.

    Strokes over-sample rare phases, so a score over them rewards a model that paints a rare phase too
    often: a prior-corrected model (``train --prior-correction``), better against dense truth, can score
    lower on strokes. Weighted so, the strokes count as dense labels of the same micrographs would (on the
    shifted synthetic domain this ranked corrected and uncorrected models as the dense truth did on 3 of 3
    seeds, the plain stroke score on 1 of 3; benchmarks/RESULTS.md).
    """
    counts = np.asarray(counts, np.float64)
    labelled = counts.sum(axis=1)
    total = labelled.sum()
    if total == 0:
        return counts
    shares = np.asarray(class_shares, np.float64)
    weights = np.divide(shares * total, labelled, out=np.zeros_like(labelled), where=labelled > 0)
    return counts * weights[:, None]


def estimated_shares(run_dir: Path) -> list[float] | None:
    """The class shares ``train --prior-correction`` estimated for a run (config.json), or None where it
    made no correction."""
    try:
        config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = config.get("prior_correction_result") or {}
    return record.get("estimated_shares") if record.get("applied") else None


class FineTuner:
    """The fine-tuning jobs and model versions of a served project.

    Parameters
    ----------
    labelling : the :class:`semphase.serve.labelling.Labelling` (project and service).
    model_path : the ONNX file the server started with (version 0).
    checkpoint : the checkpoint that file was exported from (its sha256 is checked against the file's
        ``semphase.source``), or None: then fine-tuning is off, and the page says why.
    load : how the server loads a model (same provider, threads, backend; with the self-check).
    train_args : extra options for ``semphase train`` (e.g. ``--epochs 5``), after the recipe's.
    """

    def __init__(
        self,
        labelling,
        model_path: Path,
        checkpoint: Path | None,
        load: Callable[[Path], object],
        train_args: str = "",
    ) -> None:
        self.labelling = labelling
        self.project: Project = labelling.project
        self.service = labelling.service
        self.load = load
        self.train_args = shlex.split(train_args)
        self.folder = self.project.root / STATE_DIR / "models"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._job: Job | None = None
        self._proc: subprocess.Popen | None = None
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self.checkpoint_problem = None
        if checkpoint is None:
            self.checkpoint_problem = (
                "serve was started without --checkpoint (the checkpoint the model was exported from), "
                "so there is nothing to fine-tune from"
            )
        index = self._read_index()
        start = {
            "version": 0,
            "model": str(Path(model_path).resolve()),
            "checkpoint": str(Path(checkpoint).resolve()) if checkpoint is not None else None,
            "sha256": self.service.model.sha256,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "note": "the model serve was started with",
        }
        versions = [v for v in index.get("versions", []) if v.get("version", 0) > 0]
        self.versions = [start, *versions]
        self.serving = 0
        held = index.get("holdout", [])
        self.holdout = [n for n in held if isinstance(n, str)] if isinstance(held, list) else []
        self._write_index()

    # ------------------------------------------------------------------------------------- status

    def _read_index(self) -> dict:
        try:
            return json.loads((self.folder / "index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def _write_index(self) -> None:
        document = {"serving": self.serving, "holdout": self.holdout, "versions": self.versions}
        write_text_atomic(self.folder / "index.json", json.dumps(document, indent=1))

    def unavailable(self) -> str | None:
        return training_unavailable() or self.checkpoint_problem

    def status(self) -> dict:
        with self._lock:
            job = self._job.as_dict() if self._job else None
        reason = self.unavailable()
        return {
            "available": reason is None,
            "reason": reason,
            "job": job,
            "serving": self.serving,
            "versions": self.versions,
            "holdout": self.holdout_plan(),
        }

    def _labelled(self) -> dict[str, tuple[int, str]]:
        """The labelled micrographs: name -> (current label version, file name)."""
        found = {}
        for row in self.project.listing():
            if not row.get("error") and row.get("version") and sum(row.get("counts", [])) > 0:
                found[row["name"]] = (row["version"], row["file"])
        return found

    def holdout_plan(self, labelled: dict | None = None) -> dict:
        """Which labelled micrographs a job started now would hold out (``names``), or why none."""
        labelled = self._labelled() if labelled is None else labelled
        names = choose_holdout({n: file for n, (_, file) in labelled.items()}, self.holdout)
        reason = None
        if not names:
            reason = (
                "label a second micrograph to see a held-out score while it trains"
                if labelled
                else "nothing is labelled yet"
            )
        return {"names": names, "reason": reason}

    # -------------------------------------------------------------------------------------- start

    def start(self, holdout: bool = True) -> dict:
        """Start a job (in a thread); JobRefused when one runs or there is nothing to train on.

        ``holdout``: hold out micrographs as :func:`choose_holdout` picks them (when there are two or more
        labelled ones), scored every epoch and never trained on; False trains on every labelled one.
        """
        reason = self.unavailable()
        if reason:
            raise JobRefused(reason)
        labelled = self._labelled()
        if not labelled:
            raise JobRefused("nothing is labelled yet: paint some strokes and save them first")
        heldout = self.holdout_plan(labelled)["names"] if holdout else []
        with self._lock:
            if self._job is not None and self._job.state == "running":
                raise JobRefused(f"a fine-tuning is running already (version {self._job.version})")
            current = self.versions[self.serving]
            if not current.get("checkpoint"):
                raise JobRefused(f"version {self.serving} has no checkpoint to fine-tune from")
            version = max(v["version"] for v in self.versions) + 1
            folder = self.folder / f"v{version}"
            if folder.exists():  # left by a job of an earlier server that did not finish
                import shutil

                shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            self._job = Job(
                version=version,
                folder=str(folder),
                init=current["checkpoint"],
                variant=self.service.model.variant,
                labels={name: label_version for name, (label_version, _) in labelled.items()},
                heldout=heldout,
                files={name: file for name, (_, file) in labelled.items()},
            )
            if heldout:
                self.holdout = heldout
                self._write_index()
            self._cancel.clear()
            self._thread = threading.Thread(target=self._run, name="semphase-finetune", daemon=True)
            self._thread.start()
            return self._job.as_dict()

    def cancel(self) -> dict:
        with self._lock:
            job = self._job
            if job is None or job.state != "running":
                raise JobRefused("no fine-tuning is running")
            self._cancel.set()
            proc = self._proc
        if proc is not None:
            _stop(proc)
        return job.as_dict()

    def close(self) -> None:
        """Stop a running job (the server is shutting down)."""
        self._cancel.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            _stop(proc)
        if self._thread is not None:
            self._thread.join(timeout=30)

    # ------------------------------------------------------------------------------------ the job

    def _set(self, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self._job, key, value)

    def _run(self) -> None:
        job = self._job
        folder = Path(job.folder)
        try:
            run_dir, export_dir = folder / "run", folder / "export"
            root = str(self.project.root)
            train = ["train", root, "--init", job.init, "--out", str(run_dir)]
            trained = sorted(n for n in job.labels if n not in job.heldout)
            if job.heldout:  # the held-out micrographs are the run's val split: scored, never trained on
                split = {
                    "train": [job.files[n] for n in trained],
                    "val": [job.files[n] for n in job.heldout],
                    "test": [],
                }
                save_split(split, folder / "split.json")
                train += ["--split-file", str(folder / "split.json")]
            train += self.train_args
            self._child(train, folder / "train.log", progress=lambda: self._read_history(run_dir))
            self._set(stage="export")
            export = ["export", str(run_dir / "best.pt"), "--out", str(export_dir)]
            export += self._export_options(job)
            self._child(export, folder / "export.log", allow=(0, 1))  # 1: a gate missed; checked below
            self._check_gates(export_dir, job.variant)
            self._set(stage="check")
            new_path = export_dir / VARIANT_FILES[job.variant]
            try:
                new_model = self.load(new_path)
            except InputError as exc:
                reason = f"the new model failed its self-check on this machine: {exc.reason}"
                raise _JobFailed(reason) from None
            if self._cancel.is_set():
                raise _Cancelled
            self._set(stage="compare")
            # both models weighed by the new run's estimate of the micrographs' class shares, if it made one
            shares = estimated_shares(run_dir)
            before = labelled_score(self.service.model, self.project, trained, shares)
            after = labelled_score(new_model, self.project, trained, shares)
            self._set(before=before, after=after, class_shares=shares)
            if job.heldout:
                self._set(
                    heldout_before=labelled_score(self.service.model, self.project, job.heldout, shares),
                    heldout_after=labelled_score(new_model, self.project, job.heldout, shares),
                )
            if self._cancel.is_set():
                raise _Cancelled
            # the decision: on the held-out labels when there are some (generalisation), else the trained
            old, new = (job.heldout_before, job.heldout_after) if job.heldout else (before, after)
            where = "held-out" if job.heldout else "labelled"
            worse = old["miou"] is not None and (new["miou"] is None or new["miou"] < old["miou"])
            entry = {
                "version": job.version,
                "model": str(new_path.resolve()),
                "checkpoint": str((run_dir / "best.pt").resolve()),
                "sha256": new_model.sha256,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "init_from": job.init,
                "labels": job.labels,
                "heldout": job.heldout,
                "labelled_miou_before": before["miou"],
                "labelled_miou_after": after["miou"],
                "heldout_miou_before": job.heldout_before["miou"] if job.heldout else None,
                "heldout_miou_after": job.heldout_after["miou"] if job.heldout else None,
                "note": f"fine-tuned from version {self.serving} on {len(trained)} labelled micrograph(s)"
                + (f", {len(job.heldout)} held out" if job.heldout else ""),
            }
            with self._lock:
                self.versions.append(entry)
                self._write_index()
            if worse:  # never made worse without asking: kept, servable from the list
                self._set(
                    state="kept",
                    message=f"not served: version {job.version} scores lower on the {where} pixels "
                    f"(mIoU {_score_change(old, new)}); label more, or serve it from the list",
                )
                return
            self._set(stage="serve")
            self.service.use_model(new_model)
            with self._lock:
                self.serving = len(self.versions) - 1
                self._write_index()
            gain = f"; mIoU on the trained labels {_score_change(before, after)}"
            if job.heldout:
                gain = f"; mIoU on the held-out labels {_score_change(old, new)}{gain.replace(';', ',')}"
            self._set(state="succeeded", message=f"serving version {job.version}{gain}")
        except _Cancelled:
            self._set(state="cancelled", message="cancelled; the served model did not change")
        except _JobFailed as exc:
            self._set(state="failed", message=str(exc))
        except Exception as exc:  # a bug or a broken environment: one line, the server keeps serving
            self._set(state="failed", message=f"{exc.__class__.__name__}: {one_line(exc, 300)}")
        finally:
            with self._lock:
                self._job.finished = time.time()
                self._proc = None
            write_text_atomic(folder / "job.json", json.dumps(self._job.as_dict(), indent=1))

    def _child(self, args: list[str], log: Path, progress=None, allow=(0,)) -> int:
        if self._cancel.is_set():
            raise _Cancelled
        command = [sys.executable, "-m", "semphase", *args]
        if os.name != "nt":
            extra = {"start_new_session": True}
        else:
            extra = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
        with open(log, "w", encoding="utf-8") as out:
            proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **extra)
            with self._lock:
                self._proc = proc
            while proc.poll() is None:
                if progress is not None:
                    progress()
                time.sleep(0.5)
            if progress is not None:
                progress()
        with self._lock:
            self._proc = None
        if self._cancel.is_set():
            raise _Cancelled
        if proc.returncode not in allow:
            raise _JobFailed(f"{args[0]} failed (exit {proc.returncode}): {_last_line(log)}")
        return proc.returncode

    def _export_options(self, job: Job) -> list[str]:
        """The served model's tiling, and FP32 plus the variant being served (FP32 is every reduced
        variant's reference; export the others with ``semphase export`` when wanted)."""
        model = self.service.model
        options = ["--tile", str(model.tile_size), "--overlap", str(model.overlap)]
        if job.variant != "fp16":
            options.append("--no-fp16")
        if job.variant != "int8":
            options.append("--no-int8")
        return options

    def _read_history(self, run_dir: Path) -> None:
        try:
            with open(run_dir / "history.csv", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return
        if rows:
            last = rows[-1]
            scores = [v for v in (_number(r.get("val_miou")) for r in rows) if v is not None]
            self._set(
                epoch=int(_number(last.get("epoch")) or 0),
                loss=_number(last.get("train_loss")),
                epochs=config.get("epochs"),
                val_miou=_number(last.get("val_miou")),
                best_val_miou=max(scores) if scores else None,
            )
        else:
            self._set(epochs=config.get("epochs"))

    def _check_gates(self, export_dir: Path, variant: str) -> None:
        try:
            report = json.loads((export_dir / "export_report.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise _JobFailed("export wrote no export_report.json") from None
        gates = report.get("gates", [])
        failed = [g["text"] for g in gates if g.get("variant") in ("fp32", variant) and not g.get("passed")]
        if failed:
            raise _JobFailed(f"the new {variant.upper()} file missed export's gates: {'; '.join(failed)}")
        if not (export_dir / VARIANT_FILES[variant]).is_file():
            raise _JobFailed(f"export wrote no {VARIANT_FILES[variant]}")

    # ------------------------------------------------------------------------------------ versions

    def serve_version(self, version: int) -> dict:
        """Serve an earlier (or later) version again: loaded with its self-check, then swapped in."""
        with self._lock:
            if self._job is not None and self._job.state == "running":
                raise JobRefused("a fine-tuning is running; cancel it or wait for it first")
            found = next((i for i, v in enumerate(self.versions) if v["version"] == version), None)
        if found is None:
            raise JobRefused(f"no model version {version}")
        entry = self.versions[found]
        path = Path(entry["model"])
        if not path.is_file():
            raise JobRefused(f"the files of version {version} are gone ({path})")
        if file_sha256(path) != entry["sha256"]:
            raise JobRefused(f"the file of version {version} changed on disk since it was made ({path})")
        model = self.load(path)
        self.service.use_model(model)
        with self._lock:
            self.serving = found
            self._write_index()
        return self.status()


class _Cancelled(Exception):
    pass


class _JobFailed(Exception):
    pass


def _number(text) -> float | None:
    """A finite number from a history.csv cell (empty for NaN), else None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) else None


def _score_change(before: dict, after: dict) -> str:
    def text(score: dict) -> str:
        return "none" if score["miou"] is None else f"{score['miou']:.3f}"

    return f"{text(before)} -> {text(after)}"


def _last_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return "no log"
    lines = [line for line in lines if line]
    return lines[-1][:300] if lines else "no output"


def _stop(proc: subprocess.Popen) -> None:
    """Stop a child and its own children (its process group), politely first."""
    try:
        if os.name != "nt":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired, PermissionError):
        try:
            if os.name != "nt":
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
        except (ProcessLookupError, PermissionError):
            pass
