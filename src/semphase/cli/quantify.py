"""`semphase quantify`: sample statistics (ASTM E562/E1245) and particle measurements from segmentations.

Thin: options and the sample table here; the work is :func:`semphase.quantify.quantify`.
"""

from __future__ import annotations

from pathlib import Path

import typer

from semphase.cli.common import RichProgress, console, print_tables, styled

QUANTIFY_HELP = (
    "Quantify phases per sample, as metallographers report them: per phase the mean area fraction over "
    "the fields of a sample with its 95 % confidence interval and relative accuracy (ASTM E562/E1245), the "
    "fields needed for a target accuracy, and particle measurements (count, N_A, ECD D10/D50/D90, Feret "
    "diameters, mean free path). Writes report.html, samples.csv, fields.csv, features.csv and quantify.json."
)


def register(app: typer.Typer) -> None:
    """Add the ``quantify`` command to ``app``."""

    @app.command("quantify", help=QUANTIFY_HELP)
    def quantify_command(
        results: list[Path] = typer.Argument(
            ...,
            help="Output folders of `semphase segment`/`watch` (X.json + X_mask.png; searched recursively, "
            "each subfolder a sample) or X.json files; bare mask files need --classes.",
            show_default=False,
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder.", show_default=False),
        group_by: str | None = typer.Option(
            None,
            "--group-by",
            help="Regular expression on field names; its group 'sample' (else the first group) names the "
            "sample, e.g. '^(?P<sample>[^_]+)_'. Default: each subfolder is a sample.",
            show_default=False,
        ),
        features: str | None = typer.Option(
            None,
            "--features",
            help="Phases whose particles are measured, comma-separated (default: every phase except the "
            "largest).",
            show_default=False,
        ),
        target_ra: float = typer.Option(
            10.0, "--target-ra", help="Target relative accuracy in % for the fields-needed estimate."
        ),
        min_feature_px: int = typer.Option(
            4, "--min-feature-px", help="Particles with fewer pixels are noise: left out (and counted)."
        ),
        classes: Path | None = typer.Option(
            None,
            "--classes",
            help="Class table (JSON/TOML) for bare mask files (segment outputs carry their classes).",
            show_default=False,
        ),
        feature_table: bool = typer.Option(
            True, "--feature-table/--no-feature-table", help="Write features.csv, one row per particle."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress and no table; errors only."),
    ) -> None:
        """Exit code 0 when every field was quantified, 2 when a field was skipped or the input unusable."""
        from semphase.phases import load_class_table
        from semphase.quantify import QuantifyOptions, quantify
        from semphase.quantify.run import samples_table

        options = QuantifyOptions(
            group_by=group_by,
            features=[f.strip() for f in features.split(",") if f.strip()] if features else None,
            target_ra_pct=target_ra,
            min_feature_px=min_feature_px,
            feature_table=feature_table,
            classes=load_class_table(classes).names if classes is not None else None,
        )
        options.validate()
        with RichProgress(enabled=not quiet) as progress:
            document = quantify(results, out, options, progress=progress)
        if not quiet:
            print_tables([samples_table(document)])
            for sample, s in document["samples"].items():
                for note in s["notes"]:
                    console.print(styled(("note:", "yellow"), f" {sample}: {note}"), soft_wrap=True)
            console.print(f"wrote {', '.join(document['outputs'].values())} to {out}", soft_wrap=True)
        if document["problems"]:
            from semphase.cli.common import say_error

            for problem in document["problems"]:
                say_error(f"{problem['path']}: {problem['problem']} (skipped)")
            raise typer.Exit(2)
