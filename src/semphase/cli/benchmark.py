"""``semphase benchmark``: same phases? how fast? - the exported variants (and PyTorch) on this machine."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from semphase.cli.common import RichProgress, console, err_console, say_error, styled
from semphase.cli.options import Backend
from semphase.errors import InputError


def parse_sizes(text: str) -> tuple[int, ...]:
    """``"1024,4096"`` -> (1024, 4096); InputError for anything that is not a list of positive integers."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"--sizes must be comma-separated integers, got {text!r}") from None
    if not sizes:
        raise InputError("--sizes needs at least one size")
    return sizes


def _command_line(model_dir: Path, options, sizes_text: str) -> str:
    """The command as it can be re-run (defaults written out, so the report states them)."""
    args = ["semphase", "benchmark", str(model_dir), "--data", str(options.data), "--out", str(options.out)]
    for flag, value in (
        ("--checkpoint", options.checkpoint),
        ("--split-file", options.split_file),
        ("--split", options.split),
        ("--classes", options.classes),
        ("--threads", options.threads),
        ("--max-images", options.max_images),
    ):
        if value is not None:
            args += [flag, str(value)]
    args += ["--sizes", sizes_text, "--repeat", str(options.repeat), "--warmup", str(options.warmup)]
    args += ["--e2e-repeat", str(options.e2e_repeat), "--batch", str(options.batch)]
    args += ["--provider", options.provider, "--backend", options.backend, "--seed", str(options.seed)]
    return shlex.join(args)


def _print_summary(report: dict, out: Path) -> None:
    from rich import box
    from rich.table import Table

    from semphase.benchmarks.tables import accuracy_table, speed_table

    for spec in (accuracy_table(report), speed_table(report)):
        table = Table(title=spec.title, title_justify="left", box=box.SIMPLE_HEAD)
        for i, header in enumerate(spec.headers):
            table.add_column(header, justify="left" if i == 0 or header == "status" else "right")
        for row in spec.rows:
            table.add_row(*(styled((c, "red")) if c.startswith("failed") else c for c in row))
        console.print(table)
    console.print(f"report: {out / 'report.html'} (also report.md, report.json)")


def register(app: typer.Typer) -> None:
    """Add the ``benchmark`` command to ``app``."""

    @app.command("benchmark")
    def benchmark(
        model_dir: Path = typer.Argument(
            ...,
            help="Folder written by 'semphase export' with any of model.onnx (FP32), model.fp16.onnx, "
            "model.int8.onnx; or one model file (.onnx, or a .bioimageio.zip from 'semphase package').",
            show_default=False,
        ),
        data: Path = typer.Option(
            ...,
            "--data",
            help="Dataset folder with the held-out images and masks (AugmentedImages/+AugmentedMasks/ or "
            "images/+masks/).",
            show_default=False,
        ),
        out: Path = typer.Option(
            ...,
            "--out",
            "-o",
            help="Report folder: report.json, report.md, report.html and PNG figures (created if missing).",
            show_default=False,
        ),
        checkpoint: Path | None = typer.Option(
            None,
            "--checkpoint",
            help="PyTorch training checkpoint (best.pt) to compare with; only then is torch imported "
            "(needs the train extra).",
        ),
        split_file: Path | None = typer.Option(
            None,
            "--split-file",
            help="Split JSON naming the held-out images. Default: split.json beside --checkpoint when "
            "present, else every image of --data.",
        ),
        split: str | None = typer.Option(
            None,
            "--split",
            help="Which part of the split to score: test, val, train or all. Default: test when a split "
            "file is known, else all.",
            show_default=False,
        ),
        classes: Path | None = typer.Option(
            None,
            "--classes",
            help="Class table (JSON/TOML) with the masks' raw ids. Default: the checkpoint's table, else the "
            "models' class names with raw ids 1..C.",
        ),
        sizes: str = typer.Option(
            "1024,4096,8192",
            "--sizes",
            help="Sides in pixels of the square synthetic micrographs segmented end to end, comma-separated.",
        ),
        threads: int | None = typer.Option(
            None, "--threads", help="CPU threads for every model (default: all logical CPUs)."
        ),
        repeat: int = typer.Option(10, "--repeat", help="Timed runs per tile-latency measurement."),
        warmup: int = typer.Option(2, "--warmup", help="Untimed warm-up runs before the timed ones."),
        e2e_repeat: int = typer.Option(
            1, "--e2e-repeat", help="Timed runs of each end-to-end segmentation (the median is reported)."
        ),
        batch: int = typer.Option(
            2, "--batch", help="Tiles per inference call (latency is also timed at 1)."
        ),
        provider: str = typer.Option(
            "auto", "--provider", help="onnxruntime execution provider: auto, cpu, cuda, or a provider name."
        ),
        backend: Backend = "auto",
        max_images: int | None = typer.Option(
            None, "--max-images", help="Score at most this many held-out images (default: all)."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of the synthetic micrographs."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress display and no summary tables."),
    ) -> None:
        """Compare the exported variants (and a PyTorch checkpoint) for accuracy and speed on this machine.

        Scores every variant on the held-out images (mIoU, mDice, mBF1, per class, pixel agreement with
        FP32 and PyTorch), times tiles (median and p95), segments large synthetic micrographs in child
        processes (seconds, MP/s, peak RSS) and scores those against their truth. Writes report.json,
        report.md, report.html (self-contained) and PNG figures. A model that fails to load is reported
        with its reason; the others still run.
        """
        from semphase.benchmarks.run import BenchmarkOptions, run_benchmark
        from semphase.cli.options import check_backend

        check_backend(backend)

        options = BenchmarkOptions(
            data=data,
            out=out,
            checkpoint=checkpoint,
            split_file=split_file,
            split=split,
            classes=classes,
            sizes=parse_sizes(sizes),
            threads=threads,
            repeat=repeat,
            warmup=warmup,
            e2e_repeat=e2e_repeat,
            batch=batch,
            provider=provider,
            backend=backend,
            max_images=max_images,
            seed=seed,
        )
        with RichProgress(transient=False, enabled=not quiet) as progress:
            report = run_benchmark(
                model_dir, options, command=_command_line(model_dir, options, sizes), progress=progress
            )
        for variant in report["variants"]:
            if variant["status"] != "ok":
                err_console.print(
                    styled(
                        ("warning:", "yellow"), f" {variant['file']} was not measured: {variant['reason']}"
                    ),
                    soft_wrap=True,
                )
        if not quiet:
            _print_summary(report, out)
        for row in report["accuracy"]:
            if row.get("gates") and row["status"] == "failed":
                say_error(f"{row['variant'].upper()} {row['reason']}", label="FAILED:")
