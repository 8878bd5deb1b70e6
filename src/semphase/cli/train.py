"""`semphase train`: train a phase-segmentation U-Net on a dataset (the study's recipe)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from semphase.cli.common import RichProgress, console, print_tables, say_error
from semphase.errors import InputError


def _fractions(text: str | None) -> tuple[float, float, float] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--fractions: expected three numbers like 0.7,0.15,0.15, got {text!r}") from None
    if len(values) != 3:
        raise InputError(f"--fractions: expected three numbers (train,val,test), got {text!r}")
    return values


def register(app: typer.Typer) -> None:
    """Add ``train`` to ``app``."""

    @app.command("train")
    def train_command(
        dataset: Path = typer.Argument(
            ..., help="Dataset folder: AugmentedImages/ + AugmentedMasks/ (Zenodo) or images/ + masks/."
        ),
        out: Path = typer.Option(
            ..., "--out", "-o", help="Run folder for config, split, history, checkpoints."
        ),
        arch: str = typer.Option(None, help="Network: unet-resnet34 (default, the study's) or unet-scratch."),
        encoder_weights: str = typer.Option(
            None,
            help="ResNet34 encoder start: imagenet (default; cached or downloaded), none (random), or a "
            "local resnet34 state-dict file (torchvision or smp layout).",
        ),
        classes: Path = typer.Option(None, help="Class table (JSON/TOML); default: the Zenodo Ni-WC table."),
        split_file: Path = typer.Option(
            None, help="Reuse this split.json (train/val/test name lists) instead of making a new split."
        ),
        fractions: str = typer.Option(
            None, help="Train,val,test fractions of a new split (default: 0.7,0.15,0.15)."
        ),
        group_regex: str = typer.Option(
            None, help="Regex whose first group names an image's crop group (default: Zenodo naming)."
        ),
        epochs: int = typer.Option(
            None, help="Maximum number of epochs (default: 40); may be raised on --resume."
        ),
        batch_size: int = typer.Option(None, help="Tiles per training step (default: 8)."),
        tile: int = typer.Option(
            None, help="Side of the random training crops in px, multiple of 32 (default: 256)."
        ),
        steps_per_epoch: int = typer.Option(
            None, help="Training steps per epoch (default: enough tiles to cover the training pixels once)."
        ),
        lr: float = typer.Option(
            None, help="AdamW learning rate of the decoder and of a random encoder (default: 1e-3)."
        ),
        lr_finetune: float = typer.Option(
            None, help="Learning rate of a pretrained encoder once unfrozen (default: 1e-4)."
        ),
        freeze_epochs: int = typer.Option(
            None,
            help="Epochs with the pretrained encoder frozen before it is unfrozen one stage per epoch, "
            "deepest first (default: 4 with pretrained weights, 0 with none).",
        ),
        patience: int = typer.Option(
            None,
            help="Early stopping: epochs without a better val mIoU before stopping; 0 = off (default: 8).",
        ),
        time_limit: float = typer.Option(
            None,
            "--time-limit",
            metavar="MINUTES",
            help="Stop after the epoch during which this invocation's training wall time reaches MINUTES "
            "(> 0; epochs are never cut short, so expect up to one epoch more); the best checkpoint is "
            "then tested and reported as usual. Recorded in config.json; a --resume starts a fresh "
            "budget and has no limit unless --time-limit is given again (default: no limit).",
        ),
        time_budget: float = typer.Option(
            None,
            "--time-budget",
            metavar="MINUTES",
            help="Train for about MINUTES, the test evaluation included, planning optimizer steps instead "
            "of epochs: a short first epoch measures this machine's speed, then the crop size (--tile or "
            "smaller, so that ~400 steps fit), the steps, the validations and a cosine learning rate over "
            "them are planned, and re-planned after every epoch; from random weights --lr defaults to "
            "3e-3. Excludes --epochs, --steps-per-epoch and "
            "--time-limit; recorded in config.json (time_budget) and history.csv.",
        ),
        max_steps: int = typer.Option(
            None,
            "--max-steps",
            help="With --time-budget: train at most this many steps, even when more would fit.",
        ),
        weight_power: float = typer.Option(
            None,
            help="Class weights ∝ pixel frequency^-p; 0 = unweighted, 1 = inverse frequency (default: 0.5).",
        ),
        weight_clip: float = typer.Option(
            None, help="Clip class weights to the range 1/clip..clip (default: 10)."
        ),
        device: str = typer.Option(None, help="auto (CUDA when present), cpu or cuda (default: auto)."),
        precision: str = typer.Option(
            None,
            help="auto (default: bf16 mixed precision where the hardware runs it natively), fp32 or bf16.",
        ),
        seed: int = typer.Option(None, help="Seed of the split, initialization and tiles (default: 0)."),
        workers: int = typer.Option(
            None, help="Data-loader worker processes (default: 0, load in the main process)."
        ),
        threads: int = typer.Option(None, help="CPU threads for torch (default: all cores)."),
        resume: bool = typer.Option(
            False, "--resume", help="Continue the run in --out from its last.pt (same split and config)."
        ),
        init: Path = typer.Option(
            None,
            "--init",
            metavar="CHECKPOINT",
            help="Fine-tune: start from this semphase checkpoint (every weight, its normalization) with the "
            "fine-tuning recipe as defaults: all labelled fields train (--fractions 1,0,0), 10 epochs x 20 "
            "steps, --lr 3e-4, encoder at --lr-finetune 1e-4, cosine schedule; each can still be given. "
            "Its classes must be the dataset's, or be mapped with --class-map.",
        ),
        class_map: str = typer.Option(
            None,
            "--class-map",
            metavar="NEW=OLD,...",
            help="With --init and a dataset whose classes differ from the checkpoint's: where each class "
            "starts from, e.g. 'Pore=Void,Oxide=-' (- = learnt from scratch); classes not named keep the "
            "checkpoint's class of the same name.",
        ),
        schedule: str = typer.Option(
            None,
            help="Learning rate: plateau (default; halve on a val mIoU plateau, needs a val split) or cosine "
            "(warm-up, then cosine decay over epochs x steps-per-epoch; the --init default).",
        ),
        augment: str = typer.Option(
            None,
            help="Augmentation: study (default: flips, rotations, elastic/grid warps, brightness/contrast, "
            "noise) or light (flips, rotations, brightness/contrast).",
        ),
        sampler: str = typer.Option(
            None,
            help="Training crops: uniform (anywhere), labelled (anchored on labelled pixels, rare classes "
            "not starved: for strokes) or auto (default: labelled when under 90 % of the pixels are "
            "labelled).",
        ),
        replay: Path = typer.Option(
            None,
            help="Data the model learnt before (e.g. its training fields): a share of the training tiles "
            "comes from it, so fine-tuning on new micrographs does not forget the old ones.",
        ),
        replay_share: float = typer.Option(
            None, help="Share of the training tiles drawn from --replay (default 0.3)."
        ),
        prior_correction: str = typer.Option(
            None,
            help="After training, move the network's class prior from the labels' class shares to the "
            "micrographs' own (estimated by EM on every training pixel; strokes over-sample rare phases): "
            "auto (default: when under 50 % of the pixels are labelled), on or off. Recorded in config.json.",
        ),
    ) -> None:
        """Train a U-Net on DATASET: grouped split, 0.6 CE + 0.4 Dice with class weights, AdamW, frozen then
        gradually unfrozen encoder, ReduceLROnPlateau and early stopping on val mIoU (or a time limit); the
        best checkpoint is scored on the test split at the end."""
        from semphase.evaluation.report import study_tables
        from semphase.train.options import TrainOptions
        from semphase.train.run import train
        from semphase.train.setup import resume_options

        given = {
            "dataset": str(dataset),
            "arch": arch,
            "encoder_weights": encoder_weights,
            "classes": None if classes is None else str(classes),
            "split_file": None if split_file is None else str(split_file),
            "fractions": _fractions(fractions),
            "group_regex": group_regex,
            "epochs": epochs,
            "batch_size": batch_size,
            "tile": tile,
            "steps_per_epoch": steps_per_epoch,
            "lr": lr,
            "lr_finetune": lr_finetune,
            "freeze_epochs": freeze_epochs,
            "patience": patience,
            "time_limit": time_limit,
            "weight_power": weight_power,
            "weight_clip": weight_clip,
            "device": device,
            "precision": precision,
            "seed": seed,
            "workers": workers,
            "threads": threads,
            "init": None if init is None else str(init),
            "class_map": class_map,
            "schedule": schedule,
            "sampler": sampler,
            "prior_correction": prior_correction,
            "replay": None if replay is None else str(replay),
            "replay_share": replay_share,
            "augment": augment,
            "time_budget": time_budget,
            "max_steps": max_steps,
        }
        given = {k: v for k, v in given.items() if v is not None}
        options = resume_options(out, given) if resume else TrainOptions.create(str(out), **given)
        try:
            with RichProgress() as progress:
                result = train(options, progress)
        except KeyboardInterrupt:
            # typer turns Ctrl-C into a silent exit 130 before main() sees it: say it here in main()'s
            # one-line form and exit 2. last.pt was saved by then.
            say_error(
                f"interrupted (Ctrl-C); {Path(options.out) / 'last.pt'} holds the "
                "finished epochs; continue with --resume"
            )
            raise typer.Exit(2) from None
        parts = [f"done: {result['epochs_run']} epochs ({result['stopped']})"]
        if math.isfinite(result["best_val_miou"]):
            parts.append(f"best val mIoU {result['best_val_miou']:.4f} at epoch {result['best_epoch']}")
        if result["test"] is not None:
            print_tables(study_tables(result["test"]))
            summary = result["test"].get("summary", {}).get("miou", {})
            parts.append(f"test mIoU {summary.get('mean', float('nan')):.4f}")
        console.print(
            f"{', '.join(parts)}; training took {result['train_seconds']:.0f} s; "
            f"outputs in {result['run_dir']}"
        )
