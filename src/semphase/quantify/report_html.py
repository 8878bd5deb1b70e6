"""``report.html`` of ``semphase quantify``: one self-contained page to look at instead of the CSVs.

Per sample: the E562/E1245 table (mean +- 95 % CI, %RA flagged above the target, fields needed), the
particle table, a strip of field thumbnails (each field's overlay, else its mask in the class colours),
a field-to-field plot of each phase's area fraction with the mean and its confidence band, and each
measured phase's ECD histogram; then the method with every setting, and the fields that were skipped.

Inline CSS, figures as inline SVG written here, thumbnails as small ``data:`` URIs: no script, no
external file, no matplotlib (the base install has none). Every name is escaped.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from semphase.errors import InputError
from semphase.imageio import encode_image, read_raw, write_text_atomic
from semphase.phases import PALETTE
from semphase.quantify.fields import Field

#: Thumbnails shown per sample (the others are counted).
MAX_THUMBNAILS = 24
#: Longest side of a thumbnail in pixels.
THUMBNAIL_PX = 160

_E = html.escape

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 72em;
       color: #222; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { font-size: 1.3em; margin-top: 1.8em;
     border-bottom: 2px solid #dde1e6; padding-bottom: 0.15em; }
h3 { font-size: 1.02em; margin: 1.2em 0 0.4em; color: #333; }
table { border-collapse: collapse; margin: 0.4em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }
th { white-space: normal; vertical-align: bottom; } .wide { overflow-x: auto; }
th.text, td.text { text-align: left; } th { background: #f1f3f5; }
td.over { background: #fde8e8; color: #a0001c; font-weight: 600; }
.swatch { display: inline-block; width: 0.85em; height: 0.85em; border: 1px solid #555;
          vertical-align: -0.1em; margin-right: 0.4em; }
p.note, p.facts { color: #555; font-size: 0.88em; margin: 0.2em 0; }
blockquote { margin: 0.4em 0; padding: 0.3em 0.8em; border-left: 4px solid #e0b000; background: #fff8e1; }
.badge { display: inline-block; padding: 0 0.5em; border-radius: 0.6em; font-size: 0.8em;
         background: #fde8e8; color: #a0001c; font-weight: 600; vertical-align: 0.15em; }
.badge.ok { background: #e6f4ea; color: #1e6b34; }
.plots { display: flex; flex-wrap: wrap; gap: 0.8em; }
.plots svg { border: 1px solid #e3e6ea; background: #fff; }
.strip { display: flex; flex-wrap: wrap; gap: 0.5em; }
figure.thumb { margin: 0; width: 160px; }
figure.thumb img { display: block; max-width: 160px; max-height: 160px; border: 1px solid #ccc; }
figure.thumb figcaption { font-size: 0.78em; color: #444; overflow: hidden; text-overflow: ellipsis;
                          white-space: nowrap; }
.method { max-width: 60em; } ul.toc { padding-left: 1.2em; } code { font-size: 0.95em; }
table.settings td { white-space: normal; text-align: left; }
"""


# ------------------------------------------------------------------------------------------ thumbnails


def _colour(index: int) -> tuple[int, int, int]:
    """The colour of class ``index``: semphase's palette (the default Ni-WC table's colours, in order)."""
    return PALETTE[index % len(PALETTE)]


def _css_rgb(index: int) -> str:
    return "rgb({},{},{})".format(*_colour(index))


def _overlay_of(f: Field) -> Path | None:
    """The overlay that the field's ``X.json`` names, when it exists beside the mask."""
    try:
        document = json.loads((f.mask.parent / f"{f.name}.json").read_text(encoding="utf-8"))
        name = Path(document["outputs"]["overlay"]).name
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = f.mask.with_name(name)
    return path if name and path.is_file() else None


def _shrunk(image: np.ndarray, interpolation: int, enlarge: bool = False) -> np.ndarray:
    """``image`` scaled to :data:`THUMBNAIL_PX` on its longest side (a smaller one only if ``enlarge``)."""
    h, w = image.shape[:2]
    scale = THUMBNAIL_PX / max(h, w)
    if scale == 1 or (scale > 1 and not enlarge):
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=interpolation)


