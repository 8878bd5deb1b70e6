"""A bioimage.io model package (spec 0.5) from an exported semphase model.

The package is a zip of ``rdf.yaml`` and the files it names: the FP32 ONNX weights (sha256, opset),
``test_input.npy`` / ``test_output.npy`` (a held-out tile and this ONNX file's class probabilities for it),
sample tensors as TIFF, a cover (micrograph | overlay) and ``documentation.md``. The input is the 8-bit
grayscale micrograph, and the training normalization is written with the spec's own operations
(``scale_linear`` by the 8-bit scale, then ``fixed_zero_mean_unit_variance`` with the training mean and
std), so any consumer (bioimageio.core, ilastik, deepImageJ, BiaPy, QuPath extensions) feeds the network
what semphase feeds it. The output is one probability per class (``softmax`` over the channel axis of the
logits), its channels named by the classes, with a halo of half the recommended tile overlap.

``bioimageio.spec`` builds and checks the description and writes the zip; the zip is then loaded back and
validated again, and, when ``bioimageio.core`` is installed, its test tensors are reproduced with
onnxruntime within the spec's tolerance. Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semphase.errors import GateFailed, InputError, one_line
from semphase.interop.source import (
    DATASET_CITATION,
    DATASET_DOI,
    STUDY_CITATION,
    ModelToPackage,
    cover_image,
    failed,
    held_out_metrics,
    softmax,
)

INPUT_ID = "raw"
OUTPUT_ID = "probabilities"
DEFAULT_TAGS = (
    "semantic-segmentation",
    "electron-microscopy",
    "sem",
    "materials-science",
    "microstructure",
    "2d",
    "onnx",
    "unet",
    "semphase",
)


@dataclass
class PackageInfo:
    """What a person says about the model (the rest comes from the file).

    authors : ``{"name", "affiliation"?, "orcid"?}`` dicts, at least one; maintainers : GitHub user names.
    pixel_size_um : the training data's pixel size, when stated (written as the space axes' scale).
    """

    name: str
    description: str
    authors: list[dict]
    license: str = "MIT"
    maintainers: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=lambda: list(DEFAULT_TAGS))
    pixel_size_um: float | None = None
    version: str | None = None


def default_name(classes: list[str]) -> str:
    """``SEM phase segmentation U-Net (5 phases)``: within the spec's allowed characters."""
    return f"SEM phase segmentation U-Net ({len(classes)} phases)"


def check_name(name: str) -> str:
    """The spec allows letters, digits, ``_+- ()``, 5 to 128 characters."""
    if not 5 <= len(name) <= 128 or re.fullmatch(r"[A-Za-z0-9_+\- ()]+", name) is None:
        raise InputError(
            f"--name {name!r}: bioimage.io names have 5 to 128 letters, digits, spaces or _+-() characters"
        )
    return name


def parse_author(text: str) -> dict:
    """``"Name"`` or ``"Name; Affiliation"`` or ``"Name; Affiliation; ORCID"`` -> an rdf author."""
    parts = [p.strip() for p in text.split(";")]
    if not parts[0] or "/" in parts[0] or "\\" in parts[0] or len(parts) > 3:
        raise InputError(f"--author {text!r}: use 'Name', 'Name; Affiliation' or 'Name; Affiliation; ORCID'")
    author = {"name": parts[0]}
    if len(parts) > 1 and parts[1]:
        author["affiliation"] = parts[1]
    if len(parts) > 2 and parts[2]:
        author["orcid"] = parts[2]
    return author


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file(folder: Path, name: str) -> dict:
    return {"source": name, "sha256": _sha(folder / name)}


