"""File names as they come from instruments and shares: undecodable bytes, control characters, symlink loops.

Before: a symlink loop among the inputs aborted `segment` ("RuntimeError: Symlink loop", exit 1, nothing
done), and a Latin-1 file name on Linux wrote its outputs and then crashed writing summary.csv
(UnicodeEncodeError), skipping the rest. Each is now at most one input's one-line error.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

import pytest

from _runtime_models import build_blur_classifier, micrograph
from semphase.cli import common
from semphase.cli.main import main
from semphase.errors import InputError, display_path
from semphase.imageio import write_image
from semphase.runtime.ledger.journal import WATCH_JOURNAL as JOURNAL_NAME
from semphase.runtime.ledger.journal import iter_lines

LATIN1 = os.fsdecode(b"caf\xe9.png")  # 'caf\udce9.png': not valid UTF-8, legal on Linux
needs_bytes_names = pytest.mark.skipif(
    sys.platform != "linux", reason="only Linux file systems hold names that are not valid UTF-8"
)


def run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main([str(a) if not isinstance(a, str) else a for a in argv])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_blur_classifier(tmp_path_factory.mktemp("m") / "blur.onnx", tile=64, overlap=16)


def test_display_path_escapes_what_cannot_be_printed_and_keeps_the_rest():
    assert display_path("Probe 7 µm/Ni–WC.tif") == "Probe 7 µm/Ni–WC.tif"
    assert display_path(LATIN1) == "caf\\xe9.png"
    assert display_path(b"caf\xe9.png") == "caf\\xe9.png"
    assert display_path("a\nb\x1b[31m.png") == "a\\x0ab\\x1b[31m.png"
    error = InputError("empty file (0 bytes)", "a\nb.png")
    assert str(error) == "a\\x0ab.png: empty file (0 bytes)"
    assert (error.path, error.reason) == ("a\nb.png", "empty file (0 bytes)")
    assert error.said_of("a\nb.png") == "empty file (0 bytes)" and error.said_of("c.png") == str(error)


@needs_bytes_names
def test_segment_finishes_a_batch_with_loops_dangling_links_and_undecodable_names(
    tmp_path, capsys, model, monkeypatch
):
    monkeypatch.setattr(common.console, "width", 300)  # table cells unwrapped
    inbox = tmp_path / "in"
    write_image(inbox / "b.png", micrograph(64, 64, seed=1))
    write_image(inbox / LATIN1, micrograph(64, 64, seed=2))
    write_image(inbox / "new\nline.png", micrograph(64, 64, seed=3))
    (inbox / "loop1.png").symlink_to("loop2.png")
    (inbox / "loop2.png").symlink_to("loop1.png")
    (inbox / "gone.tif").symlink_to("deleted.tif")
    out = tmp_path / "out"

    code, stdout, err = run(["segment", model, inbox, inbox / "loop1.png", "--out", out], capsys)
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("error: 3 input(s) failed, 3 succeeded")
    assert sum("loop1.png: cannot access" in line for line in lines) == 1  # named once, not twice
    assert sum("loop2.png: cannot access" in line for line in lines) == 1
    assert sum("gone.tif: no such file" in line for line in lines) == 1
    rows = {r["input"]: r for r in csv.DictReader((out / "summary.csv").open(encoding="utf-8"))}
    assert rows[f"{inbox}/caf\\xe9.png"]["status"] == "done"
    assert rows[f"{inbox}/new\\x0aline.png"]["status"] == "done"
    assert rows[f"{inbox}/loop1.png"]["reason"].startswith("cannot access")
    assert (out / os.fsdecode(b"caf\xe9_mask.png")).is_file() and (out / "new\nline_mask.png").is_file()
    assert "caf\\xe9.png" in "".join(stdout.split())


@needs_bytes_names
def test_watch_handles_an_undecodable_name_once_across_restarts(tmp_path, capsys, model):
    inbox = tmp_path / "in"
    write_image(inbox / LATIN1, micrograph(64, 64, seed=2))
    argv = ["watch", inbox, "--model", model, "--out", tmp_path / "out", "--once", "--settle", "0"]
    said = ""
    for _ in range(2):
        code, stdout, err = run(argv, capsys)
        assert code == 0, err
        said += stdout
    assert said.count("caf\\xe9.png") == 1  # done in the first run, skipped by the second
    lines = list(iter_lines(tmp_path / "out" / JOURNAL_NAME))
    assert [(r["file"], r["status"]) for r in lines] == [(LATIN1, "done")]
    assert Path(tmp_path / "out" / os.fsdecode(b"caf\xe9_mask.png")).is_file()
