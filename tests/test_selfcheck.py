"""Models that verify themselves where they run: the stored reference, the verdict, the fall-back to precise
INT8 kernels, the refusal (one line, exit 2), `--no-verify`, `info --verify`, and older files without a
reference. The failing CPU is simulated (a reference that disagrees, or logits that change with the session
options), so every test gives the same answer on every instruction set."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest

from _runtime_models import micrograph, reference_tiles
from _runtime_models import model_with_reference as _model
from semphase.cli.main import main
from semphase.errors import InputError
from semphase.runtime import model as runtime_model
from semphase.runtime import selfcheck
from semphase.runtime.model import SegmentationModel, load_model

TILE = 64


@pytest.fixture(autouse=True)
def _fresh_verdicts():
    """Each test starts as a new process would: no verdict cached yet."""
    runtime_model._VERDICTS.clear()
    yield
    runtime_model._VERDICTS.clear()


def _run(args: list, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_reference_round_trips_through_the_metadata():
    tiles = reference_tiles()
    labels = (tiles // 60).astype(np.uint8)
    ref = selfcheck.Reference(tiles, labels, 99.25, 99.9, {"cpu": "c"})
    back = selfcheck.Reference.from_metadata(json.loads(json.dumps(ref.to_metadata())))
    assert np.array_equal(back.tiles, tiles) and np.array_equal(back.labels, labels)
    assert (back.required_pct, back.export_pct, back.exported_on) == (99.25, 99.9, {"cpu": "c"})


def test_required_agreement_is_the_gate_or_what_export_reached_less_the_margin():
    assert selfcheck.required_agreement(99.5, 100.0) == 99.5
    assert selfcheck.required_agreement(99.5, 99.8) == pytest.approx(99.3)
    assert selfcheck.required_agreement(99.99, 100.0) == 99.5


def test_a_good_model_passes_once_per_process_and_records_the_verdict(tmp_path, monkeypatch):
    path = _model(tmp_path, "good")
    calls = []
    real = selfcheck.check
    monkeypatch.setattr(selfcheck, "check", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = load_model(path, provider="cpu", threads=1)
    verdict = model.self_check
    assert verdict.status == "passed" and verdict.agreement_pct == 100.0 and verdict.required_pct == 99.5
    assert verdict.pixels == 2 * TILE * TILE and verdict.session_options == {}
    assert verdict.cpu and set(verdict.instruction_sets) >= {"avx2", "avx512_vnni"}
    assert model.describe()["self_check"]["status"] == "passed"
    again = load_model(path, provider="cpu", threads=1)
    assert again.self_check.status == "passed" and len(calls) == 1  # checked once per process


def test_a_model_whose_reference_disagrees_is_refused_after_trying_the_precise_kernels(tmp_path, monkeypatch):
    path = _model(tmp_path, "bad", corrupt=0.05)
    opened = []
    real_open = runtime_model._open
    monkeypatch.setattr(
        runtime_model,
        "_open",
        lambda source, pr, t, config, streams=1: (
            opened.append(config) or real_open(source, pr, t, config, streams)
        ),
    )
    with pytest.raises(InputError) as info:
        load_model(path, provider="cpu", threads=1)
    text = str(info.value)
    assert opened == [{}, selfcheck.PRECISE_KERNELS]
    assert text.startswith(f"{path}: INT8 model fails its self-check on this CPU (")
    assert "95.01 % (95.01 % with the precise INT8 kernels) of its reference pixels agree with FP32" in text
    assert "99.50 % required; use model.onnx (FP32)" in text and "\n" not in text


def test_the_precise_kernels_are_kept_when_only_they_pass(tmp_path, monkeypatch):
    # Simulate a CPU whose default INT8 kernels saturate: without the precise-kernel option the logits come
    # out in reversed class order.
    path = _model(tmp_path, "saturating")
    real = SegmentationModel.logits

    def logits(self, batch):
        out = real(self, batch)
        return out if "session.x64quantprecision" in self.session_options else out[:, ::-1]

    monkeypatch.setattr(SegmentationModel, "logits", logits)
    model = load_model(path, provider="cpu", threads=1)
    verdict = model.self_check
    assert verdict.status == "passed-precise" and verdict.agreement_pct == 100.0
    assert [a["session_options"] for a in verdict.attempts] == [{}, selfcheck.PRECISE_KERNELS]
    assert verdict.attempts[0]["agreement_pct"] < 50
    assert model.session_options == selfcheck.PRECISE_KERNELS  # the session segmenting from now on
    assert model.describe()["session_options"] == selfcheck.PRECISE_KERNELS
    cached = load_model(path, provider="cpu", threads=1)  # the cached verdict reopens with the same option
    assert (
        cached.session_options == selfcheck.PRECISE_KERNELS and cached.self_check.status == "passed-precise"
    )


def test_no_verify_skips_the_check_and_files_without_reference_still_load(tmp_path):
    bad = _model(tmp_path, "bad", corrupt=0.5)
    assert load_model(bad, provider="cpu", verify=False).self_check.status == "skipped"
    old = _model(tmp_path, "old", reference=False)
    verdict = load_model(old, provider="cpu").self_check
    assert verdict.status == "no-reference" and "no reference" in verdict.line()


def test_a_malformed_reference_is_one_line_naming_the_file(tmp_path):
    path = _model(tmp_path, "broken")
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "semphase.reference":
            value = json.loads(prop.value)
            value["labels"]["zlib_base64"] = "not base64!"
            prop.value = json.dumps(value)
    onnx.save(model, str(path))
    with pytest.raises(InputError, match="unusable semphase.reference metadata") as info:
        load_model(path, provider="cpu")
    assert str(info.value).startswith(str(path))


def test_segment_refuses_a_failing_model_with_one_line_and_exit_2(tmp_path, capsys):
    image = tmp_path / "in" / "m.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), micrograph(96, 96))
    bad = _model(tmp_path, "bad", corrupt=0.05)
    code, _, err = _run(["segment", bad, image, "--out", tmp_path / "out", "--threads", 1], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "fails its self-check" in " ".join(err.split()) and "bad.onnx" in err
    assert not (tmp_path / "out" / "m_mask.png").exists()
    code, _, err = _run(["segment", bad, image, "--out", tmp_path / "out", "--no-verify", "-q"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "out" / "m.json").read_text())
    assert result["model"]["self_check"]["status"] == "skipped"


def test_segment_records_the_verdict_in_every_result(tmp_path, capsys):
    image = tmp_path / "in" / "m.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), micrograph(96, 96))
    good = _model(tmp_path, "good")
    code, out, err = _run(["segment", good, image, "--out", tmp_path / "out", "--threads", 1], capsys)
    assert code == 0, err
    assert "self-check passed: 100.00 % of 8192 reference pixels agree with FP32" in " ".join(out.split())
    verdict = json.loads((tmp_path / "out" / "m.json").read_text())["model"]["self_check"]
    assert verdict["status"] == "passed" and verdict["agreement_pct"] == 100.0
    assert {"cpu", "instruction_sets", "session_options", "required_pct", "seconds"} <= set(verdict)


def test_info_verify_shows_the_verdict_and_refuses_a_failing_model(tmp_path, capsys, monkeypatch):
    from semphase.cli.common import console

    monkeypatch.setattr(console, "width", 400)  # one table row per line
    good = _model(tmp_path, "good")
    code, out, _ = _run(["info", good, "--verify", "--provider", "cpu"], capsys)
    flat = " ".join(out.split())
    assert code == 0 and "self-check passed" in flat and "runs must reach 99.50 % agreement" in flat
    code, out, _ = _run(["info", good, "--verify", "--json"], capsys)
    assert code == 0 and json.loads(out)["self_check"]["status"] == "passed"
    code, out, _ = _run(["info", good], capsys)
    assert code == 0 and "self-check passed" not in " ".join(out.split())  # only with --verify
    bad = _model(tmp_path, "bad", corrupt=0.05)
    code, _, err = _run(["info", bad, "--verify"], capsys)
    assert code == 2 and "fails its self-check" in " ".join(err.split()) and "Traceback" not in err
    old = _model(tmp_path, "old", reference=False)
    code, out, _ = _run(["info", old, "--verify"], capsys)
    assert code == 0 and "none: exported before self-check references" in " ".join(out.split())
