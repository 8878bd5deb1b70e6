"""How few labels make a model right on another lab's micrographs? The learning curve, measured.

The protocol (benchmarks/RESULTS.md, "Few labels"):

- **Source domain**: a ResNet34 U-Net pretrained from random weights on ``semphase synth`` data (the
  ``ni-wc`` domain), given with ``--pretrained``. It never sees the target domain.
- **Target domain**: ``semphase synth --domain shifted`` (other microstructure, other rendering; see
  ``semphase.data.synth.domains``), 1024 x 768 fields at 600-1000x, in three disjoint sets of seeds:
  ``pool`` (16 fields the simulated user labels; seeds 1000..), ``dev`` (8 fields with dense truth that
  chose the fine-tuning recipe; seeds 2000..) and ``test`` (12 fields with dense truth that every number
  of the curve is measured on; seeds 3000..). The generator's shifted domain was written before any of
  these runs and not changed after them.
- **The user**: :func:`semphase.data.synth.scribbles.scribble_labels` paints strokes over a share of each
  field's pixels, as docs/adapt.md asks: half of the budget where the pretrained model's overlay is wrong
  (each phase in proportion to its wrong pixels), half inside the phases (5 px brush away from
  boundaries, a 1 px pencil along thin parts; shared equally by the phases). ``USER = "interior"`` paints
  only the second kind. "dense" labels every pixel.
- **Conditions**: ``synthetic-only`` (the pretrained model as is), ``pretrained+sparse`` (``train --init``
  with the recipe), ``scratch+sparse`` (the same data, steps and schedule from random weights, at the
  scratch learning rate 1e-3), ``pretrained+dense``; and ``suggest`` against ``random`` picks: K regions
  from 8 unlabelled pool fields, picked by ``semphase suggest`` (with the pretrained model's FP32 ONNX) or
  at random (one per field at most, as suggest's default), each then scribbled at the same share.
- **Second round** (stage ``round2``; the product's loop is segment -> suggest -> correct -> ``train
  --init`` -> suggest again, and a ranking can only matter once the model is mostly right). Per seed s:

  1. *Round 1*: the random-picks arm of ``suggest`` (4 random regions of 384 px, one per field, from pool
     fields 8..15, random stream 31, strokes over 5 % of each by the corrective user w.r.t. the pretrained
     model), fine-tuned from the pretrained checkpoint with the recipe and seed s; its test mIoU is the
     row "round 1 (random)" and its checkpoint is kept (``WORK/runs/round2/seedS/round1``).
  2. The round-1 checkpoint is exported to FP32 ONNX (``semphase export --no-fp16 --no-int8``; validated
     on its own training regions, the run having no test split). The candidates are the 4 of pool fields
     8..15 that round 1 did not touch (suggest matches labelled regions by name on its own grid, and
     random regions are not on it, so passing the labels would not keep suggest off them). ``suggest``
     with its defaults (``--score photometric``, at most one region per micrograph) picks n=4 regions of
     384 px from them; the random arm picks 4 regions by the rule of round 1 (one per field, 32 px
     aligned) from the same candidates with random stream 37 (round 1: 31).
  3. Each arm's regions are scribbled over 5 % of their pixels by the corrective user w.r.t. the ROUND-1
     model's prediction (stroke seeds s * 100 + 50 + j, both arms alike).
  4. ``train --init ROUND1_CHECKPOINT`` on the union of the round-1 and round-2 labels (the project keeps
     its labels), the same recipe and seed s; test mIoU on the 12 test fields. Rows "round 2: suggest" and
     "round 2: random", compared per seed.
  5. The criterion (issue 24: suggest's picks give a higher held-out mIoU than random picks at the same
     budget) is *met* when the mean paired difference suggest - random over the seeds is positive and
     larger than its standard deviation over the seeds; otherwise it is *not shown*.

  ``--pool wide`` (rows with ``"pool": "wide"``, arms in ``seedS/suggest-wide`` and ``random-wide``, the
  same round 1) offers round 2 twelve candidate fields instead of four: pool fields 0..7 (which no run of
  this stage labels) and the 4 that round 1 left. Both arms still take one region from each of 4 fields,
  so suggest now also chooses *which* fields (its ranking across micrographs), and random draws 4 of the
  12 fields (random stream 37).

  ``--round2-user review`` (rows with ``"user2": "review"``, arms in ``seedS/suggest[-wide]-review`` and
  ``random[-wide]-review``, the same round 1 and the same picks) changes only round 2's user: instead of
  strokes over ``--share`` of a region, the user reviews each region the way ``suggest`` hands it over
  (its pre-filled label) and corrects it until every pixel is right, so the region's label is its truth,
  the loop of MONAI Label and Cellpose 2.0. Both arms label the same pixels (4 regions of 384 px); what a
  ranking can change is how many of them were wrong. With strokes it cannot: the corrective user spends
  the same strokes on the errors of whichever region it is shown, and a region with more errors gets no
  more corrections.

- **A mixed archive** (stage ``archive``): a lab's archive holds micrographs like those the model learnt
  from as well as new ones. The candidates are 16 fields: 8 of the target domain (pool fields 0..7) and 8
  of the source domain (``pool-native``, seeds 900000..); the test set is 12 + 12 fields (``test`` and
  ``test-native``), scored as a whole and per half. ``suggest`` (with the pretrained model's FP32 ONNX;
  ``--order score``, ``phases`` and ``diverse``) or random picks (one region per field, random stream
  41) choose 4 regions of 384 px, scribbled over 5 % by the corrective user; ``train --init`` from the
  pretrained model. ``--replay DATA`` (rows with ``"replay"``) fine-tunes with ``train --replay DATA``,
  DATA being the pretrained model's own training data, so the fine-tuning also sees what the model knew;
  ``--arms`` runs a subset of the arms.
- ``--prior auto|off``: ``train --prior-correction`` of the sparse-label runs (rows made with ``auto``
  carry ``"prior": "auto"``; rows without the key were trained before the correction existed). Dense
  runs never correct (``auto`` skips them).
- Each configuration runs with several seeds (which pool fields, where the strokes fall, the training
  seed); the report gives mean and standard deviation over them and the wall time of each fine-tuning.

Stages (each resumable: finished runs are read back from ``WORK/results.jsonl``)::

    python benchmarks/few_labels.py prepare --work fl
    python benchmarks/few_labels.py recipe --work fl --pretrained pre/best.pt
    python benchmarks/few_labels.py curve --work fl --pretrained pre/best.pt --seeds 3
    python benchmarks/few_labels.py suggest --work fl --pretrained pre/best.pt --seeds 3
    python benchmarks/few_labels.py round2 --work fl --pretrained pre/best.pt --seeds 3
    python benchmarks/few_labels.py archive --work fl --pretrained pre/best.pt --seeds 3 --replay pre-data
    python benchmarks/few_labels.py report --work fl --out benchmarks/few_labels
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

FIELD = (768, 1024)  # height, width of a target-domain field
MAGNIFICATIONS = (600, 700, 800, 1000)
SETS = {"pool": (1000, 16), "dev": (2000, 8), "test": (3000, 12)}
#: The ``archive`` stage's fields of the source domain (``ni-wc``, what the pretrained model was trained
#: on; seeds far from any ``semphase synth`` run's): a lab archive holds micrographs like those too.
NATIVE_SETS = {"pool-native": (900000, 8), "test-native": (910000, 12)}
SCRATCH_LR = 1e-3
#: The simulated user of the curve: ``corrective`` (half the strokes where the pretrained model's overlay is
#: wrong, half inside the phases) or ``interior`` (inside the phases only).
USER = "corrective"
#: Recipe candidates (measured on dev, 4 fields at 2 %): option overrides of the fine-tuning recipe.
RECIPES = {
    "recipe": {},
    "lr 1e-3 / enc 3e-4": {"lr": 1e-3, "lr_finetune": 3e-4},
    "lr 1e-4 / enc 3e-5": {"lr": 1e-4, "lr_finetune": 3e-5},
    "encoder frozen": {"freeze_epochs": 100},
    "100 steps": {"epochs": 5},
    "400 steps": {"epochs": 20},
    "light augmentation": {"augment": "light"},
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Printing:
    """A :class:`semphase.progress.Progress` that prints the run's log lines."""

    def start(self, key, description, total):
        pass

    def advance(self, key, steps=1):
        pass

    def say(self, message):
        pass

    def log(self, message):
        print(f"    {message}", flush=True)


