"""``quantify``: per-field fractions and features, per-sample statistics, written as CSV and JSON.

One mask is held at a time; what is kept per field is its counts and its feature rows. Outputs (each
written atomically) in the output folder: ``samples.csv`` (one row per sample and phase), ``fields.csv``
(one row per field and phase), ``features.csv`` (one row per feature; optional), ``report.html`` (the
same for a person: tables, field thumbnails and plots in one self-contained page) and ``quantify.json``
(everything, with the settings and versions).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from semphase import __version__
from semphase.errors import InputError, OptionError
from semphase.imageio import ensure_output_folder, read_label, write_text_atomic
from semphase.progress import SILENT, Progress
from semphase.quantify.features import ecd_percentiles, measure_phase
from semphase.quantify.fields import Field, find_fields
from semphase.quantify.report_html import MAX_THUMBNAILS, field_thumbnail, write_report
from semphase.quantify.stats import CONFIDENCE, phase_statistics
from semphase.tables import Table

STANDARDS = "ASTM E562 (statistics of area fractions), ASTM E1245 (automatic image analysis)"
FORMAT = "semphase-quantify/1"


@dataclass
class QuantifyOptions:
    """Settings of a quantification (all recorded in ``quantify.json``)."""

    #: Regular expression on field names whose group ``sample`` (else group 1) names the sample;
    #: None: a results folder's subfolders are the samples.
    group_by: str | None = None
    #: Phases whose features are measured; None: every phase except the one largest over all fields.
    features: list[str] | None = None
    #: Target relative accuracy (%) for the fields-needed estimate.
    target_ra_pct: float = 10.0
    #: Features with fewer pixels are noise: left out, and counted.
    min_feature_px: int = 4
    #: Write features.csv (one row per feature).
    feature_table: bool = True
    #: Class names for bare mask files (segment/watch outputs carry theirs in X.json).
    classes: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if not (0 < self.target_ra_pct <= 100):
            raise OptionError(f"--target-ra must be a percentage in (0, 100], got {self.target_ra_pct}")
        if self.min_feature_px < 1:
            raise OptionError(f"--min-feature-px must be at least 1, got {self.min_feature_px}")


@dataclass
class _FieldResult:
    field: Field
    valid_pixels: int
    counts: np.ndarray
    features: dict  # phase name -> PhaseFeatures
    thumbnail: str | None = None  # a small data: URI for report.html (the first fields of each sample)


def quantify(
    specs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    options: QuantifyOptions | None = None,
    progress: Progress = SILENT,
) -> dict:
    """Quantify every field under ``specs`` by sample and write the outputs to ``out_dir``.

    Returns
    -------
    The ``quantify.json`` document: ``samples`` (per sample: fields, classes, unit, per-phase
    statistics and feature summaries), ``fields``, ``problems`` (fields skipped, with the reason),
    ``settings``, ``outputs``.

    Raises
    ------
    InputError
        no usable field at all, a sample whose fields have different class tables, an unwritable
        output folder. Unreadable or empty fields are skipped and listed in ``problems``.
    """
    options = options or QuantifyOptions()
    options.validate()
    try:
        import scipy.stats  # noqa: F401  (Student's t for the confidence intervals)
    except ImportError:
        raise InputError("semphase quantify needs scipy: pip install 'semphase[quantify]'") from None
    out = ensure_output_folder(out_dir)
    fields, problems = find_fields(specs, options.group_by, options.classes)
    if not fields:
        first = f"; first problem: {problems[0][0]}: {problems[0][1]}" if problems else ""
        raise InputError(f"no segmentation to quantify (X.json + X_mask.png){first}", specs[0])
    _check_class_tables(fields)
    measured = _measure_all(fields, options, problems, progress)
    if not measured:
        raise InputError(
            f"no field could be quantified; first problem: {problems[0][0]}: {problems[0][1]}", specs[0]
        )
    samples = _samples(measured, options)
    document = {
        "format": FORMAT,
        "standards": STANDARDS,
        "semphase_version": __version__,
        "settings": {
            **asdict(options),
            "confidence": CONFIDENCE,
            "connectivity": 8,
            "edge_rule": "features touching the field border count 1/2 in N_A",
        },
        "samples": samples,
        "fields": [_field_row(r) for r in measured],
        "problems": [{"path": p, "problem": reason} for p, reason in problems],
    }
    document["outputs"] = _write(out, document, measured, samples, options)
    return document


def _check_class_tables(fields: list[Field]) -> None:
    by_sample: dict[str, list[Field]] = defaultdict(list)
    for f in fields:
        by_sample[f.sample].append(f)
    for sample, members in by_sample.items():
        tables = {tuple(f.classes) for f in members}
        if len(tables) > 1:
            other = next(f for f in members if f.classes != members[0].classes)
            raise InputError(
                f"sample {sample!r} mixes class tables ({', '.join(members[0].classes)} vs "
                f"{', '.join(other.classes)}); quantify each model's results separately",
                other.mask,
            )


def _measure_all(fields, options, problems, progress) -> list[_FieldResult]:
    largest = _largest_phase(fields) if options.features is None else None
    results = []
    thumbnails: dict[str, int] = defaultdict(int)  # per sample
    progress.start("fields", "fields", len(fields))
    for f in fields:
        progress.say(f.name)
        try:
            labels = read_label(f.mask)
        except InputError as exc:
            problems.append((str(f.mask), exc.reason))
            progress.advance("fields")
            continue
        valid = labels < len(f.classes)
        n_valid = int(valid.sum())
        if n_valid == 0:
            problems.append((str(f.mask), "no analysed pixels (all no-data)"))
            progress.advance("fields")
            continue
        counts = np.bincount(labels[valid].ravel(), minlength=len(f.classes))[: len(f.classes)]
        names = options.features if options.features is not None else [c for c in f.classes if c != largest]
        unknown = [n for n in names if n not in f.classes]
        if unknown:
            raise OptionError(
                f"--features names {', '.join(unknown)}, not a class of {f.mask.name}: {f.classes}"
            )
        features = {
            name: measure_phase(labels, f.classes.index(name), options.min_feature_px, valid)
            for name in names
        }
        thumbnail = None
        if thumbnails[f.sample] < MAX_THUMBNAILS:
            thumbnail = field_thumbnail(f, labels)
            thumbnails[f.sample] += thumbnail is not None
        results.append(_FieldResult(f, n_valid, counts, features, thumbnail))
        progress.advance("fields")
    return results


def _largest_phase(fields: list[Field]) -> str | None:
    """The phase with the most pixels over every field (the matrix, usually): from the counts X.json
    states, so only bare masks are read an extra time."""
    totals: dict[str, int] = defaultdict(int)
    for f in fields:
        counts = f.pixels
        if counts is None:
            try:
                counts = np.bincount(read_label(f.mask).ravel(), minlength=256)
            except InputError:
                continue
        for i, name in enumerate(f.classes):
            totals[name] += int(counts[i])
    return max(totals, key=totals.get) if totals else None


def _scale(pixel_um: float | None) -> tuple[str, float]:
    return ("um", pixel_um) if pixel_um else ("px", 1.0)


def _samples(measured: list[_FieldResult], options: QuantifyOptions) -> dict:
    by_sample: dict[str, list[_FieldResult]] = defaultdict(list)
    for r in measured:
        by_sample[r.field.sample].append(r)
    samples = {}
    for sample, members in sorted(by_sample.items()):
        classes = members[0].field.classes
        sizes = {r.field.pixel_size_um for r in members}
        pixel = next(iter(sizes)) if len(sizes) == 1 else None
        notes = []
        if len(sizes) > 1:
            notes.append(
                f"the fields' pixel sizes differ ({len(sizes)} values): lengths and areas are in pixels"
            )
        elif pixel is None:
            notes.append("no pixel size in the fields' metadata: lengths and areas are in pixels")
        unit, length = _scale(pixel)
        total_valid = sum(r.valid_pixels for r in members)
        phases = {}
        for i, name in enumerate(classes):
            fractions = [r.counts[i] / r.valid_pixels for r in members]
            stats = phase_statistics(fractions, options.target_ra_pct)
            entry = {"id": i, **stats, "analysed_area": total_valid * length**2}
            if name in members[0].features:
                entry["features"] = _feature_summary(members, name, stats["mean"], length)
            phases[name] = entry
        samples[sample] = {
            "fields": [r.field.name for r in members],
            "classes": classes,
            "unit": unit,
            "pixel_size_um": pixel,
            "notes": notes,
            "phases": phases,
        }
    return samples


def _feature_summary(members: list[_FieldResult], name: str, mean_fraction: float, length: float) -> dict:
    per_field = [r.features[name] for r in members]
    ecd = np.array([row["ecd_px"] for f in per_field for row in f.rows]) * length
    areas = np.array([row["area_px"] for f in per_field for row in f.rows], dtype=np.float64) * length**2
    area_total = sum(r.valid_pixels for r in members) * length**2
    intercepts = sum(f.intercepts for f in per_field)
    line = sum(f.line_length for f in per_field) * length
    n_l = intercepts / line if line else 0.0
    hist, edges = np.histogram(ecd, bins=20) if ecd.size else (np.zeros(0, int), np.zeros(0))
    return {
        "count": int(sum(f.count for f in per_field)),
        "touching_border": int(sum(f.touching_border for f in per_field)),
        "too_small": int(sum(f.too_small for f in per_field)),
        "n_a": sum(f.n_a_count for f in per_field) / area_total if area_total else None,
        "n_l": n_l,
        "mean_free_path": (1.0 - mean_fraction) / n_l if n_l > 0 else None,
        "mean_area": float(areas.mean()) if areas.size else None,
        "mean_ecd": float(ecd.mean()) if ecd.size else None,
        **ecd_percentiles(ecd),
        "ecd_histogram": {"counts": hist.tolist(), "edges": edges.tolist()},
    }


def _field_row(r: _FieldResult) -> dict:
    return {
        "sample": r.field.sample,
        "field": r.field.name,
        "mask": str(r.field.mask),
        "pixel_size_um": r.field.pixel_size_um,
        "analysed_pixels": r.valid_pixels,
        "fractions": {name: float(r.counts[i] / r.valid_pixels) for i, name in enumerate(r.field.classes)},
        "features": {
            name: {"count": f.count, "touching_border": f.touching_border, "too_small": f.too_small}
            for name, f in r.features.items()
        },
    }


def _csv(rows: list[dict]) -> str:
    """CSV with the union of the rows' columns in first-seen order (samples in um and in px can meet)."""
    fields: dict[str, None] = {}
    for row in rows:
        fields.update(dict.fromkeys(row))
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(fields), lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def _g(value, digits: int = 6):
    return "" if value is None else (f"{value:.{digits}g}" if isinstance(value, float) else value)