def documentation(model: ModelToPackage, info: PackageInfo, tile_source: str) -> str:
    """``documentation.md``: what the model segments, training data, held-out metrics, intended and
    out-of-scope use, and how the package was validated."""
    c = model.contract
    norm = c.normalization
    pairs = enumerate(zip(c.classes, c.colors, strict=True))
    rows = "\n".join(f"| {i} | {name} | rgb({r}, {g}, {b}) |" for i, (name, (r, g, b)) in pairs)
    metrics = held_out_metrics(model) or ["- No test metrics were stored with this model."]
    source = model.metadata.get("semphase.source") or {}
    pixel = (
        f"{info.pixel_size_um:g} µm per pixel (stated by the packager)"
        if info.pixel_size_um
        else "not stated; the model works on pixels, at the magnification of its training images"
    )
    return f"""# {info.name}

{info.description}

## What it segments

Each pixel of a grayscale scanning electron micrograph is given one of {len(c.classes)} phases:

| id | phase | colour |
|---:|---|---|
{rows}

The output holds one probability per phase; the phase of a pixel is the channel with the highest
probability.

## Input

One 8-bit grayscale channel (0..255). The network sees `(pixel * {norm["scale"]:g} - {norm["mean"][0]:g}) /
{norm["std"][0]:g}`, written in `rdf.yaml` as `scale_linear` (gain {norm["scale"]:g}) and
`fixed_zero_mean_unit_variance` (mean {norm["mean"][0]:g}, std {norm["std"][0]:g}). 16-bit micrographs
are mapped to 8 bits first (divided by 257, as semphase does). Height and width must be multiples of
{norm["size_multiple"]}. Large images are segmented in tiles of {c.tile_size} pixels overlapping by
{c.overlap} (the halo of {c.overlap // 2} pixels per side is the part of each tile to discard).
Pixel size: {pixel}.

## Training data and method

A ResNet34 U-Net (segmentation-models-pytorch) trained with semphase on labelled SEM micrographs with
the recipe of the study it implements: weighted cross-entropy + Dice loss, the encoder frozen and then
unfrozen. The reference dataset is {DATASET_CITATION} doi:{DATASET_DOI}.
Checkpoint sha256: `{source.get("checkpoint_sha256", "not recorded")}`; semphase
{source.get("semphase_version", "?")}.

## Validation

{chr(10).join(metrics)}
- The test tensors are {tile_source}, with this ONNX file's probabilities for it (onnxruntime, FP32).
- `semphase package` validated this package with `bioimageio.spec` and reproduced the test output with
  `bioimageio.core` where it was installed (see `package_report.json` beside the zip).

## Intended use

Phase fractions and phase maps of Ni-WC metal matrix composites and similar two- to five-phase
microstructures in backscattered-electron SEM images, at magnifications like those it was trained on.
Results are estimates: check a few overlays per sample series, and report phase fractions with their
field-to-field variation (semphase quantify follows ASTM E562 / E1245).

## Out of scope

- Other materials, detectors (secondary-electron contrast), magnifications or acquisition settings than
  the training data without re-training or at least checking against labelled images.
- Light-microscopy or colour images; 3-D data; instance segmentation (grain or particle separation).
- Any use where a wrong phase map harms people: the model gives no guarantee for single pixels.

## License

{info.license}
"""


