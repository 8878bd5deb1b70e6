"""`semphase export` and `semphase info` on a small checkpoint: files, metadata, parity with torch, report."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from semphase.data.layout import open_dataset
from semphase.data.split import make_split, save_split
from semphase.export.metadata import METADATA_KEYS, build_metadata, canonical_json
from semphase.phases import DEFAULT_TABLE
from test_export_support import (
    NORMALIZATION,
    SMALL_EXPORT_ARGS,
    UNTRAINED_GATE_ARGS,
    make_checkpoint,
    make_dataset,
    run_cli,
    torch_logits,
)

FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A scratch U-Net checkpoint whose config names its dataset, with split.json beside it, exported
    without --calib (so the training split calibrates and the test split validates)."""
    root = tmp_path_factory.mktemp("export")
    data = make_dataset(root / "data", groups=4, size=64)
    run = root / "run"
    run.mkdir()
    split = make_split([s.name for s in open_dataset(data).samples], seed=0)
    save_split(split, run / "split.json", seed=0)
    config = make_checkpoint(run / "best.pt", dataset=str(data))
    out = root / "model"
    with pytest.MonkeyPatch.context() as mp:
        capsys = _Capture()
        mp.setattr(sys, "stdout", capsys.out)
        mp.setattr(sys, "stderr", capsys.err)
        args = [
            "export",
            run / "best.pt",
            "--out",
            out,
            *SMALL_EXPORT_ARGS,
            *UNTRAINED_GATE_ARGS,
        ]
        code, stdout, stderr = run_cli(args, capsys)
    return {
        "root": root,
        "run": run,
        "out": out,
        "config": config,
        "split": split,
        "code": code,
        "stdout": stdout,
        "stderr": stderr,
    }


class _Capture:
    """A minimal stand-in for pytest's capsys usable from a module-scoped fixture."""

    def __init__(self) -> None:
        import io

        self.out, self.err = io.StringIO(), io.StringIO()

    def readouterr(self) -> tuple[str, str]:
        return self.out.getvalue(), self.err.getvalue()


def test_export_writes_three_models_and_a_passing_report(exported):
    assert exported["code"] == 0, exported["stderr"]
    out = exported["out"]
    for name in [*FILES.values(), "export_report.json"]:
        assert (out / name).is_file(), name
    assert not list(out.glob(".*.part")), "temporary files left behind"
    report = json.loads((out / "export_report.json").read_text())
    assert report["passed"] is True
    assert [g["name"] for g in report["gates"]] == [
        "fp32_argmax_agreement_pct",
        *(
            f"{v}_{check}"
            for v in ("fp16", "int8")
            for check in (
                "agreement_vs_fp32_pct",
                "delta_miou",
                "max_delta_class_iou",
                "max_fraction_change_pp",
            )
        ),
    ]
    assert {g["threshold"] for g in report["gates"] if g["name"] == "int8_agreement_vs_fp32_pct"} == {95.0}
    assert report["heldout"]["images"] == len(exported["split"]["test"])
    assert report["heldout"]["source"].startswith("test split of")
    assert report["int8"]["calibration"]["source"].startswith("train split of")
    assert report["int8"]["calibration"]["tiles"] == 4
    for variant in ("pytorch", *FILES):
        row = report["variants"][variant]
        assert row["latency_ms"] > 0
        assert 0.0 <= row["miou"] <= 1.0
    for variant in FILES:
        row = report["variants"][variant]
        assert row["size_bytes"] == (out / FILES[variant]).stat().st_size
        assert 0 <= row["mean_abs_diff"] <= row["max_abs_diff"]
    assert report["variants"]["fp32"]["max_abs_diff"] < 1e-3
    assert report["variants"]["fp32"]["argmax_agreement_pct"] >= 99.99
    assert report["variants"]["int8"]["size_bytes"] < 0.35 * report["variants"]["fp32"]["size_bytes"]
    assert "Parity with PyTorch" in exported["stdout"] and "export passed" in exported["stdout"]


@pytest.mark.parametrize("variant", list(FILES))
def test_every_file_runs_at_two_sizes_and_matches_torch(exported, variant):
    session = ort.InferenceSession(str(exported["out"] / FILES[variant]), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    # Largest |logit difference| relative to the largest |logit|, and least argmax agreement.
    tolerance, agreement = {"fp32": (1e-4, 0.9999), "fp16": (1e-2, 0.99), "int8": (0.25, 0.9)}[variant]
    for shape in ((1, 1, 64, 64), (2, 1, 96, 128)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        batch = ((image / 255.0 - NORMALIZATION["mean"][0]) / NORMALIZATION["std"][0]).astype(np.float32)
        expected = torch_logits(exported["run"] / "best.pt", batch)
        (got,) = session.run(["logits"], {"image": batch})
        assert got.dtype == np.float32 and got.shape == (shape[0], 5, *shape[2:])
        assert np.abs(got - expected).max() <= tolerance * float(np.abs(expected).max()), variant
        assert (got.argmax(1) == expected.argmax(1)).mean() >= agreement, variant


def test_graphs_have_dynamic_batch_height_width(exported):
    for variant, name in FILES.items():
        model = onnx.load(str(exported["out"] / name))
        onnx.checker.check_model(model)
        (image,) = [i for i in model.graph.input if i.name == "image"]
        (logits,) = model.graph.output
        dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
        assert dims(image) == ["N", 1, "H", "W"], variant
        assert dims(logits) == ["N", 5, "H", "W"], variant
        assert image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert logits.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17
    fp16 = onnx.load(str(exported["out"] / FILES["fp16"]))
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in fp16.graph.initializer)
    int8 = onnx.load(str(exported["out"] / FILES["int8"]))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in int8.graph.node}


