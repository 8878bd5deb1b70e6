"""Starting a run from a trained semphase checkpoint (``semphase train --init CHECKPOINT``).

The new run keeps the checkpoint's architecture and input normalization (its weights expect them) and
every weight of the network. The classes must be the checkpoint's, in its order; a dataset with another
class table is refused in one line, unless ``--class-map`` says where each of its classes comes from:

    --class-map "Pore=Void,Oxide=-"

maps the dataset's class ``Pore`` onto the checkpoint's ``Void`` (its output channel starts from Void's
weights) and learns ``Oxide`` from scratch (a freshly initialized output channel); a class the map does
not mention keeps the checkpoint's class of the same name. Only the last layer (the segmentation head)
changes; everything the network learnt about SEM micrographs stays.

What the run was initialised from is recorded in its config (``init_from``), in every checkpoint and in
the exported ONNX files (``semphase.source.init_from``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from semphase.errors import InputError
from semphase.imageio import file_sha256
from semphase.phases import ClassTable
from semphase.train.checkpoint import read_checkpoint
from semphase.train.models import build_model

#: The right-hand side of a ``--class-map`` entry for a class learnt from scratch.
FRESH = "-"


def parse_class_map(text: str) -> dict[str, str | None]:
    """``"NEW=OLD,NEW=-"`` -> ``{"NEW": "OLD", "NEW2": None}``.

    Raises
    ------
    InputError
        for an entry without ``=``, an empty name or a class named twice.
    """
    mapping: dict[str, str | None] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        new, sep, old = (part.strip() for part in entry.partition("="))
        if not sep or not new or not old:
            raise InputError(f"--class-map: expected NEW=OLD or NEW={FRESH} entries, got {entry!r}")
        if new in mapping:
            raise InputError(f"--class-map names {new!r} twice")
        mapping[new] = None if old == FRESH else old
    if not mapping:
        raise InputError(f"--class-map is empty; expected NEW=OLD or NEW={FRESH} entries")
    return mapping


def resolve_class_map(
    new: ClassTable, old: ClassTable, text: str | None, checkpoint: str | os.PathLike
) -> list[int | None]:
    """For each class of the new table, the index of the checkpoint's class its output starts from, or
    None for a class learnt from scratch.

    Raises
    ------
    InputError
        naming the checkpoint when the tables differ and no map is given, or the map names a class that
        neither table has, or leaves a new class without a counterpart.
    """
    if text is None:
        if new.names == old.names:
            return list(range(old.num_classes))
        raise InputError(
            f"the checkpoint's classes ({', '.join(old.names)}) differ from the dataset's "
            f"({', '.join(new.names)}); give --class-map NEW=OLD,... (NEW={FRESH} for a class learnt "
            "from scratch)",
            checkpoint,
        )
    mapping = parse_class_map(text)
    unknown_new = [n for n in mapping if n not in new.names]
    if unknown_new:
        raise InputError(
            f"--class-map: {unknown_new[0]!r} is no class of the dataset ({', '.join(new.names)})"
        )
    unknown_old = [o for o in mapping.values() if o is not None and o not in old.names]
    if unknown_old:
        raise InputError(
            f"--class-map: {unknown_old[0]!r} is no class of the checkpoint ({', '.join(old.names)})",
            checkpoint,
        )
    sources: list[int | None] = []
    for name in new.names:
        if name in mapping:
            target = mapping[name]
            sources.append(None if target is None else old.names.index(target))
        elif name in old.names:
            sources.append(old.names.index(name))
        else:
            raise InputError(
                f"--class-map: the dataset's class {name!r} has no counterpart in the checkpoint "
                f"({', '.join(old.names)}); add {name}=OLD or {name}={FRESH}",
                checkpoint,
            )
    return sources


def _head_conv(model: nn.Module) -> nn.Conv2d:
    """The last convolution, one output channel per class: smp's ``segmentation_head[0]``, or the scratch
    U-Net's ``head``."""
    head = getattr(model, "segmentation_head", None)
    conv = head[0] if isinstance(head, nn.Sequential) and len(head) else getattr(model, "head", None)
    if not isinstance(conv, nn.Conv2d):
        raise ValueError("the model has no per-class output convolution to map classes on")
    return conv


def map_head(model: nn.Module, state: dict, sources: list[int | None]) -> None:
    """Load ``state`` (the checkpoint's weights) into ``model``, whose head has one output per new class:
    every layer as stored, the head's channel ``i`` from the stored channel ``sources[i]`` (or as freshly
    initialized when None)."""
    conv = _head_conv(model)
    prefix = next(name for name, module in model.named_modules() if module is conv)
    keys = (f"{prefix}.weight", f"{prefix}.bias")
    body = {k: v for k, v in state.items() if k not in keys}
    missing, unexpected = model.load_state_dict(body, strict=False)
    stray = [k for k in missing if k not in keys] + list(unexpected)
    if stray:
        raise ValueError(f"weights do not fit the architecture: {stray[0]}")
    with torch.no_grad():
        for key, param in zip(keys, (conv.weight, conv.bias), strict=True):
            if param is None:
                continue
            stored = state[key]
            for i, source in enumerate(sources):
                if source is not None:
                    param[i] = stored[source]


def load_initial_model(
    path: str | os.PathLike, table: ClassTable, class_map: str | None
) -> tuple[nn.Module, dict, dict]:
    """The network a ``--init`` run starts from, the checkpoint's config and the record of the start.

    Parameters
    ----------
    path : a semphase checkpoint (``best.pt``/``last.pt``), read with ``torch.load(weights_only=True)``.
    table : the new run's class table.
    class_map : ``--class-map`` text, or None.

    Returns
    -------
    (model on the CPU in train mode, the checkpoint's config, the ``init_from`` record for the run's config:
    ``checkpoint``, ``sha256``, ``arch``, ``epoch``, ``classes`` (the checkpoint's), ``class_map`` (new
    class -> old class or None), ``test_miou`` of the checkpoint when it was tested, and its own
    ``init_from`` when it was itself fine-tuned).

    Raises
    ------
    InputError
        naming the file for anything unusable (see :func:`semphase.train.checkpoint.read_checkpoint`,
        :func:`resolve_class_map`).
    """
    path = Path(path)
    ckpt = read_checkpoint(path, "cpu")
    config = ckpt["config"]
    try:
        old = ClassTable.from_dict(config["classes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"checkpoint has no usable class table ({exc})", path) from None
    sources = resolve_class_map(table, old, class_map, path)
    try:
        model = build_model({**config, "num_classes": table.num_classes})
        map_head(model, ckpt["state_dict"], sources)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise InputError(f"cannot start from this checkpoint ({str(exc)[:200]})", path) from None
    summary = (ckpt.get("test_metrics") or {}).get("summary", {})
    miou = summary.get("miou", {}).get("mean") if isinstance(summary, dict) else None
    record = {
        "checkpoint": str(path),
        "sha256": file_sha256(path),
        "arch": config.get("arch"),
        "epoch": ckpt.get("epoch"),
        "classes": old.names,
        "class_map": {
            name: (None if source is None else old.names[source])
            for name, source in zip(table.names, sources, strict=True)
        },
        "test_miou": miou,
    }
    if isinstance(config.get("init_from"), dict):
        record["init_from"] = config["init_from"]
    return model, config, record
