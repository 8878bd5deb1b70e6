"""Preparing a training run: options for a fresh or resumed run, the split, the data, the model.

Everything here runs before the first epoch, and everything that can fail because of the user's input
fails here, with one line naming the file (a missing dataset, an empty split, a tile larger than the
images, unreachable ImageNet weights, a corrupt run folder for ``--resume``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from semphase import __version__
from semphase.data.layout import Dataset, Sample, labelled_pixels, open_dataset
from semphase.data.split import SPLITS, load_split, make_split, save_split
from semphase.errors import InputError
from semphase.phases import ClassTable, load_class_table
from semphase.train import rundir
from semphase.train.datasets import Micrograph
from semphase.train.encoder_weights import load_encoder_weights
from semphase.train.models import build_model
from semphase.train.options import IMAGENET_GRAY, RUNTIME_OPTIONS, TrainOptions

#: Options a resumed run may change besides the runtime ones: more epochs, a moved dataset.
RESUMABLE_CHANGES = ("epochs", "dataset")
CONFIG_FORMAT = "semphase-train-config/1"


def resume_options(run_dir: str | Path, overrides: dict) -> TrainOptions:
    """Options of the run in ``run_dir`` (config.json) for ``--resume``.

    Parameters
    ----------
    run_dir : the run folder.
    overrides : options given on the command line (name -> value, only those given). Runtime options
        (device, threads, workers, precision, time_limit), ``epochs`` and ``dataset`` replace the stored
        ones; any other option that differs from the stored run is an error, since it would no longer be
        the same run. The stored ``time_limit`` is not carried over: it was the budget of the invocation
        that gave it, so a resumed run has a fresh budget, and none unless ``time_limit`` is given again.
    """
    run_dir = Path(run_dir)
    stored = rundir.read_config(run_dir)
    try:
        options = TrainOptions.from_dict(
            {**stored, "out": str(run_dir), "dataset": overrides.get("dataset") or stored.get("dataset", "")}
        )
    except TypeError as exc:
        raise InputError(f"unusable training config ({exc})", run_dir / rundir.CONFIG_NAME) from None
    options.time_limit = None  # the stored limit was the budget of the invocation that set it
    for name, value in overrides.items():
        if name in ("out", "resume") or value is None:
            continue
        if name in RUNTIME_OPTIONS or name in RESUMABLE_CHANGES:
            setattr(options, name, value)
            continue
        old = getattr(options, name)
        same = (
            list(value) == list(old) if isinstance(value, (list, tuple)) and old is not None else value == old
        )
        if not same:
            raise InputError(
                f"--resume continues the stored run; it used {name}={old!r}, not {value!r}", run_dir
            )
    options.out, options.resume = str(run_dir), True
    return options.validate()


def choose_split(
    options: TrainOptions, dataset: Dataset, run_dir: Path, table: ClassTable | None = None
) -> dict[str, list[str]]:
    """The run's split: RUN_DIR/split.json on resume, else ``--split-file``, else a new grouped split
    balanced by labelled pixels (fields without a labelled pixel are left out; ``table`` reads the masks).

    The split is written to RUN_DIR/split.json (a ``--split-file`` with its seed/regex/fractions record, so
    the copy is identical). An empty train split is an error; val and test may be empty (a zero fraction:
    then no validation, or no test evaluation).
    """
    source = run_dir / rundir.SPLIT_NAME if options.resume else options.split_file
    meta = {"seed": options.seed, "group_regex": options.group_regex, "fractions": options.fractions}
    if source is not None:
        split = load_split(source, dataset)
        document = json.loads(Path(source).read_text(encoding="utf-8"))
        meta = {k: document.get(k) for k in meta}
    else:
        labelled = labelled_pixels(dataset.samples, table) if table is not None else None
        split = make_split(
            [s.name for s in dataset.samples], options.fractions, options.seed, options.group_regex, labelled
        )
    if not split["train"]:
        raise InputError("the train split is empty; training needs labelled images in train", source)
    if not options.resume:
        fractions = tuple(meta["fractions"]) if meta["fractions"] is not None else None
        save_split(
            split,
            run_dir / rundir.SPLIT_NAME,
            seed=meta["seed"],
            group_regex=meta["group_regex"],
            fractions=fractions,
        )
    return split


def normalization_for(
    options: TrainOptions, train: list[Micrograph], init_config: dict | None = None
) -> dict:
    """What the network sees: ``(pixel / 255 - mean) / std``.

    A ``--init`` run keeps its checkpoint's normalization (the weights expect it); pretrained encoders get
    ImageNet's gray statistics (their weights expect them); a network trained from scratch gets the
    training split's own mean and standard deviation, which centres its inputs.
    """
    if init_config is not None:
        return {**init_config["normalization"], "source": f"--init {Path(str(options.init)).name}"}
    if options.pretrained:
        mean, std = IMAGENET_GRAY["mean"], IMAGENET_GRAY["std"]
        source = "imagenet-gray"
    else:
        total = sum(m.image.size for m in train)
        mean = sum(float(m.image.sum(dtype=np.float64)) for m in train) / total / 255.0
        sq = sum(float(np.square(m.image, dtype=np.float64).sum()) for m in train) / total / 255.0**2
        std = max(math.sqrt(max(sq - mean * mean, 0.0)), 1e-3)
        source = "training-split"
    return {"scale": 1.0 / 255.0, "mean": [round(mean, 6)], "std": [round(std, 6)], "source": source}


def default_steps_per_epoch(train: list[Micrograph], tile: int, batch_size: int) -> int:
    """Tiles per epoch that cover the training pixels about once."""
    pixels = sum(m.image.size for m in train)
    return max(1, math.ceil(pixels / (tile * tile * batch_size)))


def build_config(options: TrainOptions, table: ClassTable, normalization: dict, frequencies, weights) -> dict:
    """The run's config (config.json and every checkpoint): every option plus what rebuilds the model."""
    import segmentation_models_pytorch as smp

    settings = options.to_dict()
    settings["classes_file"] = settings.pop("classes")
    return {
        **settings,
        "format": CONFIG_FORMAT,
        "in_channels": 1,
        "num_classes": table.num_classes,
        "classes": table.to_dict(),
        "normalization": normalization,
        "train_pixel_fractions": [float(f) for f in frequencies],
        "class_weights": [float(w) for w in weights],
        "versions": {"semphase": __version__, "torch": torch.__version__, "smp": smp.__version__},
    }


