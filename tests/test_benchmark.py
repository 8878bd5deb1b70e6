"""`semphase benchmark` end to end on a tiny exported model set: report files and schema, numbers that
agree with an independent evaluation, a variant that fails to load, torch left alone without a checkpoint,
and the HTML report as a browser renders it."""

from __future__ import annotations

import html.parser
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from _chromium import chromium, run_chromium
from semphase.benchmarks.tables import fmt
from semphase.cli.main import main

CLASSES = ["Matrix", "Carbide", "Void", "Reprecipitate", "Dilution"]
SIZES = (96, 160)


def _run(args: list) -> int:
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    return int(info.value.code or 0)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """A scratch U-Net checkpoint with its split, exported to FP32, FP16 and INT8 (64 px tiles)."""
    pytest.importorskip("semphase.runtime.segment", reason="the runtime is not installed")
    pytest.importorskip("torch", reason="the train extra builds the test checkpoint")
    from semphase.data.layout import open_dataset
    from semphase.data.split import make_split, save_split
    from semphase.data.synth import write_dataset
    from semphase.export.pipeline import ExportOptions, run_export
    from test_benchmark_support import make_checkpoint

    root = tmp_path_factory.mktemp("bench")
    data = root / "data"
    write_dataset(data, groups=3, size=64, seed=0)
    run = root / "run"
    run.mkdir()
    save_split(make_split([s.name for s in open_dataset(data).samples], seed=0), run / "split.json", seed=0)
    make_checkpoint(run / "best.pt")
    out = root / "model"
    from semphase.gates import Gates
    from test_export_support import UNTRAINED_GATES

    gates = Gates(**UNTRAINED_GATES)  # an untrained network: see test_export_support.UNTRAINED_GATES
    options = ExportOptions(tile=64, overlap=16, calib_images=4, threads=1, calib=data, gates=gates)
    run_export(run / "best.pt", out, options)
    (out / "export_report.json").unlink()
    return {
        "root": root,
        "data": data,
        "checkpoint": run / "best.pt",
        "split": run / "split.json",
        "dir": out,
    }


@pytest.fixture(scope="module")
def bench(models) -> dict:
    """One benchmark run with the checkpoint: every variant, two sizes, one timed repeat."""
    out = models["root"] / "report"
    args = ["benchmark", models["dir"], "--data", models["data"], "--out", out]
    args += ["--checkpoint", models["checkpoint"], "--sizes", ",".join(map(str, SIZES))]
    args += ["--repeat", 1, "--warmup", 0, "--threads", 1, "--quiet"]
    code = _run(args)
    return {"code": code, "out": out, "report": json.loads((out / "report.json").read_text(encoding="utf-8"))}


@pytest.mark.slow
def test_report_json_has_every_section_and_row(bench):
    assert bench["code"] == 0
    report = bench["report"]
    for key in ("format", "machine", "settings", "variants", "accuracy", "large_image", "latency", "speed"):
        assert key in report
    assert report["classes"] == CLASSES
    variants = ["pytorch", "fp32", "fp16", "int8"]
    assert [v["variant"] for v in report["variants"]] == variants
    assert all(v["status"] == "ok" for v in report["variants"])
    settings = report["settings"]
    assert settings["threads"] == 1 and settings["tile"] == 64 and settings["overlap"] == 16
    assert settings["reference"] == "pytorch"

    accuracy = {r["variant"]: r for r in report["accuracy"]}
    assert list(accuracy) == variants
    for row in accuracy.values():
        assert row["status"] == "ok" and row["images"] == 9  # the checkpoint's test split: one group
        for key in ("miou", "mdice", "mbf1", "agreement_vs_fp32", "agreement_vs_pytorch"):
            assert 0.0 <= row[key] <= 1.0, key
        assert all(len(row["per_class"][k]) == 5 for k in ("iou", "dice", "bf1"))
        assert len(row["agreement_per_class_vs_fp32"]) == 5
    assert accuracy["fp32"]["agreement_vs_fp32"] == 1.0
    assert accuracy["fp32"]["agreement_vs_pytorch"] >= 0.999  # exported FP32 = the checkpoint
    assert accuracy["int8"]["delta_vs_fp32"]["miou"] == pytest.approx(
        accuracy["int8"]["miou"] - accuracy["fp32"]["miou"]
    )

    large = report["large_image"]
    assert sorted((r["variant"], r["size"]) for r in large) == sorted((v, s) for v in variants for s in SIZES)
    for row in large:
        assert row["status"] == "ok" and 0.0 <= row["miou"] <= 1.0
    assert all(r["agreement_vs_fp32"] == 1.0 for r in large if r["variant"] == "fp32")

    latency = report["latency"]
    assert sorted((r["variant"], r["batch"]) for r in latency) == sorted(
        (v, b) for v in variants for b in (1, 2)
    )
    for row in latency:
        assert row["status"] == "ok" and row["runs"] == 1 and 0 < row["median_ms"] <= row["p95_ms"]

    speed = report["speed"]
    assert sorted((r["variant"], r["width"]) for r in speed) == sorted(
        (v, s) for v in variants for s in SIZES
    )
    for row in speed:
        assert row["status"] == "ok" and row["height"] == row["width"]
        assert row["seconds"] > 0
        assert row["mpix_per_s"] == pytest.approx(row["width"] * row["height"] / 1e6 / row["seconds"])
        # The child's own peak: a Python process with onnxruntime (or torch) loaded, not this test process.
        assert 20 < row["peak_rss_mb"] < 3000 and row["peak_rss_source"] in ("VmHWM", "ru_maxrss", "rusage")
        assert row["threads"] == 1

    machine = report["machine"]
    assert machine["logical_cpus"] >= 1 and machine["versions"]["onnxruntime"]
    assert "torch" in machine["versions"]  # a checkpoint was given, so torch ran and is reported
    assert set(machine["instruction_sets"]) >= {"avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16"}


