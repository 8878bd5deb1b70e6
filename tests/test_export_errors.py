"""`semphase export` on bad input (one line, exit 2) and when a validation gate fails (exit 1, files kept)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from semphase.export import onnx_export, pipeline
from test_export_support import SMALL_EXPORT_ARGS, UNTRAINED_GATE_ARGS, make_checkpoint, make_dataset, run_cli


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "data", groups=3, size=64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "best.pt"
    make_checkpoint(path)
    return path


def _one_line_error(code, err, expected_code=2):
    assert code == expected_code
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and "Traceback" not in err
    return lines[0]


def _export(capsys, checkpoint, out, *extra):
    return run_cli(
        [
            "export",
            checkpoint,
            "--out",
            out,
            *SMALL_EXPORT_ARGS,
            *extra,
        ],
        capsys,
    )


def test_missing_checkpoint(tmp_path, dataset, capsys):
    code, _, err = _export(capsys, tmp_path / "nope.pt", tmp_path / "out", "--calib", dataset)
    assert "nope.pt" in _one_line_error(code, err)


def test_corrupt_checkpoint(tmp_path, dataset, capsys):
    path = tmp_path / "best.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    code, _, err = _export(capsys, path, tmp_path / "out", "--calib", dataset)
    assert str(path) in _one_line_error(code, err)
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_truncated_checkpoint(tmp_path, checkpoint, dataset, capsys):
    path = tmp_path / "best.pt"
    path.write_bytes(checkpoint.read_bytes()[:5000])
    code, _, err = _export(capsys, path, tmp_path / "out", "--calib", dataset)
    assert str(path) in _one_line_error(code, err)


def test_foreign_checkpoint(tmp_path, dataset, capsys):
    path = tmp_path / "other.pt"
    torch.save({"model": {"w": torch.zeros(3)}}, path)
    code, _, err = _export(capsys, path, tmp_path / "out", "--calib", dataset)
    assert "not a semphase checkpoint" in _one_line_error(code, err)


def test_unwritable_output_folder(tmp_path, checkpoint, dataset, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = _export(capsys, checkpoint, blocker / "out", "--calib", dataset)
    assert str(blocker) in _one_line_error(code, err)


def test_empty_calibration_set(tmp_path, checkpoint, capsys):
    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    code, _, err = _export(capsys, checkpoint, tmp_path / "out", "--calib", empty)
    assert "no images" in _one_line_error(code, err)
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_calibration_set_without_masks(tmp_path, checkpoint, dataset, capsys):
    # Images without masks cannot hold out labelled images for validation.
    folder = tmp_path / "unlabelled"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for image in sorted((dataset / "AugmentedImages").iterdir())[:4]:
        (folder / "images" / image.name).write_bytes(image.read_bytes())
    code, _, err = _export(capsys, checkpoint, tmp_path / "out", "--calib", folder)
    assert "crop groups" in _one_line_error(code, err)


def test_unreachable_training_dataset_asks_for_calib(tmp_path, capsys):
    path = tmp_path / "best.pt"
    make_checkpoint(path, dataset=str(tmp_path / "moved-away"))
    code, _, err = _export(capsys, path, tmp_path / "out")
    assert "--calib" in _one_line_error(code, err)


@pytest.mark.parametrize(
    "option",
    [
        ["--tile", "50"],
        ["--calib-method", "magic"],
        ["--min-fp32-agreement", "101"],
        ["--int8-activations", "int4"],
    ],
)
def test_bad_options_exit_2(tmp_path, checkpoint, dataset, capsys, option):
    code, _, err = run_cli(
        ["export", checkpoint, "--out", tmp_path / "out", "--calib", dataset, *option], capsys
    )
    assert code == 2 and err.count("\n") == 1, err


def test_unknown_float_layer_is_one_line(tmp_path, checkpoint, dataset, capsys):
    code, _, err = _export(
        capsys,
        checkpoint,
        tmp_path / "out",
        "--calib",
        dataset,
        "--no-fp16",
        "--int8-float-layers",
        "no-such-node",
    )
    assert "no-such-node" in _one_line_error(code, err)


_REAL_EXPORT = onnx_export.export_fp32


def _damaged_export(*args, **kwargs):
    """The real FP32 export with the logits head's bias pushed far towards class 0."""
    graph = _REAL_EXPORT(*args, **kwargs)
    head = next(n for n in reversed(graph.model.graph.node) if n.op_type in ("Conv", "ConvTranspose"))
    (bias,) = [t for t in graph.model.graph.initializer if t.name == head.input[2]]
    values = onnx.numpy_helper.to_array(bias).copy()
    values[0] += 100.0
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    return graph


def test_damaged_weights_fail_the_gate_and_keep_the_files(tmp_path, checkpoint, dataset, capsys, monkeypatch):
    monkeypatch.setattr(pipeline.onnx_export, "export_fp32", _damaged_export)
    out = tmp_path / "out"
    code, stdout, err = _export(capsys, checkpoint, out, "--calib", dataset)
    line = _one_line_error(code, err, expected_code=1)
    assert "FP32 argmax agreement with PyTorch" in line and str(out) in line
    for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx", "export_report.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "export_report.json").read_text())
    assert report["passed"] is False
    failed = {g["name"] for g in report["gates"] if not g["passed"]}
    assert "fp32_argmax_agreement_pct" in failed
    assert report["variants"]["fp32"]["argmax_agreement_pct"] < 99.99
    # FP16 is judged against the (damaged) FP32 file it was converted from, and agrees with it.
    assert report["variants"]["fp16"]["vs_fp32"]["agreement_pct"] > 99.0
    assert "FAIL" in stdout  # the tables and the failed gates are still shown