def field_thumbnail(f: Field, labels: np.ndarray) -> str | None:
    """A ``data:`` URI of at most :data:`THUMBNAIL_PX` pixels a side: the field's overlay (JPEG) when its
    ``X.json`` names one that can be read, else ``labels`` (the mask's ids) in the class colours (PNG);
    None when neither can be made. Nothing larger than one decoded image is held."""
    overlay = _overlay_of(f)
    if overlay is not None:
        try:
            image = read_raw(overlay)
            if image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] in (3, 4)):
                small = _shrunk(image if image.ndim == 2 else image[:, :, :3], cv2.INTER_AREA)
                del image
                if small.ndim == 2:
                    small = cv2.cvtColor(small, cv2.COLOR_GRAY2RGB)
                ok, buf = cv2.imencode(
                    ".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 82]
                )
                if ok:
                    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
        except (InputError, cv2.error, ValueError):
            pass  # the mask below still shows the field
    try:
        n = len(f.classes)
        step = max(1, max(labels.shape) // (2 * THUMBNAIL_PX))
        sub = labels[::step, ::step]
        lut = np.zeros((n + 1, 3), np.uint8)  # the last entry: no data, dark grey
        lut[:n] = [_colour(i) for i in range(n)]
        lut[n] = (40, 40, 40)
        rgb = lut[np.where(sub < n, sub, n)]
        png = encode_image(np.ascontiguousarray(_shrunk(rgb, cv2.INTER_NEAREST, enlarge=True)), ".png")
    except (cv2.error, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ----------------------------------------------------------------------------------------- formatting


def _unit(unit: str) -> str:
    return "µm" if unit == "um" else unit


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _num(value: float | None) -> str:
    """Three significant digits; whole numbers with thousands separators from 1000 to 10^9."""
    if value is None:
        return "–"
    if 1000 <= abs(value) < 1e9:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _ticks(lo: float, hi: float, count: int = 4) -> tuple[list[float], float]:
    """Round tick values covering ``lo..hi`` (about ``count`` intervals), and their step."""
    if not hi > lo:
        hi = lo + 1.0
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [k * step for k in range(first, last + 1)], step


def _tick_label(value: float, step: float) -> str:
    """``value`` with as many decimals as ``step`` needs (2.5 -> 1, 0.05 -> 2, 20 -> 0)."""
    decimals = 0
    while decimals < 6 and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1
    return f"{value:.{decimals}f}"


# -------------------------------------------------------------------------------------------- figures

_W, _H = 272, 190
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 10, 30, 34


def _svg(title: str, body: list[str], label: str) -> str:
    return (
        f'<svg width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" role="img" aria-label="{_E(label)}" '
        'font-family="system-ui, sans-serif" font-size="11">'
        f'<text x="{_LEFT}" y="15" font-size="12" font-weight="600" fill="#222">{_E(title)}</text>'
        + "".join(body)
        + "</svg>"
    )


def _y_axis(ticks: list[float], step: float, y_of, unit: str) -> list[str]:
    parts = []
    for t in ticks:
        y = y_of(t)
        parts.append(
            f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e8eaed"/>'
            f'<text x="{_LEFT - 5}" y="{y + 3.5:.1f}" text-anchor="end" fill="#555">'
            f"{_tick_label(t, step)}</text>"
        )
    parts.append(
        f'<text x="11" y="{(_TOP + _H - _BOTTOM) / 2:.0f}" text-anchor="middle" fill="#555" '
        f'transform="rotate(-90 11 {(_TOP + _H - _BOTTOM) / 2:.0f})">{_E(unit)}</text>'
    )
    return parts


def _frame() -> str:
    return (
        f'<line x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{_H - _BOTTOM}" stroke="#888"/>'
        f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{_H - _BOTTOM}" y2="{_H - _BOTTOM}" stroke="#888"/>'
    )


def fraction_plot(
    phase: str, index: int, fields: Sequence[str], fractions: Sequence[float], stats: dict
) -> str:
    """SVG: the phase's area fraction (%) in each field, in field order, with the sample mean and its
    95 % confidence band."""
    values = [100 * v for v in fractions]
    mean = 100 * stats["mean"]
    ci = 100 * stats["ci95"] if stats["ci95"] is not None else 0.0
    lo, hi = min(*values, mean - ci), max(*values, mean + ci)
    pad = (hi - lo) * 0.12 if hi - lo > 1e-4 else max(0.1 * hi, 0.5)  # the same in every field: +- 10 %
    ticks, step = _ticks(max(0.0, lo - pad), min(100.0, hi + pad))
    y0, y1 = ticks[0], ticks[-1]
    bottom, height = _H - _BOTTOM, _H - _BOTTOM - _TOP

    def y_of(v: float) -> float:
        return bottom - (v - y0) / (y1 - y0) * height

    n = len(values)
    width = _W - _LEFT - _RIGHT

    def x_of(i: int) -> float:
        return _LEFT + width * ((i + 0.5) / n)

    colour = _css_rgb(index)
    body = _y_axis(ticks, step, y_of, "area fraction %")
    if ci > 0:
        top, low = y_of(min(y1, mean + ci)), y_of(max(y0, mean - ci))  # the band, within the axes
        body.append(
            f'<rect x="{_LEFT}" y="{top:.1f}" width="{width}" height="{max(0.5, low - top):.1f}" '
            f'fill="{colour}" fill-opacity="0.22">'
            f"<title>95 % CI: {mean - ci:.2f} – {mean + ci:.2f} %</title></rect>"
        )
    body.append(
        f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y_of(mean):.1f}" y2="{y_of(mean):.1f}" stroke="#222" '
        f'stroke-width="1.4" stroke-dasharray="5 3"><title>mean {mean:.2f} %</title></line>'
    )
    body.append(_frame())
    radius = 4.0 if n <= 30 else (3.0 if n <= 80 else 2.0)
    for i, (name, v) in enumerate(zip(fields, values, strict=True)):
        body.append(
            f'<circle cx="{x_of(i):.1f}" cy="{y_of(v):.1f}" r="{radius}" fill="{colour}" stroke="#222" '
            f'stroke-width="0.7"><title>{_E(name)}: {v:.2f} %</title></circle>'
        )
    for i in sorted({0, n - 1}):
        body.append(
            f'<text x="{x_of(i):.1f}" y="{bottom + 13}" text-anchor="middle" fill="#555">{i + 1}</text>'
        )
    body.append(
        f'<text x="{_LEFT + width / 2:.0f}" y="{_H - 5}" text-anchor="middle" fill="#555">'
        f"field (dashed: mean, band: 95 % CI)</text>"
    )
    return _svg(phase, body, f"area fraction of {phase} per field")


def ecd_histogram(phase: str, index: int, features: dict, unit: str) -> str:
    """SVG: the histogram of the phase's equivalent circle diameters, with D10, D50 and D90 marked."""
    counts = features["ecd_histogram"]["counts"]
    edges = features["ecd_histogram"]["edges"]
    title = f"{phase}: {features['count']} particles"
    if not counts:
        body = [
            _frame(),
            f'<text x="{(_LEFT + _W - _RIGHT) / 2}" y="{_H / 2}" text-anchor="middle" fill="#777">'
            "no particles</text>",
        ]
        return _svg(title, body, f"ECD histogram of {phase}: no particles")
    y_ticks, y_step = _ticks(0, max(*counts, 4))  # at least 4: whole-number steps
    x_ticks, x_step = _ticks(edges[0], edges[-1], 5)
    x_ticks = [t for t in x_ticks if edges[0] - 1e-9 <= t <= edges[-1] + 1e-9]
    top_count = y_ticks[-1]
    bottom, height = _H - _BOTTOM, _H - _BOTTOM - _TOP
    width = _W - _LEFT - _RIGHT
    span = (edges[-1] - edges[0]) or 1.0

    def x_of(v: float) -> float:
        return _LEFT + (v - edges[0]) / span * width

    def y_of(c: float) -> float:
        return bottom - c / top_count * height

    body = _y_axis(y_ticks, y_step, y_of, "particles")
    colour = _css_rgb(index)
    for c, a, b in zip(counts, edges[:-1], edges[1:], strict=True):
        if c:
            body.append(
                f'<rect x="{x_of(a):.1f}" y="{y_of(c):.1f}" width="{max(0.5, x_of(b) - x_of(a) - 0.6):.1f}" '
                f'height="{bottom - y_of(c):.1f}" fill="{colour}" stroke="#333" stroke-width="0.5">'
                f"<title>{a:.3g} – {b:.3g} {_E(unit)}: {c}</title></rect>"
            )
    marks = {key: features[key] for key in ("d50", "d10", "d90") if features.get(key) is not None}
    labelled: list[float] = []
    for key, d in marks.items():  # D50 first: it keeps its label when D10 or D90 is too close to it
        x = x_of(d)
        body.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{bottom}" stroke="#222" stroke-width="1" '
            f'stroke-dasharray="{"4 2" if key == "d50" else "1.5 2"}"><title>{key.upper()} = {d:.3g} '
            f"{_E(unit)}</title></line>"
        )
        if all(abs(x - other) >= 20 for other in labelled):
            labelled.append(x)
            at = min(max(x, _LEFT + 9), _W - _RIGHT - 9)  # inside the axes, clear of the tick labels
            body.append(
                f'<text x="{at:.1f}" y="{_TOP - 2}" text-anchor="middle" font-size="9" fill="#333">'
                f"{key.upper()}</text>"
            )
    body.append(_frame())
    for t in x_ticks:
        body.append(
            f'<text x="{x_of(t):.1f}" y="{bottom + 13}" text-anchor="middle" fill="#555">'
            f"{_tick_label(t, x_step)}</text>"
        )
    body.append(
        f'<text x="{_LEFT + width / 2:.0f}" y="{_H - 5}" text-anchor="middle" fill="#555">'
        f"equivalent circle diameter ({_E(unit)})</text>"
    )
    return _svg(title, body, f"ECD histogram of {phase}")


