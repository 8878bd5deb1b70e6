"""`semphase data check` and `semphase data split`: dataset integrity, class balance, grouped splits."""

from __future__ import annotations

from pathlib import Path

import typer

from semphase.cli.common import console, print_tables, styled
from semphase.cli.options import MaxMegapixels, apply_max_megapixels
from semphase.errors import InputError

data_app = typer.Typer(
    name="data",
    help="Check a segmentation dataset and make leak-free grouped train/val/test splits.",
    no_args_is_help=True,
)

DATASET_HELP = (
    "Dataset folder: AugmentedImages/ + AugmentedMasks/ (Zenodo) or images/ + masks/ (generic), "
    "or a folder holding exactly one such dataset."
)
FRACTIONS_HELP = (
    "Train, val, test fractions of the labelled pixels, comma-separated, summing to 1; val or test may be "
    "0 (fields without a labelled pixel are left out)."
)
SEED_HELP = "Seed of the split; the same seed gives the same split."
GROUP_REGEX_HELP = (
    "Regex whose first capture group (or whole match) names the crop group of a file; default: "
    "sem{mag}_x{X}_y{Y} for Zenodo names, else the file stem. Must match every name."
)


def _parse_fractions(text: str) -> tuple[float, float, float]:
    from semphase.data.split import check_fractions

    try:
        parts = tuple(float(x) for x in text.split(","))
        if len(parts) != 3:
            raise ValueError(f"need three numbers, got {len(parts)}")
        return check_fractions(parts)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r}: {exc}", param_hint="--fractions") from None


def _writable_folder(folder: Path) -> None:
    """Fail before the work, not after it, when an output folder cannot be written."""
    from semphase.imageio import ensure_output_folder

    ensure_output_folder(folder)


def _writable_file(path: Path) -> None:
    if path.is_dir():
        raise InputError("is a folder; expected an output file name", path)
    _writable_folder(path.parent)


def _print_split(split: dict[str, list[str]], group_regex: str | None, report=None) -> None:
    """Images and groups per split (and class fractions when a check report is at hand); leak check."""
    from semphase.data.check import split_table
    from semphase.data.split import find_leaks

    print_tables([split_table(split, group_regex, report)])
    leaks = find_leaks(split, group_regex)
    if leaks:  # make_split rules this out; never write a leaky split if that ever changes
        raise RuntimeError(f"split leaks groups {', '.join(leaks[:3])}")
    console.print("No leaks: every group lies in exactly one split.")


