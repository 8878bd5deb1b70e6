"""The benchmark report's tables as plain text cells, shared by the Markdown and HTML writers.

Each :class:`Table` is a title, column headers, rows of already formatted strings and an optional note;
the writers only lay them out, so both reports always show the same numbers.
"""

from __future__ import annotations

from semphase.tables import Table

#: How variants are named in tables and figures.
DISPLAY_NAMES = {"pytorch": "PyTorch", "fp32": "FP32", "fp16": "FP16", "int8": "INT8"}


__all__ = ["Table", "display_name", "fmt"]


def display_name(variant: str) -> str:
    """``"int8"`` -> ``"INT8"``; unknown names pass through."""
    return DISPLAY_NAMES.get(variant, variant)


def fmt(value: float | None, digits: int = 4) -> str:
    """A number with fixed decimals, ``-`` for missing."""
    return "-" if value is None else f"{value:.{digits}f}"


def pct(value: float | None, digits: int = 3) -> str:
    """A fraction as a percentage, ``-`` for missing."""
    return "-" if value is None else f"{100.0 * value:.{digits}f}%"


def signed(value: float | None, digits: int = 4) -> str:
    """A difference with its sign, ``-`` for missing."""
    return "-" if value is None else f"{value:+.{digits}f}"


def status_cell(row: dict) -> str:
    """``ok``, or ``failed: reason`` / ``skipped: reason``."""
    status = row.get("status", "ok")
    reason = row.get("reason")
    return status if status == "ok" or not reason else f"{status}: {reason}"


def _size_label(row: dict) -> str:
    return f"{row['width']} x {row['height']}"


def _load(machine: dict) -> str:
    """Load averages at start and end: other work on the machine slows every number down."""
    start, end = machine.get("load_average_at_start"), machine.get("load_average")
    if not end:
        return "unknown"
    text = ", ".join(map(str, end))
    return f"{', '.join(map(str, start))} at start; {text} at end" if start else text


def machine_table(report: dict) -> Table:
    """Machine and software the numbers were measured on."""
    m = report["machine"]
    isa = m.get("instruction_sets") or {}

    def yes_no(v: bool | None) -> str:
        return "unknown" if v is None else ("yes" if v else "no")

    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)
    settings = report.get("settings", {})
    rows = [
        ["CPU", str(m.get("cpu") or "unknown")],
        ["Cores", f"{m.get('physical_cores') or '?'} physical, {m.get('logical_cpus') or '?'} logical"],
        ["Memory", "unknown" if m.get("memory_gb") is None else f"{m['memory_gb']} GiB"],
        ["INT8/BF16 instructions", ", ".join(f"{k} {yes_no(v)}" for k, v in isa.items()) or "unknown"],
        ["OS", str(m.get("os"))],
        ["Python", str(m.get("python"))],
        ["Versions", versions],
        [
            "Load average (1, 5, 15 min)",
            ", ".join(map(str, m["load_average"])) if m.get("load_average") else "unknown",
        ],
        ["Threads used", str(settings.get("threads"))],
        [
            "Execution provider",
            f"{settings.get('provider')} (used: {', '.join(settings.get('providers_used') or []) or '-'})",
        ],
    ]
    return Table("machine", "Machine", ["", ""], rows, text_columns=("",))


def variants_table(report: dict) -> Table:
    """Which model files were found and whether they loaded."""
    rows = [
        [display_name(v["variant"]), v.get("file") or "-", fmt(v.get("size_mb"), 2), status_cell(v)]
        for v in report.get("variants", [])
    ]
    return Table("variants", "Models", ["variant", "file", "MB", "status"], rows)


def accuracy_table(report: dict) -> Table:
    """Held-out scores, deltas against the reference and pixel agreement."""
    ref = report.get("settings", {}).get("reference", "fp32")
    has_torch = any(r["variant"] == "pytorch" for r in report.get("accuracy", []))
    headers = ["variant", "mIoU", "mDice", "mBF1", f"Δ mIoU vs {display_name(ref)}", "agreement vs FP32"]
    headers += ["largest Δ class IoU vs FP32", "largest Δ fraction vs FP32 (pp)"]
    if has_torch:
        headers.append("agreement vs PyTorch")
    headers.append("status")
    rows = []
    for r in report.get("accuracy", []):
        delta = r.get(f"delta_vs_{ref}") or {}
        gates = {g["name"].split("_", 1)[1]: g["value"] for g in r.get("gates") or []}
        row = [display_name(r["variant"]), fmt(r.get("miou")), fmt(r.get("mdice")), fmt(r.get("mbf1"))]
        row += [signed(delta.get("miou")), pct(r.get("agreement_vs_fp32"))]
        row += [signed(gates.get("max_delta_class_iou")), signed(gates.get("max_fraction_change_pp"), 3)]
        if has_torch:
            row.append(pct(r.get("agreement_vs_pytorch")))
        rows.append([*row, status_cell(r)])
    data = report.get("data", {})
    note = (
        f"{data.get('selection', '')}; means over images (scoring schema). FP16 and INT8 fail when they miss "
        "a gate against FP32 on this machine (agreement, |Δ mIoU|, largest |Δ class IoU|, largest phase-"
        "fraction change: semphase.gates)."
    )
    return Table("accuracy", "Accuracy on held-out images", headers, rows, note)


