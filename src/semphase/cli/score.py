"""`semphase score`: score any tool's label images against truth masks, with the study's tables."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from semphase.cli.common import RichProgress, console, err_console, print_tables, styled
from semphase.cli.options import MaxMegapixels, apply_max_megapixels

#: Problems printed one per line before the rest are summarized (the JSON holds all of them).
MAX_LISTED = 20


def _ids(raw: bool | None) -> str:
    return "auto" if raw is None else ("raw" if raw else "contiguous")


def register(app: typer.Typer) -> None:
    """Add the ``score`` command to ``app``."""

    @app.command("score")
    def score(
        pred_dir: Path = typer.Argument(
            ...,
            help="Folder of predicted label images (PNG/BMP/TIFF, searched recursively). For a truth image "
            "X the prediction may be X.png, X_mask.png, X_labels.png, X_pred.png or ilastik's "
            "'X_Simple Segmentation.png'.",
            show_default=False,
        ),
        truth_dir: Path = typer.Argument(
            ...,
            help="Truth: a dataset (AugmentedImages/+AugmentedMasks/ or images/+masks/; masks hold raw ids) "
            "or a plain folder of truth label images.",
            show_default=False,
        ),
        json_path: Path | None = typer.Option(
            None, "--json", help="Also write the scoring result (JSON schema of the docs) to this file."
        ),
        classes: Path | None = typer.Option(
            None, "--classes", help="Class table (JSON or TOML); default: the Ni-WC table (raw ids 1..5)."
        ),
        absent_as_study: bool = typer.Option(
            False,
            "--absent-as-study",
            help="Count classes absent from an image as IoU 1, Dice 1, BF1 0, as the study did (for "
            "comparison only; the default leaves them out of the image's means).",
        ),
        tolerance: int = typer.Option(2, "--tolerance", min=0, help="Boundary F1 tolerance in pixels."),
        truth_raw: bool | None = typer.Option(
            None,
            "--truth-raw/--truth-contiguous",
            help="Truth label values are raw ids of the class table / class ids 0..C-1. Default: raw for a "
            "dataset, else decided from the values found (and said which).",
            show_default=False,
        ),
        pred_raw: bool | None = typer.Option(
            None,
            "--pred-raw/--pred-contiguous",
            help="Prediction values are raw ids (e.g. ilastik's 1..N) / class ids 0..C-1 (semphase masks). "
            "Default: decided from the values found (and said which).",
            show_default=False,
        ),
        max_megapixels: MaxMegapixels = None,
    ) -> None:
        """Score predicted label images against truth: mIoU, mDice, boundary F1, per-class table."""
        from semphase.evaluation.folders import score_folders

        apply_max_megapixels(max_megapixels)
        from semphase.evaluation.report import study_tables
        from semphase.phases import load_class_table

        table = load_class_table(classes)
        with RichProgress() as progress:
            result = score_folders(
                pred_dir,
                truth_dir,
                table,
                truth_ids=_ids(truth_raw),
                pred_ids=_ids(pred_raw),
                absent_as_study=absent_as_study,
                tolerance=tolerance,
                progress=progress,
            )
        for side, label in (("truth_ids", "truth"), ("pred_ids", "predictions")):
            kind = result[side]["kind"]
            described = "raw ids (remapped with the class table)" if kind == "raw" else "class ids 0..C-1"
            console.print(f"{label}: {described}; {result[side]['reason']}")
        problems = result["problems"]
        scored = result["images"]
        console.print(f"scored {scored} image(s); {len(problems)} truth mask(s) not scored", style="bold")
        for item in problems[:MAX_LISTED]:
            err_console.print(
                styled(("skipped", "yellow"), f" {item['name']}: {item['problem']}"), soft_wrap=True
            )
        if len(problems) > MAX_LISTED:
            more = len(problems) - MAX_LISTED
            err_console.print(
                styled((f"... and {more} more", "yellow"), " (all in the JSON)" if json_path else "")
            )
        if result["unused_predictions"]:
            console.print(f"{result['unused_predictions']} prediction file(s) matched no truth mask")
        print_tables(study_tables(result))
        if json_path is not None:
            from semphase.imageio import write_text_atomic

            write_text_atomic(json_path, json.dumps(result, indent=1) + "\n")
            console.print(f"wrote {json_path}")