@data_app.command("check")
def check(
    dataset: Path = typer.Argument(..., help=DATASET_HELP, show_default=False),
    classes: Path | None = typer.Option(
        None, "--classes", help="Class table (.json or .toml); default: the Zenodo Ni-WC table (raw 1..5)."
    ),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write counts, fractions, problems (and the split summary) to this JSON file."
    ),
    overlays: Path | None = typer.Option(
        None, "--overlays", help="Write image | mask | overlay panels (PNG) into this folder."
    ),
    n_overlays: int = typer.Option(6, "--n-overlays", min=0, help="How many panels --overlays writes."),
    split_out: Path | None = typer.Option(
        None, "--split-out", help="Also write a grouped, leak-free train/val/test split to this JSON file."
    ),
    fractions: str = typer.Option("0.7,0.15,0.15", "--fractions", help=FRACTIONS_HELP),
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    group_regex: str | None = typer.Option(None, "--group-regex", help=GROUP_REGEX_HELP),
    max_megapixels: MaxMegapixels = None,
) -> int:
    """Check every image/mask pair, count class pixels, optionally draw panels and write a split.

    Exit codes: 0 no problem found, 1 problems found (all listed), 2 unusable input or output location.
    """
    import json

    from semphase.data.check import (
        check_dataset,
        check_document,
        field_table,
        label_warnings,
        pixel_table,
        write_panels,
    )
    from semphase.data.split import make_split, save_split
    from semphase.imageio import write_text_atomic
    from semphase.phases import load_class_table

    apply_max_megapixels(max_megapixels)
    split_fractions = _parse_fractions(fractions)
    table = load_class_table(classes)
    for out in (json_out, split_out):
        if out is not None:
            _writable_file(out)
    if overlays is not None:
        _writable_folder(overlays)

    report = check_dataset(dataset, table)
    if report.dataset is None:
        problem = report.problems[0]
        raise InputError(problem.reason, problem.path)
    ds = report.dataset

    console.print(
        styled(
            (str(ds.root), "bold"),
            f" ({ds.kind} layout): {len(ds.samples)} pairs, {report.n_images} readable",
        ),
        soft_wrap=True,
    )
    print_tables([pixel_table(report)])
    if report.sparse:
        console.print(
            f"Sparse labels: {100 * report.labelled_fraction:.2f}% of the pixels of {report.n_images} "
            "fields are labelled; everything else is unlabelled and never trained on or scored.",
            soft_wrap=True,
        )
        print_tables([field_table(report)])

    split = None
    if split_out is not None:
        labelled = {name: int(c.sum()) for name, c in report.per_image_counts.items()}
        split = make_split(list(report.per_image_counts), split_fractions, seed, group_regex, labelled)
        report.warnings = label_warnings(report, split)
        _print_split(split, group_regex, report)
        save_split(split, split_out, seed=seed, group_regex=group_regex, fractions=split_fractions)
        left_out = len(ds.samples) - report.n_images
        unlabelled = report.n_images - sum(len(v) for v in split.values())
        notes = [f"{left_out} unreadable pairs"] * bool(left_out)
        notes += [f"{unlabelled} unlabelled fields"] * bool(unlabelled)
        note = f" ({' and '.join(notes)} left out)" if notes else ""
        console.print(f"Split written to {split_out}{note}.", soft_wrap=True)
    split_info = {"path": str(split_out), "seed": seed, "group_regex": group_regex}
    document = check_document(report, split, split_info)
    if overlays is not None and n_overlays > 0 and report.per_image_counts:
        written = write_panels(report, overlays, n_overlays, group_regex)
        console.print(f"{len(written)} overlay panels written to {overlays}.", soft_wrap=True)
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(document, indent=1) + "\n")
        console.print(f"Report written to {json_out}.", soft_wrap=True)

    for warning in report.warnings:
        console.print(f"warning: {warning}", style="yellow", soft_wrap=True)
    if report.problems:
        console.print(f"{len(report.problems)} problems:", style="bold red")
        for problem in report.problems:
            console.print(f"  {problem}", soft_wrap=True)
        return 1
    console.print("No problems found.", style="green")
    return 0


@data_app.command("split")
def split(
    dataset: Path = typer.Argument(..., help=DATASET_HELP, show_default=False),
    out: Path = typer.Option(..., "--out", help="Where to write the split (JSON)."),
    fractions: str = typer.Option("0.7,0.15,0.15", "--fractions", help=FRACTIONS_HELP),
    seed: int = typer.Option(0, "--seed", help=SEED_HELP),
    group_regex: str | None = typer.Option(None, "--group-regex", help=GROUP_REGEX_HELP),
    classes: Path | None = typer.Option(
        None, "--classes", help="Class table (.json or .toml); default: the Zenodo Ni-WC table (raw 1..5)."
    ),
) -> int:
    """Write a grouped train/val/test split of the dataset's image/mask pairs, balanced by labelled pixels
    (only the masks are read; fields without a labelled pixel are left out)."""
    from semphase.data.layout import labelled_pixels, open_dataset
    from semphase.data.split import make_split, save_split
    from semphase.phases import load_class_table

    split_fractions = _parse_fractions(fractions)
    table = load_class_table(classes)
    _writable_file(out)
    ds = open_dataset(dataset)
    labelled = labelled_pixels(ds.samples, table)
    result = make_split([s.name for s in ds.samples], split_fractions, seed, group_regex, labelled)
    _print_split(result, group_regex)
    save_split(result, out, seed=seed, group_regex=group_regex, fractions=split_fractions)
    console.print(f"Split of {len(ds.samples)} pairs in {ds.root} written to {out}.", soft_wrap=True)
    return 0


def register(app: typer.Typer) -> None:
    """Add the ``data`` command group to ``app``."""
    app.add_typer(data_app, name="data")
