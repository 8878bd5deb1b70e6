"""A whole training run: set-up, epochs with checkpoints and history, the final test evaluation.

``train(options)`` writes to ``options.out``: config.json, split.json, history.csv, best.pt, last.pt,
training_curves.png and, at the end, the test evaluation of the best checkpoint (metrics_test.json and
what :func:`semphase.evaluation.run_evaluation` writes besides). ``last.pt`` is saved after every epoch and
on Ctrl-C, so ``--resume`` continues the same run: same split, config, epoch counter, optimizer, scheduler
and early-stopping state, and (tiles being seeded by epoch) the same training tiles.

Training ends at ``--epochs``, by early stopping, or after the epoch that reaches ``--time-limit`` minutes
of training in this invocation; whichever it was, the best checkpoint is tested and reported the same way.
Before that test, ``--prior-correction`` may move best.pt's output bias from the labels' class shares to
the micrographs' (:mod:`semphase.train.prior`; sparse labels only by default). ``--replay DATA`` mixes
tiles of DATA into the training tiles (:class:`~semphase.train.datasets.ReplayTiles`).

A run without a val split (``--fractions 1,0,0``: every labelled field trains, the fine-tuning recipe of
``--init``) validates nothing: each epoch's weights are the best so far, so best.pt is the last epoch's,
and the learning rate follows the ``cosine`` schedule, which needs no score. A run without a test split
skips the final test evaluation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from semphase.data.layout import open_dataset
from semphase.errors import InputError, OptionError
from semphase.phases import ClassTable, load_class_table
from semphase.progress import SILENT, Progress
from semphase.train import rundir
from semphase.train.budget import CROP_SIZES, FIRST_EPOCH_STEPS, TARGET_STEPS, BudgetRun
from semphase.train.budget import describe as describe_budget
from semphase.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from semphase.train.datasets import (
    Micrograph,
    ReplayTiles,
    TileDataset,
    check_tile_fits,
    labelled_share,
    load_micrographs,
    resolve_sampler,
    validation_view,
)
from semphase.train.device import cpu_thread_count, resolve_device, resolve_precision
from semphase.train.inference import predict_labels
from semphase.train.init import load_initial_model
from semphase.train.loop import Validation, train_one_epoch, validate
from semphase.train.losses import HybridLoss, class_weights, pixel_frequencies
from semphase.train.models import build_model
from semphase.train.options import RUNTIME_OPTIONS, TrainOptions
from semphase.train.plots import plot_training_curves
from semphase.train.prior import RECORD_KEY, correct_prior, describe_prior
from semphase.train.progress import describe, epoch_line, stage_text
from semphase.train.schedule import EarlyStopping, TimeLimit, apply_freeze_schedule, cosine_schedule
from semphase.train.setup import (
    RunData,
    build_config,
    create_model,
    default_steps_per_epoch,
    normalization_for,
    open_run_data,
    param_groups,
)

#: ReduceLROnPlateau on val mIoU: halve the learning rates after this many epochs without improvement.
PLATEAU_PATIENCE = 2
PLATEAU_FACTOR = 0.5
WEIGHT_DECAY = 1e-4


@dataclass
class Prepared:
    """Everything a run needs before its first epoch."""

    options: TrainOptions
    run_dir: Path
    device: torch.device
    amp_dtype: torch.dtype | None
    table: ClassTable
    data: RunData
    train_set: list[Micrograph]
    val_set: list[Micrograph]
    config: dict
    model: nn.Module
    weights_source: str
    last_state: dict | None
    clock: Callable[[], float] = time.perf_counter
    replay_set: list[Micrograph] = field(default_factory=list)


@dataclass
class Progressing:
    """The state that changes from epoch to epoch (and that last.pt stores)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau | torch.optim.lr_scheduler.LambdaLR
    early: EarlyStopping
    loss_fn: nn.Module
    time_limit: TimeLimit
    budget: BudgetRun | None = None
    epoch: int = 0
    stopped: str | None = None
    history: list[dict] = field(default_factory=list)


