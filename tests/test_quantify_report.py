"""`semphase quantify`'s report.html: one self-contained page, checked as text and in headless Chromium."""

from __future__ import annotations

import base64
import functools
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from _chromium import chromium, run_chromium
from semphase.imageio import write_image
from semphase.quantify import QuantifyOptions, quantify
from semphase.quantify.report_html import MAX_THUMBNAILS, THUMBNAIL_PX
from test_quantify import CLASSES, field_with_fraction
from test_quantify import write_field as _write_field

HOSTILE_SAMPLE = "<script>alert(1)"
HOSTILE_FIELD = "<img src=x onerror=alert(1)>"


def particles(n: int, seed: int, size: int = 120) -> np.ndarray:
    """Matrix with ``n`` Carbide discs of random size and a fixed Void square."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((size, size), np.uint8)
    mask[:12, :12] = 2
    for _ in range(n):
        x, y = (int(v) for v in rng.integers(16, size - 8, 2))
        cv2.circle(mask, (x, y), int(rng.integers(2, 7)), 1, -1)
    return mask


def add_overlay(folder: Path, name: str, shape=(300, 200)) -> None:
    """An X_overlay.png beside the field, named in its X.json as `semphase segment` does."""
    rgb = np.zeros((*shape, 3), np.uint8)
    rgb[..., 1] = 200  # green: not a class colour of the mask rendering
    write_image(folder / f"{name}_overlay.png", rgb)
    document = json.loads((folder / f"{name}.json").read_text())
    document["outputs"]["overlay"] = str(folder / f"{name}_overlay.png")
    (folder / f"{name}.json").write_text(json.dumps(document))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("quantify-report")
    results = root / "results"
    # one pixel size everywhere: samples.csv cannot yet hold samples in um and in px together
    write_field = functools.partial(_write_field, pixel_size_um=0.25)
    for i, n in enumerate([4, 12, 22, 8]):  # Carbide varies a lot between fields: %RA above target
        write_field(results / "varied", f"v{i}", particles(n, seed=i))
    add_overlay(results / "varied", "v0")
    for i, v in enumerate([0.200, 0.201, 0.199]):  # nearly the same in every field: within target
        write_field(results / "steady", f"s{i}", field_with_fraction(v))
    write_field(results / HOSTILE_SAMPLE, HOSTILE_FIELD, field_with_fraction(0.1))
    write_field(results / HOSTILE_SAMPLE, "plain", field_with_fraction(0.2))
    for i in range(MAX_THUMBNAILS + 2):
        write_field(results / "many", f"m{i:02d}", field_with_fraction(0.1 + 0.005 * i, shape=(40, 40)))
    write_field(results / "steady", "broken", field_with_fraction(0.2))
    (results / "steady" / "broken_mask.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = root / "q"
    doc = quantify([results], out, QuantifyOptions(features=["Carbide"]))
    return {"doc": doc, "out": out, "page": (out / "report.html").read_text(encoding="utf-8")}


def sections(page: str) -> dict[str, str]:
    """The HTML of each sample's section, by the (escaped) name in its heading."""
    found = {}
    for part in page.split('<section class="sample"')[1:]:
        name = re.search(r"<h2>Sample (.*?) <span", part).group(1)
        found[name] = part.split("</section>")[0]
    return found


def test_the_report_is_written_beside_the_other_outputs_and_listed(report):
    assert report["doc"]["outputs"]["report"] == "report.html"
    written = json.loads((report["out"] / "quantify.json").read_text())
    assert written["outputs"]["report"] == "report.html"
    assert not list(report["out"].glob(".*"))  # written atomically: no temporary left


def test_the_report_is_self_contained(report):
    page = report["page"]
    for external in ("http://", "https://", "<script", "<link", "<iframe", "url(", "@import"):
        assert external not in page, external
    sources = re.findall(r'\ssrc="([^"]*)"', page)
    assert sources and all(
        s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in sources
    )
    assert all(h.startswith("#") for h in re.findall(r'\shref="([^"]*)"', page))


def test_every_sample_and_phase_is_named_with_its_mean_ci_and_ra(report):
    doc, found = report["doc"], sections(report["page"])
    assert set(found) == {"varied", "steady", "many", "&lt;script&gt;alert(1)"}
    for sample, s in doc["samples"].items():
        html = found[sample.replace("<", "&lt;").replace(">", "&gt;")]
        for phase, p in s["phases"].items():
            assert f"{phase}</td>" in html
            mean = f"{100 * p['mean']:.2f}" + ("" if p["ci95"] is None else f" ± {100 * p['ci95']:.2f}")
            assert f"<td>{mean}</td>" in html, (sample, phase, mean)
            if p["ra_pct"] is not None:
                assert f"{p['ra_pct']:.1f}" in html


def test_a_relative_accuracy_above_target_is_flagged_and_only_that(report):
    doc, found = report["doc"], sections(report["page"])
    varied = doc["samples"]["varied"]["phases"]["Carbide"]
    assert varied["ra_pct"] > 10
    assert (
        f'<td class="over" title="above the target of 10 %">{varied["ra_pct"]:.1f} ▲</td>' in found["varied"]
    )
    assert all(p["ra_pct"] <= 10 for p in doc["samples"]["steady"]["phases"].values())
    assert 'class="over"' not in found["steady"] and "every %RA within 10 %" in found["steady"]