def test_int8_miou_gate_uses_the_threshold_from_the_command_line(tmp_path, checkpoint, dataset, capsys):
    # A limit of 0 on |delta mIoU| passes only when INT8's held-out mIoU equals FP32's; the other gates are
    # opened wide so that this one alone decides the exit code.
    out = tmp_path / "out"
    wide = ["--min-int8-agreement", 0, "--max-delta-class-iou", 1, "--max-fraction-change", 100]
    code, _, err = _export(
        capsys, checkpoint, out, "--calib", dataset, "--no-fp16", "--max-delta-miou", 0, *wide
    )
    report = json.loads((out / "export_report.json").read_text())
    (gate,) = [g for g in report["gates"] if g["name"] == "int8_delta_miou"]
    delta = report["variants"]["int8"]["miou"] - report["variants"]["fp32"]["miou"]
    assert gate["value"] == pytest.approx(delta) and gate["threshold"] == 0
    assert gate["passed"] is (delta == 0)
    assert code == (0 if delta == 0 else 1)
    assert "model.fp16.onnx" not in {p.name for p in out.iterdir()}


_REAL_FP16 = pipeline.fp16_convert.convert_fp16


def _fp16_that_prefers_class(target: int):
    """The real FP16 conversion, then the logits head's bias pushed towards class ``target``."""

    def convert(model):
        converted = _REAL_FP16(model)
        head = next(n for n in reversed(converted.graph.node) if n.op_type in ("Conv", "ConvTranspose"))
        (bias,) = [t for t in converted.graph.initializer if t.name == head.input[2]]
        values = onnx.numpy_helper.to_array(bias).copy()
        values[target] += 3.0
        bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
        return converted

    return convert


def test_a_variant_that_changes_phases_fails_the_gates_against_fp32(
    tmp_path, checkpoint, dataset, capsys, monkeypatch
):
    # FP16 that turns pixels into Void: its agreement with FP32 drops and the Void fraction rises, whatever
    # happens to the mean IoU; the gates name the variant and the class.
    monkeypatch.setattr(pipeline.fp16_convert, "convert_fp16", _fp16_that_prefers_class(2))
    out = tmp_path / "out"
    code, stdout, err = _export(capsys, checkpoint, out, "--calib", dataset, "--no-int8")
    line = _one_line_error(code, err, expected_code=1)
    assert "FP16 argmax agreement with FP32" in line and "FP32 argmax" not in line
    report = json.loads((out / "export_report.json").read_text())
    failed = {g["name"]: g for g in report["gates"] if not g["passed"]}
    assert {"fp16_agreement_vs_fp32_pct", "fp16_max_fraction_change_pp"} <= set(failed)
    change = report["variants"]["fp16"]["vs_fp32"]
    assert change["max_fraction_change_class"] == "Void" and change["max_fraction_change_pp"] > 0.5


def test_failed_simplification_keeps_the_plain_graph_and_says_so(
    tmp_path, checkpoint, dataset, capsys, monkeypatch
):
    import onnxsim

    def broken(*args, **kwargs):
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    out = tmp_path / "out"
    code, stdout, err = _export(
        capsys, checkpoint, out, "--calib", dataset, "--no-fp16", "--no-int8", "--opset", 16
    )
    assert code == 0, err
    report = json.loads((out / "export_report.json").read_text())
    assert report["export"]["simplified"] is False
    assert "simulated onnxsim crash" in report["export"]["notes"][0]
    assert "kept the unsimplified graph" in " ".join(stdout.split())
    model = onnx.load(str(out / "model.onnx"))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 16
    assert set(report["variants"]) == {"pytorch", "fp32"}


def test_ctrl_c_while_a_model_file_is_written_leaves_no_half_file_and_keeps_the_previous_ones(
    tmp_path, checkpoint, dataset, capsys, monkeypatch
):
    # A first export leaves three finished files; a second one is interrupted halfway through writing
    # model.fp16.onnx. The earlier files must be untouched and no temporary may be left behind.
    out = tmp_path / "out"
    code, _, err = _export(capsys, checkpoint, out, "--calib", dataset, *UNTRAINED_GATE_ARGS)
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_save = onnx.save_model

    def interrupted(model, path, *args, **kwargs):
        if ".model.fp16.onnx." in str(path):
            with open(path, "wb") as fh:
                fh.write(b"\x08\x07half a protobuf")
            raise KeyboardInterrupt
        return real_save(model, path, *args, **kwargs)

    monkeypatch.setattr(onnx, "save_model", interrupted)
    code, _, err = _export(capsys, checkpoint, out, "--calib", dataset, *UNTRAINED_GATE_ARGS)
    line = _one_line_error(code, err)
    assert "interrupted" in line
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert not [name for name in after if name.endswith(".part")], sorted(after)
    assert after["model.fp16.onnx"] == before["model.fp16.onnx"]
    assert after["model.int8.onnx"] == before["model.int8.onnx"]
    assert set(after) == set(before)
