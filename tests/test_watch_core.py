"""Watcher scan / settle / decide logic, driven by poll_once with an injected clock (no sleeping).

The segmentation here is a stand-in that really decodes the file (imageio.read_gray) and writes outputs
atomically, so "undecodable" means what it means in production; the real segment_file is exercised by
tests/test_watch_cli.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from semphase.errors import InputError
from semphase.imageio import encode_image, read_gray, temporary_beside, write_image, write_text_atomic
from semphase.progress import Silent
from semphase.runtime.ledger.journal import WATCH_JOURNAL as JOURNAL_NAME
from semphase.runtime.ledger.journal import iter_lines
from semphase.runtime.ledger.lock import FolderLocked, OutputFolderLock
from semphase.runtime.watch import Watcher


class Recorder(Silent):
    """The watcher's progress: keeps its events."""

    def __init__(self, events: list) -> None:
        self.events = events

    def event(self, event) -> None:
        self.events.append(event)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class FakeSegment:
    """Decodes like segment_file, writes X_mask.png + X.json atomically, remembers what it read."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.side_effect = None

    def __call__(self, path: Path, out_dir: Path) -> dict:
        image = read_gray(path)
        self.calls.append((path.name, hashlib.sha256(path.read_bytes()).hexdigest()))
        if self.side_effect is not None:
            self.side_effect(path)
        mask, table = out_dir / f"{path.stem}_mask.png", out_dir / f"{path.stem}.json"
        write_image(mask, (image > 127).astype(np.uint8))
        write_text_atomic(table, json.dumps({"file": path.name}))
        return {
            "outputs": {"mask": str(mask), "json": str(table)},
            "width": image.shape[1],
            "height": image.shape[0],
        }


def png_bytes(seed: int, shape=(48, 64)) -> bytes:
    return encode_image(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8), ".png")


def journal(out: Path) -> list[dict]:
    return list(iter_lines(out / JOURNAL_NAME))


@pytest.fixture
def env(tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    clock, segment, events = Clock(), FakeSegment(), []

    def make(**kw):
        kw.setdefault("settle", 2.0)
        kw.setdefault("fail_after", 30.0)
        return Watcher(
            inbox, kw.pop("out", out), clock=clock, segment=segment, progress=Recorder(events), **kw
        )

    return inbox, out, clock, segment, events, make


def test_slowly_written_file_is_read_once_and_only_when_complete(env):
    inbox, out, clock, segment, _events, make = env
    data = png_bytes(0, (200, 300))
    target = inbox / "slow.png"
    chunks = [data[i : i + len(data) // 5 + 1] for i in range(0, len(data), len(data) // 5 + 1)]
    with make() as watcher:
        with open(target, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                fh.flush()
                os.utime(target, ns=(0, int(clock.t * 1e9)))  # mtime moves with every chunk
                watcher.poll_once()
                clock.advance(1.0)  # the writer pauses less than --settle between chunks
        assert segment.calls == []
        clock.advance(1.5)
        assert watcher.poll_once() == 1
        for _ in range(3):
            clock.advance(5)
            watcher.poll_once()
    assert segment.calls == [("slow.png", hashlib.sha256(data).hexdigest())]
    assert [(r["file"], r["status"], r["size"]) for r in journal(out)] == [("slow.png", "done", len(data))]


def test_writer_pausing_longer_than_settle_is_retried_not_failed(env):
    inbox, out, clock, segment, events, make = env
    data = png_bytes(1, (200, 300))
    target = inbox / "paused.png"
    target.write_bytes(data[: len(data) // 2])
    with make() as watcher:
        watcher.poll_once()
        clock.advance(2.5)
        assert watcher.poll_once() == 0  # settled but truncated: still arriving
        assert [e.kind for e in events if e.file == "paused.png"] == ["waiting"]
        clock.advance(10)
        watcher.poll_once()
        target.write_bytes(data)
        os.utime(target, ns=(0, target.stat().st_mtime_ns + 1_000_000))
        watcher.poll_once()
        clock.advance(2.5)
        assert watcher.poll_once() == 1
    assert [r["status"] for r in journal(out)] == ["done"]
    assert not (out / "failed").exists()


def test_corrupt_file_fails_after_fail_after_while_others_go_through(env):
    inbox, out, clock, segment, _events, make = env
    (inbox / "good.png").write_bytes(png_bytes(2))
    (inbox / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)
    with make() as watcher:
        watcher.poll_once()
        clock.advance(2.1)
        assert watcher.poll_once() == 1
        assert [r["file"] for r in journal(out)] == ["good.png"]
        clock.advance(20)
        watcher.poll_once()
        assert len(journal(out)) == 1  # unchanged for 22 s < 30 s: still given the benefit of the doubt
        clock.advance(10)
        assert watcher.poll_once() == 1
        for _ in range(3):  # recorded once, then left alone until it changes
            clock.advance(60)
            assert watcher.poll_once() == 0
        assert watcher.stats.done == 1 and watcher.stats.failed == 1
    lines = journal(out)
    assert [(r["file"], r["status"]) for r in lines] == [("good.png", "done"), ("bad.png", "failed")]
    assert "truncated PNG" in lines[1]["reason"] and lines[1]["outputs"] == []
    note = (out / "failed" / "bad.png.txt").read_text()
    assert "truncated PNG" in note and "bad.png" in note and f"size: {lines[1]['size']} bytes" in note
    assert sum(name == "bad.png" for name, _ in segment.calls) == 0  # never decoded, never segmented


def test_failed_file_that_changes_is_processed_and_its_note_removed(env):
    inbox, out, clock, _segment, _events, make = env
    bad = inbox / "late.png"
    bad.write_bytes(b"garbage")
    with make(fail_after=5) as watcher:
        watcher.poll_once()
        clock.advance(6)
        watcher.poll_once()
        assert (out / "failed" / "late.png.txt").exists()
        bad.write_bytes(png_bytes(3))
        watcher.poll_once()
        clock.advance(2.5)
        assert watcher.poll_once() == 1
    assert [r["status"] for r in journal(out)] == ["failed", "done"]
    assert not (out / "failed" / "late.png.txt").exists()


def test_restart_skips_done_files_and_redoes_changed_ones(env):
    inbox, out, clock, segment, _events, make = env
    for i in range(3):
        (inbox / f"im{i}.png").write_bytes(png_bytes(10 + i))
    with make() as watcher:
        watcher.poll_once()
        clock.advance(3)
        assert watcher.poll_once() == 3
    changed = inbox / "im1.png"
    changed.write_bytes(png_bytes(99))
    os.utime(changed, ns=(0, changed.stat().st_mtime_ns + 5_000_000_000))
    segment.calls.clear()
    with make() as watcher:
        watcher.poll_once()
        clock.advance(3)
        assert watcher.poll_once() == 1
        clock.advance(3)
        assert watcher.poll_once() == 0
    assert [name for name, _ in segment.calls] == ["im1.png"]
    assert sorted(r["file"] for r in journal(out)) == ["im0.png", "im1.png", "im1.png", "im2.png"]


def test_non_images_hidden_and_temporary_files_are_left_alone(env):
    inbox, out, clock, segment, _events, make = env
    others = {
        "notes.txt": b"operator notes",
        "run.csv": b"a,b\n1,2\n",
        ".hidden.png": png_bytes(4),
        "~lock.tif": b"x",
        "upload.png.part": png_bytes(5),
        "save.tmp": png_bytes(6),
    }
    for name, content in others.items():
        (inbox / name).write_bytes(content)
    (inbox / "real.PNG").write_bytes(png_bytes(7))  # suffixes match case-insensitively
    with make() as watcher:
        watcher.poll_once()
        clock.advance(40)
        watcher.poll_once()
        clock.advance(40)
        watcher.poll_once()
    assert [r["file"] for r in journal(out)] == ["real.PNG"]
    assert [name for name, _ in segment.calls] == ["real.PNG"]
    for name, content in others.items():
        assert (inbox / name).read_bytes() == content


def test_recursive_mirrors_subfolders_and_ignores_its_own_outputs_inside_the_inbox(env):
    inbox, _out, clock, segment, _events, make = env
    out = inbox / "results"
    (inbox / "day1" / "a").mkdir(parents=True)
    (inbox / "day1" / "a" / "x.png").write_bytes(png_bytes(8))
    (inbox / ".snapshots").mkdir()
    (inbox / ".snapshots" / "old.png").write_bytes(png_bytes(9))
    (inbox / "top.png").write_bytes(png_bytes(10))
    with make(out=out, recursive=True) as watcher:
        for _ in range(4):
            watcher.poll_once()
            clock.advance(3)
    assert sorted(r["file"] for r in journal(out)) == ["day1/a/x.png", "top.png"]
    assert (out / "day1" / "a" / "x_mask.png").is_file() and (out / "top_mask.png").is_file()
    assert journal(out)[0]["outputs"][0].count("/") in (0, 2)
    assert len(segment.calls) == 2  # results/*_mask.png never segmented in turn


def test_patterns_select_files(env):
    inbox, out, clock, _segment, _events, make = env
    (inbox / "keep_1.png").write_bytes(png_bytes(11))
    (inbox / "skip_1.png").write_bytes(png_bytes(12))
    with make(patterns=["KEEP_*"]) as watcher:
        watcher.poll_once()
        clock.advance(3)
        watcher.poll_once()
    assert [r["file"] for r in journal(out)] == ["keep_1.png"]


def test_file_modified_while_being_segmented_is_redone(env):
    inbox, out, clock, segment, events, make = env
    target = inbox / "racy.png"
    target.write_bytes(png_bytes(13))

    def rewrite_once(path):
        segment.side_effect = None
        path.write_bytes(png_bytes(14))
        os.utime(path, ns=(0, path.stat().st_mtime_ns + 1_000_000_000))

    segment.side_effect = rewrite_once
    with make() as watcher:
        watcher.poll_once()
        clock.advance(3)
        assert watcher.poll_once() == 0
        assert "changed" in [e.kind for e in events]
        clock.advance(3)
        assert watcher.poll_once() == 1
    lines = journal(out)
    assert len(lines) == 1 and lines[0]["size"] == target.stat().st_size
    assert segment.calls[-1][1] == hashlib.sha256(target.read_bytes()).hexdigest()


def test_segmentation_error_fails_at_once_and_output_problems_stop_the_watcher(env):
    inbox, out, clock, _segment, _events, make = env
    (inbox / "a.png").write_bytes(png_bytes(15))

    def broken(path, out_dir):
        raise RuntimeError("onnxruntime: bad allocation")

    watcher = Watcher(inbox, out, settle=1, fail_after=30, clock=clock, segment=broken)
    with watcher:
        watcher.poll_once()
        clock.advance(1.5)
        assert watcher.poll_once() == 1
    assert "RuntimeError" in journal(out)[0]["reason"]

    (inbox / "b.png").write_bytes(png_bytes(16))

    def disk_full(path, out_dir):
        raise InputError("cannot write (No space left on device)", out_dir / "b_mask.png")

    with Watcher(inbox, out, settle=1, clock=clock, segment=disk_full) as watcher:
        watcher.poll_once()
        clock.advance(1.5)
        with pytest.raises(InputError, match="No space"):
            watcher.poll_once()
    assert [r["file"] for r in journal(out)] == ["a.png"]  # b.png not marked failed: not its fault


def test_torn_journal_line_is_skipped_and_terminated(env):
    inbox, out, clock, segment, _events, make = env
    (inbox / "a.png").write_bytes(png_bytes(17))
    (inbox / "b.png").write_bytes(png_bytes(18))
    st = (inbox / "a.png").stat()
    out.mkdir()
    done_a = {"file": "a.png", "size": st.st_size, "mtime_ns": st.st_mtime_ns, "status": "done"}
    (out / JOURNAL_NAME).write_bytes(
        (json.dumps(done_a) + "\n" + '{"file": "b.png", "size": 12, "mtime_n').encode()
    )
    with make() as watcher:
        watcher.poll_once()
        clock.advance(3)
        assert watcher.poll_once() == 1
    assert [name for name, _ in segment.calls] == ["b.png"]
    assert [r["file"] for r in journal(out)] == ["a.png", "b.png"]
    assert (out / JOURNAL_NAME).read_bytes().count(b"\n") == 3  # fragment closed, new line intact


def test_start_removes_only_the_temporaries_a_dead_watcher_of_this_folder_left(env, tmp_path):
    inbox, out, clock, segment, events, make = env
    archive = tmp_path / "archive"
    (inbox / "a.png").write_bytes(png_bytes(30))

    def killed_mid_write(path):  # kill -9 between creating the temporary and renaming it
        temporary_beside(out / "a_mask.png")
        temporary_beside(archive / "a.png")
        raise SystemExit("killed")

    segment.side_effect = killed_mid_write
    with pytest.raises(SystemExit), make(move_done=archive) as watcher:
        watcher.poll_once()
        clock.advance(3)
        watcher.poll_once()
    left_by_dead_watcher = sorted(p.name for p in [*out.glob(".*.part"), *archive.glob(".*.part")])
    assert len(left_by_dead_watcher) == 2

    # temporaries that are not this watcher's: a `semphase segment` writing into a subfolder of --out
    # right now, another program's upload in an inbox that lies inside --out, and the temporary of a
    # watcher of another output folder moving into the same archive
    (out / "run2").mkdir()
    (out / "inbox2").mkdir()
    running_segment = out / "run2" / ".b_mask.png.x1y2.part"
    other_program = out / "inbox2" / ".upload.tif.part"
    other_watcher = archive / ".c.png.0a1b2c3d.semphase-watch-ffffffff.part"
    for path in (running_segment, other_program, other_watcher):
        path.write_bytes(b"someone else's, still being written")
    segment.side_effect = None
    with make(move_done=archive):
        pass
    assert running_segment.exists() and other_program.exists() and other_watcher.exists()
    assert not [p for p in [*out.glob(".*.part"), *archive.glob(".*.part")] if p.name in left_by_dead_watcher]
    assert [e.message for e in events if e.kind == "cleaned"] == [
        "removed 2 stale temporary file(s) left by a crash"
    ]


def test_move_done_moves_after_the_done_line_and_resumes_after_a_crash(env, tmp_path):
    inbox, out, clock, segment, _events, make = env
    moved = tmp_path / "archive"
    (inbox / "sub").mkdir()
    data = {"sub/a.png": png_bytes(19), "b.png": png_bytes(20)}
    for rel, content in data.items():
        (inbox / rel).write_bytes(content)
    with make(move_done=moved, recursive=True) as watcher:
        watcher.poll_once()
        clock.advance(3)
        assert watcher.poll_once() == 2
    for rel, content in data.items():
        assert not (inbox / rel).exists() and (moved / rel).read_bytes() == content
    assert {r["file"]: r["moved_to"] for r in journal(out)} == {"sub/a.png": "sub/a.png", "b.png": "b.png"}

    # a crash between the done line and the move: the file is still in the inbox with a done line
    (inbox / "c.png").write_bytes(png_bytes(21))
    st = (inbox / "c.png").stat()
    with open(out / JOURNAL_NAME, "a") as fh:
        fh.write(
            json.dumps({"file": "c.png", "size": st.st_size, "mtime_ns": st.st_mtime_ns, "status": "done"})
            + "\n"
        )
    segment.calls.clear()
    with make(move_done=moved) as watcher:
        watcher.poll_once()
    assert segment.calls == [] and (moved / "c.png").is_file() and not (inbox / "c.png").exists()

    # the same name acquired again never overwrites the archived original
    (inbox / "b.png").write_bytes(png_bytes(22))
    with make(move_done=moved) as watcher:
        watcher.poll_once()
        clock.advance(3)
        watcher.poll_once()
    assert (moved / "b.png").read_bytes() == data["b.png"]
    assert (moved / "b (2).png").read_bytes() == png_bytes(22)


def test_move_across_file_systems_copies_then_removes(env, tmp_path, monkeypatch):
    inbox, out, clock, _segment, _events, make = env
    content = png_bytes(23)
    (inbox / "a.png").write_bytes(content)
    real_rename = os.rename

    def cross_device(src, dst):
        if str(src).startswith(str(inbox)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", cross_device)
    with make(move_done=tmp_path / "archive") as watcher:
        watcher.poll_once()
        clock.advance(3)
        watcher.poll_once()
    assert (tmp_path / "archive" / "a.png").read_bytes() == content and not (inbox / "a.png").exists()
    assert not list((tmp_path / "archive").glob(".*.part"))


def test_unreachable_inbox_is_waited_out(env, tmp_path):
    inbox, out, clock, _segment, events, make = env
    (inbox / "a.png").write_bytes(png_bytes(24))
    with make() as watcher:
        watcher.poll_once()
        inbox.rename(tmp_path / "away")
        clock.advance(3)
        assert watcher.poll_once() == 0
        (tmp_path / "away").rename(inbox)
        assert watcher.poll_once() == 1  # unchanged across the outage: its settling time still counts
    kinds = [e.kind for e in events]
    assert kinds.count("inbox-unreachable") == 1 and "inbox-back" in kinds


def test_folder_checks_and_lock(env, tmp_path):
    inbox, out, _clock, _segment, _events, make = env
    with pytest.raises(InputError, match="inbox itself"):
        make(out=inbox)
    with pytest.raises(InputError, match="not a folder"):
        Watcher(tmp_path / "nope", out)
    with make(), pytest.raises(FolderLocked, match=f"PID {os.getpid()}"):
        make().open()
    # a lock file left by a dead watcher does not block
    (out / ".semphase-watch.lock").write_text('{"pid": 999999, "host": "gone", "since": "earlier"}\n')
    with OutputFolderLock(out) as lock:
        assert lock.held and f'"pid": {os.getpid()}' in (out / ".semphase-watch.lock").read_text()


def test_run_once_returns_when_everything_present_is_handled(tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    (inbox / "a.png").write_bytes(png_bytes(25))
    (inbox / "bad.png").write_bytes(b"nope")
    segment = FakeSegment()
    with Watcher(inbox, out, settle=0.05, fail_after=0.2, segment=segment) as watcher:
        stats = watcher.run(poll=0.02, once=True)
    assert (stats.done, stats.failed, stats.queued) == (1, 1, 0)
    assert stats.images_per_minute > 0 and stats.megapixels_per_second > 0


def test_run_once_leaves_a_file_that_never_stops_changing_for_the_next_run(tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    growing = inbox / "growing.png"
    growing.write_bytes(png_bytes(26))
    events = []
    with Watcher(
        inbox, out, settle=0.05, fail_after=0.1, progress=Recorder(events), segment=FakeSegment()
    ) as w:
        scan = w.poll_once

        def write_more_then_scan():
            with open(growing, "ab") as fh:
                fh.write(b"\0" * 16)
            return scan()

        w.poll_once = write_more_then_scan
        w.run(poll=0.01, once=True)
    assert [(e.kind, e.file) for e in events if e.kind == "left"] == [("left", "growing.png")]
    assert journal(out) == []


def test_restarts_over_a_journal_with_history_trust_the_latest_line(env):
    # A file that failed and later succeeded has two lines; every restart must skip it (the last line
    # wins) and add nothing to the journal, however often it restarts.
    inbox, out, clock, segment, _events, make = env
    bad = inbox / "late.png"
    bad.write_bytes(b"garbage")
    with make(fail_after=5) as watcher:
        watcher.poll_once()
        clock.advance(6)
        watcher.poll_once()
    bad.write_bytes(png_bytes(4))
    os.utime(bad, ns=(0, bad.stat().st_mtime_ns + 3_000_000_000))
    with make() as watcher:
        watcher.poll_once()
        clock.advance(3)
        assert watcher.poll_once() == 1
    assert [r["status"] for r in journal(out)] == ["failed", "done"]
    segment.calls.clear()
    for _ in range(2):
        with make() as watcher:
            watcher.poll_once()
            clock.advance(3)
            assert watcher.poll_once() == 0
    assert segment.calls == [] and [r["status"] for r in journal(out)] == ["failed", "done"]


def test_a_change_of_size_with_the_same_mtime_is_a_new_file(env):
    inbox, out, clock, segment, _events, make = env
    image = inbox / "a.png"
    image.write_bytes(png_bytes(5))
    with make() as watcher:
        watcher.poll_once()
        clock.advance(3)
        assert watcher.poll_once() == 1
    mtime = image.stat().st_mtime_ns
    image.write_bytes(png_bytes(6, shape=(64, 80)))  # other bytes, other size
    os.utime(image, ns=(0, mtime))  # ... and the very same mtime (coarse file-system clocks)
    assert image.stat().st_mtime_ns == mtime
    segment.calls.clear()
    with make() as watcher:
        watcher.poll_once()
        clock.advance(3)
        assert watcher.poll_once() == 1
    assert [name for name, _ in segment.calls] == ["a.png"]
    assert [r["size"] for r in journal(out)] == [len(png_bytes(5)), len(png_bytes(6, shape=(64, 80)))]


def test_a_file_removed_while_it_is_segmented_keeps_its_outputs_and_gets_its_done_line(env, tmp_path):
    inbox, out, clock, segment, events, make = env
    (inbox / "a.png").write_bytes(png_bytes(40))
    (inbox / "b.png").write_bytes(png_bytes(41))
    segment.side_effect = lambda path: path.rename(tmp_path / path.name) if path.name == "a.png" else None
    with make(move_done=tmp_path / "archive") as watcher:
        watcher.poll_once()
        clock.advance(3)
        assert watcher.poll_once() == 2
    lines = {r["file"]: r for r in journal(out)}
    assert lines["a.png"]["status"] == "done" and sorted(lines["a.png"]["outputs"]) == [
        "a.json",
        "a_mask.png",
    ]
    assert "moved_to" not in lines["a.png"] and (out / "a_mask.png").is_file()
    assert [e.message for e in events if e.file == "a.png" and e.kind == "done"][0].endswith(
        "it left the inbox meanwhile"
    )
    assert (tmp_path / "archive" / "b.png").is_file()  # the other file is moved as usual


def test_a_failed_move_is_reported_once_and_retried_at_the_next_start_without_segmenting_again(
    env, tmp_path, monkeypatch
):
    import semphase.runtime.watch.watcher as watch_module

    inbox, out, clock, segment, events, make = env
    archive = tmp_path / "archive"
    (inbox / "a.png").write_bytes(png_bytes(50))
    real_move = watch_module.move_original

    def refused(source, destination):
        raise PermissionError(errno.EACCES, "Permission denied", str(destination))

    monkeypatch.setattr(watch_module, "move_original", refused)
    with make(move_done=archive) as watcher:
        watcher.poll_once()
        clock.advance(3)
        assert watcher.poll_once() == 1
        for _ in range(3):  # polled again and again: neither retried nor reported again
            clock.advance(5)
            watcher.poll_once()
    failures = [e for e in events if e.kind == "move-failed"]
    assert len(failures) == 1 and "Permission denied" in failures[0].message
    assert (inbox / "a.png").is_file() and not archive.exists()

    monkeypatch.setattr(watch_module, "move_original", real_move)
    with make(move_done=archive) as watcher:
        watcher.poll_once()
    assert [name for name, _ in segment.calls] == ["a.png"]  # done once, only moved the second time
    assert (archive / "a.png").read_bytes() == png_bytes(50) and not (inbox / "a.png").exists()
    assert [r["status"] for r in journal(out)] == ["done"]


def test_a_byte_identical_copy_at_the_destination_finishes_the_move_anything_else_is_kept(tmp_path):
    from semphase.runtime.watch.move import move_original, plan_destination

    inbox, archive = tmp_path / "in", tmp_path / "archive"
    inbox.mkdir()
    archive.mkdir()
    (inbox / "a.png").write_bytes(png_bytes(60))
    (archive / "a.png").write_bytes(png_bytes(60))  # a move interrupted after its copy
    assert plan_destination(inbox / "a.png", archive, "a.png") == "a.png"
    move_original(inbox / "a.png", archive / "a.png")
    assert not (inbox / "a.png").exists() and (archive / "a.png").read_bytes() == png_bytes(60)

    # same size, different bytes (a detector writes fixed-size files): never taken for the same file
    same_size = bytearray(png_bytes(61))
    same_size[-20] ^= 0xFF
    (inbox / "b.png").write_bytes(png_bytes(61))
    (archive / "b.png").write_bytes(bytes(same_size))
    assert plan_destination(inbox / "b.png", archive, "b.png") == "b (2).png"
    with pytest.raises(FileExistsError):
        move_original(inbox / "b.png", archive / "b.png")
    assert (inbox / "b.png").read_bytes() == png_bytes(61) and (archive / "b.png").read_bytes() == same_size
