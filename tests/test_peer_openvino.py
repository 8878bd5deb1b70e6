"""benchmarks/peer_openvino.py: OpenVINO runs through semphase's sliding window unchanged, the script's
JSON and tables, and its one-line refusal without openvino. Speed is measured there, never asserted here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from _isolated import ran_in_child
from _runtime_models import build_blur_classifier, micrograph

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peer_openvino.py"


@pytest.fixture(scope="module")
def peer():
    spec = importlib.util.spec_from_file_location("peer_openvino", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["peer_openvino"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("peer_openvino", None)


@pytest.fixture(scope="module")
def blur_model(tmp_path_factory) -> Path:
    return build_blur_classifier(tmp_path_factory.mktemp("peer-ov") / "model.onnx", tile=128, overlap=32)


def test_openvino_segments_like_onnxruntime_through_the_same_sliding_window(peer, blur_model, request):
    pytest.importorskip("openvino", reason="openvino is not installed")
    if ran_in_child(request):  # OpenVINO stays loaded in a process for good (tests/_isolated.py)
        return
    from semphase.runtime.model import load_model
    from semphase.runtime.sliding import segment_array

    ort_model = load_model(blur_model, provider="cpu", threads=1, verify=False)
    meta = {"input": ort_model.input, "tile_size": 128, "overlap": 32, "classes": ort_model.classes}
    ov_model = peer.OpenVinoModel.compile(blur_model, 1, "f32", meta | {"variant": "fp32"})
    assert ov_model.properties["INFERENCE_PRECISION_HINT"] == "f32"
    image = micrograph(200, 300, seed=5)  # not a multiple of the tile: padding and edge tiles included
    ours, theirs = segment_array(ort_model, image), segment_array(ov_model, image)
    assert ours.shape == theirs.shape == image.shape
    assert np.mean(ours == theirs) > 0.999  # float32 both ways: only summation order may differ


def test_a_tiny_run_writes_the_json_and_the_tables(peer, blur_model, tmp_path, capsys, monkeypatch, request):
    pytest.importorskip("openvino", reason="openvino is not installed")
    if ran_in_child(request):  # OpenVINO stays loaded in a process for good (tests/_isolated.py)
        return
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a)
    )
    out = tmp_path / "out"
    configs = "ov-fp32-f32,ov-nncf-int8,ov-fp32,auto-fp32"
    args = ["--models", blur_model.parent, "--out", out, "--configs", configs, "--threads", "1"]
    args += ["--repeats", "1", "--warmup", "0", "--settle", "0", "--heldout-tiles", "1"]
    args += ["--first-repeats", "0", "--sizes", ""]
    assert peer.main([str(a) for a in args]) == 0
    doc = json.loads((out / "peer_openvino.json").read_text(encoding="utf-8"))
    assert set(doc["tiles"]) == {"ort-fp32", "ov-fp32-f32", "ov-fp32", "auto-fp32"}  # the reference too
    row = doc["tiles"]["ov-fp32-f32"]
    assert row["status"] == "ok" and row["ms"] > 0 and row["properties"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert row["vs_pair"]["agreement_pct"] > 99.9
    assert doc["machine"]["versions"]["openvino"] and doc["settings"]["threads"] == 1
    table = (out / "peer_openvino.md").read_text(encoding="utf-8")
    assert "| model.onnx | f32 |" in table and table in capsys.readouterr().out
    # --backend auto is timed beside the two it chooses between, and says which it took and why
    auto = doc["tiles"]["auto-fp32"]
    assert auto["status"] == "ok" and auto["backend_used"] in ("onnxruntime", "openvino")
    assert auto["choice"].startswith("auto")
    ort, ov = doc["tiles"]["ort-fp32"]["ms"], doc["tiles"]["ov-fp32"]["ms"]
    row = f"| model.onnx | {ort:.1f} | {ov:.1f} | {auto['ms']:.1f} | {auto['backend_used']} ("
    assert row in table and "`--backend auto`" in table
    # rows that cannot run say why, in one line each: nncf missing, a file the folder does not hold
    assert doc["skipped"] == {
        "ort-int8": f"no model.int8.onnx in {blur_model.parent}",
        "ov-nncf-int8": "nncf is not installed (pip install nncf)",
    }
    assert "| ov-nncf-int8 | skipped: nncf is not installed (pip install nncf) |" in table


def test_without_openvino_it_says_so_in_one_line_and_exits_2(peer, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a)
    )
    assert peer.main(["--models", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: openvino is not installed") and len(err.strip().splitlines()) == 1