# ----------------------------------------------------------------------------------------- data


def prepare(work: Path) -> None:
    """Render the target-domain fields with their dense truth (raw ids), once."""
    from semphase.data.synth import synth_micrograph, to_raw_ids
    from semphase.imageio import write_image

    sets = [(name, first, count, "shifted") for name, (first, count) in SETS.items()]
    sets += [(name, first, count, "ni-wc") for name, (first, count) in NATIVE_SETS.items()]
    for name, first, count, domain in sets:
        folder = work / "domain" / name
        for i in range(count):
            seed = first + i
            image_path = folder / "images" / f"field{seed}.png"
            if image_path.exists():
                continue
            image, labels = synth_micrograph(*FIELD, seed, MAGNIFICATIONS[i % 4], domain)
            write_image(folder / "masks" / f"field{seed}.png", to_raw_ids(labels))
            write_image(image_path, image)
        log(f"{name}: {count} fields in {folder}")


def fields(work: Path, name: str) -> list[tuple[Path, Path]]:
    folder = work / "domain" / name
    return [(p, folder / "masks" / p.name) for p in sorted((folder / "images").iterdir())]


def read_truth(path: Path) -> np.ndarray:
    from semphase.data.labels import read_labels
    from semphase.phases import DEFAULT_TABLE

    return read_labels(path, DEFAULT_TABLE)


def write_training_set(root: Path, items: list[tuple[np.ndarray, np.ndarray, str]]) -> int:
    """images/ + masks/ (raw ids, 255 unlabelled); returns the labelled pixels."""
    from semphase.data.synth import to_raw_ids
    from semphase.imageio import write_image

    labelled = 0
    for image, labels, name in items:
        write_image(root / "images" / f"{name}.png", image)
        write_image(root / "masks" / f"{name}.png", to_raw_ids(labels))
        labelled += int(np.count_nonzero(labels != 255))
    return labelled


#: ``train --prior-correction`` of the sparse-label runs (``--prior``; rows record it as ``"prior"``, rows
#: without the key were trained before the correction existed, i.e. ``off``). Dense runs never correct.
PRIOR = "auto"

#: With the ``corrective`` user: the share of the strokes painted where the model's overlay is wrong.
CORRECTIVE_SHARE = 0.5


def scribbled(truth: np.ndarray, share: float, seed: int, prediction: np.ndarray | None = None) -> np.ndarray:
    from semphase.data.synth.scribbles import scribble_labels

    return scribble_labels(truth, share, seed, 5, prediction=prediction, corrective_share=CORRECTIVE_SHARE)


def model_prediction(checkpoint: Path, image_path: Path, cache: Path) -> np.ndarray:
    """A model's phases for a whole pool field (what the user sees on the overlay and corrects), cached in
    the folder ``cache`` (one per model: the cache knows fields by name only)."""
    from semphase.imageio import read_gray, write_image

    cached = cache / image_path.name
    if cached.exists():
        return read_gray(cached)
    from semphase.train.checkpoint import load_checkpoint
    from semphase.train.inference import predict_labels

    model, config, _ = load_checkpoint(checkpoint, "cpu")
    labels = predict_labels(model, config, read_gray(image_path), "cpu")
    write_image(cached, labels)
    return labels


def pretrained_cache(work: Path) -> Path:
    return work / "domain" / "pool" / "pretrained-prediction"


def pretrained_prediction(work: Path, pretrained: Path, image_path: Path) -> np.ndarray:
    """The pretrained model's phases for a pool field, cached."""
    return model_prediction(pretrained, image_path, pretrained_cache(work))


# ----------------------------------------------------------------------------------------- runs


def key_of(config: dict) -> str:
    return json.dumps(config, sort_keys=True)


def done_runs(work: Path) -> dict[str, dict]:
    path = work / "results.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {key_of(r["config"]): r for r in rows}