def create_model(options: TrainOptions, num_classes: int) -> tuple[nn.Module, str]:
    """Build the network and load the encoder weights; returns (model, where the weights came from)."""
    model = build_model({"arch": options.arch, "in_channels": 1, "num_classes": num_classes})
    if options.arch != "unet-resnet34":
        return model, "none (the scratch U-Net has no pretrained encoder)"
    return model, load_encoder_weights(model, options.encoder_weights, in_channels=1)


def param_groups(model: nn.Module, options: TrainOptions) -> list[dict]:
    """AdamW groups: decoder + head at ``lr``; encoder at ``lr_finetune`` when it starts trained
    (pretrained or ``--init``), else at ``lr``."""
    encoder = getattr(model, "encoder", None)
    encoder_ids = {id(p) for p in encoder.parameters()} if encoder is not None else set()
    head = [p for p in model.parameters() if id(p) not in encoder_ids]
    groups = [{"params": head, "lr": options.lr, "name": "decoder"}]
    if encoder is not None:
        lr = options.lr_finetune if options.starts_trained else options.lr
        groups.append({"params": list(encoder.parameters()), "lr": lr, "name": "encoder"})
    return groups


@dataclass
class RunData:
    """The split and the samples of each side, the class table and the dataset they come from."""

    dataset: Dataset
    table: ClassTable
    split: dict[str, list[str]]
    samples: dict[str, list[Sample]]


def open_run_data(options: TrainOptions, run_dir: Path) -> RunData:
    """Class table, dataset, split (written to the run folder) and the samples of each split."""
    table = load_class_table(options.classes)
    dataset = open_dataset(options.dataset)
    if not dataset.samples:
        raise InputError("the dataset has no image/mask pairs", dataset.root)
    split = choose_split(options, dataset, run_dir, table)
    samples = {name: dataset.select(split[name]) for name in SPLITS}
    return RunData(dataset, table, split, samples)
