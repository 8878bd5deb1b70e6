"""``report.html``: one self-contained page - tables, and the figures embedded as base64 data URIs.

No external CSS, scripts or images: the file reads the same offline, mailed, or copied to a USB stick.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from semphase.benchmarks.report_md import figure_list
from semphase.benchmarks.tables import Table, report_tables
from semphase.imageio import write_text_atomic

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th.text, td.text { text-align: left; }
th { background: #f1f3f5; }
td.failed { color: #b00020; text-align: left; }
p.note { color: #555; font-size: 0.88em; margin-top: 0; }
pre { background: #f6f8fa; padding: 0.6em; white-space: pre-wrap; overflow-wrap: anywhere; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
"""


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def html_table(table: Table) -> str:
    """One table as an HTML ``<section>`` (title, table with a header row, note)."""
    e = html.escape
    parts = [f'<section id="{e(table.key)}">', f"<h2>{e(table.title)}</h2>"]
    if not table.rows:
        parts.append("<p>(nothing measured)</p>")
    else:
        parts.append(f'<table data-table="{e(table.key)}">')
        align = table.alignments()
        if any(table.headers):
            heads = "".join(
                f'<th class="{"text" if a == "left" else "num"}">{e(h)}</th>'
                for h, a in zip(table.headers, align, strict=True)
            )
            parts.append(f"<thead><tr>{heads}</tr></thead>")
        parts.append("<tbody>")
        for row in table.rows:
            cells = []
            for cell, a in zip(row, align, strict=True):
                css = "text" if a == "left" else "num"
                css += " failed" if cell.startswith(("failed", "skipped")) else ""
                cells.append(f'<td class="{css}">{e(cell)}</td>')
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
    if table.note:
        parts.append(f'<p class="note">{e(table.note)}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def render_html(report: dict, figures_dir: str | os.PathLike) -> str:
    """The whole report as one HTML page; figures are read from ``figures_dir`` and embedded.

    A listed figure that cannot be read is named in the page instead of shown.
    """
    e = html.escape
    body = ["<h1>semphase benchmark</h1>"]
    if report.get("command"):
        body.append(f"<pre>{e(report['command'])}</pre>")
    facts = [
        ("created", report.get("created")),
        ("models", report.get("model_dir")),
        ("PyTorch checkpoint", report.get("checkpoint")),
        ("data", report.get("data", {}).get("selection")),
    ]
    body.append("<ul>" + "".join(f"<li>{e(k)}: {e(str(v))}</li>" for k, v in facts if v) + "</ul>")
    body += [f"<blockquote>{e(n)}</blockquote>" for n in report.get("notes", [])]
    body += [html_table(t) for t in report_tables(report)]
    figures = figure_list(report)
    if figures:
        body.append('<section id="figures"><h2>Figures</h2>')
        for caption, rel in figures:
            try:
                png = (Path(figures_dir) / rel).read_bytes()
            except OSError as exc:
                body.append(
                    f"<p>{e(caption)}: {e(rel)} could not be read ({e(exc.strerror or str(exc))})</p>"
                )
                continue
            body.append(
                f'<figure><img alt="{e(caption)}" src="{data_uri(png)}">'
                f"<figcaption>{e(caption)}</figcaption></figure>"
            )
        body.append("</section>")
    if report.get("figures_skipped"):
        body.append(f'<p class="note">Figures skipped: {e(report["figures_skipped"])}</p>')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>semphase benchmark</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_html(report: dict, path: str | os.PathLike) -> None:
    """Write :func:`render_html` to ``path`` atomically; figures are looked up beside it."""
    write_text_atomic(path, render_html(report, Path(path).parent))
