"""The export report: validation gates, the JSON file (``export_report.json``) and its tables."""

from __future__ import annotations

import json
import os
import platform

from semphase.gates import REDUCED_VARIANTS, Gates, fp32_check, variant_checks
from semphase.imageio import write_text_atomic
from semphase.tables import Table

REPORT_FORMAT = "semphase-export-report/2"
VARIANT_ORDER = ("pytorch", "fp32", "fp16", "int8")


def check_gates(variants: dict[str, dict], gates: Gates) -> list[dict]:
    """Evaluate the gates (:mod:`semphase.gates`) for the variants present.

    Parameters
    ----------
    variants : the ``variants`` block of the report: ``argmax_agreement_pct`` (against PyTorch) for FP32,
        ``vs_fp32`` (:func:`semphase.gates.changes_against`) for FP16 and INT8.

    Returns
    -------
    list of ``{"name", "variant", "value", "threshold", "passed", "text"}``, one per applicable check.
    """
    checks = []
    if "fp32" in variants:
        checks.append(fp32_check(variants["fp32"].get("argmax_agreement_pct"), gates))
    for variant in REDUCED_VARIANTS:
        if variant in variants:
            checks += variant_checks(variant, variants[variant].get("vs_fp32") or {}, gates)
    return checks


def machine_description(threads: int) -> dict:
    """CPU model, core count, threads used and library versions, for the report."""
    import onnxruntime as ort

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    import torch

    from semphase.machine import cpu_summary

    return {
        "cpu": cpu,
        "instruction_sets": cpu_summary()["instruction_sets"],
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "providers": ort.get_available_providers(),
    }


def write_report(path: str | os.PathLike, report: dict) -> None:
    """Write the report as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(report, indent=1, allow_nan=False) + "\n")


def _fmt(value, spec: str, empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


def results_tables(report: dict) -> list[Table]:
    """The console tables: file size, parity and latency per variant; held-out metrics and deltas; the
    reduced-precision variants against FP32 (when there are any)."""
    latency = report["latency"]
    rows = [(name, report["variants"][name]) for name in VARIANT_ORDER if name in report["variants"]]
    parity = Table(
        "parity",
        f"Parity with PyTorch on {report['heldout']['images']} held-out images; CPU latency of one "
        f"{latency['tile']}x{latency['tile']} tile ({latency['statistic']}, {latency['threads']} threads)",
        ["variant", "file MB", "max |dlogit|", "mean |dlogit|", "argmax agree %", "ms/tile", "speed-up"],
    )
    for name, row in rows:
        size = row.get("size_bytes")
        parity.rows.append(
            [
                name,
                _fmt(None if size is None else size / 1e6, ".1f"),
                _fmt(row.get("max_abs_diff"), ".2e"),
                _fmt(row.get("mean_abs_diff"), ".2e"),
                _fmt(row.get("argmax_agreement_pct"), ".4f"),
                _fmt(row.get("latency_ms"), ".1f"),
                _fmt(row.get("speedup_vs_fp32"), ".2f"),
            ]
        )
    metrics = Table(
        "metrics",
        "Held-out metrics (mean over images) and change against PyTorch",
        ["variant", "mIoU", "dmIoU", "mDice", "dmDice", "mBF1", "dmBF1"],
    )
    for name, row in rows:
        metrics.rows.append(
            [
                name,
                *(
                    _fmt(row.get(f"{prefix}{key}"), spec)
                    for key in ("miou", "mdice", "mbf1")
                    for prefix, spec in (("", ".4f"), ("delta_", "+.4f"))
                ),
            ]
        )
    changes = Table(
        "changes",
        "Reduced precision against FP32 (the gates: agreement, and changes in either direction)",
        ["variant", "agree with FP32 %", "dmIoU", "largest d class IoU", "largest d fraction pp"],
    )
    for name, row in rows:
        vs = row.get("vs_fp32")
        if not vs:
            continue
        iou_class = vs.get("max_delta_class_iou_class")
        frac_class = vs.get("max_fraction_change_class")
        changes.rows.append(
            [
                name,
                _fmt(vs.get("agreement_pct"), ".4f"),
                _fmt(vs.get("delta_miou"), "+.4f"),
                _fmt(vs.get("max_delta_class_iou"), "+.4f") + (f" {iou_class}" if iou_class else ""),
                _fmt(vs.get("max_fraction_change_pp"), "+.3f") + (f" {frac_class}" if frac_class else ""),
            ]
        )
    return [parity, metrics] + ([changes] if changes.rows else [])
