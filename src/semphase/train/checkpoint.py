"""Training checkpoints (``best.pt``, ``last.pt``): plain dicts that ``torch.load(weights_only=True)`` reads.

Layout (see docs/architecture.md)::

    {"format": "semphase-checkpoint/1", "state_dict": {...}, "config": {...JSON-serializable...},
     "epoch": int, "best_val_miou": float, ...extra keys (optimizer, scheduler, rng, test_metrics)}

Only tensors, numbers, strings, lists and dicts are stored, so loading never unpickles code.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from semphase.errors import InputError
from semphase.imageio import atomic_path
from semphase.train.models import build_model

#: Value of the ``"format"`` key that marks a semphase checkpoint.
CHECKPOINT_FORMAT = "semphase-checkpoint/1"

_REQUIRED_KEYS = ("format", "state_dict", "config")
_REQUIRED_CONFIG = ("arch", "num_classes", "normalization")


def _plain(value):
    """Copy ``value`` with tensors moved to the CPU and tuples turned into lists (weights_only-safe)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: dict, **extra) -> None:
    """Write a checkpoint atomically (temporary file beside ``path``, then ``os.replace``).

    Parameters
    ----------
    path : path of the ``.pt`` file to (over)write.
    model : the network; its ``state_dict()`` is stored with tensors on the CPU.
    config : JSON-serializable training config (arch, in_channels, num_classes, classes, normalization, ...).
    **extra : further keys (``epoch``, ``best_val_miou``, ``optimizer``, ``scheduler``, ``rng``,
        ``test_metrics``, ...) made only of tensors, numbers, strings, lists and dicts.

    Raises
    ------
    InputError
        When ``config`` is not JSON-serializable or the file cannot be written.
    """
    try:
        config = json.loads(json.dumps(config))
    except (TypeError, ValueError) as exc:
        raise InputError(f"training config is not JSON-serializable ({exc})", path) from None
    payload = {"format": CHECKPOINT_FORMAT, "state_dict": _plain(model.state_dict()), "config": config}
    payload.update({k: _plain(v) for k, v in extra.items()})
    with atomic_path(path) as tmp:
        try:
            torch.save(payload, tmp)
        except OSError as exc:
            raise InputError(f"cannot write checkpoint ({exc.strerror or exc})", path) from None


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """Read and validate a checkpoint dict without building the model.

    Raises
    ------
    InputError
        Naming the file when it is missing, empty, corrupt, a pickle that ``weights_only`` refuses, or not
        a semphase checkpoint.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise InputError("no such checkpoint file", p) from None
    except OSError as exc:
        raise InputError(f"cannot access checkpoint ({exc.strerror or exc})", p) from None
    if not p.is_file():
        raise InputError("checkpoint is not a file", p)
    if size == 0:
        raise InputError("empty checkpoint file (0 bytes)", p)
    try:
        ckpt = torch.load(p, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc):
            raise InputError(
                "checkpoint holds pickled objects that a safe load refuses; not a semphase checkpoint", p
            ) from None
        raise InputError("corrupt checkpoint (cannot unpickle)", p) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, AttributeError):
        raise InputError("corrupt or truncated checkpoint (torch.load failed)", p) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"not a semphase checkpoint (no 'format': {CHECKPOINT_FORMAT!r})", p)
    missing = [k for k in _REQUIRED_KEYS if k not in ckpt]
    config = ckpt.get("config")
    if not isinstance(config, dict) or not isinstance(ckpt.get("state_dict"), dict):
        missing.append("config/state_dict of the right type")
    else:
        missing += [f"config.{k}" for k in _REQUIRED_CONFIG if k not in config]
    if missing:
        raise InputError(f"checkpoint lacks {', '.join(missing)}", p)
    return ckpt


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[nn.Module, dict, dict]:
    """Rebuild the trained network from a checkpoint.

    Parameters
    ----------
    path : a ``best.pt`` / ``last.pt`` written by :func:`save_checkpoint`.
    device : where the model and the loaded tensors go.

    Returns
    -------
    (model, config, checkpoint): the model in eval mode on ``device``, its config dict, and the whole
    checkpoint dict (``epoch``, ``best_val_miou``, ``test_metrics``, ...).

    Raises
    ------
    InputError
        Naming the file for missing, empty, corrupt or foreign checkpoints and for weights that do not fit
        the architecture the config describes.
    """
    ckpt = read_checkpoint(path, device)
    config = ckpt["config"]
    try:
        model = build_model(config)
    except (ValueError, TypeError) as exc:
        raise InputError(f"checkpoint config cannot be built ({exc})", path) from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, TypeError, ValueError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(first[1:2]).strip() or (first[0] if first else "")
        raise InputError(f"weights do not match arch {config.get('arch')!r}: {detail[:200]}", path) from None
    model.to(device).eval()
    return model, config, ckpt