def train(
    options: TrainOptions, progress: Progress = SILENT, clock: Callable[[], float] = time.perf_counter
) -> dict:
    """Train (or resume) a run and evaluate its best checkpoint on the test split.

    Parameters
    ----------
    options : validated options; ``options.resume`` continues the run in ``options.out``
        (build them with :func:`semphase.train.setup.resume_options`).
    progress : the set-up summary and one line per epoch (``log``), bars for reading, training and
        validating (:mod:`semphase.progress`). The test tables are the caller's to show
        (:func:`semphase.evaluation.report.study_tables` of ``result["test"]``).
    clock : seconds from an arbitrary origin; every time of the run (history, ``--time-limit``) is read
        from it (tests replace it to make epochs "take" a known time).

    Returns
    -------
    dict with ``run_dir``, ``epochs_run``, ``best_epoch``, ``best_val_miou`` (NaN without a val split),
    ``stopped`` (why training ended: ``"epochs"``, ``"early-stopping"`` or ``"time limit"``),
    ``train_seconds`` (this invocation's) and ``test`` (the scoring result of the test split, or None
    without one).

    Raises
    ------
    InputError
        For unusable input (see :mod:`semphase.train.setup`).
    KeyboardInterrupt
        After saving last.pt, so the run can be resumed.
    """
    options.validate()
    torch.set_num_threads(cpu_thread_count(options.threads))
    # Adam's second moments decay into subnormal floats, which run ~30x slower on x86 CPUs.
    torch.set_flush_denormal(True)
    run = prepare(options, progress, clock)
    state = restore(run)
    describe(progress, run, state.epoch)
    fit(run, state, progress)
    train_seconds = state.time_limit.seconds()
    if state.stopped == "early-stopping":
        progress.log(
            f"early stopping: val mIoU has not improved for {options.patience} epochs "
            f"(best {state.early.best:.4f} at epoch {state.early.best_epoch})"
        )
    elif state.stopped == "time limit":
        progress.log(
            f"time limit: {train_seconds / 60:.1f} min of training reached --time-limit "
            f"{options.time_limit:g} min after epoch {state.epoch} of {options.epochs} "
            f"(best {state.early.best:.4f} at epoch {state.early.best_epoch}); "
            "--resume continues the run with a fresh budget"
        )
    prior = correct_best_prior(run, progress)
    test = None
    if run.data.samples["test"]:
        test = evaluate_best(run.run_dir, run.data.samples["test"], run.table, run.device, progress)
    else:
        progress.log("no test split: the final test evaluation is skipped (score the model with evaluate)")
    budget = None
    if state.budget is not None:
        budget = spent_budget(run, state, train_seconds)
        progress.log(budget["line"])
    return {
        "run_dir": str(run.run_dir),
        "epochs_run": state.epoch,
        "best_epoch": state.early.best_epoch,
        "best_val_miou": state.early.best,
        "stopped": state.stopped,
        "train_seconds": train_seconds,
        "test": test,
        "time_budget": budget,
        "prior_correction": prior,
    }


def correct_best_prior(run: Prepared, progress: Progress) -> dict | None:
    """``--prior-correction`` on best.pt (:mod:`semphase.train.prior`), recorded in config.json."""
    best = run.run_dir / rundir.BEST_NAME
    if not best.exists():
        return None
    share = labelled_share(run.train_set, run.table.num_classes)
    images = [m.image for m in run.train_set]
    label_shares = None
    if run.replay_set:  # the network learnt from a mixture: the new labels' shares and the replayed ones'
        r = run.options.replay_share
        new = np.asarray(run.config["train_pixel_fractions"])
        label_shares = (1 - r) * new + r * np.asarray(run.config["replay_pixel_fractions"])
    record = correct_prior(best, images, run.options.prior_correction, share, run.device, label_shares)
    run.config[RECORD_KEY] = record
    rundir.write_config(run.run_dir, run.config)
    progress.log(describe_prior(record, run.table.names))
    return record


