"""The export report: validation gates, the JSON file (``export_report.json``) and the console table."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass

from rich import box
from rich.table import Table

from semphase.imageio import write_text_atomic

REPORT_FORMAT = "semphase-export-report/1"
VARIANT_ORDER = ("pytorch", "fp32", "fp16", "int8")


@dataclass(frozen=True)
class Gates:
    """Thresholds an export must meet.

    Attributes
    ----------
    min_fp32_agreement : argmax agreement of FP32 ONNX with PyTorch, percent of held-out pixels.
    min_fp16_agreement : the same for FP16.
    max_int8_miou_drop : largest allowed ``mIoU(FP32) - mIoU(INT8)`` on the held-out images.
    """

    min_fp32_agreement: float = 99.99
    min_fp16_agreement: float = 99.9
    max_int8_miou_drop: float = 0.01

    def __post_init__(self) -> None:
        for name in ("min_fp32_agreement", "min_fp16_agreement"):
            if not 0.0 <= getattr(self, name) <= 100.0:
                raise ValueError(f"{name.replace('_', '-')} must be a percentage in 0..100")
        if not 0.0 <= self.max_int8_miou_drop <= 1.0:
            raise ValueError("max-int8-miou-drop must be in 0..1")


def check_gates(variants: dict[str, dict], gates: Gates) -> list[dict]:
    """Evaluate the gates for the variants present.

    Parameters
    ----------
    variants : the ``variants`` block of the report (``argmax_agreement_pct``, ``miou`` per variant).

    Returns
    -------
    list of ``{"name", "value", "threshold", "passed", "text"}``, one per applicable gate.
    """
    checks = []
    for variant, threshold in (("fp32", gates.min_fp32_agreement), ("fp16", gates.min_fp16_agreement)):
        if variant in variants:
            value = variants[variant]["argmax_agreement_pct"]
            passed = value >= threshold
            checks.append(
                {
                    "name": f"{variant}_argmax_agreement_pct",
                    "value": value,
                    "threshold": threshold,
                    "passed": passed,
                    "text": f"{variant.upper()} argmax agreement {value:.4f}% "
                    f"{'>=' if passed else '<'} {threshold:g}%",
                }
            )
    if "int8" in variants and "fp32" in variants:
        fp32, int8 = variants["fp32"]["miou"], variants["int8"]["miou"]
        if fp32 is not None and int8 is not None:
            drop = fp32 - int8
            passed = drop <= gates.max_int8_miou_drop
            checks.append(
                {
                    "name": "int8_miou_drop",
                    "value": drop,
                    "threshold": gates.max_int8_miou_drop,
                    "passed": passed,
                    "text": f"INT8 mIoU drop {drop:+.4f} vs FP32 {'<=' if passed else '>'} "
                    f"{gates.max_int8_miou_drop:g}",
                }
            )
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

    return {
        "cpu": cpu,
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


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for column in columns:
        table.add_column(column, justify="left" if column == "variant" else "right")
    return table


def results_tables(report: dict) -> list[Table]:
    """Two rich tables: file size, parity and latency per variant; held-out metrics and deltas."""
    latency = report["latency"]
    rows = [(name, report["variants"][name]) for name in VARIANT_ORDER if name in report["variants"]]
    parity = _table(
        f"Parity with PyTorch on {report['heldout']['images']} held-out images; CPU latency of one "
        f"{latency['tile']}x{latency['tile']} tile ({latency['statistic']}, {latency['threads']} threads)",
        ("variant", "file MB", "max |dlogit|", "mean |dlogit|", "argmax agree %", "ms/tile", "speed-up"),
    )
    for name, row in rows:
        size = row.get("size_bytes")
        parity.add_row(
            name,
            _fmt(None if size is None else size / 1e6, ".1f"),
            _fmt(row.get("max_abs_diff"), ".2e"),
            _fmt(row.get("mean_abs_diff"), ".2e"),
            _fmt(row.get("argmax_agreement_pct"), ".4f"),
            _fmt(row.get("latency_ms"), ".1f"),
            _fmt(row.get("speedup_vs_fp32"), ".2f"),
        )
    metrics = _table(
        "Held-out metrics (mean over images) and change against PyTorch",
        ("variant", "mIoU", "dmIoU", "mDice", "dmDice", "mBF1", "dmBF1"),
    )
    for name, row in rows:
        metrics.add_row(
            name,
            *(
                _fmt(row.get(f"{prefix}{key}"), spec)
                for key in ("miou", "mdice", "mbf1")
                for prefix, spec in (("", ".4f"), ("delta_", "+.4f"))
            ),
        )
    return [parity, metrics]