@pytest.mark.slow
def test_held_out_scores_match_an_independent_evaluation(bench, models):
    from semphase.data.layout import open_dataset
    from semphase.evaluation import load_predictor, run_evaluation, select_samples

    dataset = open_dataset(models["data"])
    for variant, file in (("fp32", "model.onnx"), ("int8", "model.int8.onnx")):
        predict, table, _ = load_predictor(models["dir"] / file, threads=1)
        samples, _ = select_samples(dataset, "test", models["split"])
        expected = run_evaluation(predict, samples, table, None)
        row = next(r for r in bench["report"]["accuracy"] if r["variant"] == variant)
        assert row["miou"] == pytest.approx(expected["summary"]["miou"]["mean"])
        assert row["mbf1"] == pytest.approx(expected["summary"]["mbf1"]["mean"])
        assert row["per_class"]["iou"] == pytest.approx(expected["per_class"]["iou"], nan_ok=True)
        assert row["confusion"] == expected["confusion"]


@pytest.mark.slow
def test_markdown_tables_and_png_figures(bench):
    out, report = bench["out"], bench["report"]
    text = (out / "report.md").read_text(encoding="utf-8")
    for title in (
        "Machine",
        "Accuracy on held-out images",
        "Per-class IoU",
        "Large-image parity",
        "Per-tile latency",
        "End-to-end tiled segmentation",
    ):
        assert f"### {title}" in text
    fp32 = next(r for r in report["accuracy"] if r["variant"] == "fp32")
    assert f"| FP32 | {fmt(fp32['miou'])} | {fmt(fp32['mdice'])} | {fmt(fp32['mbf1'])} |" in text
    for variant in ("PyTorch", "FP32", "FP16", "INT8"):
        assert (
            sum(line.startswith(f"| {variant} | {SIZES[0]} x {SIZES[0]} |") for line in text.splitlines())
            == 2
        )
    figures = report["figures"]
    names = [figures["throughput"], figures["accuracy_deltas"], *figures["confusion"].values()]
    assert sorted(figures["confusion"]) == ["fp16", "fp32", "int8", "pytorch"]
    for name in names:
        image = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100, name
        assert f"]({name})" in text


class _DomTables(html.parser.HTMLParser):
    """Table cells (by the table's data-table key) and image sources of a rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.external: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("data-table")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "img":
            self.images.append(attrs.get("src", ""))
        for key in ("src", "href"):
            if tag in ("script", "link", "img", "iframe") and attrs.get(key, "").startswith(
                ("http", "//", "file")
            ):
                self.external.append(attrs[key])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.mark.slow
@pytest.mark.skipif(chromium() is None, reason="no chromium binary on PATH (apt-get install chromium)")
def test_html_report_renders_offline_in_headless_chromium(bench):
    import base64

    page = bench["out"] / "report.html"
    done = run_chromium(page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = _DomTables()
    dom.feed(done.stdout)
    report = bench["report"]
    accuracy = dom.tables["accuracy"]
    assert accuracy[0][:4] == ["variant", "mIoU", "mDice", "mBF1"]
    rendered = {row[0]: row for row in accuracy[1:]}
    assert list(rendered) == ["PyTorch", "FP32", "FP16", "INT8"]
    for row in report["accuracy"]:
        name = {"pytorch": "PyTorch"}.get(row["variant"], row["variant"].upper())
        assert rendered[name][1:4] == [fmt(row["miou"]), fmt(row["mdice"]), fmt(row["mbf1"])]
        assert rendered[name][-1] == "ok"
    speed = dom.tables["speed"]
    assert len(speed) == 1 + 4 * len(SIZES)
    assert {"machine", "variants", "per_class_iou", "large_image", "latency"} <= set(dom.tables)
    assert len(dom.images) == 2 + 4 and not dom.external
    for src in dom.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


_NO_TORCH_RUN = """
import importlib.abc, json, sys