def test_metadata_is_exact_in_every_file(exported):
    checkpoint = exported["run"] / "best.pt"
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    for variant, name in FILES.items():
        props = {p.key: p.value for p in onnx.load(str(exported["out"] / name)).metadata_props}
        semphase = {k: json.loads(v) for k, v in props.items() if k.startswith("semphase.")}
        assert set(semphase) == {*METADATA_KEYS, "semphase.reference"}
        assert semphase["semphase.classes"] == DEFAULT_TABLE.names
        assert semphase["semphase.colors"] == [list(c) for c in DEFAULT_TABLE.colors]
        assert semphase["semphase.input"] == {
            "channels": 1,
            "scale": 1 / 255,
            "mean": [0.449],
            "std": [0.226],
            "size_multiple": 32,
        }
        assert list(semphase["semphase.input"]) == ["channels", "scale", "mean", "std", "size_multiple"]
        assert semphase["semphase.variant"] == variant
        assert semphase["semphase.tile"] == {"size": 64, "overlap": 16}
        source = semphase["semphase.source"]
        assert set(source) == {"checkpoint_sha256", "config_sha256", "semphase_version"}
        assert source["checkpoint_sha256"] == sha
        config_digest = hashlib.sha256(canonical_json(exported["config"]).encode()).hexdigest()
        assert source["config_sha256"] == config_digest
        assert semphase["semphase.metrics"] is None  # the test checkpoint has no test_metrics


def test_every_file_carries_the_fp32_labels_of_held_out_tiles_and_what_it_reached(exported):
    from semphase.runtime.selfcheck import EXPORT_MARGIN_PP, Reference

    report = json.loads((exported["out"] / "export_report.json").read_text())
    fp32 = ort.InferenceSession(str(exported["out"] / FILES["fp32"]), providers=["CPUExecutionProvider"])
    references = {}
    for variant, name in FILES.items():
        props = {p.key: p.value for p in onnx.load(str(exported["out"] / name)).metadata_props}
        references[variant] = ref = Reference.from_metadata(json.loads(props["semphase.reference"]))
        # Two 64 x 64 tiles (the export's tile) cut from held-out micrographs, stored as uint8.
        assert ref.tiles.shape == (2, 64, 64) and ref.tiles.dtype == np.uint8
        batch = ((ref.tiles[:, None] / 255.0 - NORMALIZATION["mean"][0]) / NORMALIZATION["std"][0]).astype(
            np.float32
        )
        assert np.array_equal(fp32.run(None, {"image": batch})[0].argmax(1), ref.labels)
        session = ort.InferenceSession(str(exported["out"] / name), providers=["CPUExecutionProvider"])
        reached = 100.0 * float((session.run(None, {"image": batch})[0].argmax(1) == ref.labels).mean())
        assert ref.export_pct == pytest.approx(reached)
        gate = {"fp32": 99.99, "fp16": 99.9, "int8": 95.0}[variant]
        assert ref.required_pct == pytest.approx(min(gate, reached - EXPORT_MARGIN_PP))
        stored = report["self_check_reference"]["variants"][variant]
        assert stored["required_agreement_pct"] == pytest.approx(ref.required_pct)
    assert len({r.tiles.tobytes() for r in references.values()}) == 1  # the same tiles in every file
    assert references["fp32"].export_pct == 100.0


def test_metadata_carries_the_checkpoint_test_summary():
    summary = {"miou": {"mean": 0.8, "std": 0.1, "min": 0.5, "max": 0.9}}
    checkpoint = {
        "test_metrics": {"summary": summary, "per_class": {"iou": [0.9] * 5}, "per_image": [{}] * 3}
    }
    config = {"classes": DEFAULT_TABLE.to_dict(), "num_classes": 5, "normalization": NORMALIZATION}
    meta = build_metadata(config, checkpoint, variant="int8", checkpoint_sha256="0" * 64)
    assert json.loads(meta["semphase.metrics"]) == {
        "summary": summary,
        "per_class": {"iou": [0.9] * 5},
        "images": 3,
    }
    assert json.loads(meta["semphase.tile"]) == {"size": 512, "overlap": 32}
    with pytest.raises(ValueError):
        build_metadata(config, checkpoint, variant="int4", checkpoint_sha256="0" * 64)


