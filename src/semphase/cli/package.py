"""``semphase package``: an exported model as a bioimage.io model package and/or a ZEISS CZANN file.

A command of its own rather than an ``export`` option: the exported FP32 ONNX file already holds what
a package needs (classes, normalization, tiling, test metrics, held-out reference tiles), so packaging
needs no checkpoint, dataset or torch, runs on a PC with the ``interop`` extra only, and can package a
model exported long ago again with other authors, licence or pixel size.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer

from semphase.cli.common import console, styled
from semphase.errors import GateFailed, InputError, OptionError

PACKAGE_HELP = (
    "Package an exported FP32 model for other tools: a bioimage.io model package (--bioimageio, spec 0.5: "
    "ilastik, deepImageJ, BiaPy, QuPath, bioimageio.core) and/or a ZEISS CZANN file (--czann: ZEN, arivis). "
    "The test tensors and cover come from the held-out tiles stored in the model at export (or --sample). "
    "Each package is validated after writing: the bioimage.io one with bioimageio.spec and (when installed) "
    "bioimageio.core reproducing its test output; the CZANN read back with czmodel and run on the test tile. "
    "Needs the interop extra (pip install 'semphase\\[interop]'); no torch. Exit code 1 when a package does "
    "not validate (files kept), 2 for bad input."
)


def package_command(
    model: Path = typer.Argument(..., help="The FP32 model.onnx written by `semphase export`."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created if missing)."),
    bioimageio: bool = typer.Option(
        True, "--bioimageio/--no-bioimageio", help="Write <stem>.bioimageio.zip (bioimage.io spec 0.5)."
    ),
    czann: bool = typer.Option(False, "--czann", help="Also write <stem>.czann for ZEISS ZEN / arivis."),
    name: str | None = typer.Option(
        None,
        "--name",
        help="Model name (letters, digits, spaces, _+-(); default "
        "'SEM phase segmentation U-Net (N phases)').",
    ),
    stem: str | None = typer.Option(
        None, "--stem", help="File name stem of the packages (default: the model file's, e.g. 'model')."
    ),
    description: str | None = typer.Option(None, "--description", help="One or two sentences on the model."),
    author: list[str] = typer.Option(
        [],
        "--author",
        help="An author, 'Name', 'Name; Affiliation' or 'Name; Affiliation; ORCID' (repeat for several; "
        "bioimage.io needs at least one).",
    ),
    maintainer: list[str] = typer.Option(
        [],
        "--maintainer",
        help="A maintainer's GitHub user name (repeatable; checked online by bioimage.io).",
    ),
    license_id: str = typer.Option(
        "MIT", "--license", help="SPDX licence id of the model, e.g. MIT, CC-BY-4.0."
    ),
    tag: list[str] = typer.Option([], "--tag", help="Extra bioimage.io tags (repeatable)."),
    pixel_size_um: float | None = typer.Option(
        None,
        "--pixel-size-um",
        help="Pixel size of the training images in µm, when known: the space axes' scale (bioimage.io) "
        "and Scaling (CZANN).",
    ),
    sample: Path | None = typer.Option(
        None,
        "--sample",
        help="A held-out micrograph for the test tensors and cover instead of the model's stored reference "
        "tiles (needed for models exported before references existed).",
    ),
) -> None:
    """Write and validate the packages; print where they are and what was verified."""
    if not bioimageio and not czann:
        raise OptionError("nothing to write: give --bioimageio (the default) and/or --czann")
    if pixel_size_um is not None and not pixel_size_um > 0:
        raise OptionError(f"--pixel-size-um must be > 0, got {pixel_size_um}")
    if stem is not None and not re.fullmatch(r"[A-Za-z0-9_.\-]+", stem):
        raise OptionError(f"--stem {stem!r}: use letters, digits, '.', '_' or '-'")
    if bioimageio and not author:
        raise OptionError("a bioimage.io package names its authors: give --author 'Name' (repeatable)")
    try:
        from semphase.interop import bioimageio as bio
        from semphase.interop import source
    except ImportError as exc:
        reason = f"packaging needs the interop extra: pip install 'semphase[interop]' ({exc})"
        raise InputError(reason) from None

    packaged = source.load_fp32(model)
    classes = packaged.contract.classes
    title = bio.check_name(name) if name else bio.default_name(classes)
    info = bio.PackageInfo(
        name=title,
        description=description
        or (
            f"ResNet34 U-Net that segments grayscale SEM micrographs into {len(classes)} phases "
            f"({', '.join(classes)}); trained and exported with semphase."
        ),
        authors=[bio.parse_author(a) for a in author],
        license=license_id,
        maintainers=list(maintainer),
        tags=list(bio.DEFAULT_TAGS) + [t for t in tag if t not in bio.DEFAULT_TAGS],
        pixel_size_um=pixel_size_um,
    )
    tile, tile_source = source.test_tile(packaged, sample)
    from semphase.imageio import ensure_output_folder, write_text_atomic

    folder = ensure_output_folder(out)
    file_stem = stem or packaged.path.stem
    report: dict = {"model": str(packaged.path), "test_tile": tile_source, "packages": {}}
    failure: GateFailed | None = None
    if bioimageio:
        with console.status("writing and validating the bioimage.io package", spinner="dots"):
            try:
                report["packages"]["bioimageio"] = bio.write_package(
                    packaged, folder, info, tile, tile_source, file_stem
                )
            except GateFailed as exc:
                report["packages"]["bioimageio"] = getattr(exc, "result", {"error": str(exc)})
                failure = exc
        _say_bioimageio(report["packages"]["bioimageio"])
    if czann:
        try:
            from semphase.interop import czann as cz
        except ImportError as exc:
            raise InputError(f"--czann needs czmodel: pip install 'semphase[interop]' ({exc})") from None
        with console.status("writing and checking the CZANN file", spinner="dots"):
            path = cz.write_czann(packaged, folder, file_stem, title, pixel_size_um)
            try:
                check = cz.verify(path, packaged, tile)
            except GateFailed as exc:
                check = getattr(exc, "result", {"error": str(exc)})
                failure = failure or exc
        report["packages"]["czann"] = {"path": str(path), **check}
        _say_czann(report["packages"]["czann"])
    write_text_atomic(folder / f"{file_stem}.package_report.json", json.dumps(report, indent=2) + "\n")
    if failure is not None:
        raise failure
    console.print(styled(("packages validated", "green"), f": {folder}"), soft_wrap=True)


def _say_bioimageio(result: dict) -> None:
    if "path" not in result:
        return
    console.print(
        styled(
            f"bioimage.io: {result['path']} (format {result['format_version']}, bioimageio.spec "
            f"{result['spec_version']}: {result['validation']})"
        ),
        soft_wrap=True,
    )
    reproduced = result.get("reproduced")
    if reproduced is None:
        console.print(styled("  test output not reproduced here: bioimageio.core is not installed"))
    else:
        mark = ("passed", "green") if reproduced["status"] == "passed" else (reproduced["status"], "bold red")
        console.print(
            styled(("  test tensors with ", ""), (reproduced["tool"], ""), (": ", ""), mark), soft_wrap=True
        )
    for warning in result.get("warnings", []):
        console.print(styled(("  note:", "yellow"), f" {warning}"), soft_wrap=True)


def _say_czann(result: dict) -> None:
    meta = result.get("metadata") or {}
    agreement = result.get("agreement_pct")
    same = "" if agreement is None else f", {agreement:.3f} % of the test tile's pixels get the model's phase"
    console.print(
        styled(
            f"CZANN: {result['path']} ({meta.get('type')}, input {meta.get('input_shape')}, min overlap "
            f"{meta.get('min_overlap')}); read back with czmodel{same}"
        ),
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    app.command(
        "package",
        help=PACKAGE_HELP,
        short_help="Package a model for bioimage.io tools and ZEISS ZEN (CZANN).",
    )(package_command)