def build_rdf(model: ModelToPackage, info: PackageInfo, folder: Path, files: dict[str, str]) -> dict:
    """The rdf.yaml content (a dict) for the files staged in ``folder``."""
    from bioimageio.spec.model.v0_5 import ModelDescr

    c = model.contract
    norm = c.normalization
    multiple = int(norm["size_multiple"])
    halo = c.overlap // 2
    scale = {"unit": "micrometer", "scale": float(info.pixel_size_um)} if info.pixel_size_um else {}
    space_in = [
        {"type": "space", "id": axis, "size": {"min": 2 * multiple, "step": multiple}, **scale}
        for axis in ("y", "x")
    ]
    space_out = [
        {"type": "space", "id": axis, "size": {"tensor_id": INPUT_ID, "axis_id": axis}, "halo": halo, **scale}
        for axis in ("y", "x")
    ]
    rdf = {
        "type": "model",
        "format_version": ModelDescr.implemented_format_version,
        "name": info.name,
        "description": info.description,
        "authors": info.authors,
        "cite": [
            {"text": STUDY_CITATION, "doi": DATASET_DOI},
            {"text": DATASET_CITATION, "doi": DATASET_DOI},
        ],
        "license": info.license,
        "tags": list(info.tags),
        "covers": [_file(folder, files["cover"])],
        "documentation": _file(folder, files["documentation"]),
        "inputs": [
            {
                "id": INPUT_ID,
                "description": "8-bit grayscale SEM micrograph (0..255)",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": ["gray"]},
                    *space_in,
                ],
                "test_tensor": _file(folder, files["test_input"]),
                "sample_tensor": _file(folder, files["sample_input"]),
                "data": {"type": "float32"},
                "preprocessing": [
                    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                    {"id": "scale_linear", "kwargs": {"gain": float(norm["scale"]), "offset": 0.0}},
                    {
                        "id": "fixed_zero_mean_unit_variance",
                        "kwargs": {"mean": float(norm["mean"][0]), "std": float(norm["std"][0])},
                    },
                    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                ],
            }
        ],
        "outputs": [
            {
                "id": OUTPUT_ID,
                "description": "probability of each phase per pixel (softmax of the logits)",
                "axes": [
                    {"type": "batch"},
                    {"type": "channel", "channel_names": [_channel_name(n) for n in c.classes]},
                    *space_out,
                ],
                "test_tensor": _file(folder, files["test_output"]),
                "sample_tensor": _file(folder, files["sample_output"]),
                "data": {"type": "float32", "range": [0.0, 1.0]},
                "postprocessing": [{"id": "softmax", "kwargs": {"axis": "channel"}}],
            }
        ],
        "weights": {
            "onnx": {
                "source": files["weights"],
                "sha256": _sha(folder / files["weights"]),
                "opset_version": model.opset,
            }
        },
        "config": {
            "semphase": {
                "classes": c.classes,
                "colors": [list(col) for col in c.colors],
                "tile": {"size": c.tile_size, "overlap": c.overlap},
                "normalization": norm,
            }
        },
    }
    if "report" in files:
        rdf["attachments"] = [_file(folder, files["report"])]
    if info.maintainers:
        rdf["maintainers"] = [{"github_user": user} for user in info.maintainers]
    if info.version:
        rdf["version"] = info.version
    return rdf


def _channel_name(name: str) -> str:
    """Channel names are identifiers in the spec: class names with anything else replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-]", "_", name.strip()) or "class"


def stage_files(
    model: ModelToPackage, folder: Path, info: PackageInfo, tile: np.ndarray, tile_source: str
) -> dict[str, str]:
    """Write the package's files into ``folder``; returns {role: file name}."""
    import tifffile

    from semphase.imageio import write_image

    probabilities = softmax(model.logits(tile[None]))
    labels = probabilities[0].argmax(0).astype(np.uint8)
    files = {
        "weights": model.path.name if model.path.suffix == ".onnx" else "model.onnx",
        "test_input": "test_input.npy",
        "test_output": "test_output.npy",
        "sample_input": "sample_input.tif",
        "sample_output": "sample_output.tif",
        "cover": "cover.png",
        "documentation": "documentation.md",
    }
    (folder / files["weights"]).write_bytes(model.data)
    np.save(folder / files["test_input"], tile[None, None])
    np.save(folder / files["test_output"], probabilities)
    tifffile.imwrite(folder / files["sample_input"], tile[None, None])
    tifffile.imwrite(folder / files["sample_output"], probabilities)
    write_image(folder / files["cover"], cover_image(tile, labels, model.contract.colors))
    (folder / files["documentation"]).write_text(documentation(model, info, tile_source), encoding="utf-8")
    if model.report is not None:
        files["report"] = "export_report.json"
        (folder / files["report"]).write_text(json.dumps(model.report, indent=2), encoding="utf-8")
    return files


def _problems(summary) -> tuple[list[str], list[str]]:
    """(errors, warnings) of a bioimageio ValidationSummary, one line each with their location."""
    errors, warnings = [], []
    for detail in summary.details:
        for e in detail.errors:
            where = ".".join(str(x) for x in e.loc) if getattr(e, "loc", None) else detail.name
            errors.append(f"{where}: {one_line(Exception(e.msg), 240)}")
        for w in detail.warnings:
            where = ".".join(str(x) for x in w.loc) if getattr(w, "loc", None) else detail.name
            warnings.append(f"{where}: {one_line(Exception(w.msg), 240)}")
    return errors, warnings