def spent_budget(run: Prepared, state: Progressing, train_seconds: float) -> dict:
    """How a ``--time-budget`` run spent its budget against its plan (recorded in config.json too)."""
    budget = state.budget
    used = budget.seconds - budget.seconds_left()
    test_seconds = used - train_seconds
    trained = int(sum(row.get("steps", 0) for row in state.history))
    spent = {
        **budget.record(),
        "steps_trained": trained,
        "seconds_used": used,
        "training_seconds": train_seconds,
        "test_seconds": test_seconds,
    }
    plan = budget.plan
    planned = f", {plan.steps + FIRST_EPOCH_STEPS} planned at {plan.tile} px" if plan is not None else ""
    spent["line"] = (
        f"time budget {budget.minutes:g} min ({budget.seconds:.0f} s): used {used:.0f} s "
        f"({100 * used / budget.seconds:.0f} %): {trained} steps trained{planned} in {train_seconds:.0f} s, "
        f"test evaluation {test_seconds:.0f} s"
    )
    run.config["time_budget"] = {k: v for k, v in spent.items() if k != "line"}
    rundir.write_config(run.run_dir, run.config)
    return spent


def prepare(
    options: TrainOptions, progress: Progress, clock: Callable[[], float] = time.perf_counter
) -> Prepared:
    """Check the run folder, build the model (pretrained weights first: they fail fastest), read the data,
    fix the config and write config.json."""
    run_dir = Path(options.out)
    device = resolve_device(options.device)
    last_state, stored = None, None
    if options.resume:
        last_state = read_checkpoint(run_dir / rundir.LAST_NAME, "cpu")
        stored = rundir.read_config(run_dir)
    else:
        rundir.check_fresh_run_dir(run_dir)
        if options.arch == "unet-scratch":
            options.encoder_weights = "none"  # nothing pretrained to load; keep the record truthful
    torch.manual_seed(options.seed)
    init_config = init_record = None
    if last_state is None and options.init is not None:
        table = load_class_table(options.classes)
        model, init_config, init_record = load_initial_model(options.init, table, options.class_map)
        options.arch = init_config["arch"]
        weights_source = f"{options.init} (--init, its epoch {init_record['epoch']}, every layer)"
    elif last_state is None:
        model, weights_source = create_model(options, load_class_table(options.classes).num_classes)
    else:  # the weights come from last.pt: no need to fetch pretrained ones again
        model, weights_source = build_model(last_state["config"]), stored.get("encoder_weights_file", "")
    data = open_run_data(options, run_dir)
    if stored is not None:
        data.table = ClassTable.from_dict(stored["classes"])
    table = data.table
    progress.start("read", "reading images", len(data.split["train"]) + len(data.split["val"]))
    train_set = load_micrographs(data.samples["train"], table, lambda: progress.advance("read"))
    val_set = load_micrographs(data.samples["val"], table, lambda: progress.advance("read"))
    check_tile_fits(train_set, options.tile, data.samples["train"])
    replay_set = load_replay(options, table, progress)
    if not val_set and options.schedule == "plateau":
        raise OptionError(
            "--schedule plateau lowers the learning rate on val mIoU, and this run has no val split; "
            "use --schedule cosine, or give val a fraction"
        )
    if stored is not None:
        config = {**stored, **{k: getattr(options, k) for k in (*RUNTIME_OPTIONS, "epochs")}}
        # the correction belongs to the best.pt it was made on: a new best epoch is trained uncorrected
        config.pop(RECORD_KEY, None)
    else:
        if options.steps_per_epoch is None:
            options.steps_per_epoch = default_steps_per_epoch(train_set, options.tile, options.batch_size)
        options.freeze_epochs = options.effective_freeze_epochs()
        options.sampler = resolve_sampler(options.sampler, train_set, table.num_classes)
        frequencies = pixel_frequencies((m.labels for m in train_set), table.num_classes)
        weights = class_weights(frequencies, options.weight_power, options.weight_clip)
        normalization = normalization_for(options, train_set, init_config)
        config = build_config(options, table, normalization, frequencies, weights)
        if init_record is not None:
            config["init_from"] = init_record
        if replay_set:
            frequencies = pixel_frequencies((m.labels for m in replay_set), table.num_classes)
            config["replay_fields"] = len(replay_set)
            config["replay_pixel_fractions"] = [float(f) for f in frequencies]
    config["encoder_weights_file"] = weights_source
    rundir.write_config(run_dir, config)
    model.to(device).to(memory_format=torch.channels_last)
    amp_dtype = resolve_precision(options.precision, device)
    return Prepared(
        options,
        run_dir,
        device,
        amp_dtype,
        table,
        data,
        train_set,
        val_set,
        config,
        model,
        weights_source,
        last_state,
        clock,
        replay_set,
    )