def test_info_shows_metadata_signature_size_and_providers(exported, capsys):
    path = exported["out"] / FILES["int8"]
    code, out, _ = run_cli(["info", path], capsys)
    assert code == 0
    for text in (
        "semphase.classes",
        "Reprecipitate",
        "int8",
        "size_multiple",
        "opset",
        "17",
        "image: float32 [N x 1 x H x W]",
        "logits: float32 [N x 5 x H x W]",
        "CPUExecutionProvider",
    ):
        assert text in out, text
    code, out, _ = run_cli(["info", path, "--json"], capsys)
    document = json.loads(out)
    assert document["size_bytes"] == path.stat().st_size
    assert document["metadata"]["semphase.variant"] == "int8"
    assert document["inputs"] == [{"name": "image", "dtype": "float32", "shape": ["N", 1, "H", "W"]}]


def test_info_runs_without_torch(exported):
    blocker = (
        "import sys\n"
        "class B:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'torch', 'torchvision', 'segmentation_models_pytorch'}:\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, B())\n"
        "from semphase.cli.main import main\n"
        "main(['info', sys.argv[1]])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocker, str(exported["out"] / FILES["fp16"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "fp16" in done.stdout


@pytest.mark.parametrize("content", [b"not an onnx file at all", b""])
def test_info_rejects_a_non_onnx_file_in_one_line(tmp_path, capsys, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    code, out, err = run_cli(["info", path], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and str(path) in err


def test_info_rejects_an_onnx_model_without_semphase_metadata(tmp_path, capsys):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "foreign.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    code, _, err = run_cli(["info", path], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "semphase metadata" in err


def test_model_files_are_self_contained(exported):
    # No external-data side files: the runtime reads one .onnx file and nothing else.
    assert sorted(p.name for p in Path(exported["out"]).iterdir()) == sorted(
        [*FILES.values(), "export_report.json"]
    )


def test_command_defaults_are_the_library_defaults():
    import typer

    from semphase.cli.main import app
    from semphase.export.pipeline import ExportOptions

    command = typer.main.get_command(app).commands["export"]
    defaults = {p.name: p.default for p in command.params}
    options = ExportOptions()
    for name in ("opset", "tile", "overlap", "calib_images", "fp16", "int8", "threads", "simplify"):
        assert defaults[name] == getattr(options, name), name
    for name in ("min_fp32_agreement", "min_fp16_agreement", "min_int8_agreement", "max_delta_miou"):
        assert defaults[name] == getattr(options.gates, name), name
    assert defaults["max_delta_class_iou"] == options.gates.max_delta_class_iou
    assert defaults["max_fraction_change"] == options.gates.max_fraction_change_pp
    assert defaults["calib_method"] == options.int8_settings.method
    assert defaults["int8_activations"] == options.int8_settings.activations
    assert defaults["int8_weights"] == options.int8_settings.weights
    assert defaults["int8_reduce_range"] == options.int8_settings.reduce_range
    float_layers = defaults["int8_float_layers"]
    expected = () if float_layers == "none" else tuple(float_layers.split(","))
    assert expected == options.int8_settings.keep_float


def test_info_summarizes_the_test_metrics(tmp_path, capsys):
    from semphase.export.metadata import write_metadata

    summary = {k: {"mean": 0.8, "std": 0.1, "min": 0.5, "max": 0.9} for k in ("miou", "mdice", "mbf1")}
    metrics = {"summary": summary, "per_class": {"iou": [0.9] * 5}, "per_image": [{}] * 3}
    checkpoint = {"test_metrics": metrics}
    config = {"classes": DEFAULT_TABLE.to_dict(), "num_classes": 5, "normalization": NORMALIZATION}
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["image"], ["logits"])],
        "g",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 1, "H", "W"])],
    )
    model = onnx.helper.make_model(graph)
    write_metadata(model, build_metadata(config, checkpoint, variant="fp32", checkpoint_sha256="0" * 64))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    code, out, _ = run_cli(["info", path], capsys)
    assert code == 0
    assert "mIoU 0.8000" in out and "(0.5000..0.9000)" in out  # the table may wrap between cells
    assert '"iou"' not in out  # per-class scores only with --json


def test_calibration_sees_its_count_of_tiles_even_from_a_handful_of_fields(tmp_path):
    # a model fine-tuned on four fields once calibrated INT8 on four tiles and missed its gate (99.47 %)
    from semphase.export.imagesets import calibration_tiles
    from semphase.imageio import write_image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"field{i}.png")
        write_image(paths[-1], rng.integers(0, 256, (200, 300), dtype=np.uint8))
    write_image(tmp_path / "small.png", rng.integers(0, 256, (40, 50), dtype=np.uint8))
    tiles = calibration_tiles(paths, tile=64, count=10, normalization=NORMALIZATION)
    assert len(tiles) == 10 and all(t.shape == (1, 1, 64, 64) for t in tiles)
    assert len({t.tobytes() for t in tiles}) == 10  # different crops, not copies
    assert len(calibration_tiles(paths, tile=64, count=3, normalization=NORMALIZATION)) == 3
    # an image no larger than the tile has one crop to give, however few images there are
    whole = calibration_tiles([tmp_path / "small.png"], tile=64, count=8, normalization=NORMALIZATION)
    assert len(whole) == 1 and whole[0].shape == (1, 1, 64, 64)