def sample_rows(samples: dict, target_ra_pct: float) -> list[dict]:
    """samples.csv: one row per sample and phase (fractions in %)."""
    rows = []
    for sample, s in samples.items():
        unit = s["unit"]
        for name, p in s["phases"].items():
            feats = p.get("features") or {}
            pct = {k: (None if p[k] is None else 100.0 * p[k]) for k in ("mean", "std", "ci95", "min", "max")}
            rows.append(
                {
                    "sample": sample,
                    "phase": name,
                    "fields": p["n"],
                    "mean_pct": _g(pct["mean"]),
                    "std_pct": _g(pct["std"]),
                    "ci95_pct": _g(pct["ci95"]),
                    "ra_pct": _g(p["ra_pct"]),
                    "target_ra_pct": _g(float(target_ra_pct)),
                    "fields_needed": _g(p["fields_needed"]),
                    "min_pct": _g(pct["min"]),
                    "max_pct": _g(pct["max"]),
                    f"analysed_area_{unit}2": _g(float(p["analysed_area"])),
                    "features": _g(feats.get("count")),
                    f"n_a_per_{unit}2": _g(feats.get("n_a")),
                    f"mean_area_{unit}2": _g(feats.get("mean_area")),
                    f"d10_{unit}": _g(feats.get("d10")),
                    f"d50_{unit}": _g(feats.get("d50")),
                    f"d90_{unit}": _g(feats.get("d90")),
                    f"mean_free_path_{unit}": _g(feats.get("mean_free_path")),
                    "features_too_small": _g(feats.get("too_small")),
                }
            )
    return rows


