"""`semphase segment`: torch-free tiled segmentation of micrographs of any size, with phase tables.

Thin: options, progress and tables here; the work is :func:`semphase.runtime.segment.segment_file`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from semphase.cli.common import RichProgress, console, say_error, say_self_check, styled
from semphase.cli.options import (
    TTA,
    Backend,
    Batch,
    Databar,
    Format,
    MaxMegapixels,
    Normalize,
    Overlap,
    PixelSize,
    Probs,
    Provider,
    Streams,
    Threads,
    Tile,
    Uncertainty,
    Verify,
    Window,
    check_backend,
    load_checked_model,
    model_settings,
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
        streams: Streams = None,
        provider: Provider = "auto",
        backend: Backend = "auto",
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
        from semphase.runtime.run import InProcess, segment_many

        options = segmentation_settings(ctx.params)  # the options above, checked once
        if cluster is not None:
            from semphase.cluster.run import ClusterOptions, DaskExecutor
            from semphase.cluster.spec import parse_cluster

            spec = parse_cluster(cluster)  # a bad address is an option error, before anything else
            # the model and the tiling are checked here once; each worker then loads (and self-checks) it
            checked = load_checked_model(model, options, provider="cpu", threads=1, verify=False)
            classes, variant = list(checked.classes), checked.variant
            del checked  # the client segments nothing: no session held for the run
            check_backend(backend)
            settings = ClusterOptions(
                spec=spec, model=model, provider=provider, threads=threads, verify=verify, backend=backend
            )
            executor = DaskExecutor(settings, classes)
        else:
            loaded = load_checked_model(model, options, **model_settings(ctx.params))
            if not quiet and loaded.self_check is not None:
                say_self_check(loaded.self_check)
            executor, variant = InProcess(loaded), loaded.variant
        with _Rendering(enabled=not quiet) as progress:
            batch = segment_many(inputs, out, options, executor, progress=progress)
        if not quiet:
            results = batch.ordered
            if results:
                _print_table(results, executor.classes, variant)
            if batch.workers:
                _print_workers(batch)
            journaled = executor.journal is not None
            console.print(styled(_summary_line(batch, out, journaled)), soft_wrap=True)
        if batch.failures:
            say_error(
                f"{len(batch.failures)} input(s) failed, {batch.succeeded} succeeded; see the lines above"
            )
            raise typer.Exit(2)


def _summary_line(batch, out: Path, journaled: bool) -> str:
    """The last line of a batch: where the outputs are (and a journaled run's counts and records)."""
    from semphase.runtime.outputs import SUMMARY_NAME

    if not journaled:
        return f"outputs in {out}; one row per input in {out / SUMMARY_NAME}"
    from semphase.cluster.run import RUN_NAME
    from semphase.runtime.ledger import SEGMENT_JOURNAL

    return (
        f"{batch.done} segmented, {batch.skipped} done by an earlier run, {batch.failed} failed; "
        f"outputs in {out}; journal {out / SEGMENT_JOURNAL}; per-worker times in {out / RUN_NAME}"
    )


class _Rendering(RichProgress):
    """The bars, and each failed input said in one line above them as it happens."""

    def event(self, event) -> None:
        if event.kind == "failed":
            say_error(event.message, self.console)


def _print_workers(batch) -> None:
    from rich.table import Table

    table = Table(title="Workers", title_justify="left")
    for name in ("worker", "host", "tasks", "failed", "busy s", "model load s", "MP", "ort threads"):
        table.add_column(name, justify="left" if name in ("worker", "host") else "right")
    for w in batch.workers.values():
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