# -------------------------------------------------------------------------------------------- sections


def _swatch(index: int) -> str:
    return f'<span class="swatch" style="background:{_css_rgb(index)}"></span>'


def _stats_table(s: dict, target: float) -> str:
    heads = [
        ("phase", "text"),
        ("fields", ""),
        ("mean ± 95 % CI (%)", ""),
        ("s (%)", ""),
        ("%RA", ""),
        (f"fields for {target:g} % RA", ""),
        ("min – max (%)", ""),
    ]
    rows = []
    for name, p in s["phases"].items():
        ra = p["ra_pct"]
        over = ra is not None and ra > target
        ra_cell = (
            f'<td class="over" title="above the target of {target:g} %">{ra:.1f} ▲</td>'
            if over
            else f"<td>{'–' if ra is None else f'{ra:.1f}'}</td>"
        )
        needed = p["fields_needed"]
        mean = _pct(p["mean"]) + ("" if p["ci95"] is None else f" ± {_pct(p['ci95'])}")
        rows.append(
            f'<tr><td class="text">{_swatch(p["id"])}{_E(name)}</td><td>{p["n"]}</td><td>{mean}</td>'
            f"<td>{_pct(p['std'])}</td>{ra_cell}<td>{'–' if needed is None else needed}</td>"
            f"<td>{_pct(p['min'])} – {_pct(p['max'])}</td></tr>"
        )
    head = "".join(f'<th class="{c}">{_E(h)}</th>' for h, c in heads)
    return (
        f'<div class="wide"><table class="stats"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
        "</table></div>"
        f'<p class="note">Area fractions over the fields of the sample (ASTM E562/E1245). ▲: relative '
        f"accuracy worse than the target of {target:g} %; the fields for the target are estimated from "
        "the observed s. –: one field, or a phase absent.</p>"
    )