def per_class_table(report: dict, metric: str = "iou") -> Table:
    """One metric per class (rows) and variant (columns), with the delta against the reference."""
    classes = report.get("classes", [])
    ref = report.get("settings", {}).get("reference", "fp32")
    ok = [r for r in report.get("accuracy", []) if r.get("summary") is not None]  # gate misses stay shown
    headers = ["class"] + [display_name(r["variant"]) for r in ok]
    headers += [f"Δ {display_name(r['variant'])}" for r in ok if r["variant"] != ref]
    rows = []
    for i, name in enumerate(classes):
        row = [name] + [fmt(r["per_class"][metric][i]) for r in ok]
        for r in ok:
            if r["variant"] != ref:
                delta = (r.get(f"delta_vs_{ref}") or {}).get(metric) or [None] * len(classes)
                row.append(signed(delta[i]))
        rows.append(row)
    label = {"iou": "IoU", "dice": "Dice", "bf1": "BF1"}[metric]
    return Table(f"per_class_{metric}", f"Per-class {label} (held-out)", headers, rows)


def large_image_table(report: dict) -> Table:
    """Tiled segmentation of the large synthetic micrographs scored against their truth."""
    rows_in = report.get("large_image", [])
    has_torch = any(r.get("agreement_vs_pytorch") is not None for r in rows_in)
    headers = ["variant", "size", "mIoU", "mDice", "mBF1", "agreement vs FP32"]
    if has_torch:
        headers.append("agreement vs PyTorch")
    headers.append("status")
    rows = []
    for r in rows_in:
        row = [display_name(r["variant"]), _size_label(r), fmt(r.get("miou")), fmt(r.get("mdice"))]
        row += [fmt(r.get("mbf1")), pct(r.get("agreement_vs_fp32"))]
        if has_torch:
            row.append(pct(r.get("agreement_vs_pytorch")))
        rows.append([*row, status_cell(r)])
    seed = report.get("settings", {}).get("seed")
    note = (
        f"Synthetic micrographs (semphase.data.synth.write_large, seed {seed}), tiled with the models' tile "
        "and overlap; agreement over every pixel."
    )
    return Table("large_image", "Large-image parity against the truth mask", headers, rows, note)


def _backend_of(report: dict, variant: str) -> str:
    """The backend variant ``variant`` ran on (``-`` for the checkpoint and reports from before)."""
    for v in report.get("variants", []):
        if v.get("variant") == variant and v.get("backend"):
            return v["backend"]["name"]
    return "-"


def latency_table(report: dict) -> Table:
    """Per-tile latency at batch 1 and at the default batch."""
    rows = []
    for r in report.get("latency", []):
        rows.append(
            [
                display_name(r["variant"]),
                str(r.get("batch")),
                str(r.get("streams", 1)),
                f"{r.get('tile')} x {r.get('tile')}" if r.get("tile") else "-",
                fmt(r.get("median_ms"), 1),
                fmt(r.get("p95_ms"), 1),
                fmt(r.get("per_tile_ms"), 1),
                fmt(r.get("tiles_per_s"), 2),
                _backend_of(report, r["variant"]),
                status_cell(r),
            ]
        )
    s = report.get("settings", {})
    note = (
        f"median and p95 over {s.get('repeat')} timed runs after {s.get('warmup')} warm-up runs, "
        f"{s.get('threads')} threads; a run is one call per stream at once (each of `batch` tiles, on "
        "threads / streams threads), so ms / tile and tiles / s count every stream's tiles; tiles from a "
        "synthetic micrograph."
    )
    headers = [
        "variant",
        "batch",
        "streams",
        "tile",
        "median ms",
        "p95 ms",
        "ms / tile",
        "tiles / s",
        "backend",
        "status",
    ]
    return Table("latency", "Per-tile latency", headers, rows, note)


def speed_table(report: dict) -> Table:
    """End-to-end tiled segmentation time, throughput and peak memory per variant and size."""
    rows = []
    for r in report.get("speed", []):
        rows.append(
            [
                display_name(r["variant"]),
                _size_label(r),
                fmt(r.get("megapixels"), 1),
                fmt(r.get("seconds"), 2),
                fmt(r.get("mpix_per_s"), 3),
                fmt(r.get("peak_rss_mb"), 0),
                fmt(r.get("load_s"), 2),
                r.get("backend") or _backend_of(report, r["variant"]),
                status_cell(r),
            ]
        )
    s = report.get("settings", {})
    note = (
        f"One child process per row: load the model, read the TIFF, segment it (batch {s.get('batch')}, "
        f"Gaussian blending); seconds = segmentation only (median of {s.get('e2e_repeat')} run(s) after a "
        "one-tile warm-up); peak RSS = the whole child process."
    )
    headers = ["variant", "size", "MP", "seconds", "MP/s", "peak RSS MB", "load s", "backend", "status"]
    return Table("speed", "End-to-end tiled segmentation", headers, rows, note)


def report_tables(report: dict) -> list[Table]:
    """Every table of the report, in reading order."""
    tables = [machine_table(report), variants_table(report), accuracy_table(report)]
    if any(r.get("summary") is not None for r in report.get("accuracy", [])):
        tables += [per_class_table(report, m) for m in ("iou", "dice", "bf1")]
    tables += [large_image_table(report), latency_table(report), speed_table(report)]
    return tables