def _write(out: Path, document: dict, measured: list[_FieldResult], samples: dict, options) -> dict:
    outputs = {"samples": "samples.csv", "fields": "fields.csv", "json": "quantify.json"}
    write_text_atomic(out / outputs["samples"], _csv(sample_rows(samples, options.target_ra_pct)))
    field_rows = []
    for r in measured:
        unit, length = _scale(samples[r.field.sample]["pixel_size_um"])
        for i, name in enumerate(r.field.classes):
            f = r.features.get(name)
            field_rows.append(
                {
                    "sample": r.field.sample,
                    "field": r.field.name,
                    "phase": name,
                    "fraction": _g(float(r.counts[i] / r.valid_pixels)),
                    "pixels": int(r.counts[i]),
                    "analysed_pixels": r.valid_pixels,
                    "pixel_size_um": _g(r.field.pixel_size_um),
                    "features": "" if f is None else f.count,
                    f"n_a_per_{unit}2": "" if f is None else _g(f.n_a_count / (r.valid_pixels * length**2)),
                }
            )
    write_text_atomic(out / outputs["fields"], _csv(field_rows))
    if options.feature_table:
        outputs["features"] = "features.csv"
        write_text_atomic(out / outputs["features"], _csv(_feature_rows(measured, samples)))
    outputs["report"] = "report.html"
    document["outputs"] = outputs
    write_report(out / outputs["report"], document, [r.thumbnail for r in measured])
    write_text_atomic(out / outputs["json"], json.dumps(document, indent=1) + "\n")
    return outputs


