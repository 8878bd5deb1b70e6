"""`semphase segment --cluster`: Dask distributed, resumable, each input exactly once.

Real clusters on this machine: LocalClusters of worker processes, a scheduler and a worker started as
separate processes, and kill -9 of a worker and of the client in the middle of a run. The model is the
blur classifier with a self-check reference (fast, no torch), the inputs small synthetic micrographs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from _cli import run_semphase
from _runtime_models import micrograph, model_with_reference
from semphase.errors import InputError, OptionError
from semphase.imageio import write_image
from semphase.machine import physical_cores
from semphase.progress import SILENT

pytest.importorskip("distributed", reason="the cluster extra is not installed")

JOURNAL = "segment-journal.jsonl"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return model_with_reference(tmp_path_factory.mktemp("model"), "model", variant="fp32")


def _inputs(folder: Path, n: int, shape=(160, 200)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"m{i:02d}.png"
        write_image(path, micrograph(*shape, seed=i))
        paths.append(path)
    return paths


def _journal(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / JOURNAL).read_text().splitlines() if line.strip()]


def _done_counts(out: Path) -> Counter:
    return Counter(Path(r["file"]).name for r in _journal(out) if r["status"] == "done")


def _semphase(*args) -> list[str]:
    return [sys.executable, "-m", "semphase", *map(str, args)]


def test_parse_cluster_accepts_local_and_scheduler_addresses_and_nothing_else():
    from semphase.cluster.spec import parse_cluster, threads_per_worker

    assert parse_cluster("local:3").workers == 3 and parse_cluster("local:3").is_local
    assert parse_cluster("local").workers == max(1, physical_cores() // 2)
    assert parse_cluster("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert parse_cluster("tls://scheduler.lab:8786").address == "tls://scheduler.lab:8786"
    for bad in ("local:0", "local:x", "10.0.0.5:8786", "http://a:1", "tcp://a", "tcp://a:99999", ""):
        with pytest.raises(OptionError):
            parse_cluster(bad)
    assert threads_per_worker(2, cores=16) == 8 and threads_per_worker(3, cores=2) == 1


def test_local_workers_share_physical_cores_not_hyper_threads(monkeypatch):
    """On an 8-thread PC with 4 cores, `local` starts 2 workers of 2 threads, as segment's own default
    would use 4: counting hyper-threads would put two onnxruntime threads on each core."""
    from semphase import machine
    from semphase.cluster.spec import parse_cluster, threads_per_worker

    monkeypatch.setattr(machine, "physical_cores", lambda: 4)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert parse_cluster("local").workers == 2
    assert threads_per_worker(2) == 2 and threads_per_worker(8) == 1
    assert machine.share_cores(3) == 1 and machine.share_cores(1, cores=6) == 6


def test_two_local_workers_give_the_masks_of_plain_segment_with_one_journal_line_each(
    model, tmp_path, capsys
):
    files = _inputs(tmp_path / "in", 8)
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(files[0].read_bytes()[:100])  # truncated: fails, the others still run
    out, plain = tmp_path / "out", tmp_path / "plain"
    code, stdout, err = run_semphase(
        ["segment", model, tmp_path / "in", "--out", out, "--cluster", "local:2"], capsys
    )
    assert code == 2 and "broken.png" in err and "Traceback" not in err
    assert "8 segmented, 0 done by an earlier run, 1 failed" in stdout
    run_semphase(["segment", model, *files, "--out", plain, "-q"], capsys)
    for path in files:
        assert (out / f"{path.stem}_mask.png").read_bytes() == (plain / f"{path.stem}_mask.png").read_bytes()
    lines = _journal(out)
    assert Counter(Path(r["file"]).name for r in lines) == Counter([p.name for p in files] + ["broken.png"])
    assert [r["status"] for r in lines if r["file"].endswith("broken.png")] == ["failed"]
    assert (out / "failed" / "broken.png.txt").is_file()
    run = json.loads((out / "cluster-run.json").read_text())
    assert len(run["workers"]) == 2 and sum(w["tasks"] for w in run["workers"]) == 9
    # each worker process loaded (and self-checked) the model once, not once per task
    assert all(w["model_loads"] == 1 for w in run["workers"] if w["tasks"]), run["workers"]
    assert all(w["onnxruntime_threads"] == max(1, physical_cores() // 2) for w in run["workers"])
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 9
    assert not [p for p in out.rglob("*.part")]


def test_a_rerun_skips_what_is_done_and_redoes_what_changed(model, tmp_path, capsys):
    files = _inputs(tmp_path / "in", 4)
    out = tmp_path / "out"
    argv = ["segment", model, tmp_path / "in", "--out", out, "--cluster", "local:1"]
    assert run_semphase(argv, capsys)[0] == 0
    code, stdout, _ = run_semphase(argv, capsys)
    assert code == 0 and "0 segmented, 4 done by an earlier run" in stdout
    assert len(_journal(out)) == 4
    write_image(files[2], micrograph(160, 200, seed=99))  # a new version of one input
    code, stdout, _ = run_semphase(argv, capsys)
    assert code == 0 and "1 segmented, 3 done by an earlier run" in stdout
    assert _done_counts(out) == Counter({p.name: 1 for p in files} | {files[2].name: 2})
    assert len((out / "summary.csv").read_text().splitlines()) == 1 + 4


def _children(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_for_lines(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / JOURNAL).exists() and len(_journal(out)) >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended early: {proc.communicate()}")
        time.sleep(0.05)
    pytest.fail("no journal lines in time")


def test_kill_9_of_a_worker_mid_run_loses_and_doubles_nothing(model, tmp_path):
    files = _inputs(tmp_path / "in", 16, shape=(384, 448))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _semphase("segment", model, tmp_path / "in", "--out", out, "--cluster", "local:2", "-q"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_lines(out, 2, proc)
        # a LocalCluster's nannies run in the client; the worker processes are its spawned children
        workers = [p for p in _children(proc.pid) if "spawn_main" in " ".join(p.cmdline())]
        assert workers, "no worker processes found"
        os.kill(workers[0].pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert _done_counts(out) == Counter({p.name: 1 for p in files})
    assert len(_journal(out)) == len(files)
    for path in files:
        assert (out / f"{path.stem}_mask.png").stat().st_size > 0
    assert not [p for p in out.rglob("*.part")]


def test_kill_9_of_the_client_then_the_same_command_finishes_each_file_exactly_once(model, tmp_path, capsys):
    files = _inputs(tmp_path / "in", 16, shape=(384, 448))
    out = tmp_path / "out"
    argv = ["segment", model, tmp_path / "in", "--out", out, "--cluster", "local:2", "-q"]
    proc = subprocess.Popen(_semphase(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_lines(out, 3, proc)
        tree = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        for child in _children(proc.pid) + (tree if "tree" in locals() else []):
            with contextlib.suppress(Exception):
                child.kill()
    before = len(_journal(out))
    assert 3 <= before < len(files) + 1
    code, _, err = run_semphase(argv, capsys)
    assert code == 0, err
    assert _done_counts(out) == Counter({p.name: 1 for p in files})
    assert not [p for p in out.rglob("*.part")]


def test_an_unreachable_scheduler_fails_within_seconds_in_one_line(model, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    _inputs(tmp_path / "in", 1)
    t0 = time.monotonic()
    code, _, err = run_semphase(
        [
            "segment",
            model,
            tmp_path / "in",
            "--out",
            tmp_path / "out",
            "--cluster",
            f"tcp://127.0.0.1:{port}",
        ],
        capsys,
    )
    assert code == 2 and time.monotonic() - t0 < 15
    assert f"tcp://127.0.0.1:{port}" in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_scheduler_and_a_worker_started_as_separate_processes(model, tmp_path, capsys):
    files = _inputs(tmp_path / "in", 3)
    scheduler_file = tmp_path / "scheduler.json"
    env = dict(os.environ, DASK_DISTRIBUTED__LOGGING__DISTRIBUTED="error")
    bindir = Path(sys.executable).parent
    scheduler = subprocess.Popen(
        [bindir / "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", scheduler_file],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    worker = None
    try:
        deadline = time.monotonic() + 60
        address = None
        while address is None and time.monotonic() < deadline:  # dask writes the file in place: wait
            with contextlib.suppress(OSError, ValueError, KeyError):  # until it is whole
                address = json.loads(scheduler_file.read_text())["address"]
            time.sleep(0.1)
        assert address, f"the scheduler wrote no address into {scheduler_file} within 60 s"
        worker = subprocess.Popen(
            [bindir / "dask", "worker", address, "--nthreads", "1", "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        code, stdout, err = run_semphase(
            ["segment", model, tmp_path / "in", "--out", tmp_path / "out", "--cluster", address], capsys
        )
    finally:
        for p in (worker, scheduler):
            if p is not None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
    assert code == 0, err
    assert _done_counts(tmp_path / "out") == Counter({p.name: 1 for p in files})
    run = json.loads((tmp_path / "out" / "cluster-run.json").read_text())
    assert len(run["workers"]) == 1 and run["workers"][0]["tasks"] == 3
    assert run["workers"][0]["onnxruntime_threads"] == physical_cores()  # the only worker on its host


def test_a_worker_that_cannot_see_the_inputs_is_named_before_any_task(tmp_path):
    from semphase.cluster.run import ClusterOptions, _check_workers
    from semphase.cluster.spec import parse_cluster
    from semphase.cluster.tasks import check_access

    model = tmp_path / "model.onnx"
    model.write_bytes(b"x")
    problems = check_access(
        str(model), [str(tmp_path / "nowhere")], [str(tmp_path / "nowhere" / "a.tif")], str(tmp_path)
    )
    assert len(problems) == 2 and "nowhere" in problems[0]

    class FakeClient:  # what client.run returns: each worker's answer
        def run(self, function, *args):
            return {
                "tcp://10.0.0.7:4000": ["cannot see the input folder /data/in"],
                "tcp://10.0.0.8:4000": [],
            }

    from semphase.runtime.run import Job

    todo = [Job(0, tmp_path / "a.png", "a", (1, 1))]
    with pytest.raises(InputError, match=r"worker tcp://10\.0\.0\.7:4000: cannot see the input folder"):
        _check_workers(FakeClient(), todo, tmp_path, ClusterOptions(parse_cluster("local:1"), model))


def test_another_run_on_the_same_folder_is_refused(model, tmp_path, capsys):
    from semphase.runtime.ledger.lock import OutputFolderLock

    _inputs(tmp_path / "in", 1)
    out = tmp_path / "out"
    with OutputFolderLock(out):
        code, _, err = run_semphase(
            ["segment", model, tmp_path / "in", "--out", out, "--cluster", "local:1"], capsys
        )
    assert code == 2 and "in use by" in err and err.count("\n") == 1


def test_segment_without_cluster_never_imports_dask(model, tmp_path):
    _inputs(tmp_path / "in", 1)
    from test_layering import BLOCKER

    code = BLOCKER.format(names={"dask", "distributed"}) + (
        "from semphase.cli.main import main\n"
        f"main(['segment', {str(model)!r}, {str(tmp_path / 'in')!r}, '--out', {str(tmp_path / 'out')!r}, "
        "'-q'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "m00_mask.png").is_file()


def test_a_done_answer_whose_outputs_are_not_on_disk_is_journaled_failed(tmp_path):
    """The client trusts the disk, not the worker's word: a file is done only when its outputs are there."""
    from semphase.runtime.ledger import Ledger
    from semphase.runtime.run import InProcess, Job, _BatchRun
    from semphase.runtime.segment import SegmentOptions

    source = tmp_path / "a.png"
    write_image(source, micrograph(64, 64))
    st = source.stat()
    mask = tmp_path / "out" / "a_mask.png"
    mask.parent.mkdir()
    result = {
        "outputs": {"mask": str(mask), "json": str(tmp_path / "out" / "a.json")},
        "width": 64,
        "height": 64,
    }
    answer = {"status": "done", "result": result, "worker": "tcp://w:1", "host": "h", "seconds": 0.1}
    run = _BatchRun(tmp_path / "out", SegmentOptions(), InProcess(None), SILENT)
    with Ledger(tmp_path / "out", JOURNAL, "cluster") as ledger:
        run.ledger = ledger
        run._record(Job(0, source, "a", (st.st_size, st.st_mtime_ns)), answer)
    (line,) = _journal(tmp_path / "out")
    assert line["status"] == "failed" and "missing" in line["reason"] and run.batch.done == 0
    assert run.batch.failed == 1 and run.batch.workers["tcp://w:1"].failed == 1
    assert (tmp_path / "out" / "failed" / "a.png.txt").is_file()
