"""`semphase suggest`: which regions of which micrographs to label next, with their labels pre-filled.

Thin: options and tables here; the work is :func:`semphase.runtime.suggest.suggest` (torch-free).
"""

from __future__ import annotations

from pathlib import Path

import typer

from semphase.cli.common import RichProgress, console, say_error, say_self_check
from semphase.cli.options import (
    Batch,
    Databar,
    MaxMegapixels,
    Normalize,
    Overlap,
    Provider,
    Threads,
    Tile,
    Verify,
    apply_max_megapixels,
)
from semphase.errors import display_path


def register(app: typer.Typer) -> None:
    """Add the ``suggest`` command to ``app``."""

    @app.command("suggest")
    def suggest_command(
        model: Path = typer.Argument(
            ...,
            help="Exported semphase ONNX model (or a bioimage.io package made from one).",
            show_default=False,
        ),
        inputs: list[str] = typer.Argument(
            ...,
            help="Unlabelled micrographs: files, folders (their image files) or glob patterns.",
            show_default=False,
        ),
        out: Path = typer.Option(
            ...,
            "--out",
            "-o",
            help="Suggestion folder: images/ + masks/ (a dataset 'train' reads), previews/, worklist.csv, "
            "suggest.json. Run again into the same folder for more: labelled regions are never suggested "
            "twice and existing masks never overwritten.",
            show_default=False,
        ),
        n: int = typer.Option(8, "--n", "-n", help="How many regions to pick."),
        region: int = typer.Option(
            512, "--region", help="Side of a region in pixels, a multiple of 32 (smaller micrographs: whole)."
        ),
        per_image: int | None = typer.Option(
            None,
            "--per-image",
            help="At most this many regions per micrograph (default: n / micrographs, rounded up).",
            show_default=False,
        ),
        score: str = typer.Option(
            "photometric",
            "--score",
            help="Pixel uncertainty to rank by: photometric (share of four brightness/contrast variants "
            "that change the phase: sees where the model is confidently wrong on micrographs unlike its "
            "training data), entropy (of the flip-averaged probabilities), disagreement (share of the four "
            "flips that change the phase) or combined (entropy and disagreement, their mean).",
        ),
        rare_weight: float = typer.Option(
            1.0,
            "--rare-weight",
            help="Uncertain pixels of the rarest predicted phase count 1 + this times more (phases in "
            "between by frequency^-0.5); 0 ranks by uncertainty alone.",
        ),
        order: str = typer.Option(
            "score",
            "--order",
            help="score: the highest-scoring regions first; phases: the phases in turn, rarest predicted "
            "first, each pick the region with the most uncertain pixels of its phase (picks that cover "
            "every phase's errors instead of the most uncertain kind of region); diverse: the regions "
            "grouped by look and predicted phases, the highest-scoring of each group (picks that cover "
            "the kinds of micrograph there are).",
        ),
        max_entropy: float = typer.Option(
            0.3,
            "--max-entropy",
            help="Pre-fill a pixel with the model's phase only when every pass (flips, photometric "
            "variants) agrees and its normalized entropy is at most this; other pixels stay unlabelled "
            "(transparent).",
        ),
        tta: bool = typer.Option(
            True, "--tta/--no-tta", help="Segment with the four flips of every tile (4 passes)."
        ),
        photometric: bool = typer.Option(
            True,
            "--photometric/--no-photometric",
            help="Also segment four brightness/contrast variants of every tile (4 more passes).",
        ),
        tile: Tile = None,
        overlap: Overlap = None,
        batch: Batch = 2,
        threads: Threads = None,
        provider: Provider = "auto",
        databar: Databar = "auto",
        normalize: Normalize = "linear",
        verify: Verify = True,
        max_megapixels: MaxMegapixels = None,
    ) -> None:
        """Rank micrographs and regions by the model's uncertainty (and by rare phases) and write the best
        regions with their labels pre-filled where the model is sure: correct them in any paint program,
        then fine-tune with 'semphase train OUT --init CHECKPOINT'.

        Exit code 0 when every input was read, 2 when any failed (each named in one line; the others are
        still ranked).
        """
        from semphase.cli.options import load_checked_model
        from semphase.runtime.inputs import expand_inputs, output_stems
        from semphase.runtime.segment import SegmentOptions
        from semphase.runtime.suggest import SuggestOptions, suggest

        apply_max_megapixels(max_megapixels)
        options = SuggestOptions(
            n=n,
            region=region,
            per_image=per_image,
            score=score,
            rare_weight=rare_weight,
            order=order,
            max_entropy=max_entropy,
            tta=tta,
            photometric=photometric,
            tile=tile,
            overlap=overlap,
            batch=batch,
            databar=databar,
            normalize=normalize,
        )
        checks = SegmentOptions(tile=tile, overlap=overlap, batch=batch, databar=databar, normalize=normalize)
        loaded = load_checked_model(model, checks, provider=provider, threads=threads, verify=verify)
        if loaded.self_check is not None:
            say_self_check(loaded.self_check)
        files, problems = expand_inputs(inputs, exclude=[out])
        failures = [f"{spec}: {reason}" for spec, reason in problems]
        for line in failures:
            say_error(line)
        with _Rendering() as progress:
            document = suggest(loaded, files, output_stems(files), out, options, progress=progress)
        failures += [f["path"] for f in document["failed"]]
        _print_picks(document)
        console.print(
            f"{len(document['picks'])} regions in {out / 'images'}, their pre-filled labels in "
            f"{out / 'masks'} (colours of the classes, transparent = unlabelled); worklist "
            f"{out / 'worklist.csv'}. Correct the masks, then: semphase train {out} --init CHECKPOINT",
            soft_wrap=True,
        )
        if failures:
            say_error(f"{len(failures)} input(s) failed; see the lines above")
            raise typer.Exit(2)


class _Rendering(RichProgress):
    """The bars, and each micrograph that cannot be read said in one line above them."""

    def event(self, event) -> None:
        if event.kind == "failed":
            say_error(event.message, self.console)


def _print_picks(document: dict) -> None:
    from rich.table import Table

    table = Table(title="Label next (best first)", title_justify="left")
    columns = ("rank", "region", "micrograph", "score", "entropy", "flips differ", "photometric differ")
    for name in (*columns, "pre-filled"):
        table.add_column(
            name, justify="left" if name in ("region", "micrograph") else "right", overflow="fold"
        )
    for p in document["picks"]:
        table.add_row(
            str(p["rank"]),
            f"x {p['x']}, y {p['y']}, {p['width']} x {p['height']}",
            display_path(Path(p["micrograph"]).name),
            f"{p['score']:.3f}",
            f"{p['mean_entropy']:.3f}",
            f"{100 * p['disagreement']:.1f}%",
            f"{100 * p['photometric']:.1f}%",
            f"{100 * p['prefilled']:.0f}%",
        )
    console.print(table)