class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
        return None

sys.meta_path.insert(0, _NoTorch())
from semphase.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code or 0
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "train": "semphase.train" in sys.modules}))
"""


@pytest.mark.slow
def test_a_variant_that_fails_to_load_is_reported_and_torch_is_never_imported(models, tmp_path):
    model_dir = tmp_path / "models"
    shutil.copytree(models["dir"], model_dir)
    (model_dir / "model.fp16.onnx").write_bytes(b"this is not an ONNX file")
    out = tmp_path / "report"
    args = ["benchmark", model_dir, "--data", models["data"], "--split-file", models["split"], "--out", out]
    args += ["--sizes", "96", "--repeat", "1", "--warmup", "0", "--threads", "1", "--quiet"]
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_RUN, *map(str, args)], capture_output=True, text=True, timeout=300
    )
    status = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == {"code": 0, "torch": False, "train": False}, done.stderr[-2000:]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    variants = {v["variant"]: v for v in report["variants"]}
    assert list(variants) == ["fp32", "fp16", "int8"]
    assert variants["fp16"]["status"] == "failed" and variants["fp16"]["reason"]
    assert variants["fp32"]["status"] == variants["int8"]["status"] == "ok"
    accuracy = {r["variant"]: r for r in report["accuracy"]}
    assert accuracy["fp16"]["status"] == "failed" and accuracy["fp16"]["miou"] is None
    assert accuracy["fp16"]["reason"] == variants["fp16"]["reason"]
    assert accuracy["int8"]["status"] == "ok" and accuracy["int8"]["agreement_vs_pytorch"] is None
    assert report["settings"]["reference"] == "fp32"
    assert {r["variant"] for r in report["speed"]} == {"fp32", "int8"}
    assert all(r["status"] == "ok" for r in report["speed"] + report["latency"])
    assert "torch" not in report["machine"]["versions"]
    text = (out / "report.md").read_text(encoding="utf-8")
    fp16_line = next(line for line in text.splitlines() if line.startswith("| FP16 | model.fp16.onnx"))
    assert f"failed: {variants['fp16']['reason']}" in fp16_line


def test_a_folder_without_models_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = _run(["benchmark", tmp_path / "empty", "--data", tmp_path, "--out", tmp_path / "out", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "holds none of the exported models" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sizes", ["1024,big", "16", ""])
def test_bad_sizes_are_rejected_before_any_work(tmp_path, capsys, sizes):
    code = _run(["benchmark", tmp_path, "--data", tmp_path, "--out", tmp_path / "out", "--sizes", sizes])
    assert code == 2 and "--sizes" in capsys.readouterr().err


@pytest.mark.slow
def test_peer_monai_script_runs_the_same_model_four_ways(models, tmp_path):
    pytest.importorskip("monai", reason="the bench extra (MONAI) is not installed")
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "peer_monai.py"
    spec = importlib.util.spec_from_file_location("peer_monai", script)
    peer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer)
    out = tmp_path / "peer"
    args = ["--checkpoint", models["checkpoint"], "--models", models["dir"], "--sizes", "96,160"]
    args += ["--threads", "1", "--repeat", "1", "--whole-max-mp", "0.02", "--out", out]
    args += ["--results", tmp_path / "RESULTS.md"]
    assert peer.main([str(a) for a in args]) == 0
    doc = json.loads((out / "peer_monai.json").read_text(encoding="utf-8"))
    rows = {(r["method"], r["size"]): r for r in doc["rows"]}
    assert set(rows) == {(m, s) for m in peer.METHODS for s in (96, 160)}
    assert rows[("pytorch-whole", 160)]["status"] == "skipped"  # 0.0256 MP > --whole-max-mp
    assert doc["settings"]["tile"] == 64 and doc["settings"]["monai_overlap_fraction"] == 0.25
    assert doc["command"].startswith("python benchmarks/peer_monai.py --checkpoint ")
    for (method, _), row in rows.items():
        if row["status"] == "ok":
            assert row["seconds"] > 0 and row["speedup_vs_monai"] > 0
            # One float network three ways: only blending and float rounding may move a few pixels.
            # INT8 rounds every layer: on this untrained network (logits near ties everywhere) it moves
            # a percent or two, the same on every x86 CPU (7-bit weights; its self-check vouches for this
            # machine, see test_selfcheck.py); a wrong tiling or normalization would move most pixels.
            bound = 0.95 if method == "semphase-int8" else 0.99
            assert row["agreement_vs_monai"] > bound, method
    assert rows[("monai", 96)]["speedup_vs_monai"] == 1.0
    table = (out / "peer_monai.md").read_text(encoding="utf-8")
    assert "| semphase-int8 | 160 x 160 |" in table
    results = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    assert table.strip() in results and "## Reproduce" in results and doc["machine"]["cpu"] in results
