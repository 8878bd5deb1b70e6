"""`semphase evaluate`: score a trained model (.onnx or .pt) on a dataset and write the evaluation files."""

from __future__ import annotations

from pathlib import Path

import typer

from semphase.cli.common import RichProgress, console, print_tables, styled
from semphase.cli.options import MaxMegapixels, apply_max_megapixels


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to ``app``."""

    @app.command("evaluate")
    def evaluate(
        model_path: Path = typer.Argument(
            ...,
            help="Model: an exported .onnx file (runs on onnxruntime, no torch) or a training checkpoint "
            "(best.pt; needs the train extra).",
            show_default=False,
        ),
        dataset_path: Path = typer.Argument(
            ...,
            help="Dataset folder (AugmentedImages/+AugmentedMasks/ or images/+masks/).",
            show_default=False,
        ),
        out: Path = typer.Option(
            ...,
            "--out",
            help="Folder for metrics.json, per_image.csv, confusion.png, frequency_vs_iou.png and overlays/.",
            show_default=False,
        ),
        split_file: Path | None = typer.Option(
            None,
            "--split-file",
            help="Split JSON (from 'semphase data split' or a training run). Default: the checkpoint's own "
            "training split when known, else every image.",
        ),
        split: str | None = typer.Option(
            None,
            "--split",
            help="Which part to evaluate: test, val, train or all. Default: test when a split file is known, "
            "else all.",
            show_default=False,
        ),
        classes: Path | None = typer.Option(
            None,
            "--classes",
            help="Class table (JSON/TOML) with the dataset's raw mask ids. Default: the model's own table "
            "(an ONNX file stores no raw ids; 1..C is assumed).",
        ),
        absent_as_study: bool = typer.Option(
            False,
            "--absent-as-study",
            help="Count classes absent from an image as IoU 1, Dice 1, BF1 0, as the study did (for "
            "comparison only).",
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        threads: int | None = typer.Option(
            None, "--threads", min=1, help="CPU threads for inference (default: the library's choice)."
        ),
        max_megapixels: MaxMegapixels = None,
    ) -> None:
        """Evaluate a model on a dataset: the study's tables, metrics.json, per-image CSV and figures."""
        from semphase.data.layout import open_dataset
        from semphase.evaluation import load_predictor, run_evaluation, select_samples
        from semphase.evaluation.report import study_tables
        from semphase.phases import load_class_table

        apply_max_megapixels(max_megapixels)
        table_override = load_class_table(classes) if classes is not None else None
        dataset = open_dataset(dataset_path)
        if not dataset.samples:
            from semphase.errors import InputError

            raise InputError("the dataset has no image/mask pairs", dataset.root)
        predict, table, info = load_predictor(
            model_path,
            device=device,
            threads=threads,
            classes=table_override,
            open_checkpoint=_open_checkpoint,
        )
        samples, described = select_samples(dataset, split, split_file, info.get("split_file"))
        console.print(f"model: {model_path} ({info['kind']}, {info['device']})")
        console.print(f"images: {described}")
        if info["kind"] == "onnx" and classes is None:
            console.print("raw mask ids assumed 1..C (the ONNX file stores none; --classes sets them)")
        extra = {
            "model": str(model_path),
            "dataset": str(dataset.root),
            "selection": described,
        }
        with RichProgress() as progress:
            result = run_evaluation(
                predict, samples, table, out, absent_as_study=absent_as_study, extra=extra, progress=progress
            )
        print_tables(study_tables(result))
        outputs = result.get("outputs", {})
        files = [outputs.get("metrics"), outputs.get("per_image"), outputs.get("confusion")]
        files += [outputs.get("frequency_vs_iou")]
        console.print(f"wrote to {out}: " + ", ".join(f for f in files if f))
        if outputs.get("overlays"):
            console.print(f"overlays of the best and worst images: {out / 'overlays'}")
        if "figures_skipped" in result:
            console.print(
                styled(("figures skipped:", "yellow"), f" {result['figures_skipped']}"), soft_wrap=True
            )


def _open_checkpoint(path: Path, device: str, threads: int | None):
    """A ``.pt`` checkpoint for evaluation: torch is imported here, only when a checkpoint is evaluated."""
    from semphase.train.inference import load_checkpoint_model

    return load_checkpoint_model(path, device, threads)