def write_package(
    model: ModelToPackage, out_dir: Path, info: PackageInfo, tile: np.ndarray, tile_source: str, stem: str
) -> dict:
    """Write ``out_dir/<stem>.bioimageio.zip`` (atomically) and validate it.

    Returns
    -------
    ``{"path", "format_version", "spec_version", "validation", "errors", "warnings", "reproduced"}``;
    ``reproduced`` is bioimageio.core's verdict on the test tensors, or ``None`` when it is not installed.

    Raises
    ------
    GateFailed
        when the description does not validate or the test output is not reproduced (a zip that was
        written is kept, with the reasons in the exception).
    """
    import bioimageio.spec
    from bioimageio.spec import (
        ValidationContext,
        build_description,
        load_description,
        save_bioimageio_package,
    )

    final = out_dir / f"{stem}.bioimageio.zip"
    staging = Path(tempfile.mkdtemp(prefix=".semphase-package-", dir=out_dir))
    try:
        files = stage_files(model, staging, info, tile, tile_source)
        rdf = build_rdf(model, info, staging, files)
        with ValidationContext(root=staging, perform_io_checks=True, file_name="rdf.yaml"):
            descr = build_description(rdf)
        errors, warnings = _problems(descr.validation_summary)
        if errors and info.maintainers and any(_offline(e) for e in errors):
            raise InputError(
                "--maintainer: bioimage.io checks maintainers' GitHub user names online, and github.com "
                f"cannot be reached from here ({errors[0]}); package without --maintainer on this machine"
            )
        if errors or descr.validation_summary.status not in ("valid-format", "passed"):
            raise GateFailed(f"the bioimage.io description does not validate: {'; '.join(errors)}")
        part = staging / final.name
        save_bioimageio_package(descr, output_path=part)
        part.replace(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    loaded = load_description(final, perform_io_checks=True)
    errors, warnings = _problems(loaded.validation_summary)
    result = {
        "path": str(final),
        "format_version": rdf["format_version"],
        "spec_version": bioimageio.spec.__version__,
        "validation": str(loaded.validation_summary.status),
        "errors": errors,
        "warnings": warnings,
        "reproduced": None,
    }
    if errors or result["validation"] not in ("valid-format", "passed"):
        raise failed(f"{final.name} does not validate when loaded back: {'; '.join(errors)}", result)
    result["reproduced"] = reproduce(final)
    if result["reproduced"] is not None and result["reproduced"]["status"] != "passed":
        raise failed(f"{final.name}: bioimageio.core does not reproduce the test output", result)
    return result


def _offline(error: str) -> bool:
    """An error from a network request that could not be made (no internet on this machine)."""
    signs = ("Name or service not known", "Temporary failure in name resolution", "ConnectError", "[Errno -")
    return any(sign in error for sign in signs)


def reproduce(package: Path) -> dict | None:
    """Run the package's test tensors with bioimageio.core (onnxruntime) and compare with its test
    output within the spec's tolerance; None when bioimageio.core is not installed."""
    try:
        from bioimageio.core import __version__ as core_version
        from bioimageio.core import test_model
    except ImportError:
        return None
    with contextlib.redirect_stdout(None):
        summary = test_model(package, weight_format="onnx")
    errors, warnings = _problems(summary)
    checks = [{"name": d.name, "status": str(d.status)} for d in summary.details if "onnx" in d.name.lower()]
    # bioimageio.core reports a failed reproduction as the overall status "valid-format" (the format is
    # valid, the model is not): only "passed" with no error is a pass
    passed = str(summary.status) == "passed" and not errors
    return {
        "tool": f"bioimageio.core {core_version}",
        "status": "passed" if passed else "failed",
        "summary_status": str(summary.status),
        "checks": checks,
        "errors": errors,
        "warnings": warnings,
    }
