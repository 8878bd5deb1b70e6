"""`semphase watch` end to end with the real runtime and a tiny ONNX model: --once, exit codes, the log,
--move-done, the one-watcher-per-folder lock, SIGTERM, and kill -9 in the middle of a batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from _watch_models import build_tiny_model
from semphase.cli.main import main
from semphase.imageio import read_gray, read_raw, write_image
from semphase.runtime.ledger.journal import WATCH_JOURNAL as JOURNAL_NAME
from semphase.runtime.ledger.journal import iter_lines

FAST = ["--settle", "0.1", "--poll", "0.05", "--fail-after", "0.5"]
OUTPUT_SUFFIXES = ("_mask.png", "_overlay.png", ".json")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny.onnx")


def micrographs(folder: Path, n: int, shape=(96, 128), seed=0) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_image(folder / f"m{i:02d}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def run_cli(args) -> int:
    with pytest.raises(SystemExit) as info:
        main(["watch", *args])
    return info.value.code


def done_counts(out: Path) -> Counter:
    return Counter(r["file"] for r in iter_lines(out / JOURNAL_NAME) if r["status"] == "done")


def assert_complete_outputs(out: Path, names) -> None:
    for name in names:
        stem = Path(name).stem
        mask = read_gray(out / f"{stem}_mask.png")
        assert mask.max() < 5
        assert read_raw(out / f"{stem}_overlay.png").shape[:2] == mask.shape
        json.loads((out / f"{stem}.json").read_text())
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]


def test_once_segments_everything_and_leaves_originals_and_other_files_alone(tmp_path, model, capsys):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    originals = micrographs(inbox, 3)
    (inbox / "notes.txt").write_text("operator notes")
    log = tmp_path / "logs" / "watch.log"
    code = run_cli([str(inbox), "--model", str(model), "--out", str(out), "--once", "--log", str(log), *FAST])
    assert code == 0
    assert done_counts(out) == Counter(originals.keys())
    assert_complete_outputs(out, originals)
    for name, content in originals.items():
        assert (inbox / name).read_bytes() == content
    assert (inbox / "notes.txt").read_text() == "operator notes"
    assert "notes.txt" not in (out / JOURNAL_NAME).read_text()
    log_lines = log.read_text().splitlines()
    assert sum(" done " in line for line in log_lines) == 3 and "start" in log_lines[0]
    assert "3 done, 0 failed" in capsys.readouterr().out


def test_once_exits_2_when_a_file_failed_and_notes_why(tmp_path, model, capsys):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    micrographs(inbox, 1)
    (inbox / "broken.tif").write_bytes(b"II*\0 this is not a TIFF")
    code = run_cli([str(inbox), "--model", str(model), "--out", str(out), "--once", *FAST])
    assert code == 2
    lines = {r["file"]: r for r in iter_lines(out / JOURNAL_NAME)}
    assert lines["m00.png"]["status"] == "done" and lines["broken.tif"]["status"] == "failed"
    assert "TIFF" in (out / "failed" / "broken.tif.txt").read_text()
    assert "1 file(s) failed" in capsys.readouterr().err
    # not retried until it changes: a second run has nothing to do and nothing failed in it
    assert run_cli([str(inbox), "--model", str(model), "--out", str(out), "--once", *FAST]) == 0


@pytest.mark.parametrize("kind", ["missing", "not onnx", "fails its self-check"])
def test_a_bad_model_is_one_line_exit_2_and_leaves_the_folder_free(tmp_path, model, capsys, kind):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    micrographs(inbox, 1)
    bad = tmp_path / "bad.onnx"
    if kind == "not onnx":
        bad.write_bytes(b"\x08\x07 not a model")
    elif kind == "fails its self-check":
        from _runtime_models import model_with_reference

        bad = model_with_reference(tmp_path, "bad", corrupt=0.05)
    code = run_cli([str(inbox), "--model", str(bad), "--out", str(out), "--once", *FAST])
    err = capsys.readouterr().err
    assert code == 2 and len([line for line in err.splitlines() if line.strip()]) == 1, err
    assert str(bad) in " ".join(err.split()) and "Traceback" not in err
    assert not (out / "m00_mask.png").exists() and done_counts(out) == Counter()
    # the lock died with the refused start: a good model runs at once
    assert run_cli([str(inbox), "--model", str(model), "--out", str(out), "--once", *FAST]) == 0
    assert done_counts(out) == Counter({"m00.png": 1})


def test_move_done_archives_originals_byte_identical(tmp_path, model):
    inbox, out, archive = tmp_path / "inbox", tmp_path / "out", tmp_path / "archive"
    originals = micrographs(inbox / "day1", 2)
    args = [
        str(inbox),
        "-m",
        str(model),
        "-o",
        str(out),
        "--once",
        "--recursive",
        "--move-done",
        str(archive),
    ]
    assert run_cli([*args, *FAST]) == 0
    assert not list(inbox.rglob("*.png"))
    for name, content in originals.items():
        assert (archive / "day1" / name).read_bytes() == content
        assert (out / "day1" / f"{Path(name).stem}_mask.png").is_file()


def _watch_process(inbox, out, model, *extra):
    cmd = [sys.executable, "-m", "semphase", "watch", str(inbox), "--model", str(model), "--out", str(out)]
    return subprocess.Popen(
        [*cmd, "--quiet", *FAST, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(condition, timeout=60.0, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"watcher exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.01)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_second_watcher_is_refused_and_sigterm_exits_cleanly(tmp_path, model):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    micrographs(inbox, 1)
    first = _watch_process(inbox, out, model)
    try:
        _wait_for(lambda: done_counts(out), proc=first)
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "semphase",
                "watch",
                str(inbox),
                "-m",
                str(model),
                "-o",
                str(out),
                "--once",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        message = second.stderr.strip()
        assert len(message.splitlines()) == 1 and "Traceback" not in message
        assert f"PID {first.pid}" in message and "already watched" in message
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_kill_9_mid_batch_then_restart_gives_exactly_one_complete_result_each(tmp_path, model):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    originals = micrographs(inbox, 12, shape=(384, 512), seed=3)
    first = _watch_process(inbox, out, model)
    try:
        _wait_for(lambda: done_counts(out), proc=first)
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=10)
    done_at_kill = sum(done_counts(out).values())
    assert 1 <= done_at_kill < len(originals), "the kill should land mid-batch"
    # the killed watcher's lock does not block the restart
    restart = subprocess.run(
        [
            sys.executable,
            "-m",
            "semphase",
            "watch",
            str(inbox),
            "-m",
            str(model),
            "-o",
            str(out),
            "--once",
            "--quiet",
            *FAST,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert restart.returncode == 0, restart.stderr
    assert done_counts(out) == Counter({name: 1 for name in originals})
    assert_complete_outputs(out, originals)
    for name, content in originals.items():
        assert (inbox / name).read_bytes() == content


def test_first_ctrl_c_finishes_the_file_a_second_aborts_it_cleanly(tmp_path, model, capsys, monkeypatch):
    from semphase.runtime.model import SegmentationModel

    micrographs(tmp_path / "in", 3, shape=(256, 256))
    out = tmp_path / "out"
    real, calls = SegmentationModel.logits, []

    def logits(self, batch):
        calls.append(len(batch))
        if len(calls) == 2:  # the first file is under way (call 1 was the load probe)
            os.kill(os.getpid(), signal.SIGINT)  # "stop after this file"
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # "now": the file is abandoned, its temporaries removed
        return real(self, batch)

    monkeypatch.setattr(SegmentationModel, "logits", logits)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under a background shell
    code = run_cli(
        [str(tmp_path / "in"), "--model", str(model), "--out", str(out), "--once", *FAST, "--batch", "1"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "interrupted" in err, err
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
    assert done_counts(out) == Counter()  # nothing was finished, so nothing is marked done
    assert signal.getsignal(signal.SIGINT) is before  # the CLI's handler is gone, the caller's is back

    monkeypatch.setattr(SegmentationModel, "logits", real)
    assert run_cli([str(tmp_path / "in"), "--model", str(model), "--out", str(out), "--once", *FAST]) == 0
    assert done_counts(out) == Counter({"m00.png": 1, "m01.png": 1, "m02.png": 1})


def test_first_ctrl_c_alone_finishes_the_current_file_and_exits_0(tmp_path, model, capsys, monkeypatch):
    from semphase.runtime.model import SegmentationModel

    micrographs(tmp_path / "in", 3, shape=(256, 256))
    out = tmp_path / "out"
    real, calls = SegmentationModel.logits, []

    def logits(self, batch):
        calls.append(len(batch))
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, batch)

    monkeypatch.setattr(SegmentationModel, "logits", logits)
    code = run_cli(
        [str(tmp_path / "in"), "--model", str(model), "--out", str(out), "--once", *FAST, "--batch", "1"]
    )
    assert code == 0, capsys.readouterr().err
    assert done_counts(out) == Counter({"m00.png": 1})  # the file under way was finished, no other begun
    assert_complete_outputs(out, ["m00.png"])