def _particle_table(s: dict) -> str:
    unit = _unit(s["unit"])
    heads = [
        "phase",
        "particles",
        "on border",
        "too small",
        f"N_A (per {unit}²)",
        f"mean ECD ({unit})",
        f"ECD D10 / D50 / D90 ({unit})",
        f"mean area ({unit}²)",
        f"mean free path ({unit})",
    ]
    rows = []
    for name, p in s["phases"].items():
        f = p.get("features")
        if f is None:
            continue
        cells = [f["count"], f["touching_border"], f["too_small"]]
        cells += [_num(f.get("n_a")), _num(f.get("mean_ecd"))]
        cells.append(" / ".join(_num(f.get(k)) for k in ("d10", "d50", "d90")))
        cells += [_num(f.get("mean_area")), _num(f.get("mean_free_path"))]
        rows.append(
            f'<tr><td class="text">{_swatch(p["id"])}{_E(name)}</td>'
            + "".join(f"<td>{c}</td>" for c in cells)
            + "</tr>"
        )
    if not rows:
        return ""
    head = "".join(f'<th class="{"text" if i == 0 else ""}">{_E(h)}</th>' for i, h in enumerate(heads))
    return (
        f'<h3>Particles</h3><div class="wide"><table class="particles"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
        '<p class="note">Particles on the border count ½ in N_A; particles smaller than the minimum size '
        "are left out of every number and only counted.</p>"
    )


