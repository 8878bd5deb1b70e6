"""``report.md``: the benchmark's tables in GitHub-flavoured Markdown, with links to the PNG figures."""

from __future__ import annotations

import os

from semphase.benchmarks.tables import Table, display_name, report_tables
from semphase.imageio import write_text_atomic


def _escape(cell: str) -> str:
    # A pipe would end the cell; newlines would end the row.
    return " ".join(cell.replace("|", "\\|").split())


def markdown_table(table: Table) -> str:
    """One table as Markdown: ``### title``, the grid, and the note in italics."""
    lines = [f"### {table.title}", ""]
    if not table.rows:
        lines += ["(nothing measured)", ""]
    else:
        lines.append("| " + " | ".join(_escape(h) for h in table.headers) + " |")
        lines.append("|" + "|".join(":---" if a == "left" else "---:" for a in table.alignments()) + "|")
        lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in table.rows]
        lines.append("")
    if table.note:
        lines += [f"_{_escape(table.note)}_", ""]
    return "\n".join(lines)


def figure_list(report: dict) -> list[tuple[str, str]]:
    """(caption, relative PNG path) of every figure the report lists, in reading order."""
    figures = report.get("figures") or {}
    out = []
    if figures.get("throughput"):
        out.append(("Throughput per variant and image size (MP/s)", figures["throughput"]))
    if figures.get("accuracy_deltas"):
        ref = display_name(report.get("settings", {}).get("reference", "fp32"))
        out.append((f"Per-class accuracy differences against {ref}", figures["accuracy_deltas"]))
    for variant, path in (figures.get("confusion") or {}).items():
        out.append((f"Confusion matrix, {display_name(variant)} (held-out images)", path))
    return out


def render_markdown(report: dict) -> str:
    """The whole report as Markdown text."""
    lines = ["# semphase benchmark", ""]
    if report.get("command"):
        lines += ["```", report["command"], "```", ""]
    lines += [
        f"- created: {report.get('created')}",
        f"- models: `{report.get('model_dir')}`",
    ]
    if report.get("checkpoint"):
        lines.append(f"- PyTorch checkpoint: `{report['checkpoint']}`")
    lines.append(f"- data: {report.get('data', {}).get('selection')}")
    lines.append("")
    for note in report.get("notes", []):
        lines.append(f"> {note}")
    if report.get("notes"):
        lines.append("")
    lines += [markdown_table(t) for t in report_tables(report)]
    figures = figure_list(report)
    if figures:
        lines += ["## Figures", ""]
        lines += [f"![{caption}]({path})\n" for caption, path in figures]
    if report.get("figures_skipped"):
        lines += [f"_Figures skipped: {report['figures_skipped']}_", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(report: dict, path: str | os.PathLike) -> None:
    """Write :func:`render_markdown` to ``path`` atomically."""
    write_text_atomic(path, render_markdown(report))