def record(work: Path, row: dict) -> None:
    with open(work / "results.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def evaluate(checkpoint: Path, eval_set: list[tuple[Path, Path]]) -> dict:
    """mIoU (per-image mean), per-class IoU (dataset level) and pixel accuracy of a checkpoint."""
    from semphase.data.layout import Sample
    from semphase.evaluation import run_evaluation
    from semphase.phases import DEFAULT_TABLE
    from semphase.train.checkpoint import load_checkpoint
    from semphase.train.inference import predict_labels

    model, config, _ = load_checkpoint(checkpoint, "cpu")
    samples = [Sample(image.name, image, mask) for image, mask in eval_set]
    result = run_evaluation(lambda im: predict_labels(model, config, im, "cpu"), samples, DEFAULT_TABLE, None)
    return {
        "miou": result["summary"]["miou"]["mean"],
        "class_iou": dict(zip(DEFAULT_TABLE.names, result["per_class"]["iou"], strict=True)),
        "pixel_accuracy": result["pixel_accuracy"],
        "image_miou": {r["name"]: r["miou"] for r in result["per_image"]},
    }


def fine_tune(run_dir: Path, data: Path, init: Path | None, overrides: dict, seed: int) -> dict:
    """Train on ``data`` (all fields train, cosine schedule); returns the training result."""
    from semphase.train.options import TrainOptions
    from semphase.train.run import train

    given = {"dataset": str(data), "seed": seed, "threads": os.cpu_count()}
    if init is not None:
        given["init"] = str(init)
    else:  # scratch: the recipe's data, steps and schedule, the random-init learning rate
        from semphase.train.options import FINETUNE_RECIPE

        given.update({k: v for k, v in FINETUNE_RECIPE.items() if k not in ("lr", "lr_finetune")})
        given.update({"arch": "unet-resnet34", "encoder_weights": "none", "lr": SCRATCH_LR})
    given.update(overrides)
    options = TrainOptions.create(str(run_dir / "run"), **given)
    return train(options, Printing())


def run_one(
    work: Path,
    config: dict,
    items,
    eval_name: str,
    pretrained: Path,
    *,
    init: Path | None = None,
    run_dir: Path | None = None,
    keep: bool = False,
    redo: bool = False,
    extra: dict | None = None,
) -> dict:
    """Train one configuration (or evaluate the pretrained model for ``synthetic-only``) and record it.

    ``init`` replaces ``pretrained`` as the starting checkpoint, ``run_dir`` the run folder (default: one
    named by the configuration's hash). ``keep`` keeps the run's best.pt (to start another run from);
    ``redo`` trains again although the configuration is recorded (the new row supersedes the old one).
    ``extra`` is merged into the row."""
    if PRIOR != "off" and config["condition"] != "synthetic-only" and config.get("share", 1.0) < 1:
        config = {**config, "prior": PRIOR}
    done = done_runs(work)
    if key_of(config) in done and not redo:
        return done[key_of(config)]
    log(f"run {config}")
    eval_set = (
        fields(work, "test") + fields(work, "test-native")
        if eval_name == "archive"
        else fields(work, eval_name)
    )
    t0 = time.perf_counter()
    labelled = 0
    train_seconds = 0.0
    if config["condition"] == "synthetic-only":
        checkpoint = pretrained
    else:
        run_dir = run_dir or work / "runs" / str(abs(hash(key_of(config))))
        shutil.rmtree(run_dir, ignore_errors=True)
        labelled = write_training_set(run_dir / "data", items)
        if init is None:
            init = None if config["condition"].startswith("scratch") else pretrained
        overrides = {**config.get("overrides", {}), "prior_correction": config.get("prior", "off")}
        if config.get("replay"):
            overrides["replay"] = config["replay"]
        result = fine_tune(run_dir, run_dir / "data", init, overrides, config["seed"])
        train_seconds = result["train_seconds"]
        checkpoint = run_dir / "run" / "best.pt"
    t1 = time.perf_counter()
    scores = evaluate(checkpoint, eval_set)
    if eval_name == "archive":  # the mean over each half of the archive's test fields too
        for half in ("test", "test-native"):
            names = {image.name for image, _ in fields(work, half)}
            values = [v for k, v in scores["image_miou"].items() if k in names]
            scores[f"miou_{half.replace('-', '_')}"] = float(np.nanmean(values))
    else:
        scores.pop("image_miou")
    row = {
        "config": config,
        **scores,
        "labelled_pixels": labelled,
        "train_seconds": train_seconds,
        "run_seconds": t1 - t0,
        "eval_seconds": time.perf_counter() - t1,
        "eval_set": eval_name,
        "cpu": machine_line(),
        **(
            {"prior_correction": result.get("prior_correction")}
            if config["condition"] != "synthetic-only"
            else {}
        ),
        **(extra or {}),
    }
    if config["condition"] != "synthetic-only":
        # 100 MB each; the run folder keeps config and history (and best.pt with ``keep``)
        for name in ("last.pt",) if keep else ("best.pt", "last.pt"):
            (checkpoint.parent / name).unlink(missing_ok=True)
    record(work, row)
    log(f"  -> mIoU {row['miou']:.4f} (Reprecipitate {row['class_iou']['Reprecipitate']:.3f}), "
        f"training {train_seconds:.0f} s, run {row['run_seconds']:.0f} s")  # fmt: skip
    return row


def field_items(
    work: Path, n: int, share: float, seed: int, user: str = USER, pretrained: Path | None = None
) -> list:
    """``n`` pool fields chosen by ``seed``, their labels scribbled at ``share`` (1: dense) by the simulated
    ``user``: ``corrective`` paints half of the budget where the pretrained model is wrong (needs
    ``pretrained``), ``interior`` only inside the phases."""
    from semphase.imageio import read_gray

    pool = fields(work, "pool")
    order = np.random.default_rng([seed, 7]).permutation(len(pool))[:n]
    items = []
    for k in order:
        image_path, mask_path = pool[k]
        truth = read_truth(mask_path)
        if share >= 1:
            labels = truth
        else:
            prediction = pretrained_prediction(work, pretrained, image_path) if user == "corrective" else None
            labels = scribbled(truth, share, seed * 1000 + int(k), prediction)
        items.append((read_gray(image_path), labels, image_path.stem))
    return items


def machine_line() -> str:
    from semphase.machine import cpu_summary, isa_text

    info = cpu_summary()
    return f"{info['cpu']} ({isa_text(info['instruction_sets'])}), {os.cpu_count()} cores"


# ----------------------------------------------------------------------------------------- stages


def stage_recipe(work: Path, pretrained: Path) -> None:
    baseline = {"stage": "recipe", "condition": "synthetic-only", "recipe": "none", "seed": 0}
    run_one(work, baseline, [], "dev", pretrained)
    for name, overrides in RECIPES.items():
        config = {"stage": "recipe", "condition": "pretrained+sparse", "recipe": name, "overrides": overrides,
                  "fields": 4, "share": 0.02, "seed": 0}  # fmt: skip
        run_one(work, config, field_items(work, 4, 0.02, 0), "dev", pretrained)


CURVE = [(n, 0.02) for n in (1, 2, 4, 8)] + [(4, s) for s in (0.001, 0.005)]
#: The point of the issue's criteria (at most 4 fields, at most 2 % of their pixels): every seed runs it.
KEY_POINT = (4, 0.02)


def stage_curve(
    work: Path, pretrained: Path, seeds: int, conditions: list[str], key_only: bool = False
) -> None:
    """The learning curve: the key point first (all conditions, every seed), then the other points at
    seed 0, so that a run cut short still answers the criteria. ``key_only`` stops after the key point."""
    run_one(work, {"stage": "curve", "condition": "synthetic-only", "seed": 0}, [], "test", pretrained)
    order = [(KEY_POINT, s) for s in range(seeds)]
    if not key_only:
        order += [(p, 0) for p in CURVE if p != KEY_POINT]
    for (n, share), seed in order:
        for condition in conditions:
            if condition == "pretrained+dense":
                if share != 0.02:
                    continue
                share_used = 1.0
            else:
                share_used = share
            config = {
                "stage": "curve",
                "condition": condition,
                "fields": n,
                "share": share_used,
                "seed": seed,
            }
            if share_used < 1:
                config["user"] = USER
            items = field_items(work, n, share_used, seed, USER, pretrained)
            run_one(work, config, items, "test", pretrained)


#: suggest's default ranking; other scores are reported as "suggest picks (SCORE)".
DEFAULT_SCORE = "photometric"


def suggest_condition(score: str) -> str:
    return "suggest picks" if score == DEFAULT_SCORE else f"suggest picks ({score})"


def stage_signals(work: Path, pretrained: Path, cell: int = 256, k: int = 4) -> dict:
    """Which per-pixel signal of ``suggest`` points at the pretrained model's errors on the target domain?

    Every dev and pool field is segmented with suggest's passes (:class:`~semphase.runtime.suggest.
    PassStack`: four flips, four photometric variants); per ``cell`` x ``cell`` region: the share of wrong
    pixels against the truth and the mean of each signal. Reported: the Spearman rank correlation of each
    signal with the error over all regions, and the mean error of the ``k`` regions a signal ranks highest
    (one per field, of the set's first 8 fields, as suggest picks) against the mean over all regions
    (random picks). Writes ``signals.json`` in ``work``.
    """
    from semphase.imageio import read_gray
    from semphase.runtime import load_model
    from semphase.runtime.suggest import PassStack, combine, pixel_uncertainty

    model = load_model(export_fp32(work, pretrained))
    stack = PassStack(model, flips=True, photometric=True)
    signals = ("entropy", "disagreement", "combined", "photometric")
    result = {}
    for name in ("dev", "pool"):
        rows = []
        for image_path, mask_path in fields(work, name):
            image, truth = read_gray(image_path), read_truth(mask_path)
            logits = stack.logits(image[None])[0]  # a whole field in one pass (size multiple of 32)
            labels, entropy, disagreement, photometric = pixel_uncertainty(
                logits, model.num_classes, True, True
            )
            wrong = (labels != truth) & (truth != 255)
            planes = {s: combine(entropy, disagreement, photometric, s) for s in signals}
            h, w = image.shape
            for y in range(0, h - cell + 1, cell):
                for x in range(0, w - cell + 1, cell):
                    window = (slice(y, y + cell), slice(x, x + cell))
                    row = {"field": image_path.stem, "y": y, "x": x, "error": float(wrong[window].mean())}
                    row.update({s: float(planes[s][window].mean()) for s in signals})
                    rows.append(row)
        error = np.array([r["error"] for r in rows])
        first = sorted({r["field"] for r in rows})[:8]
        summary = {"regions": len(rows), "random_error": float(error.mean()), "signals": {}}
        for s in signals:
            value = np.array([r[s] for r in rows])
            rho = float(np.corrcoef(_ranks(value), _ranks(error))[0, 1])
            best: dict[str, dict] = {}
            for r in rows:
                if r["field"] in first and (r["field"] not in best or r[s] > best[r["field"]][s]):
                    best[r["field"]] = r
            top = sorted(best.values(), key=lambda r: -r[s])[:k]
            summary["signals"][s] = {"spearman": rho, "top_error": float(np.mean([r["error"] for r in top]))}
            log(
                f"{name}: {s:12s} spearman {rho:+.3f}  error of the top {k} "
                f"{summary['signals'][s]['top_error']:.3f}"
                f"  (random {error.mean():.3f})"
            )
        result[name] = {"summary": summary, "rows": rows}
    (work / "signals.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def _ranks(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks


def export_fp32(work: Path, checkpoint: Path, out: Path | None = None) -> Path:
    """``semphase export CHECKPOINT --no-fp16 --no-int8`` into ``out`` (default ``WORK/pretrained-onnx``),
    once."""
    out = out or work / "pretrained-onnx"
    if not (out / "model.onnx").exists():
        exe = Path(sys.executable).with_name("semphase")
        subprocess.run(
            [str(exe), "export", str(checkpoint), "--out", str(out), "--no-fp16", "--no-int8"], check=True
        )
    return out / "model.onnx"


def candidate_fields(work: Path) -> list[Path]:
    """The pool fields regions are picked from (8..15; the curve's picks of fields reach all 16)."""
    return [p for p, _ in fields(work, "pool")][8:]


def suggested_regions(
    work: Path,
    onnx_path: Path,
    k: int,
    region: int,
    score: str = DEFAULT_SCORE,
    out: Path | None = None,
    pool: list[Path] | None = None,
    order: str = "score",
) -> list[tuple[str, int, int]]:
    """``suggest``'s ``k`` picks (``--order ORDER``) from the fields ``pool`` (default
    :func:`candidate_fields`), written to ``out`` (default ``WORK/suggest-kK-rREGION[-SCORE]``) once and
    read back after."""
    from semphase.runtime import load_model
    from semphase.runtime.suggest import SuggestOptions, suggest

    if out is None:
        out = work / (f"suggest-k{k}-r{region}" + ("" if score == DEFAULT_SCORE else f"-{score}"))
    document_path = out / "suggest.json"
    if not document_path.exists():
        model = load_model(onnx_path)
        pool = candidate_fields(work) if pool is None else pool
        options = SuggestOptions(n=k, region=region, score=score, order=order)
        suggest(model, pool, [p.stem for p in pool], out, options)
    document = json.loads(document_path.read_text())
    return [(Path(p["micrograph"]).stem, p["y"], p["x"]) for p in document["picks"]]


def random_regions(
    work: Path, k: int, region: int, seed: int, pool: list[Path] | None = None, stream: int = 31
) -> list[tuple[str, int, int]]:
    """``k`` random regions of ``region`` px (32 px aligned), one per field, from ``pool`` (default
    :func:`candidate_fields`); ``stream`` tells independent draws of one seed apart."""
    pool = candidate_fields(work) if pool is None else pool
    rng = np.random.default_rng([seed, stream])
    chosen = rng.permutation(len(pool))[:k]
    h, w = FIELD
    return [
        (
            pool[i].stem,
            int(rng.integers(0, (h - region) // 32 + 1)) * 32,
            int(rng.integers(0, (w - region) // 32 + 1)) * 32,
        )
        for i in chosen
    ]


def pool_folder(work: Path, stem: str) -> Path:
    """The folder of a pool field: the target domain's pool, or the archive stage's native pool."""
    folder = work / "domain" / "pool"
    if (folder / "images" / f"{stem}.png").exists():
        return folder
    return work / "domain" / "pool-native"


def region_items(
    work: Path,
    regions,
    region: int,
    share: float,
    seed: int,
    pretrained: Path,
    cache: Path | None = None,
    first_stroke_seed: int = 0,
) -> list:
    """The regions' micrograph crops, scribbled at ``share`` of their pixels by the simulated :data:`USER`.

    The corrective user corrects the overlay of the checkpoint ``pretrained`` (the model being corrected;
    its whole-field predictions are cached in ``cache``, default the pretrained model's cache). Region j's
    strokes are drawn with seed ``seed * 100 + first_stroke_seed + j``."""
    from semphase.imageio import read_gray

    cache = cache or pretrained_cache(work)
    items = []
    for j, (stem, y, x) in enumerate(regions):
        folder = pool_folder(work, stem)
        window = (slice(y, y + region), slice(x, x + region))
        image = read_gray(folder / "images" / f"{stem}.png")[window]
        truth = read_truth(folder / "masks" / f"{stem}.png")[window]
        prediction = None
        if USER == "corrective":
            prediction = model_prediction(pretrained, folder / "images" / f"{stem}.png", cache)[window]
        stroke_seed = seed * 100 + first_stroke_seed + j
        items.append((image, scribbled(truth, share, stroke_seed, prediction), f"{stem}__y{y}_x{x}"))
    return items


def stage_suggest(
    work: Path, pretrained: Path, seeds: int, k: int, region: int, share: float, scores: list[str]
) -> None:
    """``suggest`` (with each of ``scores``; ``--score`` of suggest) against random picks, per seed."""
    onnx_path = export_fp32(work, pretrained)
    picks = {score: suggested_regions(work, onnx_path, k, region, score) for score in scores}
    for score, regions in picks.items():
        log(f"suggest --score {score} picked {regions}")
    arms = [(suggest_condition(score), picks[score]) for score in scores] + [("random picks", None)]
    for seed in range(seeds):
        for condition, chosen in arms:
            regions = chosen if chosen is not None else random_regions(work, k, region, seed)
            config = {"stage": "suggest", "condition": condition, "regions": k, "region": region,
                      "share": share, "seed": seed, "user": USER}  # fmt: skip
            run_one(
                work, config, region_items(work, regions, region, share, seed, pretrained), "test", pretrained
            )


#: The ``archive`` stage's random regions come from this stream of the seed.
ARCHIVE_STREAM = 41


def archive_pool(work: Path) -> list[Path]:
    """The ``archive`` stage's 16 candidate fields: 8 of the target domain (pool fields 0..7, which the
    ``suggest`` and ``round2`` stages never label) and the 8 source-domain fields of ``pool-native``."""
    return [p for p, _ in fields(work, "pool")][:8] + [p for p, _ in fields(work, "pool-native")]


#: The ``archive`` stage's arms (random last: the others are compared with it).
ARCHIVE_ARMS = ("suggest picks", "suggest picks (phases)", "suggest picks (diverse)", "random picks")
#: suggest's ``--order`` of each suggest arm of the ``archive`` stage.
ARCHIVE_ORDERS = {
    "suggest picks": "score",
    "suggest picks (phases)": "phases",
    "suggest picks (diverse)": "diverse",
}


def stage_archive(
    work: Path,
    pretrained: Path,
    seeds: int,
    k: int,
    region: int,
    share: float,
    arms: tuple[str, ...] = ARCHIVE_ARMS,
    replay: Path | None = None,
) -> None:
    """suggest against random picks on a mixed archive (module docstring), per seed; ``arms`` the arms to
    run, ``replay`` the data the fine-tuning replays (``train --replay``: the pretrained model's data)."""
    pool = archive_pool(work)
    onnx_path = export_fp32(work, pretrained)
    chosen = {}
    for arm in arms:
        if arm in ARCHIVE_ORDERS:  # suggest's picks do not depend on the seed: once per order
            t0 = time.perf_counter()
            order = ARCHIVE_ORDERS[arm]
            suffix = "" if order == "score" else f"-{order}"
            out = work / f"suggest-archive-k{k}-r{region}{suffix}"
            chosen[arm] = suggested_regions(work, onnx_path, k, region, out=out, pool=pool, order=order)
            log(f"archive: suggest --order {order} picked {chosen[arm]} in {time.perf_counter() - t0:.0f} s")
    run_one(work, {"stage": "archive", "condition": "synthetic-only", "seed": 0}, [], "archive", pretrained)
    for seed in range(seeds):
        chosen["random picks"] = random_regions(work, k, region, seed, pool, ARCHIVE_STREAM)
        for condition in arms:
            regions = chosen[condition]
            config = {"stage": "archive", "condition": condition, "regions": k, "region": region,
                      "share": share, "seed": seed, "user": USER}  # fmt: skip
            if replay is not None:
                config["replay"] = str(replay)
            items = region_items(work, regions, region, share, seed, pretrained)
            run_one(work, config, items, "archive", pretrained, extra={"picks": regions})


#: Round 1 of the ``round2`` stage and the two arms of its second round (module docstring).
ROUND1 = "round 1 (random)"
ROUND2_ARMS = ("round 2: suggest", "round 2: random")
#: Round 2's random regions come from this stream of the seed (round 1's, as the ``suggest`` stage's: 31).
ROUND2_STREAM = 37
#: Round 2's stroke seeds start at ``seed * 100 + ROUND2_STROKES`` (round 1's at ``seed * 100``).
ROUND2_STROKES = 50


#: Round 2's candidate fields: ``left`` (the 4 of pool fields 8..15 round 1 left) or ``wide`` (those and
#: pool fields 0..7: 12 fields, so suggest also chooses which fields).
POOLS = ("left", "wide")


#: Round 2's user: ``strokes`` (scribbles over ``--share`` of each region, as round 1) or ``review``
#: (corrects the pre-filled region until every pixel is right: the region's label is its truth).
REVIEWS = ("strokes", "review")


def stage_round2(
    work: Path,
    pretrained: Path,
    seeds: int,
    k: int,
    region: int,
    share: float,
    pool_kind: str = "left",
    user2: str = "strokes",
    order: str = "score",
) -> None:
    """suggest against random picks in the loop's second round (module docstring), per seed.

    Everything of seed s lives in ``WORK/runs/round2/seedS``: ``round1/`` (the round-1 run with its best.pt,
    its FP32 ONNX, suggest's folder and the round-1 model's predictions of the fields corrected in round 2,
    all removed when round 1 is trained again) and one run folder per arm. A seed whose three rows are
    recorded is skipped; a round-1 checkpoint that is missing while a row of the seed is not recorded is
    trained again, and the seed's recorded rows with it (the new rows supersede the old)."""
    done = done_runs(work)
    for seed in range(seeds):
        base = {"stage": "round2", "regions": k, "region": region, "share": share, "seed": seed, "user": USER}
        wide = {"pool": "wide"} if pool_kind == "wide" else {}  # round 1 is the same run either way
        if user2 == "review":
            wide["user2"] = "review"
        configs = [{**base, "condition": ROUND1}] + [{**base, **wide, "condition": c} for c in ROUND2_ARMS]
        if order != "score":  # the random arm is the same run whatever suggest's order
            configs[1]["order"] = order
        if all(key_of(c) in done for c in configs):
            continue
        folder = work / "runs" / "round2" / f"seed{seed}"
        first_dir = folder / "round1"
        checkpoint = first_dir / "run" / "best.pt"
        fresh = not checkpoint.exists()
        first = random_regions(work, k, region, seed)
        first_items = region_items(work, first, region, share, seed, pretrained)
        run_one(
            work, configs[0], first_items, "test", pretrained,
            run_dir=first_dir, keep=True, redo=fresh, extra={"picks": first},
        )  # fmt: skip
        taken = {stem for stem, _, _ in first}
        pool = [p for p in candidate_fields(work) if p.stem not in taken]
        if pool_kind == "wide":
            pool = [p for p, _ in fields(work, "pool")][:8] + pool
        timings_path = first_dir / "timings.json"
        timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
        t0 = time.perf_counter()
        onnx_path = export_fp32(work, checkpoint, first_dir / "onnx")
        t1 = time.perf_counter()
        suffix = "-wide" if pool_kind == "wide" else ""
        ordered = "" if order == "score" else f"-{order}"
        out = first_dir / f"suggest-k{k}-r{region}{suffix}{ordered}"
        picked = suggested_regions(work, onnx_path, k, region, DEFAULT_SCORE, out=out, pool=pool, order=order)
        t2 = time.perf_counter()
        timings.setdefault("export_seconds", t1 - t0)
        timings.setdefault(f"suggest_seconds{suffix}{ordered}", t2 - t1)  # each suggest run, once
        timings_path.write_text(json.dumps(timings) + "\n")
        spent = {
            "export_seconds": timings["export_seconds"],
            "suggest_seconds": timings[f"suggest_seconds{suffix}{ordered}"],
        }
        drawn = random_regions(work, k, region, seed, pool, ROUND2_STREAM)
        log(f"seed {seed}: round 1 {first}; round 2 from {[p.stem for p in pool]}: suggest {picked}, "
            f"random {drawn}")  # fmt: skip
        share2 = 1.0 if user2 == "review" else share  # 1.0: scribble_labels hands back the truth
        for config, regions in zip(configs[1:], (picked, drawn), strict=True):
            items = region_items(
                work, regions, region, share2, seed, checkpoint, first_dir / "prediction", ROUND2_STROKES
            )
            arm = config["condition"].split(": ")[1]
            extra = {"picks": regions, "round1_picks": first, **(spent if arm == "suggest" else {})}
            name = f"{arm}{suffix}" + ("-review" if user2 == "review" else "")
            name += ordered if arm == "suggest" else ""
            run_one(
                work, config, first_items + items, "test", pretrained,
                init=checkpoint, run_dir=folder / name, redo=fresh, extra=extra,
            )  # fmt: skip


# ----------------------------------------------------------------------------------------- report


def stats(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def paired(rows: list[dict], a: dict, b: dict) -> list[tuple[float, float]]:
    """(mIoU of ``a``, mIoU of ``b``) for every seed both configurations ran: conditions compared on the same
    fields and strokes."""

    def by_seed(match: dict) -> dict[int, float]:
        return {
            r["config"]["seed"]: r["miou"]
            for r in rows
            if all(r["config"].get(k) == v for k, v in match.items())
        }

    first, second = by_seed(a), by_seed(b)
    return [(first[s], second[s]) for s in sorted(first) if s in second]


def signed(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:+.3f}" if values else "-"
    return f"{np.mean(values):+.3f} ± {np.std(values, ddof=1):.3f}"


def verdict(differences: list[float]) -> str:
    """Issue 24's criterion on paired differences suggest - random (module docstring, round 2, step 5)."""
    if len(differences) >= 2 and np.mean(differences) > max(0.0, np.std(differences, ddof=1)):
        return "met (the mean paired difference is positive and larger than its spread)"
    return "not shown (the mean paired difference is not larger than its spread)"


def shown(row: dict) -> str:
    """A row's condition as the report shows it: ``..., prior corrected`` for ``train
    --prior-correction`` runs (config ``"prior"``)."""
    prior = row["config"].get("prior")
    return row["config"]["condition"] + (", prior corrected" if prior else "")


def criteria_lines(curve: list[dict], picks: list[dict], second: list[dict] | None = None) -> list[str]:
    """The issue's criteria at the key point, each as a paired comparison over seeds (once per
    ``--prior`` the sparse runs were made with); with ``second`` (the ``round2`` rows) whether suggest
    beats random in the second round."""
    n, share = KEY_POINT
    base = [r["miou"] for r in curve if r["config"]["condition"] == "synthetic-only"]
    lines = []
    priors = sorted({r["config"].get("prior") or "" for r in curve if r["config"].get("share", 1) < 1})
    for prior in priors:
        sparse = {"condition": "pretrained+sparse", "fields": n, "share": share, "prior": prior or None}
        rows = [r for r in curve if all(r["config"].get(k) == v for k, v in sparse.items())]
        pad = "  " if prior else ""
        if prior and rows:
            lines.append(f"- with `train --prior-correction {prior}`:")
        if base and rows:
            gains = [r["miou"] - base[0] for r in rows]
            lines.append(
                f"{pad}- gain over synthetic-only ({n} fields, {100 * share:g} %): {stats(gains)} mIoU"
            )
        dense = paired(curve, sparse, {"condition": "pretrained+dense", "fields": n})
        if dense:
            lines.append(
                f"{pad}- sparse / dense of the same fields: {stats([a / b for a, b in dense])} (per seed)"
            )
        scratch = paired(curve, sparse, {**sparse, "condition": "scratch+sparse"})
        if scratch:
            lines.append(
                f"{pad}- pretrained - scratch at the same strokes: {stats([a - b for a, b in scratch])} mIoU"
            )
        if rows:
            lines.append(
                f"{pad}- fine-tuning wall time: at most {max(r['train_seconds'] for r in rows):.0f} s"
            )
    for condition in sorted({r["config"]["condition"] for r in picks} - {"random picks"}):
        arms = paired(picks, {"condition": condition}, {"condition": "random picks"})
        if arms:
            name = condition.replace(" picks", "")
            differences = [a - b for a, b in arms]
            lines.append(f"- {name} - random picks at the same budget: {stats(differences)} mIoU")
    for pool_kind, user2, order in ROUND2_KINDS:
        rows = pool_rows(second or [], pool_kind, user2, order)
        arms = paired(rows, {"condition": ROUND2_ARMS[0]}, {"condition": ROUND2_ARMS[1]})
        if arms:
            differences = [a - b for a, b in arms]
            where = kind_text(pool_kind, user2, order)
            lines.append(
                f"- second round{where}, suggest - random picks at the same budget: {signed(differences)} "
                f"mIoU ({len(arms)} seed{'s' if len(arms) > 1 else ''}, paired): criterion "
                f"{verdict(differences)}"
            )
    return lines + ([""] if lines else [])


#: The kinds of second round the report tells apart: (candidate pool, round 2's user, suggest's order).
ROUND2_KINDS = tuple(
    (pool, user2, order)
    for user2 in ("strokes", "review")
    for pool in ("left", "wide")
    for order in ("score", "phases")
)


def kind_text(pool_kind: str, user2: str, order: str) -> str:
    return (
        ("" if pool_kind == "left" else " (wide pool)")
        + (", regions reviewed" if user2 == "review" else "")
        + (f", suggest --order {order}" if order != "score" else "")
    )


def pool_rows(second: list[dict], pool_kind: str, user2: str = "strokes", order: str = "score") -> list[dict]:
    """The ``round2`` rows of one kind of second round: candidate pool, round-2 user and suggest's order
    (round 1's rows belong to every kind, the random arm's to every order)."""
    rows = []
    for r in second:
        c = r["config"]
        if c["condition"] == ROUND1 or (
            c.get("pool", "left") == pool_kind
            and c.get("user2", "strokes") == user2
            and (c["condition"] == ROUND2_ARMS[1] or c.get("order", "score") == order)
        ):
            rows.append(r)
    return rows


def second_round_lines(
    second: list[dict],
    picks: list[dict],
    pool_kind: str = "left",
    user2: str = "strokes",
    order: str = "score",
) -> list[str]:
    """The ``round2`` stage's table: per seed and mean ± sd, with the paired differences."""
    second = pool_rows(second, pool_kind, user2, order)
    if not any(r["config"]["condition"] == ROUND2_ARMS[0] for r in second):
        return []
    by = {(r["config"]["condition"], r["config"]["seed"]): r for r in second}
    seeds = sorted({s for c, s in by if c == ROUND1})
    if not seeds:
        return []
    c = second[0]["config"]
    candidates = (
        "the fields round 1 left"
        if pool_kind == "left"
        else "12 candidate fields (the 4 round 1 left and 8 others; one region per field, so suggest "
        "also chooses the fields)"
    )
    corrected = (
        "each reviewed until every pixel is right (its label is its truth)"
        if user2 == "review"
        else f"scribbled over {100 * c['share']:g} % correcting the round-1 model's overlay"
    )
    lines = [
        "### Second round" + kind_text(pool_kind, user2, order),
        "",
        f"Round 1: {c['regions']} random regions of {c['region']} px scribbled over {100 * c['share']:g} % "
        "and `train --init` from the pretrained model; round 2: suggest's picks (with the round-1 model) or "
        f"random picks of as many regions from {candidates}, {corrected}, "
        "and `train --init` from the round-1 checkpoint on both rounds' labels. Test mIoU:",
        "",
        "| seed | round 1 (random) | round 2: suggest | round 2: random | suggest - random "
        "| training s (round 1 / suggest / random) |",
        "|--:|--:|--:|--:|--:|--:|",
    ]
    columns: dict[str, list[float]] = {name: [] for name in (ROUND1, *ROUND2_ARMS, "difference")}
    for seed in seeds:
        rows = [by.get((name, seed)) for name in (ROUND1, *ROUND2_ARMS)]
        cells = []
        for name, r in zip((ROUND1, *ROUND2_ARMS), rows, strict=True):
            cells.append(f"{r['miou']:.3f}" if r else "-")
            if r:
                columns[name].append(r["miou"])
        difference = "-"
        if rows[1] and rows[2]:
            columns["difference"].append(rows[1]["miou"] - rows[2]["miou"])
            difference = f"{columns['difference'][-1]:+.3f}"
        seconds = " / ".join(f"{r['train_seconds']:.0f}" if r else "-" for r in rows)
        lines.append(f"| {seed} | {' | '.join(cells)} | {difference} | {seconds} |")
    lines.append(
        f"| mean ± sd | {stats(columns[ROUND1])} | {stats(columns[ROUND2_ARMS[0]])} | "
        f"{stats(columns[ROUND2_ARMS[1]])} | {signed(columns['difference'])} | |"
    )
    lines.append("")
    if columns["difference"]:
        lines.append(f"- criterion (suggest > random in the second round): {verdict(columns['difference'])}")
    for name in ROUND2_ARMS:
        rs = [by[(name, s)] for s in seeds if (name, s) in by]
        if rs:
            lines.append(
                f"- {name}: Reprecipitate IoU {stats([r['class_iou']['Reprecipitate'] for r in rs])}, "
                f"labelled pixels (both rounds) {np.mean([r['labelled_pixels'] for r in rs]):.0f}"
            )
    firsts = [by[(ROUND1, s)] for s in seeds]
    lines.append(f"- round 1: labelled pixels {np.mean([r['labelled_pixels'] for r in firsts]):.0f}")
    same = {"condition": "random picks", **{k: c[k] for k in ("regions", "region", "share", "user")}}
    again = paired(second + picks, {"condition": ROUND1}, same)
    if again:
        lines.append(
            "- round 1 minus the `suggest` stage's random picks of the same seed (the same run again): "
            + ", ".join(f"{a - b:+.4f}" for a, b in again)
        )
    suggested = [by[(ROUND2_ARMS[0], s)] for s in seeds if (ROUND2_ARMS[0], s) in by]
    if suggested and "export_seconds" in suggested[0]:
        lines.append(
            "- per seed, export of the round-1 model to FP32 ONNX "
            + ", ".join(f"{r['export_seconds']:.0f}" for r in suggested)
            + f" s; suggest over the {'4' if pool_kind == 'left' else '12'} candidate fields "
            + ", ".join(f"{r['suggest_seconds']:.0f}" for r in suggested)
            + " s"
        )
    return lines + [""]


def archive_lines(rows: list[dict], variant: str = "") -> list[str]:
    """The ``archive`` stage's table: per arm, test mIoU on the mixed test set and each half (mean ± sd over
    seeds), the target-domain fields among its picks, and each suggest arm minus random, paired.
    ``variant`` names how these rows were fine-tuned (``--replay``, ``--prior``) in the heading."""
    by = {(r["config"]["condition"], r["config"].get("seed", 0)): r for r in rows}
    arms = [a for a in ARCHIVE_ARMS if any(c == a for c, _ in by)]
    if "random picks" not in arms or len(arms) < 2:
        return []
    c = next(r["config"] for r in rows if r["config"]["condition"] in arms)
    first_native = min(first for first, _ in NATIVE_SETS.values())
    lines = [
        f"### A mixed archive{variant}",
        "",
        f"{c['regions']} regions of {c['region']} px from 16 candidate fields (8 of the target domain, 8 of "
        f"the source domain), one per field, scribbled over {100 * c['share']:g} % correcting the pretrained "
        "model's overlay; `train --init` from the pretrained model. Test mIoU over 24 fields (12 of each "
        "domain) and over each half, mean ± sd over seeds:",
        "",
        "| picks | runs | test mIoU | target half | source half | target-domain fields picked "
        "| minus random, paired per seed |",
        "|:--|--:|--:|--:|--:|--:|--:|",
    ]
    base = by.get(("synthetic-only", 0))
    if base:
        lines.append(
            f"| none (synthetic-only) | 1 | {base['miou']:.3f} | {base['miou_test']:.3f} | "
            f"{base['miou_test_native']:.3f} | | |"
        )
    verdicts = []
    for arm in arms:
        rs = [r for (a, _), r in sorted(by.items()) if a == arm]
        target = [
            sum(int(stem.removeprefix("field")) < first_native for stem, _, _ in r["picks"]) for r in rs
        ]
        difference = ""
        if arm != "random picks":
            pairs = paired(rows, {"condition": arm}, {"condition": "random picks"})
            differences = [a - b for a, b in pairs]
            difference = f"{signed(differences)} ({', '.join(f'{d:+.3f}' for d in differences)})"
            verdicts.append(f"- {arm} > random on the mixed archive: {verdict(differences)}")
        scores = " | ".join(stats([r[key] for r in rs]) for key in ("miou", "miou_test", "miou_test_native"))
        picked = f"{'/'.join(map(str, target))} of {c['regions']}"
        lines.append(f"| {arm} | {len(rs)} | {scores} | {picked} | {difference} |")
    seconds = [r["train_seconds"] for r in rows if r["config"]["condition"] in arms]
    return lines + ["", *verdicts, f"- training {min(seconds):.0f}-{max(seconds):.0f} s per run", ""]


def report(work: Path, out: Path) -> str:
    rows = list(done_runs(work).values())
    lines = []
    recipe = [r for r in rows if r["config"]["stage"] == "recipe"]
    if recipe:
        head = "| recipe (dev set, 4 fields, 2 % strokes, seed 0) | mIoU | Reprecipitate IoU | training s |"
        lines += [head, "|:--|--:|--:|--:|"]
        for r in recipe:
            repre = r["class_iou"]["Reprecipitate"]
            lines.append(
                f"| {r['config']['recipe']} | {r['miou']:.3f} | {repre:.3f} | {r['train_seconds']:.0f} |"
            )
        lines.append("")
    curve = [r for r in rows if r["config"]["stage"] == "curve"]
    if curve:
        head = (
            "| condition | fields | labelled | labelled pixels | runs | test mIoU | Reprecip. IoU "
            "| training s (median) |"
        )
        lines += [head, "|:--|--:|--:|--:|--:|--:|--:|--:|"]
        groups: dict[tuple, list[dict]] = {}
        for r in curve:
            c = r["config"]
            groups.setdefault((shown(r), c.get("fields", 0), c.get("share", 0)), []).append(r)
        for (condition, n, share), rs in sorted(groups.items()):
            share_text = "dense" if share >= 1 else (f"{100 * share:g} %" if share else "-")
            lines.append(
                f"| {condition} | {n or '-'} | {share_text} | "
                f"{np.mean([r['labelled_pixels'] for r in rs]):.0f} | {len(rs)} | "
                f"{stats([r['miou'] for r in rs])} | "
                f"{stats([r['class_iou']['Reprecipitate'] for r in rs])} | "
                f"{np.median([r['train_seconds'] for r in rs]):.0f} |"
            )
        lines.append("")
    picks = [r for r in rows if r["config"]["stage"] == "suggest"]
    second = [r for r in rows if r["config"]["stage"] == "round2"]
    lines += criteria_lines(curve, picks, second)
    if picks:
        lines += [
            "| picks | regions | labelled share | runs | test mIoU | Reprecipitate IoU |",
            "|:--|--:|--:|--:|--:|--:|",
        ]
        groups = {}
        for r in picks:
            groups.setdefault(r["config"]["condition"], []).append(r)
        for condition, rs in sorted(groups.items()):
            c = rs[0]["config"]
            lines.append(
                f"| {condition} | {c['regions']} x {c['region']} px | {100 * c['share']:g} % | {len(rs)} | "
                f"{stats([r['miou'] for r in rs])} | {stats([r['class_iou']['Reprecipitate'] for r in rs])} |"
            )
    parts = [second_round_lines(second, picks, *kind) for kind in ROUND2_KINDS]
    archive = [r for r in rows if r["config"]["stage"] == "archive"]
    base = [r for r in archive if r["config"]["condition"] == "synthetic-only"]

    def variant(row: dict) -> tuple[str, str]:  # how a row was fine-tuned: (--replay, --prior)
        return row["config"].get("replay", ""), row["config"].get("prior", "")

    for replay, prior in sorted({variant(r) for r in archive if r not in base}):
        group = [r for r in archive if variant(r) == (replay, prior)]
        text = (f", `train --replay` ({Path(replay).name})" if replay else "") + (
            f", `--prior-correction {prior}`" if prior else ""
        )
        parts.append(archive_lines(base + group, text))
    for part in parts:
        lines += ["", *part] if part else []
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "few_labels.md").write_text(text)
    (out / "few_labels.json").write_text(json.dumps(rows, indent=1))
    plot(curve, out / "few_labels.png")
    return text


def plot(curve: list[dict], path: Path) -> None:
    if not curve:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    base = [r["miou"] for r in curve if r["config"]["condition"] == "synthetic-only"]
    styles = {
        "pretrained+sparse": "o-",
        "scratch+sparse": "s--",
        "pretrained+dense": "^-",
        "pretrained+sparse, prior corrected": "D",
        "scratch+sparse, prior corrected": "x",
    }
    colours = dict(zip(styles, ("C0", "C1", "C2", "C3", "C4"), strict=True))  # the same in both panels
    for condition, style in styles.items():
        for ax, vary, fixed in ((axes[0], "fields", ("share", 0.02)), (axes[1], "share", ("fields", 4))):
            rs = [r for r in curve if shown(r) == condition]
            if condition == "pretrained+dense":
                rs = [r for r in rs if vary == "fields"]
            else:
                rs = [r for r in rs if r["config"].get(fixed[0]) == fixed[1]]
            xs = sorted({r["config"][vary] for r in rs})
            if not xs:
                continue
            means = [np.mean([r["miou"] for r in rs if r["config"][vary] == x]) for x in xs]
            sds = [np.std([r["miou"] for r in rs if r["config"][vary] == x]) for x in xs]
            plotted = [100 * x for x in xs] if vary == "share" else xs
            colour = colours[condition]
            ax.errorbar(plotted, means, yerr=sds, fmt=style, label=condition, capsize=3, color=colour)
    for ax, title, xlabel in ((axes[0], "strokes over 2 % of each field", "labelled fields"),
                              (axes[1], "4 fields", "labelled share of the pixels (%)")):  # fmt: skip
        if base:
            ax.axhline(base[0], color="grey", linestyle=":", label="synthetic-only")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("held-out mIoU (shifted domain)")
        ax.grid(alpha=0.3)
    axes[1].set_xscale("log")
    axes[0].set_xscale("log", base=2)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    global PRIOR
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "stage",
        choices=("prepare", "recipe", "curve", "signals", "suggest", "round2", "archive", "report"),
    )
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--pretrained", type=Path)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--conditions", default="pretrained+sparse,scratch+sparse,pretrained+dense")
    parser.add_argument("--key-only", action="store_true", help="curve stage: only the key point")
    parser.add_argument("--regions", type=int, default=4)
    parser.add_argument("--region", type=int, default=384)
    parser.add_argument(
        "--share", type=float, default=0.05, help="suggest and round2 stages: scribbled share of a region"
    )
    parser.add_argument(
        "--scores",
        default=DEFAULT_SCORE,
        help="suggest stage: suggest's --score values to compare, comma-separated",
    )
    parser.add_argument(
        "--pool", choices=POOLS, default="left", help="round2 stage: round 2's candidate fields"
    )
    parser.add_argument(
        "--round2-user",
        choices=REVIEWS,
        default="strokes",
        help="round2 stage: strokes over --share of each region, or review (each region corrected fully)",
    )
    parser.add_argument(
        "--order", choices=("score", "phases"), default="score", help="round2 stage: suggest's --order"
    )
    parser.add_argument(
        "--arms", default=",".join(ARCHIVE_ARMS), help="archive stage: the arms to run, comma-separated"
    )
    parser.add_argument(
        "--replay",
        type=Path,
        help="archive stage: train --replay DATA (the pretrained model's training data)",
    )
    parser.add_argument(
        "--prior",
        choices=("auto", "off"),
        default=PRIOR,
        help="train --prior-correction of sparse-label runs",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/few_labels"))
    args = parser.parse_args()
    PRIOR = args.prior
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stage == "prepare":
        prepare(args.work)
    elif args.stage == "report":
        print(report(args.work, args.out))
    else:
        if args.pretrained is None:
            parser.error("--pretrained CHECKPOINT is needed")
        prepare(args.work)
        if args.stage == "recipe":
            stage_recipe(args.work, args.pretrained)
        elif args.stage == "curve":
            stage_curve(args.work, args.pretrained, args.seeds, args.conditions.split(","), args.key_only)
        elif args.stage == "signals":
            stage_signals(args.work, args.pretrained)
        elif args.stage == "archive":
            arms = tuple(args.arms.split(","))
            stage_archive(
                args.work,
                args.pretrained,
                args.seeds,
                args.regions,
                args.region,
                args.share,
                arms,
                args.replay,
            )
        elif args.stage == "round2":
            stage_round2(
                args.work,
                args.pretrained,
                args.seeds,
                args.regions,
                args.region,
                args.share,
                args.pool,
                args.round2_user,
                args.order,
            )
        else:
            stage_suggest(
                args.work, args.pretrained, args.seeds, args.regions, args.region, args.share,
                args.scores.split(","),
            )  # fmt: skip


if __name__ == "__main__":
    main()
