"""Evaluation: run_evaluation with a numpy predictor, split selection, the CLI's errors, and (when the
train and runtime parts are installed) a tiny model evaluated as .pt and as .onnx giving the same report."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from semphase.cli.main import main
from semphase.data.layout import load_pair, open_dataset
from semphase.data.split import save_split
from semphase.errors import InputError
from semphase.evaluation import load_predictor, run_evaluation, select_samples
from semphase.metrics import Scorer
from semphase.phases import DEFAULT_TABLE
from test_train_fixtures import CLASS_GRAY, make_dataset


def nearest_gray(image_u8: np.ndarray) -> np.ndarray:
    """A stand-in model: each pixel gets the class whose mean gray level is closest (noise makes errors)."""
    gray = np.asarray(CLASS_GRAY, np.float32)
    return np.abs(image_u8[..., None].astype(np.float32) - gray).argmin(axis=-1).astype(np.uint8)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return open_dataset(make_dataset(tmp_path_factory.mktemp("eval") / "ds", groups=2, size=48))


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(args)
    return info.value.code


def test_run_evaluation_writes_the_scores_and_figures(dataset, tmp_path):
    samples = dataset.samples
    out = tmp_path / "eval"
    result = run_evaluation(nearest_gray, samples, DEFAULT_TABLE, out, n_overlays=2)
    reference = Scorer(DEFAULT_TABLE.names)
    for sample in samples:
        image, truth = load_pair(sample, DEFAULT_TABLE)
        reference.add(sample.name, truth, nearest_gray(image))
    expected = reference.result()
    for key in ("classes", "confusion", "per_class", "per_image", "summary"):
        assert result[key] == expected[key]
    assert 0.0 < result["summary"]["miou"]["mean"] < 1.0  # a real test: the stand-in makes mistakes
    written = json.loads((out / "metrics.json").read_text())
    assert written == result
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [r["name"] for r in rows] == [s.name for s in samples]
    assert (out / "confusion.png").stat().st_size > 0 and (out / "frequency_vs_iou.png").stat().st_size > 0
    ranked = sorted(result["per_image"], key=lambda r: -r["miou"])
    overlays = result["outputs"]["overlays"]
    assert len(overlays) == 4 and all((out / p).is_file() for p in overlays)
    assert overlays[0] == f"overlays/overlay_best-1_{ranked[0]['name'].removesuffix('.bmp')}.png"
    assert overlays[2] == f"overlays/overlay_worst-1_{ranked[-1]['name'].removesuffix('.bmp')}.png"
    assert not [p for p in out.rglob(".*")]  # no temporary files left


def test_run_evaluation_without_output_folder_writes_nothing(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_evaluation(nearest_gray, dataset.samples[:2], DEFAULT_TABLE, None)
    assert result["images"] == 2 and "outputs" not in result
    assert list(tmp_path.iterdir()) == []


def test_run_evaluation_rejects_bad_predictions_and_empty_sets(dataset):
    with pytest.raises(ValueError, match="predictor returned"):
        run_evaluation(lambda im: im[:5], dataset.samples[:1], DEFAULT_TABLE, None)
    with pytest.raises(InputError, match="no images"):
        run_evaluation(nearest_gray, [], DEFAULT_TABLE, None)


def test_select_samples_follows_split_files(dataset, tmp_path):
    names = [s.name for s in dataset.samples]
    split = {"train": names[:3], "val": [], "test": names[3:]}
    path = tmp_path / "split.json"
    save_split(split, path)
    samples, text = select_samples(dataset, None, path)
    assert [s.name for s in samples] == names[3:] and "'test' split (3 images)" in text
    samples, _ = select_samples(dataset, "train", path)
    assert [s.name for s in samples] == names[:3]
    with pytest.raises(InputError, match="empty"):
        select_samples(dataset, "val", path)
    # the model's own split is the default; one that names other images falls back to all images
    samples, text = select_samples(dataset, None, None, path)
    assert len(samples) == 3 and "training split" in text
    foreign = tmp_path / "foreign.json"
    save_split({"train": ["x.bmp"], "val": ["y.bmp"], "test": ["z.bmp"]}, foreign)
    samples, text = select_samples(dataset, None, None, foreign)
    assert len(samples) == len(names) and "does not fit" in text
    with pytest.raises(InputError):
        select_samples(dataset, "test", None, foreign)
    with pytest.raises(InputError, match="needs a split file"):
        select_samples(dataset, "test")
    assert len(select_samples(dataset, "all", path)[0]) == len(names)


def test_evaluate_cli_rejects_bad_models_in_one_line(dataset, tmp_path, capsys):
    for model, reason in (
        (tmp_path / "missing.onnx", "no such model file"),
        (tmp_path / "model.h5", "unknown"),
    ):
        if model.suffix == ".h5":
            model.write_bytes(b"x")
        assert _run(["evaluate", str(model), str(dataset.root), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert reason in err and "Traceback" not in err
    with pytest.raises(InputError, match="device"):
        load_predictor(tmp_path / "model.h5", device="tpu")


def test_a_checkpoint_is_opened_by_the_callers_opener_and_evaluation_asks_only_the_protocol(
    dataset, tmp_path
):
    # Evaluation never imports the training side: the caller hands it the checkpoint opener.
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"read only by the opener")
    names = [s.name for s in dataset.samples]
    save_split({"train": names[:3], "val": [], "test": names[3:]}, tmp_path / "split.json")
    with pytest.raises(InputError, match="training side"):
        load_predictor(checkpoint)

    class Opened:  # what semphase.train.inference.CheckpointModel offers, without torch
        config = {"classes": DEFAULT_TABLE.to_dict()}
        device = "cpu"

        def predict_whole(self, image_u8):
            return nearest_gray(image_u8)

    calls = []

    def open_checkpoint(path, device, threads):
        calls.append((path, device, threads))
        return Opened()

    predict, table, info = load_predictor(checkpoint, "cpu", 2, open_checkpoint=open_checkpoint)
    assert calls == [(checkpoint, "cpu", 2)]
    image, _ = load_pair(dataset.samples[0], DEFAULT_TABLE)
    assert np.array_equal(predict(image), nearest_gray(image))
    assert table.names == DEFAULT_TABLE.names and table.to_dict() == DEFAULT_TABLE.to_dict()
    assert info["kind"] == "checkpoint" and info["device"] == "cpu"
    assert info["split_file"] == tmp_path / "split.json" and info["config"] is Opened.config


# ------------------------------------------------------------------- tiny model, .pt and .onnx

TORCH_NAMES = ("torch", "torchvision", "segmentation_models_pytorch", "albumentations")


@pytest.fixture(scope="module")
def checkpoint_report(dataset, tmp_path_factory):
    """A tiny model trained and saved as a run folder, then evaluated with ``semphase evaluate best.pt``.

    Returns (run_dir, model, config, metrics of the .pt evaluation, its output folder).
    """
    torch = pytest.importorskip("torch")
    pytest.importorskip("semphase.train.inference")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # two shared cores: torch's default pool oversubscribes them badly
    try:
        run_dir = tmp_path_factory.mktemp("run")
        model, config = _train_tiny(torch, dataset, run_dir)
        out = run_dir / "eval_pt"
        args = ["evaluate", str(run_dir / "best.pt"), str(dataset.root), "--out", str(out)]
        assert _run([*args, "--device", "cpu", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(before)
    return run_dir, model, config, json.loads((out / "metrics.json").read_text()), out


def _train_tiny(torch, dataset, run_dir):
    """A scratch U-Net of width 4 fitted for 40 steps (about 86% pixel accuracy), saved as best.pt with
    split.json beside it, as a training run leaves them."""
    from semphase.train.checkpoint import save_checkpoint
    from semphase.train.inference import normalize_batch
    from semphase.train.models import build_model

    torch.manual_seed(0)
    config = {
        "arch": "unet-scratch",
        "scratch_base": 4,
        "encoder_weights": "none",
        "in_channels": 1,
        "num_classes": DEFAULT_TABLE.num_classes,
        "classes": DEFAULT_TABLE.to_dict(),
        "normalization": {"scale": 1 / 255, "mean": [0.5], "std": [0.25]},
        "tile": 64,
    }
    model = build_model(config)
    pairs = [load_pair(s, DEFAULT_TABLE) for s in dataset.samples]
    x = normalize_batch(
        np.stack([np.pad(im, ((0, 16), (0, 16)), mode="reflect") for im, _ in pairs]), config["normalization"]
    )
    y = torch.as_tensor(
        np.stack([np.pad(lab, ((0, 16), (0, 16)), constant_values=255) for _, lab in pairs])
    ).long()
    optimizer = torch.optim.Adam(model.parameters(), 0.02)
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y, ignore_index=255).backward()
        optimizer.step()
    model.eval()
    names = [s.name for s in dataset.samples]
    save_split({"train": names[:3], "val": [], "test": names[3:]}, run_dir / "split.json")  # by crop group
    save_checkpoint(run_dir / "best.pt", model, config, epoch=40, best_val_miou=0.5)
    return model, config


def _export_onnx(model, config, run_dir):
    from semphase.export.metadata import build_metadata, save_model, write_metadata
    from semphase.export.onnx_export import export_fp32
    from semphase.imageio import file_sha256

    graph = export_fp32(model, in_channels=1, num_classes=config["num_classes"], simplify=False)
    checkpoint = {"config": config}
    metadata = build_metadata(
        config,
        checkpoint,
        variant="fp32",
        checkpoint_sha256=file_sha256(run_dir / "best.pt"),
        tile_size=64,
        overlap=16,
    )
    write_metadata(graph.model, metadata)
    save_model(graph.model, run_dir / "model.onnx")
    return run_dir / "model.onnx"


@pytest.mark.slow
def test_checkpoint_evaluation_defaults_to_its_training_split(dataset, checkpoint_report):
    _, _, _, by_pt, out = checkpoint_report
    # split.json beside best.pt is the default, and its test part is evaluated
    assert [r["name"] for r in by_pt["per_image"]] == [s.name for s in dataset.samples[3:]]
    assert "training split" in by_pt["selection"]
    assert by_pt["summary"]["miou"]["mean"] > 0.3  # the tiny model learned something
    assert (out / "confusion.png").is_file() and by_pt["outputs"]["overlays"]


@pytest.mark.slow
def test_checkpoint_and_onnx_give_the_same_report(dataset, checkpoint_report, tmp_path):
    pytest.importorskip("semphase.runtime.segment")
    run_dir, model, config, by_pt, _ = checkpoint_report
    onnx_path = _export_onnx(model, config, run_dir)
    out_onnx = tmp_path / "eval_onnx"
    argv = ["evaluate", str(onnx_path), str(dataset.root), "--out", str(out_onnx)]
    argv += ["--split-file", str(run_dir / "split.json"), "--threads", "1", "--device", "cpu"]
    code = (
        "import sys\n"
        "class _Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {TORCH_NAMES!r}:\n"
        "            raise ImportError('torch is blocked on the ONNX path: ' + name)\n"
        "sys.meta_path.insert(0, _Block())\n"
        "from semphase.cli.main import main\n"
        f"main({argv!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    by_onnx = json.loads((out_onnx / "metrics.json").read_text())
    assert by_onnx["classes"] == by_pt["classes"]
    assert [r["name"] for r in by_onnx["per_image"]] == [r["name"] for r in by_pt["per_image"]]
    # Same network, two engines: argmax may flip only on a few near-tied pixels.
    pt_confusion, onnx_confusion = np.array(by_pt["confusion"]), np.array(by_onnx["confusion"])
    assert pt_confusion.sum() == onnx_confusion.sum()
    assert np.abs(pt_confusion - onnx_confusion).sum() <= 0.002 * pt_confusion.sum()
    for a, b in zip(by_pt["per_image"], by_onnx["per_image"], strict=True):
        assert abs(a["miou"] - b["miou"]) < 0.01 and abs(a["mbf1"] - b["mbf1"]) < 0.02
    for key in ("miou", "mdice", "mbf1"):
        assert by_onnx["summary"][key]["mean"] == pytest.approx(by_pt["summary"][key]["mean"], abs=0.005)
