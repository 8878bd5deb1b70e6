"""`semphase synth`: write a synthetic Ni-WC dataset, or one large synthetic micrograph."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from semphase.cli.common import RichProgress, console
from semphase.errors import InputError
from semphase.imageio import ensure_output_folder
from semphase.progress import count_callback

_TIFF = (".tif", ".tiff")
_SIZE = re.compile(r"^\s*(\d+)\s*(?:[xX]\s*(\d+))?\s*$")


def parse_size(text: str, path: Path) -> tuple[int, int]:
    """``"8192"`` -> (8192, 8192); ``"6144x4096"`` -> (6144, 4096) as (width, height)."""
    match = _SIZE.match(text)
    if not match:
        raise InputError(f"--large expects SIZE or WxH such as 8192 or 6144x4096, got {text!r}", path)
    width = int(match.group(1))
    height = int(match.group(2)) if match.group(2) else width
    if width < 1 or height < 1:
        raise InputError(f"--large size must be positive, got {text!r}", path)
    return width, height


def _verb(options: list[str]) -> str:
    return "apply" if len(options) > 1 else "applies"


def register(app: typer.Typer) -> None:
    """Add ``synth`` to ``app``."""

    @app.command("synth")
    def synth(
        out: Path = typer.Argument(
            ...,
            help="Dataset folder (AugmentedImages/ and AugmentedMasks/ go inside), or a .tif/.tiff file "
            "together with --large.",
        ),
        groups: int | None = typer.Option(
            None,
            "--groups",
            help="Dataset: number of base crops, 9 variants each (default 45, as in the Zenodo set).",
        ),
        size: int | None = typer.Option(None, "--size", help="Dataset: crop side in pixels (default 512)."),
        seed: int = typer.Option(0, "--seed", help="Random seed (>= 0); the same seed gives the same bytes."),
        large: str | None = typer.Option(
            None,
            "--large",
            metavar="SIZE",
            help="Write one large micrograph instead of a dataset: SIZE pixels square (8192) or WxH "
            "(6144x4096). OUT must end in .tif/.tiff; the truth labels go to <stem>_truth.png.",
        ),
        databar: int | None = typer.Option(
            None, "--databar", metavar="PX", help="Large: append an SEM data bar of PX rows (truth 255)."
        ),
        pixel_size_um: float | None = typer.Option(
            None,
            "--pixel-size-um",
            help="Large: pixel size in micrometres, written as FEI metadata and TIFF resolution.",
        ),
        magnification: int | None = typer.Option(
            None, "--magnification", help="Large: magnification, scales the features (default 700)."
        ),
        tile: int | None = typer.Option(
            None,
            "--tile",
            metavar="N",
            help="Large: write N x N tiles (N a multiple of 16), as stitched SEM montages are stored; "
            "one row of tiles (N x width bytes) is held in memory. Default: strips.",
        ),
        compression: str | None = typer.Option(
            None,
            "--compression",
            metavar="none|zlib|lzw|zstd|jpeg",
            help="Large: TIFF compression (default zlib with --tile, else none). jpeg is lossy: the truth "
            "still describes the rendered scene, not the decoded pixels.",
        ),
        bigtiff: bool = typer.Option(
            False, "--bigtiff", help="Large: write BigTIFF (chosen anyway when the file could pass 4 GB)."
        ),
        domain: str = typer.Option(
            "ni-wc",
            "--domain",
            help="ni-wc (the study's look) or shifted: the same five phases as another lab's micrographs "
            "(other microstructure, secondary-electron-like rendering), to try adapting a model.",
        ),
        scribbles: float | None = typer.Option(
            None,
            "--scribbles",
            metavar="PERCENT",
            help="Dataset: label only simulated strokes covering PERCENT of each image's pixels (0 < "
            "PERCENT <= 100; the rest unlabelled, 255), as a user paints them.",
        ),
        no_variants: bool = typer.Option(
            False, "--no-variants", help="Dataset: one image per base crop instead of its nine variants."
        ),
    ) -> None:
        """Write synthetic Ni-WC SEM micrographs with exact truth masks (Zenodo layout or one large TIFF)."""
        is_tiff = out.suffix.lower() in _TIFF
        if seed < 0:
            raise InputError(f"--seed must be >= 0, got {seed}", out)
        from semphase.data.synth import DOMAINS

        if domain not in DOMAINS:
            raise InputError(f"--domain must be one of {', '.join(DOMAINS)}, got {domain!r}", out)
        if large is None:
            if is_tiff:
                raise InputError("a .tif output is a single large micrograph: add --large SIZE", out)
            given = [
                n
                for n, v in (
                    ("--databar", databar),
                    ("--pixel-size-um", pixel_size_um),
                    ("--magnification", magnification),
                    ("--tile", tile),
                    ("--compression", compression),
                    ("--bigtiff", True if bigtiff else None),
                )
                if v is not None
            ]
            if given:
                raise InputError(f"{', '.join(given)} {_verb(given)} only with --large", out)
            if scribbles is not None and not 0 < scribbles <= 100:
                raise InputError(f"--scribbles must be a percentage in (0, 100], got {scribbles:g}", out)
            share = None if scribbles is None else scribbles / 100
            groups = 45 if groups is None else groups
            _write_dataset(out, groups, 512 if size is None else size, seed, domain, share, not no_variants)
            return
        if not is_tiff:
            raise InputError("--large writes a TIFF: name the output .tif or .tiff", out)
        given = [
            n
            for n, v in (
                ("--groups", groups),
                ("--size", size),
                ("--scribbles", scribbles),
                ("--no-variants", True if no_variants else None),
            )
            if v is not None
        ]
        if given:
            raise InputError(f"{', '.join(given)} {_verb(given)} only to datasets, not with --large", out)
        width, height = parse_size(large, out)
        bar = 0 if databar is None else databar
        if bar < 0:
            raise InputError(f"--databar must be >= 0, got {bar}", out)
        if pixel_size_um is not None and not pixel_size_um > 0:
            raise InputError(f"--pixel-size-um must be positive, got {pixel_size_um}", out)
        mag = 700 if magnification is None else magnification
        if mag < 1:
            raise InputError(f"--magnification must be positive, got {mag}", out)
        if tile is not None and (tile < 16 or tile % 16):
            raise InputError(f"--tile must be a positive multiple of 16 (TIFF tiles), got {tile}", out)
        from semphase.data.synth.large import COMPRESSIONS

        if compression is not None and compression.strip().lower() not in COMPRESSIONS:
            raise InputError(
                f"--compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}", out
            )
        _write_large(out, width, height, bar, pixel_size_um, mag, seed, tile, compression, bigtiff, domain)


def _write_dataset(
    out: Path, groups: int, size: int, seed: int, domain: str, scribbles: float | None, variants: bool
) -> None:
    if groups < 1:
        raise InputError(f"--groups must be at least 1, got {groups}", out)
    if size < 16:
        raise InputError(f"--size must be at least 16 pixels, got {size}", out)
    ensure_output_folder(out)
    from semphase.data.synth import IMAGES_DIR, MASKS_DIR, write_dataset

    with RichProgress() as progress:
        images = write_dataset(
            out,
            groups,
            size,
            seed,
            progress=count_callback(progress, "groups", "synthesizing"),
            domain=domain,
            scribbles=scribbles,
            variants=variants,
        )
    layout = f"{groups} groups x 9 variants" if variants else f"{groups} crops"
    what = "their masks (raw ids 1..5)"
    if scribbles is not None:
        what = (
            f"their scribbled masks (raw ids 1..5 on strokes over {100 * scribbles:g}% of the pixels, "
            "255 elsewhere)"
        )
    look = "" if domain == "ni-wc" else f", {domain} domain"
    console.print(
        f"wrote {len(images)} images ({layout}, {size} px{look}) to {out / IMAGES_DIR} and {what} to "
        f"{out / MASKS_DIR}",
        soft_wrap=True,
    )


def _write_large(
    out: Path,
    width: int,
    height: int,
    bar_px: int,
    pixel_size_um: float | None,
    mag: int,
    seed: int,
    tile: int | None,
    compression: str | None,
    bigtiff: bool,
    domain: str = "ni-wc",
) -> None:
    if out.is_dir():
        raise InputError("is a folder; expected a .tif file name", out)
    from semphase.data.synth.large import tiff_layout, write_large

    try:  # checked before anything is created (JPEG strips wider than 65535 pixels, say)
        layout = tiff_layout(width, height + bar_px, tile, compression, bigtiff)
    except ValueError as exc:
        raise InputError(str(exc), out) from None
    ensure_output_folder(out.parent)

    with RichProgress() as progress:
        tif, truth = write_large(
            out,
            (width, height),
            seed=seed,
            databar_px=bar_px,
            pixel_size_um=pixel_size_um,
            magnification=mag,
            progress=count_callback(progress, "rows", "rendering rows"),
            tile=tile,
            compression=compression,
            bigtiff=bigtiff,
            domain=domain,
        )
    extra = f" + {bar_px}-row data bar" if bar_px else ""
    console.print(
        f"wrote {tif} ({width} x {height}{extra}, 8-bit, {layout.describe()}) and its truth labels {truth}",
        soft_wrap=True,
    )