def _strip(members: list[tuple[dict, str | None]], classes: list[str]) -> str:
    shown = [(row, uri) for row, uri in members if uri][:MAX_THUMBNAILS]
    parts = ['<h3>Fields</h3><div class="strip">']
    for row, uri in shown:
        tip = f"{row['field']}: " + ", ".join(
            f"{name} {_pct(row['fractions'].get(name))} %" for name in classes
        )
        parts.append(
            f'<figure class="thumb"><img src="{uri}" alt="{_E(row["field"])}" title="{_E(tip)}">'
            f'<figcaption title="{_E(tip)}">{_E(row["field"])}</figcaption></figure>'
        )
    parts.append("</div>")
    more = len(members) - len(shown)
    if more:
        parts.append(f'<p class="note">{more} more field{"s" if more != 1 else ""} not shown.</p>')
    if not shown:
        return f'<h3>Fields</h3><p class="note">{len(members)} fields; no thumbnail could be made.</p>'
    return "".join(parts)


def _sample_section(
    k: int, sample: str, s: dict, members: list[tuple[dict, str | None]], target: float
) -> str:
    unit = _unit(s["unit"])
    phases = s["phases"]
    over = [name for name, p in phases.items() if p["ra_pct"] is not None and p["ra_pct"] > target]
    badge = (
        f'<span class="badge">{len(over)} phase{"s" if len(over) != 1 else ""} above {target:g} % RA</span>'
        if over
        else f'<span class="badge ok">every %RA within {target:g} %</span>'
        if len(s["fields"]) > 1
        else ""
    )
    any_phase = next(iter(phases.values()))
    facts = [f"{len(s['fields'])} field{'s' if len(s['fields']) != 1 else ''}"]
    facts.append(f"pixel size {s['pixel_size_um']:g} µm" if s["pixel_size_um"] else "lengths in pixels")
    facts.append(f"analysed area {_num(any_phase['analysed_area'])} {unit}²")
    measured = [name for name, p in phases.items() if "features" in p]
    if measured:
        facts.append("particles measured in " + ", ".join(_E(m) for m in measured))
    parts = [
        f'<section class="sample" id="sample-{k}">',
        f"<h2>Sample {_E(sample)} {badge}</h2>",
        f'<p class="facts">{" · ".join(facts)}</p>',
    ]
    parts += [f"<blockquote>{_E(n)}</blockquote>" for n in s["notes"]]
    parts.append(_stats_table(s, target))
    parts.append(_particle_table(s))
    parts.append(_strip(members, s["classes"]))
    names = [row["field"] for row, _ in members]
    parts.append('<h3>Area fraction per field</h3><div class="plots">')
    for name, p in phases.items():
        fractions = [row["fractions"][name] for row, _ in members]
        parts.append(fraction_plot(name, p["id"], names, fractions, p))
    parts.append("</div>")
    if measured:
        parts.append('<h3>Particle size (equivalent circle diameter)</h3><div class="plots">')
        for name in measured:
            parts.append(ecd_histogram(name, phases[name]["id"], phases[name]["features"], unit))
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


#: What a setting left at None means.
_DEFAULTS = {
    "group_by": "none: each subfolder of a results folder is a sample",
    "features": "every phase except the largest over all fields",
    "classes": "from each field's X.json",
}


def _setting(value, key: str = "") -> str:
    if value is None:
        return _DEFAULTS.get(key, "none")
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) if value else "none"
    return str(value)


