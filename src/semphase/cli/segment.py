"""`semphase segment`: torch-free tiled segmentation of micrographs of any size, with phase tables.

Thin: options, progress and tables here; the work is :func:`semphase.runtime.segment.segment_file`.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer

from semphase.cli.common import (
    apply_max_megapixels,
    console,
    err_console,
    max_megapixels_option,
    progress_bar,
    say_error,
    say_self_check,
    styled,
)
from semphase.errors import display_path


def register(app: typer.Typer) -> None:
    """Add the ``segment`` command to ``app``."""

    @app.command("segment")
    def segment(
        model: Path = typer.Argument(
            ...,
            help="Exported semphase ONNX model (model.onnx, model.fp16.onnx or model.int8.onnx).",
            show_default=False,
        ),
        inputs: list[str] = typer.Argument(
            ...,
            help="Micrographs: files, folders (their image files) or glob patterns ('runs/**/*.tif'). "
            "TIFF (8/16-bit, first page), PNG, BMP, JPEG; gray, RGB or RGBA.",
            show_default=False,
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Output folder (created if needed).", show_default=False
        ),
        tile: int | None = typer.Option(
            None,
            "--tile",
            help="Tile size in pixels, a multiple of 32 (default: the model's).",
            show_default=False,
        ),
        overlap: int | None = typer.Option(
            None,
            "--overlap",
            help="Minimum overlap of neighbouring tiles in pixels (default: the model's).",
            show_default=False,
        ),
        batch: int = typer.Option(2, "--batch", min=1, help="Tiles per inference call."),
        window: str = typer.Option(
            "gaussian", "--window", help="Blend window for overlapping tiles: gaussian or cosine."
        ),
        threads: int | None = typer.Option(
            None,
            "--threads",
            min=1,
            help="CPU threads for onnxruntime (default: one per core).",
            show_default=False,
        ),
        provider: str = typer.Option(
            "auto",
            "--provider",
            help="Execution provider: auto, cpu, cuda, dml or openvino (auto picks the "
            "first installed of cuda, dml, openvino, cpu).",
        ),
        databar: str = typer.Option(
            "auto",
            "--databar",
            help="SEM data bar at the bottom: auto (vendor metadata, else detected), none, or its height in "
            "rows. Its rows are 255 (no data) in the mask and left out of every statistic.",
        ),
        pixel_size_um: float | None = typer.Option(
            None,
            "--pixel-size-um",
            help="Pixel size in micrometres for phase areas (default: from the file's metadata).",
            show_default=False,
        ),
        normalize: str = typer.Option(
            "linear",
            "--normalize",
            help="16-bit to 8-bit: linear (value/257, the same phases as an 8-bit save) or percentile "
            "(contrast stretch for dim acquisitions).",
        ),
        uncertainty: bool = typer.Option(
            False,
            "--uncertainty",
            help="Also write X_uncertainty.png (normalized entropy) and the fraction of uncertain pixels.",
        ),
        probs: bool = typer.Option(
            False, "--probs", help="Also write X_probs.tif: class probabilities, float16, one page per class."
        ),
        tta: bool = typer.Option(False, "--tta", help="Average the four flips of every tile (4x slower)."),
        verify: bool = typer.Option(
            True,
            "--verify/--no-verify",
            help="Run the model's self-check once at start (its labels on reference tiles stored at export, "
            "well under a second); a model that gives other phases on this CPU is refused (exit 2) after "
            "trying the precise INT8 kernels. The verdict goes into every X.json.",
        ),
        max_megapixels: float | None = max_megapixels_option(),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no table; errors only."),
    ) -> None:
        """Segment micrographs: X_mask.png, X_overlay.png and the phase table X.json per input, summary.csv.

        Exit code 0 when every input succeeded, 2 when any failed (each named in one line; the others are
        still processed).
        """
        from semphase.errors import InputError
        from semphase.imageio import ensure_output_folder
        from semphase.runtime.inputs import expand_inputs, output_stems
        from semphase.runtime.model import load_model
        from semphase.runtime.outputs import SUMMARY_NAME, write_summary
        from semphase.runtime.segment import SegmentOptions, check_inputs_are_not_outputs, segment_file

        apply_max_megapixels(max_megapixels)
        options = SegmentOptions(
            tile=tile,
            overlap=overlap,
            batch=batch,
            window=window,
            databar=databar,
            pixel_size_um=pixel_size_um,
            normalize=normalize,
            uncertainty=uncertainty,
            probs=probs,
            tta=tta,
        )
        loaded = load_model(model, provider=provider, threads=threads, verify=verify)
        options.tiling_for(loaded)  # a --tile this model cannot take fails here, once
        ensure_output_folder(out)
        if not quiet and loaded.self_check is not None:
            say_self_check(loaded.self_check)
        files, problems = expand_inputs(inputs, exclude=[out])
        stems = output_stems(files)
        check_inputs_are_not_outputs(files, stems, out, options, extra=[SUMMARY_NAME])
        failures = [f"{spec}: {reason}" for spec, reason in problems]
        for line in failures:
            _say_error(line, None)
        results: list[dict] = []
        progress = None if quiet else progress_bar()
        with progress or contextlib.nullcontext():
            overall = progress.add_task("micrographs", total=len(files)) if progress else None
            for path, stem in zip(files, stems, strict=True):
                tiles = progress.add_task(f"  {path.name}", total=None) if progress else None

                def on_tiles(done, total, _task=tiles):
                    if progress is not None:
                        progress.update(_task, completed=done, total=total)

                try:
                    result = segment_file(loaded, path, out, options, stem=stem, progress=on_tiles)
                    result["status"] = "done"
                except InputError as exc:
                    failures.append(str(exc))
                    result = {"input": str(path), "status": "failed", "reason": exc.said_of(path)}
                    _say_error(str(exc), progress)
                results.append(result)
                write_summary(out / SUMMARY_NAME, results, loaded.classes)
                if progress is not None:
                    progress.remove_task(tiles)
                    progress.advance(overall)
        if not quiet:
            _print_table(results, loaded)
            console.print(
                f"outputs in {out}; one row per input in {out / SUMMARY_NAME}",
                soft_wrap=True,
            )
        if failures:
            say_error(
                f"{len(failures)} input(s) failed, "
                f"{sum(r['status'] == 'done' for r in results)} succeeded; see the lines above"
            )
            raise typer.Exit(2)


def _say_error(line: str, progress) -> None:
    say_error(line, progress.console if progress is not None else err_console)


def _print_table(results: list[dict], model) -> None:
    from rich.table import Table

    variant = model.variant
    table = Table(title=f"Phase fractions of analysed pixels ({variant} model)", title_justify="left")
    table.add_column("input", overflow="fold")  # a narrow terminal wraps names, never cuts them
    for name in model.classes:
        table.add_column(name, justify="right", overflow="fold")
    table.add_column("excluded", justify="right")
    table.add_column("s", justify="right")
    for r in results:
        name = display_path(Path(r["input"]).name)
        if r.get("status") != "done":
            table.add_row(name, *["-"] * len(model.classes), "", styled(("failed", "red")))
            continue
        fractions = [f"{p['fraction'] * 100:.2f}%" for p in r["phases"]]
        excluded = f"{r['excluded_pixels'] / (r['width'] * r['height']) * 100:.1f}%"
        table.add_row(name, *fractions, excluded, f"{r['seconds']['total']:.1f}")
    console.print(table)