def load_replay(options: TrainOptions, table: ClassTable, progress: Progress) -> list[Micrograph]:
    """``--replay DATA``: every image/mask pair of DATA, read with the run's class table."""
    if options.replay is None:
        return []
    dataset = open_dataset(options.replay)
    if not dataset.samples:
        raise InputError("the --replay dataset has no image/mask pairs", dataset.root)
    progress.start("replay", "reading --replay", len(dataset.samples))
    replay_set = load_micrographs(dataset.samples, table, lambda: progress.advance("replay"))
    check_tile_fits(replay_set, options.tile, dataset.samples)
    return replay_set


def restore(run: Prepared) -> Progressing:
    """Optimizer, scheduler, early stopping, history and the time limit: fresh, or as last.pt left them."""
    optimizer = torch.optim.AdamW(param_groups(run.model, run.options), weight_decay=WEIGHT_DECAY)
    if run.options.schedule == "cosine":
        total_steps = run.options.epochs * run.options.steps_per_epoch
        if run.options.time_budget is not None and not run.options.resume:  # until the plan is made
            total_steps = min(TARGET_STEPS, run.options.max_steps or TARGET_STEPS)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(total_steps))
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE
        )
    loss_fn = HybridLoss(np.asarray(run.config["class_weights"], dtype=np.float32)).to(run.device)
    early = EarlyStopping(run.options.patience)
    state = Progressing(optimizer, scheduler, early, loss_fn, TimeLimit(run.options.time_limit, run.clock))
    last = run.last_state
    if last is not None:
        run.model.load_state_dict(last["state_dict"])
        optimizer.load_state_dict(last["optimizer"])
        scheduler.load_state_dict(last["scheduler"])
        state.early.load_state_dict(last["early_stopping"])
        state.epoch = int(last["epoch"])
        state.stopped = last.get("stopped")
        if state.stopped == "epochs" and run.options.epochs > state.epoch:
            state.stopped = None  # more epochs were asked for
        elif state.stopped == "time limit":
            state.stopped = None  # the budget was the stopped invocation's; this one has its own
    state.history = rundir.read_history(run.run_dir, state.epoch)
    state.time_limit.earlier_seconds = rundir.training_seconds(state.history)
    if run.options.time_budget is not None and last is None:
        state.budget = new_budget(run)
    return state


def new_budget(run: Prepared) -> BudgetRun:
    """The ``--time-budget`` of this run: crops from ``--tile`` down to the planner's smallest (128 px, or
    ``--tile`` when that is smaller), the pixels of a validation pass and (estimated from it) of the test
    evaluation."""
    options = run.options
    val_pixels = sum(validation_view(m)[0].size for m in run.val_set)
    per_image = (
        val_pixels / len(run.val_set) if run.val_set else np.mean([m.image.size for m in run.train_set])
    )
    test_pixels = int(per_image * len(run.data.samples["test"]))
    return BudgetRun(
        minutes=options.time_budget,
        max_tile=options.tile,
        min_tile=min(CROP_SIZES[-1], options.tile),
        val_pixels=val_pixels,
        test_pixels=test_pixels,
        max_steps=options.max_steps,
        clock=run.clock,
    )