def _method(document: dict) -> str:
    st = document.get("settings", {})
    target = st.get("target_ra_pct")
    features = st.get("features")
    confidence = 100 * st.get("confidence", 0.95)
    text = (
        f"Following {_E(document.get('standards', 'ASTM E562, ASTM E1245'))}: a phase's area fraction in a "
        "field is its pixel count over the field's analysed pixels (ids outside the class table are no data "
        "and left out). Per sample and phase: the mean of the per-field fractions, their standard deviation "
        f"s (n − 1 in the denominator), the {confidence:g} % confidence interval ± t·s/√n with Student's t "
        "(0.975 quantile, n − 1 degrees of freedom), the relative accuracy %RA = CI / mean × 100, and the "
        f"number of fields that would reach the target %RA of {_E(_setting(target))} % with the observed s. "
        f"Particles are the {_E(_setting(st.get('connectivity')))}-connected components of "
        + (
            "every phase except the largest one over all fields"
            if features is None
            else "the phases " + _E(", ".join(map(str, features)))
        )
        + f"; components smaller than {_E(_setting(st.get('min_feature_px')))} pixels are noise, left out "
        f"and counted. Edge rule: {_E(_setting(st.get('edge_rule')))}. ECD = √(4A/π); D10, D50 and D90 are "
        "its percentiles over every particle of a sample. N_L counts particle entries along every row and "
        "column; mean free path λ = (1 − A_A) / N_L. Lengths are in µm where every field of a sample "
        "states the same pixel size, otherwise in pixels. Samples are "
        + (
            "the subfolders of the results folders (fields directly in one: a sample named after it)"
            if not st.get("group_by")
            else f"named by --group-by <code>{_E(str(st['group_by']))}</code>"
        )
        + f". semphase {_E(str(document.get('semphase_version', '?')))}, "
        f"{_E(str(document.get('format', '')))}."
    )
    rows = "".join(
        f'<tr><td class="text"><code>{_E(str(k))}</code></td><td>{_E(_setting(v, k))}</td></tr>'
        for k, v in st.items()
    )
    return (
        '<section id="method"><h2>Method</h2>'
        f'<p class="method">{text}</p>'
        f'<table class="settings"><thead><tr><th class="text">setting</th><th class="text">value</th>'
        f"</tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _problems(document: dict) -> str:
    problems = document.get("problems", [])
    if not problems:
        return (
            '<section id="problems"><h2>Problems</h2><p>None: every field found was quantified.</p></section>'
        )
    items = "".join(
        f"<li><code>{_E(str(p['path']))}</code>: {_E(str(p['problem']))} (skipped)</li>" for p in problems
    )
    return (
        f'<section id="problems"><h2>Problems</h2><p>{len(problems)} file'
        f"{'s' if len(problems) != 1 else ''} skipped:</p><ul>{items}</ul></section>"
    )


def render_report(document: dict, thumbnails: Sequence[str | None]) -> str:
    """The whole report as one HTML page.

    Parameters
    ----------
    document : the ``quantify.json`` document (:func:`semphase.quantify.quantify`).
    thumbnails : one ``data:`` URI (or None) per entry of ``document["fields"]``, in that order.
    """
    target = document["settings"]["target_ra_pct"]
    samples = document["samples"]
    by_sample: dict[str, list[tuple[dict, str | None]]] = {name: [] for name in samples}
    for row, uri in zip(document["fields"], thumbnails, strict=True):
        by_sample.setdefault(row["sample"], []).append((row, uri))
    n_fields = len(document["fields"])
    head = [
        "<h1>semphase quantify</h1>",
        f'<p class="facts">{len(samples)} sample{"s" if len(samples) != 1 else ""}, {n_fields} field'
        f"{'s' if n_fields != 1 else ''}; target relative accuracy {target:g} %; "
        f"{len(document.get('problems', []))} skipped · "
        '<a href="#method">method</a> · <a href="#problems">problems</a></p>',
    ]
    if len(samples) > 1:
        items = []
        for k, (name, s) in enumerate(samples.items(), start=1):
            over = sum(p["ra_pct"] is not None and p["ra_pct"] > target for p in s["phases"].values())
            flag = f' <span class="badge">{over} above target</span>' if over else ""
            items.append(f'<li><a href="#sample-{k}">{_E(name)}</a>: {len(s["fields"])} fields{flag}</li>')
        head.append(f'<ul class="toc">{"".join(items)}</ul>')
    body = head + [
        _sample_section(k, name, s, by_sample.get(name, []), target)
        for k, (name, s) in enumerate(samples.items(), start=1)
    ]
    body += [_method(document), _problems(document)]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>semphase quantify</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_report(path: str | os.PathLike, document: dict, thumbnails: Sequence[str | None]) -> None:
    """Write :func:`render_report` to ``path`` atomically."""
    write_text_atomic(path, render_report(document, thumbnails))
