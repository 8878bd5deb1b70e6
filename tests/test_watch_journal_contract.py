"""Watch-journal behaviour that mutation testing (`make mutation`) found unchecked: which lines count,
blank lines, moved_to, reopening a journal, a torn one-byte journal, the open/closed state, the time stamp,
and the errors a read or write failure gives."""

from __future__ import annotations

import errno
import json
from datetime import datetime
from pathlib import Path

import pytest

from semphase.errors import InputError
from semphase.runtime.ledger import journal as watch_journal
from semphase.runtime.ledger.journal import Journal, iter_lines, read_outcomes

GOOD = {"file": "a.png", "size": 10, "mtime_ns": 5, "status": "done"}


def _write(path: Path, *lines: object) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_only_complete_outcome_lines_count(tmp_path):
    foreign = [
        {"foo": 1},
        [1, 2],
        {**GOOD, "file": 3},
        {**GOOD, "size": "10"},
        {**GOOD, "mtime_ns": 5.0},
        {**GOOD, "status": "skipped"},
        {k: v for k, v in GOOD.items() if k != "status"},
    ]
    path = _write(tmp_path / "j.jsonl", *foreign, GOOD)
    assert list(iter_lines(path)) == [GOOD]
    assert list(read_outcomes(path)) == ["a.png"]


def test_lines_after_a_blank_line_are_still_read(tmp_path):
    later = {**GOOD, "file": "b.png"}
    path = _write(tmp_path / "j.jsonl", GOOD, "", "   ", later)
    assert [r["file"] for r in iter_lines(path)] == ["a.png", "b.png"]


def test_outcomes_keep_the_file_and_where_it_was_moved(tmp_path):
    path = _write(
        tmp_path / "j.jsonl",
        {**GOOD, "moved_to": "sub/a.png"},
        {**GOOD, "file": "b.png", "status": "failed", "moved_to": 7},
        {**GOOD, "file": "c.png"},
    )
    outcomes = read_outcomes(path)
    assert [(o.file, o.size, o.mtime_ns, o.status, o.moved_to) for o in outcomes.values()] == [
        ("a.png", 10, 5, "done", "sub/a.png"),
        ("b.png", 10, 5, "failed", None),  # not a path: ignored
        ("c.png", 10, 5, "done", None),
    ]


def test_reopening_a_clean_journal_adds_nothing(tmp_path):
    path = _write(tmp_path / "j.jsonl", GOOD, {**GOOD, "file": "b.png"})
    before = path.read_bytes()
    with Journal(path):
        pass
    assert path.read_bytes() == before


def test_a_journal_torn_after_its_first_byte_is_terminated(tmp_path):
    path = tmp_path / "j.jsonl"
    path.write_bytes(b"{")
    with Journal(path) as journal:
        journal.append(GOOD)
    assert [r["file"] for r in iter_lines(path)] == ["a.png"]


def test_appending_needs_an_open_journal(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    with pytest.raises(RuntimeError, match="^journal is not open$"):
        journal.append(GOOD)
    journal.open()
    journal.append(GOOD)
    journal.close()
    journal.close()  # twice is harmless
    with pytest.raises(RuntimeError, match="^journal is not open$"):
        journal.append(GOOD)
    assert len(list(iter_lines(journal.path))) == 1


def test_each_line_gets_a_local_time_stamp_unless_it_has_one(tmp_path):
    path = tmp_path / "j.jsonl"
    with Journal(path) as journal:
        stamped = journal.append(GOOD)
        kept = journal.append({**GOOD, "time": "2026-01-02T03:04:05+01:00"})
    assert "time" not in GOOD  # the caller's dict is left alone
    when = datetime.fromisoformat(stamped["time"])
    assert when.tzinfo is not None and when.microsecond == 0
    assert abs((datetime.now().astimezone() - when).total_seconds()) < 60
    assert kept["time"] == "2026-01-02T03:04:05+01:00"
    assert [r["time"] for r in iter_lines(path)] == [stamped["time"], kept["time"]]
    assert list(json.loads(path.read_text().splitlines()[0])) == [*GOOD, "time"]


def test_an_unreadable_journal_is_an_input_error_naming_it(tmp_path):
    folder = tmp_path / "watch-journal.jsonl"
    folder.mkdir()  # a folder where the journal should be
    with pytest.raises(InputError) as info:
        list(iter_lines(folder))
    assert info.value.reason == "cannot read the journal (Is a directory)"
    assert info.value.path == str(folder)


def test_a_journal_that_cannot_be_opened_is_an_input_error_naming_it(tmp_path):
    path = tmp_path / "missing" / "watch-journal.jsonl"
    with pytest.raises(InputError) as info:
        Journal(path).open()
    assert info.value.reason == "cannot write the journal (No such file or directory)"
    assert info.value.path == str(path)


def test_a_full_disk_while_appending_is_an_input_error_naming_the_journal(tmp_path, monkeypatch):
    path = tmp_path / "watch-journal.jsonl"
    journal = Journal(path).open()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(watch_journal.os, "fsync", full)
    with pytest.raises(InputError) as info:
        journal.append(GOOD)
    journal.close()
    assert info.value.reason == "cannot write the journal (No space left on device)"
    assert info.value.path == str(path)
