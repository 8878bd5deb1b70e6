"""`semphase segment`: torch-free tiled segmentation of micrographs of any size, with phase tables.

Thin: options, progress and tables here; the work is :func:`semphase.runtime.segment.segment_file`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from semphase.cli.common import RichProgress, console, say_error, say_self_check, styled
from semphase.cli.options import (
    TTA,
    Batch,
    Databar,
    Format,
    MaxMegapixels,
    Normalize,
    Overlap,
    PixelSize,
    Probs,
    Provider,
    Threads,
    Tile,
    Uncertainty,
    Verify,
    Window,
    load_checked_model,
    segmentation_settings,
)
from semphase.errors import display_path


def register(app: typer.Typer) -> None:
    """Add the ``segment`` command to ``app``."""

    @app.command("segment")
    def segment(
        ctx: typer.Context,
        model: Path = typer.Argument(
            ...,
            help="Exported semphase ONNX model (model.onnx, model.fp16.onnx or model.int8.onnx), or a "
            "bioimage.io package made from one by 'semphase package' (.bioimageio.zip).",
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
        tile: Tile = None,
        overlap: Overlap = None,
        batch: Batch = 2,
        window: Window = "gaussian",
        threads: Threads = None,
        provider: Provider = "auto",
        databar: Databar = "auto",
        pixel_size_um: PixelSize = None,
        normalize: Normalize = "linear",
        uncertainty: Uncertainty = False,
        probs: Probs = False,
        format: Format = "auto",  # noqa: A002 - the option is --format
        tta: TTA = False,
        verify: Verify = True,
        max_megapixels: MaxMegapixels = None,
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no table; errors only."),
        cluster: str | None = typer.Option(
            None,
            "--cluster",
            help="Run on Dask distributed (pip install 'semphase\\[cluster]'), one task per micrograph: "
            "'local:N' starts N worker processes on this PC, each running one micrograph at a time with "
            "cores/N onnxruntime threads (workers x threads = cores; 'local' = one worker per two cores); "
            "'tcp://HOST:PORT' uses a running scheduler, whose workers ('dask worker ADDRESS --nthreads 1') "
            "each use their host's cores / its worker processes (or --threads). Workers need the same "
            "paths as this PC (a shared folder). Resumable and exactly once: DIR/segment-journal.jsonl "
            "records each input; the same command again skips what is done and redoes what changed.",
            show_default=False,
        ),
    ) -> None:
        """Segment micrographs: X_mask.png, X_overlay.png and the phase table X.json per input, summary.csv.

        Montages over 8192 x 8192 pixels are read strip by strip from their TIFF and get pyramidal
        X_mask.ome.tif / X_overlay.ome.tif instead (--format).

        Exit code 0 when every input succeeded, 2 when any failed (each named in one line; the others are
        still processed).
        """
        from semphase.errors import InputError
        from semphase.imageio import ensure_output_folder
        from semphase.runtime.outputs import SUMMARY_NAME, write_summary
        from semphase.runtime.segment import segment_file

        options = segmentation_settings(ctx.params)  # the options above, checked once
        if cluster is not None:
            from semphase.cluster.spec import parse_cluster

            spec = parse_cluster(cluster)  # a bad address is an option error, before anything else
            # the model and the tiling are checked here once; each worker then loads (and self-checks) it
            checked = load_checked_model(model, options, provider="cpu", threads=1, verify=False)
            table = (checked.classes, checked.variant)
            del checked  # the client segments nothing: no session held for the run
            _segment_on_cluster(spec, model, table, inputs, out, options, provider, threads, verify, quiet)
            return
        loaded = load_checked_model(model, options, provider=provider, threads=threads, verify=verify)
        ensure_output_folder(out)
        if not quiet and loaded.self_check is not None:
            say_self_check(loaded.self_check)
        files, stems, failures = _inputs(inputs, out, options, [SUMMARY_NAME])
        results: list[dict] = []
        with RichProgress(enabled=not quiet) as progress:
            progress.start("micrographs", "micrographs", len(files))
            for path, stem in zip(files, stems, strict=True):
                try:
                    result = segment_file(loaded, path, out, options, stem=stem, progress=progress)
                    result["status"] = "done"
                except InputError as exc:
                    failures.append(str(exc))
                    result = {"input": str(path), "status": "failed", "reason": exc.said_of(path)}
                    say_error(str(exc), progress.console)
                results.append(result)
                write_summary(out / SUMMARY_NAME, results, loaded.classes)
                progress.finish("tiles")
                progress.advance("micrographs")
        if not quiet:
            _print_table(results, loaded.classes, loaded.variant)
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


def _inputs(inputs, out, options, outputs: list[str]) -> tuple[list, list[str], list[str]]:
    """The input files, their output stems, and the problems of the input specs (each said already);
    refuses inputs that are outputs of this run (``outputs``: the run's own files in ``out``)."""
    from semphase.runtime.inputs import expand_inputs, output_stems
    from semphase.runtime.segment import check_inputs_are_not_outputs

    files, problems = expand_inputs(inputs, exclude=[out])
    stems = output_stems(files)
    check_inputs_are_not_outputs(files, stems, out, options, extra=outputs)
    failures = [f"{spec}: {reason}" for spec, reason in problems]
    for line in failures:
        say_error(line)
    return files, stems, failures


def _segment_on_cluster(spec, model, table, inputs, out, options, provider, threads, verify, quiet) -> None:
    """``segment --cluster``: the same inputs and outputs, on Dask (:mod:`semphase.cluster.run`);
    ``table`` is the model's (classes, variant) for the phase table."""
    from semphase.cluster.run import JOURNAL_NAME, RUN_NAME, ClusterOptions, segment_on_cluster
    from semphase.imageio import ensure_output_folder
    from semphase.progress import SILENT
    from semphase.runtime.outputs import SUMMARY_NAME

    ensure_output_folder(out)
    files, stems, failures = _inputs(inputs, out, options, [SUMMARY_NAME, JOURNAL_NAME, RUN_NAME])
    settings = ClusterOptions(spec=spec, model=model, provider=provider, threads=threads, verify=verify)
    with RichProgress(enabled=not quiet) as progress:
        say = lambda line: say_error(line, progress.console)  # noqa: E731
        shown = progress if not quiet else SILENT
        state = segment_on_cluster(files, stems, out, options, settings, progress=shown, on_failure=say)
    failures += state.failures
    results = [state.results[i] for i in sorted(state.results)]
    if not quiet:
        if results and any(r.get("status") == "done" for r in results):
            _print_table(results, *table)
        _print_workers(state)
        console.print(
            styled(
                f"{state.done} segmented, {state.skipped} done by an earlier run, {state.failed} failed; "
                f"outputs in {out}; journal {out / JOURNAL_NAME}; per-worker times in {out / RUN_NAME}"
            ),
            soft_wrap=True,
        )
    if failures:
        say_error(
            f"{len(failures)} input(s) failed, {state.done + state.skipped} succeeded; see the lines above"
        )
        raise typer.Exit(2)


def _print_workers(state) -> None:
    from rich.table import Table

    if not state.workers:
        return
    table = Table(title="Workers", title_justify="left")
    for name in ("worker", "host", "tasks", "failed", "busy s", "model load s", "MP", "ort threads"):
        table.add_column(name, justify="left" if name in ("worker", "host") else "right")
    for w in state.workers.values():
        table.add_row(
            w.address,
            w.host,
            str(w.tasks),
            str(w.failed),
            f"{w.busy_seconds:.1f}",
            f"{w.load_seconds:.1f}",
            f"{w.megapixels:.1f}",
            str(w.threads or "-"),
        )
    console.print(table)


def _print_table(results: list[dict], classes: list[str], variant: str) -> None:
    from rich.table import Table

    table = Table(title=f"Phase fractions of analysed pixels ({variant} model)", title_justify="left")
    table.add_column("input", overflow="fold")  # a narrow terminal wraps names, never cuts them
    for name in classes:
        table.add_column(name, justify="right", overflow="fold")
    table.add_column("excluded", justify="right")
    table.add_column("s", justify="right")
    for r in results:
        name = display_path(Path(r["input"]).name)
        if r.get("status") != "done":
            table.add_row(name, *["-"] * len(classes), "", styled(("failed", "red")))
            continue
        fractions = [f"{p['fraction'] * 100:.2f}%" for p in r["phases"]]
        excluded = f"{r['excluded_pixels'] / (r['width'] * r['height']) * 100:.1f}%"
        table.add_row(name, *fractions, excluded, f"{r['seconds']['total']:.1f}")
    console.print(table)