def fit(run: Prepared, state: Progressing, progress: Progress) -> None:
    """Run epochs until ``--epochs``, early stopping, the time limit or the end of the time budget's plan;
    save last.pt every epoch and on Ctrl-C."""
    options = run.options
    sampler = resolve_sampler(options.sampler, run.train_set, run.table.num_classes)
    tiles_by_size: dict[int, TileDataset] = {}
    columns = rundir.history_columns(run.table.names)
    state.time_limit.start()
    if state.budget is not None:
        state.budget.start()
    try:
        while state.stopped is None and state.epoch < options.epochs:
            steps, tile = (
                state.budget.next_epoch() if state.budget else (options.steps_per_epoch, options.tile)
            )
            if tile not in tiles_by_size:
                tiles_by_size[tile] = TileDataset(
                    run.train_set,
                    tile,
                    steps * options.batch_size,
                    options.seed,
                    sampler=sampler,
                    num_classes=run.table.num_classes,
                    augment=options.augment,
                )
                if run.replay_set:
                    old = TileDataset(
                        run.replay_set,
                        tile,
                        steps * options.batch_size,
                        options.seed + 1,
                        sampler=resolve_sampler(options.sampler, run.replay_set, run.table.num_classes),
                        num_classes=run.table.num_classes,
                        augment=options.augment,
                    )
                    tiles_by_size[tile] = ReplayTiles(tiles_by_size[tile], old, options.replay_share)
            tiles = tiles_by_size[tile]
            tiles.length = steps * options.batch_size
            tiles.set_epoch(state.epoch)
            loader = DataLoader(
                tiles, batch_size=options.batch_size, num_workers=options.workers, drop_last=True
            )
            row, improved = run_epoch(run, state, loader, progress, steps, tile)
            if state.budget is not None:
                follow_budget(run, state, row, row["steps"], progress)
            if improved:
                save_checkpoint(
                    run.run_dir / rundir.BEST_NAME,
                    run.model,
                    run.config,
                    epoch=state.epoch,
                    best_val_miou=row["val_miou"],
                    val_class_iou=row["val_class_iou"],
                )
            if state.early.should_stop:
                state.stopped = "early-stopping"
            elif state.epoch >= options.epochs:
                state.stopped = "time budget" if state.budget is not None else "epochs"
            elif state.time_limit.reached:
                state.stopped = "time limit"
            rundir.write_history(run.run_dir, columns, state.history)
            save_last(run, state)
            plot_training_curves(
                state.history, run.table.names, run.run_dir / rundir.CURVES_NAME, options.freeze_epochs
            )
            epoch_line(progress, row, run.table.names, improved)
    except KeyboardInterrupt:
        save_last(run, state)
        progress.log(f"interrupted: {run.run_dir / rundir.LAST_NAME} holds epoch {state.epoch}")
        raise


def follow_budget(run: Prepared, state: Progressing, row: dict, steps: int, progress: Progress) -> None:
    """After an epoch of a ``--time-budget`` run: re-plan, move the schedule's end and the epoch count,
    and record the plan (config.json, the history row)."""
    budget = state.budget
    first = budget.plan is None
    budget.finished_epoch(row["step_times"], steps, row["val_seconds"])
    if first:  # plan now, so that the epoch count and the schedule are known before the next epoch
        budget.ended = None  # (the time between epochs is not measured yet: the default estimate)
        budget.next_epoch()
        budget.ended = budget.clock()  # the time to the next epoch is still this epoch's overhead
    run.options.epochs = state.epoch + budget.epochs_left
    for schedule in state.scheduler.lr_lambdas:
        schedule.total = max(budget.planned_total(), 1)
    row["planned_steps"] = budget.planned_total()
    row["budget_left_seconds"] = budget.seconds_left()
    state.history[-1].update({k: row[k] for k in ("planned_steps", "budget_left_seconds")})
    run.config["epochs"], run.config["time_budget"] = run.options.epochs, budget.record()
    if budget.plan is not None:
        run.config["steps_per_epoch"], run.config["tile"] = budget.epoch_steps, budget.plan.tile
    rundir.write_config(run.run_dir, run.config)
    if first and budget.plan is not None:
        progress.log(describe_budget(budget.plan, budget.minutes))


