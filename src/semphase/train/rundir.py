"""Files of a training run directory besides the checkpoints.

``config.json`` (every option, the class table, normalization, class weights), ``split.json`` (the
train/val/test names), ``history.csv`` (one row per finished epoch, rewritten atomically each epoch) and
``training_curves.png`` (see :mod:`semphase.train.plots`).

history.csv's ``seconds`` is one epoch's training and validation time; ``elapsed_seconds`` is the run's
training wall time at the end of the epoch, summed over every invocation of a resumed run (histories
written before that column existed are read without it).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from semphase.errors import InputError
from semphase.imageio import write_text_atomic

CONFIG_NAME = "config.json"
SPLIT_NAME = "split.json"
HISTORY_NAME = "history.csv"
BEST_NAME = "best.pt"
LAST_NAME = "last.pt"
CURVES_NAME = "training_curves.png"
TEST_METRICS_NAME = "metrics_test.json"

#: Fixed history columns; ``iou_<class>`` columns go between ``val_miou`` and ``lr``.
HISTORY_HEAD = ("epoch", "train_loss", "val_loss", "val_miou")
HISTORY_TAIL = (
    "lr",
    "lr_encoder",
    "trainable_stages",
    "seconds",
    "elapsed_seconds",
    "steps",
    "tile",
    "planned_steps",  # --time-budget runs: the steps of the whole run as planned after this epoch
    "budget_left_seconds",
)


def history_columns(class_names: list[str]) -> list[str]:
    """Column names of history.csv for these classes."""
    return [*HISTORY_HEAD, *(f"iou_{name}" for name in class_names), *HISTORY_TAIL]


def write_config(run_dir: Path, config: dict) -> None:
    """Write config.json (sorted keys, atomically)."""
    write_text_atomic(run_dir / CONFIG_NAME, json.dumps(config, indent=1, sort_keys=True) + "\n")


def read_config(run_dir: Path) -> dict:
    """Read config.json of an existing run; InputError naming the file when unusable."""
    path = run_dir / CONFIG_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("no config.json: not a semphase training run (cannot --resume)", run_dir) from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"corrupt config ({exc})", path) from None
    if not isinstance(data, dict) or "arch" not in data:
        raise InputError("not a semphase training config", path)
    return data


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def write_history(run_dir: Path, columns: list[str], rows: list[dict]) -> None:
    """Rewrite history.csv with ``rows`` (dicts keyed by ``columns``); NaN is written as an empty cell."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c, "")) for c in columns])
    write_text_atomic(run_dir / HISTORY_NAME, buf.getvalue())


def read_history(run_dir: Path, up_to_epoch: int) -> list[dict]:
    """Rows of history.csv with ``epoch <= up_to_epoch`` (later rows belong to an epoch that was not saved).

    Numbers are parsed back to float (``epoch`` to int); a missing file gives no rows.
    """
    path = run_dir / HISTORY_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror or exc})", path) from None
    rows = []
    try:
        for raw in csv.DictReader(io.StringIO(text)):
            row: dict = {}
            for key, value in raw.items():
                if key == "epoch":
                    row[key] = int(value)
                elif key == "trainable_stages":
                    row[key] = value
                else:
                    row[key] = float(value) if value not in ("", None) else float("nan")
            if row["epoch"] <= up_to_epoch:
                rows.append(row)
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"corrupt history ({exc})", path) from None
    return rows


def training_seconds(rows: list[dict]) -> float:
    """The run's training wall time after ``rows`` (history rows, oldest first).

    The last row's ``elapsed_seconds``; for a history without that column, the sum of the epochs'
    ``seconds`` (a slight undercount: it leaves out the checkpoint saves between epochs).
    """
    if not rows:
        return 0.0
    elapsed = rows[-1].get("elapsed_seconds", math.nan)
    if math.isfinite(elapsed):
        return float(elapsed)
    return float(sum(r["seconds"] for r in rows if math.isfinite(r.get("seconds", math.nan))))


def check_fresh_run_dir(run_dir: Path) -> None:
    """Refuse to start a new run over one that saved an epoch (it would silently mix two runs).

    A folder with a config but no last.pt (a run stopped before its first epoch ended) may be reused.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError("--out exists and is not a folder", run_dir)
    if (run_dir / LAST_NAME).exists():
        raise InputError(
            "already holds a training run; add --resume to continue it or choose another --out", run_dir
        )
