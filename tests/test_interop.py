"""`semphase package`: bioimage.io model packages and ZEISS CZANN files, and the runtime reading packages.

One scratch U-Net is exported through `semphase export` (so it carries held-out self-check reference
tiles) and packaged once; the tests then check the package with the libraries other tools use:
bioimageio.spec (validation, offline), bioimageio.core (its test tensors reproduced with onnxruntime),
czmodel (the CZANN read back), and semphase's own runtime (the package segments like its ONNX file).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _cli import run_semphase
from semphase.cli.main import main
from test_export_support import SMALL_EXPORT_ARGS, UNTRAINED_GATE_ARGS, make_checkpoint, make_dataset

pytest.importorskip("bioimageio.spec", reason="the interop extra is not installed")


def _cli(argv) -> int:
    try:
        main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    """An exported scratch model and its packages (bioimage.io + CZANN), made with the real commands."""
    from semphase.data.layout import open_dataset
    from semphase.data.split import make_split, save_split

    root = tmp_path_factory.mktemp("interop")
    data = make_dataset(root / "data", groups=4, size=64)
    run = root / "run"
    run.mkdir()
    save_split(make_split([s.name for s in open_dataset(data).samples], seed=0), run / "split.json", seed=0)
    make_checkpoint(run / "best.pt", dataset=str(data))
    model_dir = root / "model"
    # FP32 and FP16 only: INT8's gates depend on the CPU's instruction set, and packaging never needs it
    args = [
        "export",
        run / "best.pt",
        "--out",
        model_dir,
        "--no-int8",
        *SMALL_EXPORT_ARGS,
        *UNTRAINED_GATE_ARGS,
    ]
    assert _cli(args) == 0
    out = root / "packages"
    code = _cli(
        [
            "package",
            model_dir / "model.onnx",
            "--out",
            out,
            "--author",
            "Ada Lovelace; Materials Lab",
            "--czann",
            "--pixel-size-um",
            "0.12",
        ]
    )
    return {
        "root": root,
        "model": model_dir / "model.onnx",
        "fp16": model_dir / "model.fp16.onnx",
        "out": out,
        "code": code,
        "zip": out / "model.bioimageio.zip",
        "czann": out / "model.czann",
    }


def _rdf(package: Path) -> dict:
    import yaml

    with zipfile.ZipFile(package) as z:
        return yaml.safe_load(z.read("rdf.yaml"))


def _model_metadata(path: Path) -> dict:
    import onnx

    return {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}


def test_package_writes_both_files_and_a_report_that_says_they_validated(packaged):
    assert packaged["code"] == 0
    assert packaged["zip"].is_file() and packaged["czann"].is_file()
    report = json.loads((packaged["out"] / "model.package_report.json").read_text())
    bio = report["packages"]["bioimageio"]
    assert bio["validation"] in ("valid-format", "passed") and bio["errors"] == []
    assert bio["reproduced"]["status"] == "passed"
    assert report["packages"]["czann"]["agreement_pct"] == pytest.approx(100.0)
    # nothing half-written is left behind
    assert sorted(p.name for p in packaged["out"].iterdir()) == [
        "model.bioimageio.zip",
        "model.czann",
        "model.package_report.json",
    ]


def test_the_package_validates_with_bioimageio_spec_offline_with_zero_errors(packaged):
    from bioimageio.spec import load_description
    from bioimageio.spec.model.v0_5 import ModelDescr

    descr = load_description(packaged["zip"], perform_io_checks=True)
    errors = [e for d in descr.validation_summary.details for e in d.errors]
    assert errors == []
    assert isinstance(descr, ModelDescr), descr.validation_summary.status


def test_the_rdf_says_what_the_model_file_says(packaged):
    """Classes, normalization, tiling, weights hash and opset come from the ONNX file, not from defaults."""
    rdf = _rdf(packaged["zip"])
    meta = _model_metadata(packaged["model"])
    norm, tile = meta["semphase.input"], meta["semphase.tile"]
    assert rdf["format_version"].startswith("0.5.")
    (inp,) = rdf["inputs"]
    (out,) = rdf["outputs"]
    ops = {p["id"]: p.get("kwargs", {}) for p in inp["preprocessing"]}
    assert ops["scale_linear"]["gain"] == pytest.approx(norm["scale"])
    assert ops["fixed_zero_mean_unit_variance"] == pytest.approx(
        {"mean": norm["mean"][0], "std": norm["std"][0]}
    )
    assert [p["id"] for p in out["postprocessing"]][0] == "softmax"
    channels = next(a for a in out["axes"] if a["type"] == "channel")
    assert channels["channel_names"] == meta["semphase.classes"]
    space_in = [a for a in inp["axes"] if a["type"] == "space"]
    assert all(a["size"] == {"min": 64, "step": 32} for a in space_in)
    assert all(a["scale"] == pytest.approx(0.12) and a["unit"] == "micrometer" for a in space_in)
    assert all(a["halo"] == tile["overlap"] // 2 for a in out["axes"] if a["type"] == "space")
    weights = rdf["weights"]["onnx"]
    assert weights["sha256"] == hashlib.sha256(packaged["model"].read_bytes()).hexdigest()
    assert weights["opset_version"] == 17
    assert "10.5281/zenodo.17315241" in [c.get("doi") for c in rdf["cite"]]
    assert rdf["authors"] == [{"name": "Ada Lovelace", "affiliation": "Materials Lab"}]


def test_the_test_input_is_a_held_out_reference_tile_and_the_output_its_probabilities(packaged):
    from semphase.runtime.model import load_model
    from semphase.runtime.selfcheck import Reference

    with zipfile.ZipFile(packaged["zip"]) as z:
        x = np.load(z.open("test_input.npy"))
        y = np.load(z.open("test_output.npy"))
        docs = z.read("documentation.md").decode()
    reference = Reference.from_metadata(_model_metadata(packaged["model"])["semphase.reference"])
    assert x.dtype == np.uint8 and np.array_equal(x[0, 0], reference.tiles[0])
    model = load_model(packaged["model"], verify=False)
    assert np.array_equal(y[0].argmax(0), model.logits(x[:, 0]).argmax(1)[0])
    assert np.allclose(y.sum(axis=1), 1.0, atol=1e-5)
    for heading in (
        "## What it segments",
        "## Training data",
        "## Validation",
        "## Intended use",
        "## Out of scope",
    ):
        assert heading in docs


def test_bioimageio_core_reproduces_the_test_output_and_catches_a_wrong_one(packaged, tmp_path):
    """The reproduction check is real: a package whose test output is off by 5 % fails it."""
    pytest.importorskip("bioimageio.core")
    from semphase.interop.bioimageio import reproduce

    assert reproduce(packaged["zip"])["status"] == "passed"
    bad = tmp_path / "bad.bioimageio.zip"
    with zipfile.ZipFile(packaged["zip"]) as src, zipfile.ZipFile(bad, "w") as dst:
        y = np.load(src.open("test_output.npy"))
        wrong = y * np.float32(1.05)
        buffer = tmp_path / "y.npy"
        np.save(buffer, wrong)
        old = hashlib.sha256(src.read("test_output.npy")).hexdigest()
        new = hashlib.sha256(buffer.read_bytes()).hexdigest()
        for name in src.namelist():
            data = src.read(name)
            if name == "test_output.npy":
                data = buffer.read_bytes()
            elif name == "rdf.yaml":
                data = data.replace(old.encode(), new.encode())
            dst.writestr(name, data)
    assert reproduce(bad)["status"] == "failed"


def test_segmenting_with_the_package_gives_the_masks_of_its_onnx_file(packaged, tmp_path, capsys):
    from _runtime_models import micrograph
    from semphase.imageio import file_sha256, write_image

    image = tmp_path / "in" / "m.png"
    image.parent.mkdir()
    write_image(image, micrograph(200, 260, seed=5))
    for name, model in (("zip", packaged["zip"]), ("onnx", packaged["model"])):
        code, _, err = run_semphase(["segment", model, image, "--out", tmp_path / name], capsys)
        assert code == 0, err
    assert (tmp_path / "zip" / "m_mask.png").read_bytes() == (tmp_path / "onnx" / "m_mask.png").read_bytes()
    record = json.loads((tmp_path / "zip" / "m.json").read_text())
    assert record["model"]["sha256"] == file_sha256(packaged["model"])
    assert record["model"]["path"] == str(packaged["zip"])


def test_watch_segments_with_the_package(packaged, tmp_path, capsys):
    from _runtime_models import micrograph
    from semphase.imageio import write_image

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_image(inbox / "a.png", micrograph(96, 128, seed=1))
    argv = [
        "watch",
        inbox,
        "--model",
        packaged["zip"],
        "--out",
        tmp_path / "out",
        "--once",
        "--settle",
        "0.1",
    ]
    code, out, err = run_semphase(argv, capsys)
    assert code == 0, err
    assert "1 done, 0 failed" in out and (tmp_path / "out" / "a_mask.png").is_file()


def test_info_and_benchmark_accept_the_package(packaged, capsys):
    code, out, _ = run_semphase(["info", packaged["zip"], "--json", "--verify"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["metadata"]["semphase.classes"] == _model_metadata(packaged["model"])["semphase.classes"]
    assert info["self_check"]["status"].startswith("passed")
    from semphase.benchmarks.variants import find_variants

    assert find_variants(packaged["zip"]) == {"fp32": packaged["zip"]}


def _rezip(src: Path, dst: Path, change) -> Path:
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(dst, "w") as b:
        for name in a.namelist():
            result = change(name, a.read(name))
            if result is not None:
                b.writestr(*result)
    return dst


def test_packages_that_are_not_what_they_claim_are_refused_in_one_line(packaged, tmp_path, capsys):
    image = tmp_path / "m.png"
    from _runtime_models import micrograph
    from semphase.imageio import write_image

    write_image(image, micrograph(64, 64))
    src = packaged["zip"]

    def swapped(name, data):  # other weights under the recorded name: the sha256 no longer matches
        return (name, data[:-1] + bytes([data[-1] ^ 1]) if name.endswith(".onnx") else data)

    def no_rdf(name, data):
        return None if name == "rdf.yaml" else (name, data)

    def two_models(name, data):
        return (name, data) if not name.endswith(".onnx") else None

    cases = {
        "swapped.bioimageio.zip": (
            _rezip(src, tmp_path / "swapped.bioimageio.zip", swapped),
            "does not match",
        ),
        "nordf.zip": (_rezip(src, tmp_path / "nordf.zip", no_rdf), "without rdf.yaml"),
        "noweights.zip": (_rezip(src, tmp_path / "noweights.zip", two_models), "exactly one ONNX"),
        "model.czann": (packaged["czann"], "CZANN file is for ZEN"),
    }
    truncated = tmp_path / "truncated.bioimageio.zip"
    truncated.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    cases["truncated"] = (truncated, "")
    for label, (path, reason) in cases.items():
        code, out, err = run_semphase(["segment", path, image, "--out", tmp_path / "o"], capsys)
        assert code == 2, (label, out, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (label, err)
        assert path.name in err and reason in err, (label, err)


def test_the_czann_reads_back_with_czmodel_and_runs_like_the_model(packaged, tmp_path):
    from czmodel.core.util._extract_model import extract_czann_model

    from semphase.runtime.model import load_model
    from semphase.runtime.session import create_session

    meta, graph = extract_czann_model(str(packaged["czann"]), tmp_path)
    model_meta = _model_metadata(packaged["model"])
    tile, overlap = model_meta["semphase.tile"]["size"], model_meta["semphase.tile"]["overlap"]
    assert meta.model_type.value == "MultiClassSemanticSegmentation"
    assert list(meta.classes) == model_meta["semphase.classes"]
    assert list(meta.input_shape) == [tile, tile, 1] and list(meta.output_shape) == [tile, tile, 5]
    assert list(meta.min_overlap) == [overlap, overlap]
    assert meta.scaling == pytest.approx((0.12e-6, 0.12e-6))
    # ZEN's contract: NHWC float in [0, 1] -> NHWC probabilities; the same phases as semphase's runtime
    from _runtime_models import micrograph

    pixels = micrograph(tile, tile, seed=11)
    session = create_session(Path(graph))
    (probabilities,) = session.run(
        None, {"input": (pixels / np.float32(255))[None, :, :, None].astype(np.float32)}
    )
    assert probabilities.shape == (1, tile, tile, 5)
    assert np.allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    model = load_model(packaged["model"], verify=False)
    assert np.array_equal(probabilities[0].argmax(-1), model.logits(pixels[None]).argmax(1)[0])


def test_czann_verification_fails_when_the_phases_differ(packaged, tmp_path, monkeypatch):
    """A CZANN whose normalization is wrong (here: no scaling from [0, 1] back to 8-bit) is caught."""
    from semphase.errors import GateFailed
    from semphase.interop import czann, source

    model = source.load_fp32(packaged["model"])
    tile, _ = source.test_tile(model)
    wrong = dict(model.contract.normalization, scale=model.contract.normalization["scale"] / 255.0)
    broken = source.ModelToPackage(
        path=model.path,
        data=model.data,
        contract=type(model.contract)(**{**model.contract.__dict__, "normalization": wrong}),
        metadata=model.metadata,
        opset=model.opset,
    )
    path = czann.write_czann(broken, tmp_path, "broken", "Broken model", None)
    with pytest.raises(GateFailed, match="get the semphase model's phase"):
        czann.verify(path, model, tile)


def test_package_refuses_bad_requests_in_one_line(packaged, tmp_path, capsys):
    from _runtime_models import build_blur_classifier

    old = build_blur_classifier(tmp_path / "old", tile=64, overlap=16)  # no reference tiles
    cases = [
        (["package", packaged["fp16"], "--out", tmp_path / "a", "--author", "A"], "FP16 model"),
        (["package", packaged["model"], "--out", tmp_path / "b"], "give --author"),
        (["package", old, "--out", tmp_path / "c", "--author", "A"], "--sample IMAGE"),
        (["package", packaged["zip"], "--out", tmp_path / "d", "--author", "A"], "already a package"),
        (["package", packaged["model"], "--out", tmp_path / "e", "--author", "A", "--name", "a/b"], "--name"),
        (["package", tmp_path / "missing.onnx", "--out", tmp_path / "f", "--author", "A"], "no such model"),
    ]
    for argv, reason in cases:
        code, _, err = run_semphase(argv, capsys)
        assert code == 2 and reason in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_a_sample_micrograph_gives_the_test_tensors_of_a_model_without_references(tmp_path, capsys):
    from _runtime_models import build_blur_classifier, micrograph
    from semphase.imageio import write_image

    model = build_blur_classifier(tmp_path / "old.onnx", tile=64, overlap=16)
    sample = tmp_path / "held_out.tif"
    write_image(sample, micrograph(150, 170, seed=2))
    out = tmp_path / "pk"
    code, _, err = run_semphase(["package", model, "--out", out, "--author", "A", "--sample", sample], capsys)
    assert code == 0, err
    with zipfile.ZipFile(out / "old.bioimageio.zip") as z:
        x = np.load(z.open("test_input.npy"))
    assert x.shape == (1, 1, 64, 64)  # the central tile, cut to the recommended tile size


def test_packaging_needs_no_torch(packaged, tmp_path):
    import subprocess

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from semphase.cli.main import main\n"
        f"main(['package', {str(packaged['model'])!r}, '--out', {str(tmp_path)!r}, '--author', 'A', "
        "'--czann'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "model.bioimageio.zip").is_file() and (tmp_path / "model.czann").is_file()


def test_nothing_is_left_behind_when_validation_fails(packaged, tmp_path, monkeypatch):
    from semphase.errors import GateFailed
    from semphase.interop import bioimageio, source

    model = source.load_fp32(packaged["model"])
    tile, where = source.test_tile(model)
    info = bioimageio.PackageInfo(name="A test model", description="d", authors=[{"name": "A"}])
    real = bioimageio.build_rdf
    monkeypatch.setattr(
        bioimageio, "build_rdf", lambda *a: {**real(*a), "license": "not-a-licence-id-at-all"}
    )
    with pytest.raises(GateFailed, match="does not validate"):
        bioimageio.write_package(model, tmp_path, info, tile, where, "model")
    assert list(tmp_path.iterdir()) == []
    shutil.rmtree(tmp_path, ignore_errors=True)