def _feature_rows(measured: list[_FieldResult], samples: dict) -> list[dict]:
    rows = []
    for r in measured:
        unit, length = _scale(samples[r.field.sample]["pixel_size_um"])
        for name, f in r.features.items():
            for k, row in enumerate(f.rows, start=1):
                rows.append(
                    {
                        "sample": r.field.sample,
                        "field": r.field.name,
                        "phase": name,
                        "feature": k,
                        f"area_{unit}2": _g(row["area_px"] * length**2),
                        f"ecd_{unit}": _g(row["ecd_px"] * length),
                        f"feret_max_{unit}": _g(row["feret_max_px"] * length),
                        f"feret_min_{unit}": _g(row["feret_min_px"] * length),
                        "aspect_ratio": _g(row["aspect_ratio"]),
                        "roundness": _g(row["roundness"]),
                        "touches_border": int(row["touches_border"]),
                        "x_px": _g(row["centroid_x"]),
                        "y_px": _g(row["centroid_y"]),
                    }
                )
    return rows


def samples_table(document: dict) -> Table:
    """The console's sample table: mean +- 95 % CI and %RA per sample and phase (flagged over target)."""
    target = document["settings"]["target_ra_pct"]
    table = Table(
        "samples",
        f"Area fractions per sample: mean +- 95 % CI over fields (ASTM E562/E1245; target %RA {target:g})",
        ["sample", "phase", "fields", "mean %", "+- CI %", "%RA", "fields for target"],
        text_columns=("sample", "phase"),
    )
    for sample, s in document["samples"].items():
        for name, p in s["phases"].items():
            ra = p["ra_pct"]
            table.rows.append(
                [
                    sample,
                    name,
                    str(p["n"]),
                    f"{100 * p['mean']:.2f}",
                    "-" if p["ci95"] is None else f"{100 * p['ci95']:.2f}",
                    "-" if ra is None else (f"{ra:.1f}" + (" !" if ra > target else "")),
                    "-" if p["fields_needed"] is None else str(p["fields_needed"]),
                ]
            )
    table.notes.append("! : relative accuracy worse than the target; '-' : one field, or a phase absent")
    return table