def run_epoch(
    run: Prepared, state: Progressing, loader: DataLoader, progress: Progress, steps: int, tile: int
) -> tuple[dict, bool]:
    """Train one epoch of ``steps`` steps of ``tile`` px crops, validate, step the scheduler and early
    stopping; returns (history row, improved)."""
    options, model = run.options, run.model
    t0 = run.clock()
    stages = apply_freeze_schedule(model, state.epoch, options.freeze_epochs, gradual=options.pretrained)
    torch.manual_seed(options.seed * 100_003 + state.epoch)
    norm = run.config["normalization"]
    progress.start("epoch", f"epoch {state.epoch + 1}/{options.epochs}", steps)

    per_step = isinstance(state.scheduler, torch.optim.lr_scheduler.LambdaLR)
    lrs = [g["lr"] for g in state.optimizer.param_groups]  # at the epoch's start
    marks = [run.clock()]

    def on_step(loss: float) -> None:
        marks.append(run.clock())
        if per_step:
            state.scheduler.step()
        progress.advance("epoch")
        progress.say(f"loss {loss:.4f}")

    deadline = state.budget.deadline() if state.budget is not None else None
    should_stop = None if deadline is None else (lambda: run.clock() >= deadline)
    train_loss = train_one_epoch(
        model, loader, state.loss_fn, state.optimizer, run.device, run.amp_dtype, norm, on_step, should_stop
    )
    steps = len(marks) - 1  # fewer than planned when the budget's deadline came first
    validation_start = run.clock()
    if run.val_set:
        progress.start("validate", "validating", len(run.val_set))
        val = validate(
            model,
            run.val_set,
            state.loss_fn,
            run.device,
            run.amp_dtype,
            norm,
            run.table.num_classes,
            lambda: progress.advance("validate"),
        )
    else:
        nan = float("nan")
        val = Validation(nan, nan, [nan] * run.table.num_classes)
    val_seconds = run.clock() - validation_start if run.val_set else 0.0
    state.epoch += 1
    if run.val_set:
        score = val.miou if np.isfinite(val.miou) else -1.0
        improved = state.early.update(score, state.epoch)
        if not per_step:
            state.scheduler.step(score)
    else:  # nothing to compare: the latest weights are the run's best
        improved = True
        state.early.best, state.early.best_epoch = float("nan"), state.epoch
    row = {
        "epoch": state.epoch,
        "train_loss": train_loss,
        "val_loss": val.loss,
        "val_miou": val.miou,
        **{f"iou_{n}": v for n, v in zip(run.table.names, val.class_iou, strict=True)},
        "lr": lrs[0],
        "lr_encoder": lrs[-1] if len(lrs) > 1 else float("nan"),
        "trainable_stages": stage_text(stages),
        "seconds": run.clock() - t0,
        "elapsed_seconds": state.time_limit.run_seconds(),
        "steps": steps,
        "tile": tile,
    }
    state.history.append(row)
    step_times = [b - a for a, b in zip(marks[:-1], marks[1:], strict=True)]
    return {
        **row,
        "val_class_iou": val.class_iou,
        "step_times": step_times,
        "val_seconds": val_seconds,
    }, improved


def save_last(run: Prepared, state: Progressing) -> None:
    """last.pt: weights, config and everything --resume needs (finished epochs, optimizer, ...)."""
    save_checkpoint(
        run.run_dir / rundir.LAST_NAME,
        run.model,
        run.config,
        epoch=state.epoch,
        best_val_miou=state.early.best,
        optimizer=state.optimizer.state_dict(),
        scheduler=state.scheduler.state_dict(),
        early_stopping=state.early.state_dict(),
        stopped=state.stopped,
        rng={
            "seed": run.options.seed,
            "next_epoch": state.epoch,
            "scheme": "tiles seeded by (seed, epoch, index)",
        },
    )


def evaluate_best(
    run_dir: Path, samples, table: ClassTable, device: torch.device, progress: Progress = SILENT
) -> dict:
    """Score best.pt on the test samples and store the summary in best.pt; returns the scoring result."""
    from semphase.evaluation import run_evaluation

    best_path = run_dir / rundir.BEST_NAME
    model, config, ckpt = load_checkpoint(best_path, device)

    def predict(image_u8: np.ndarray) -> np.ndarray:
        return predict_labels(model, config, image_u8, device)

    result = run_evaluation(
        predict,
        samples,
        table,
        out_dir=run_dir,
        metrics_name=rundir.TEST_METRICS_NAME,
        extra={"model": {"checkpoint": str(best_path), "epoch": ckpt.get("epoch")}, "split": "test"},
        progress=progress,
    )
    extra = {k: v for k, v in ckpt.items() if k not in ("format", "state_dict", "config")}
    extra["test_metrics"] = {k: result[k] for k in ("classes", "per_class", "summary") if k in result}
    save_checkpoint(best_path, model, config, **extra)
    progress.log(f"test split ({len(samples)} images), best checkpoint of epoch {ckpt.get('epoch')}:")
    return result
