"""The batch engine (semphase.runtime.run): one function under segment, --cluster, watch and serve.

Every route writes the same outputs for the same inputs; a library user runs a folder and an inbox with
``segment_many``; the CLI holds no loop of its own; an existing file is taken literally whatever its name.
"""

from __future__ import annotations

import ast
import base64
import json
import os
from pathlib import Path

import pytest

from _cli import run_semphase
from _runtime_models import micrograph, model_with_reference
from semphase.imageio import write_image
from semphase.progress import Silent

SRC = Path(__file__).resolve().parents[1] / "src" / "semphase"
#: what differs between routes by nature: where, when, how fast, on how many threads
VOLATILE = {"input", "outputs", "seconds", "threads", "self_check", "worker", "status"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return model_with_reference(tmp_path_factory.mktemp("model"), "model", variant="fp32")


def _inputs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, shape in enumerate([(160, 200), (96, 300)]):
        path = folder / f"field{i}.png"
        write_image(path, micrograph(*shape, seed=10 + i))
        paths.append(path)
    return paths


def _stable(document: dict) -> dict:
    """X.json without what legitimately differs between routes."""
    out = {k: v for k, v in document.items() if k not in VOLATILE}
    out["model"] = {k: v for k, v in document["model"].items() if k not in VOLATILE | {"path"}}
    return out


def _outputs(out: Path, stem: str) -> tuple[bytes, bytes, dict]:
    document = json.loads((out / f"{stem}.json").read_text())
    return (
        (out / f"{stem}_mask.png").read_bytes(),
        (out / f"{stem}_overlay.png").read_bytes(),
        _stable(document),
    )


class Recorder(Silent):
    def __init__(self) -> None:
        self.events = []

    def event(self, event) -> None:
        self.events.append(event)


@pytest.mark.slow
def test_segment_cluster_watch_serve_and_the_library_write_the_same_outputs(model, tmp_path, capsys):
    pytest.importorskip("distributed")
    from semphase.runtime import load_model
    from semphase.runtime.run import Inbox, InProcess, segment_many
    from semphase.runtime.segment import SegmentOptions
    from semphase.serve.service import Service

    files = _inputs(tmp_path / "in")
    # not the defaults: a route that lost the options on the way would still match with defaults
    flags, options = ["--window", "cosine", "--tta"], SegmentOptions(window="cosine", tta=True)
    routes = {}
    code, _, err = run_semphase(
        ["segment", model, tmp_path / "in", "--out", tmp_path / "segment", "-q", *flags], capsys
    )
    assert code == 0, err
    routes["segment"] = tmp_path / "segment"
    argv = [
        "segment",
        model,
        tmp_path / "in",
        "--out",
        tmp_path / "cluster",
        "--cluster",
        "local:1",
        "-q",
        *flags,
    ]
    code, _, err = run_semphase(argv, capsys)
    assert code == 0, err
    routes["cluster"] = tmp_path / "cluster"
    argv = [
        "watch",
        tmp_path / "in",
        "--model",
        model,
        "--out",
        tmp_path / "watch",
        "--once",
        "--settle",
        "0",
    ]
    code, _, err = run_semphase([*argv, "-q", *flags], capsys)
    assert code == 0, err
    routes["watch"] = tmp_path / "watch"
    loaded = load_model(model)
    recorder = Recorder()
    batch = segment_many(
        [tmp_path / "in"], tmp_path / "library", options, InProcess(loaded), progress=recorder
    )
    assert batch.done == 2 and not batch.failures
    assert [e.kind for e in recorder.events] == ["done", "done"] and recorder.events[0].result["width"] == 200
    routes["library"] = tmp_path / "library"
    inbox = Inbox(tmp_path / "in", settle=0.0, fail_after=0.0, poll=0.01, once=True)
    batch = segment_many(inbox, tmp_path / "inbox", options, InProcess(loaded))
    assert batch.done == 2 and batch.failed == 0
    routes["inbox"] = tmp_path / "inbox"

    reference = {f.stem: _outputs(routes["segment"], f.stem) for f in files}
    for name, out in routes.items():
        for f in files:
            assert _outputs(out, f.stem) == reference[f.stem], f"{name}: {f.name} differs from segment's"
    service = Service(loaded, options)
    try:
        for f in files:
            folder = service.new_request_folder()
            upload = folder / f"upload{f.suffix}"
            upload.write_bytes(f.read_bytes())
            document = service.segment(upload, f.name, options)
            mask, overlay, table = reference[f.stem]
            assert base64.b64decode(document["mask_png"]) == mask, f"serve: {f.name}"
            assert base64.b64decode(document["overlay_png"]) == overlay, f"serve: {f.name}"
            assert {k: v for k, v in _stable(document).items() if not k.endswith("_png")} == table
    finally:
        service.close()


def test_a_failed_input_is_an_event_naming_it_and_a_summary_row_in_input_order(model, tmp_path):
    from semphase.runtime import load_model
    from semphase.runtime.run import InProcess, segment_many

    files = _inputs(tmp_path / "in")
    broken = tmp_path / "in" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    recorder = Recorder()
    specs = [files[0], broken, tmp_path / "none-*.tif", files[1]]
    batch = segment_many(specs, tmp_path / "out", None, InProcess(load_model(model)), progress=recorder)
    assert (batch.done, batch.failed) == (2, 1)
    assert [r["status"] for r in batch.ordered] == ["done", "failed", "done"]
    kinds = [(e.kind, Path(e.file).name) for e in recorder.events]
    assert kinds == [
        ("failed", "none-*.tif"),
        ("done", "field0.png"),
        ("failed", "broken.png"),
        ("done", "field1.png"),
    ]
    assert len(batch.failures) == 2 and all("\n" not in line for line in batch.failures)
    assert str(broken) in batch.failures[1]
    rows = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert len(rows) == 4 and "broken.png" in rows[2] and "failed" in rows[2]


def test_an_existing_file_is_taken_literally_whatever_glob_characters_its_name_holds(tmp_path):
    from semphase.runtime.inputs import expand_inputs

    odd = tmp_path / "scan [red]x[1].tif"
    odd.write_bytes(b"x")
    decoy = tmp_path / "scan rx1.tif"  # what the name matches as a pattern
    decoy.write_bytes(b"x")
    files, problems = expand_inputs([str(odd)])
    assert files == [odd] and problems == []
    dangling = tmp_path / "link [2].tif"
    os.symlink(tmp_path / "gone.tif", dangling)
    files, problems = expand_inputs([str(dangling)])
    assert files == [dangling] and problems == []  # the reader names it: "cannot read", not "no match"
    files, problems = expand_inputs([str(tmp_path / "scan r*.tif")])
    assert files == [decoy] and problems == []


def _command_body(path: Path) -> ast.AST:
    """The ``register`` function of a CLI module: the command itself, not its table printers."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "register")


def _loops_and_handlers(path: Path) -> list[str]:
    found = []
    for node in ast.walk(_command_body(path)):
        if isinstance(node, ast.For | ast.While | ast.comprehension):
            found.append(f"loop at line {getattr(node, 'lineno', '?')}")
        if isinstance(node, ast.ExceptHandler) and "InputError" in ast.unparse(node.type or ast.Name("")):
            found.append(f"except InputError at line {node.lineno}")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Name | ast.Attribute | ast.alias):
            text = node.name if isinstance(node, ast.alias) else ast.unparse(node)
            if text.rsplit(".", 1)[-1] in ("segment_file", "expand_inputs", "write_summary", "Journal"):
                found.append(f"{text} at line {getattr(node, 'lineno', '?')}")
    return found


@pytest.mark.parametrize("command", ["segment", "watch"])
def test_the_segment_and_watch_commands_hold_no_batch_loop(command):
    """The engine owns the loop over inputs and their errors; the CLI parses options and renders."""
    assert _loops_and_handlers(SRC / "cli" / f"{command}.py") == []