def test_hostile_sample_and_field_names_are_text(report):
    page = report["page"]
    assert HOSTILE_SAMPLE not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def _decoded(uri: str) -> np.ndarray:
    data = np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8)
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def test_thumbnails_show_the_overlay_else_the_mask_and_are_bounded(report):
    found = sections(report["page"])
    varied = re.findall(r'<img src="([^"]*)" alt="([^"]*)"', found["varied"])
    assert [alt for _, alt in varied] == ["v0", "v1", "v2", "v3"]
    overlay = _decoded(varied[0][0])
    assert varied[0][0].startswith("data:image/jpeg") and overlay.shape[:2] == (THUMBNAIL_PX, 107)
    assert abs(int(overlay[..., 1].mean()) - 200) < 8  # the overlay's own pixels (green)
    mask = _decoded(varied[1][0])
    assert varied[1][0].startswith("data:image/png") and mask.shape[:2] == (THUMBNAIL_PX,) * 2
    bgr = {tuple(int(c) for c in px) for px in mask.reshape(-1, 3)}
    assert bgr == {(164, 101, 52), (41, 41, 239), (79, 233, 252)}  # Matrix, Carbide, Void colours
    many = re.findall(r'<img src="', found["many"])
    assert len(many) == MAX_THUMBNAILS and "2 more fields not shown." in found["many"]


def test_histograms_and_fraction_plots_are_inline_svg(report):
    doc, found = report["doc"], sections(report["page"])
    html = found["varied"]
    assert html.count("<svg") == len(CLASSES) + 1  # a fraction plot per phase, one ECD histogram
    histogram = re.search(r'<svg[^>]*aria-label="ECD histogram of Carbide".*?</svg>', html).group(0)
    counts = doc["samples"]["varied"]["phases"]["Carbide"]["features"]["ecd_histogram"]["counts"]
    assert histogram.count("<rect") == sum(c > 0 for c in counts) and "D50" in histogram
    plot = re.search(r'<svg[^>]*aria-label="area fraction of Carbide per field".*?</svg>', html).group(0)
    assert plot.count("<circle") == 4 and "95 % CI" in plot


def test_method_names_the_standards_and_every_setting_and_problems_list_skipped_fields(report):
    page, doc = report["page"], report["doc"]
    method = page.split('<section id="method">')[1].split("</section>")[0]
    assert "ASTM E562" in method and "ASTM E1245" in method and "Student's t" in method
    for key in doc["settings"]:
        assert f"<code>{key}</code>" in method
    assert "8-connected" in method and "smaller than 4 pixels" in method and "target %RA of 10 %" in method
    assert f"semphase {doc['semphase_version']}" in method
    problems = page.split('<section id="problems">')[1].split("</section>")[0]
    assert "broken_mask.png" in problems and "(skipped)" in problems


# ------------------------------------------------------------------------------------- real browser


class _Dom(HTMLParser):
    """What the browser built: images, SVG figures, and the text of the %RA cells flagged over target."""

    def __init__(self):
        super().__init__()
        self.images, self.svgs, self.flagged, self._in_flag = [], [], [], False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "svg":
            self.svgs.append(a.get("aria-label", ""))
        elif tag == "td" and a.get("class") == "over":
            self._in_flag = True
            self.flagged.append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self._in_flag = False

    def handle_data(self, data):
        if self._in_flag:
            self.flagged[-1] += data


@pytest.mark.skipif(chromium() is None, reason="no chromium binary on PATH (apt-get install chromium)")
def test_the_report_renders_offline_in_headless_chromium(report, tmp_path):
    page = report["out"] / "report.html"
    done = run_chromium(page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = _Dom()
    dom.feed(done.stdout)
    doc = report["doc"]
    assert len(dom.images) == 4 + 3 + 2 + MAX_THUMBNAILS and all(
        s.startswith("data:image/") for s in dom.images
    )
    assert dom.svgs.count("ECD histogram of Carbide") == len(doc["samples"])
    assert sum(label.startswith("area fraction of") for label in dom.svgs) == len(doc["samples"]) * len(
        CLASSES
    )
    over = [
        f"{p['ra_pct']:.1f} ▲"
        for s in doc["samples"].values()
        for p in s["phases"].values()
        if p["ra_pct"] is not None and p["ra_pct"] > 10
    ]
    assert over and dom.flagged == over
    shot = tmp_path / "report.png"
    done = run_chromium(page, "--window-size=1280,1600", f"--screenshot={shot}")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    image = cv2.imread(str(shot))
    assert image.shape[1] == 1280
    flag = np.all(image == (232, 232, 253), axis=-1)  # the %RA flag's background (#fde8e8, BGR)
    carbide = np.all(np.abs(image.astype(int) - (41, 41, 239)) <= 2, axis=-1)  # swatches, plots, masks
    assert flag.sum() > 100 and carbide.sum() > 500
