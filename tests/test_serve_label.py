"""The label view of `semphase serve --project DIR`: strokes, the project folder, the HTTP API, the page.

Strokes are checked against an independent rasterization (exact rational arithmetic near the brush's
edge); the project against what `semphase train` reads; the page in headless Chromium with real mouse and
key events: what a person paints is what lands in masks/, undo takes it back, two pages saving the same
micrograph merge.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from _runtime_models import micrograph, model_with_reference
from semphase.data.labels import read_labels, write_colour_labels
from semphase.data.layout import load_pair, open_dataset
from semphase.errors import InputError
from semphase.imageio import encode_image, write_image
from semphase.phases import IGNORE, ClassTable
from semphase.serve.project import Conflict, NotFound, Project, Rejected, safe_stem
from semphase.serve.strokes import Stroke, StrokeError, apply_strokes, parse_strokes

TABLE = ClassTable.from_dict(
    {
        "classes": [
            {"name": "Matrix", "color": [52, 101, 164]},
            {"name": "Carbide", "color": [239, 41, 41]},
            {"name": "Void", "color": [252, 233, 79]},
            {"name": "Reprecipitate", "color": [78, 154, 6]},
            {"name": "Dilution", "color": [173, 127, 168]},
        ]
    }
)


# ------------------------------------------------------------------------------------ the oracle


def covered_exactly(points: list[tuple[float, float]], radius: float, shape: tuple[int, int]) -> np.ndarray:
    """Pixels whose centre is within ``radius`` of the polyline, by brute force over every pixel (centres
    within 1e-6 of the edge decided again in exact rational arithmetic), and the pixel under each point."""
    h, w = shape
    cy, cx = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    pts = np.asarray(points, np.float64)
    pairs = [(pts[0], pts[0])] if len(pts) == 1 else list(zip(pts[:-1], pts[1:], strict=True))
    best = np.full(shape, np.inf)
    for a, b in pairs:
        d = b - a
        n = float(d @ d)
        t = np.zeros(shape) if n == 0 else np.clip(((cx - a[0]) * d[0] + (cy - a[1]) * d[1]) / n, 0, 1)
        best = np.minimum(best, (cx - a[0] - t * d[0]) ** 2 + (cy - a[1] - t * d[1]) ** 2)
    r2 = radius * radius
    inside = best <= r2
    for y, x in zip(*np.nonzero(np.abs(best - r2) < 1e-6), strict=True):  # on the edge: decide exactly
        inside[y, x] = (
            _exact_distance2(points, Fraction(2 * x + 1, 2), Fraction(2 * y + 1, 2))
            <= Fraction(str(radius)) ** 2
        )
    for x, y in points:
        if 0 <= x < w and 0 <= y < h:
            inside[int(np.floor(y)), int(np.floor(x))] = True
    return inside


def _exact_distance2(points, px: Fraction, py: Fraction) -> Fraction:
    pts = [(Fraction(str(x)), Fraction(str(y))) for x, y in points]
    pairs = [(pts[0], pts[0])] if len(pts) == 1 else list(zip(pts[:-1], pts[1:], strict=True))
    best = None
    for (ax, ay), (bx, by) in pairs:
        dx, dy = bx - ax, by - ay
        n = dx * dx + dy * dy
        t = (
            Fraction(0)
            if n == 0
            else min(Fraction(1), max(Fraction(0), ((px - ax) * dx + (py - ay) * dy) / n))
        )
        ex, ey = px - ax - t * dx, py - ay - t * dy
        d = ex * ex + ey * ey
        best = d if best is None or d < best else best
    return best


def _stroke(points, radius, tool="paint", cls=1) -> Stroke:
    return Stroke(
        tool=tool, radius=radius, points=np.asarray(points, np.float64), cls=cls if tool == "paint" else None
    )


# --------------------------------------------------------------------------------------- strokes


@pytest.mark.parametrize(
    "points,radius",
    [
        ([(10.0, 10.0)], 3.0),  # a click, centres exactly on the edge included
        ([(5.5, 7.5), (30.0, 7.5)], 2.0),  # horizontal, on pixel centres
        ([(3.25, 40.75), (20.5, 12.0), (44.0, 30.5), (44.0, 30.5)], 4.5),  # a bend, a repeated point
        ([(-5.0, -5.0), (8.0, 9.0)], 6.0),  # starts outside the image
        ([(12.0, 12.0), (12.01, 12.0)], 0.5),  # a half-pixel pencil
    ],
)
def test_a_stroke_covers_exactly_the_pixels_within_its_radius(points, radius):
    labels = np.full((48, 52), IGNORE, np.uint8)
    changed = apply_strokes(labels, [_stroke(points, radius, cls=2)])
    expected = covered_exactly(points, radius, labels.shape)
    assert np.array_equal(labels == 2, expected)
    assert changed == int(expected.sum()) > 0
    assert set(np.unique(labels)) <= {2, IGNORE}


def test_strokes_apply_in_order_erase_unlabels_and_accept_takes_the_prediction():
    labels = np.full((40, 40), IGNORE, np.uint8)
    prediction = np.zeros((40, 40), np.uint8)
    prediction[:, 20:] = 3
    prediction[:5] = IGNORE  # the data bar: no phase there
    strokes = [
        _stroke([(5, 20), (35, 20)], 4, cls=1),
        _stroke([(20, 20)], 3, tool="erase"),
        _stroke([(30, 2), (30, 30)], 2, tool="accept"),
    ]
    apply_strokes(labels, strokes, prediction)
    first = covered_exactly([(5, 20), (35, 20)], 4, labels.shape)
    erased = covered_exactly([(20, 20)], 3, labels.shape)
    accepted = covered_exactly([(30, 2), (30, 30)], 2, labels.shape)
    expected = np.full((40, 40), IGNORE, np.uint8)
    expected[first] = 1
    expected[erased] = IGNORE
    expected[accepted] = prediction[accepted]
    assert np.array_equal(labels, expected)
    assert (labels == 3).any() and (labels == 1).any()
    with pytest.raises(StrokeError, match="accept"):
        apply_strokes(labels, [_stroke([(1, 1)], 2, tool="accept")], None)


@pytest.mark.parametrize(
    "items,message",
    [
        ("x", "must be a list"),
        ([{"tool": "fill", "radius": 2, "points": [[1, 1]]}], "unknown tool"),
        ([{"tool": "paint", "class": 5, "radius": 2, "points": [[1, 1]]}], "class 5 is not a class"),
        ([{"tool": "paint", "class": True, "radius": 2, "points": [[1, 1]]}], "is not a class"),
        ([{"tool": "erase", "radius": 0.1, "points": [[1, 1]]}], "radius 0.1 outside"),
        ([{"tool": "erase", "radius": "big", "points": [[1, 1]]}], "radius must be a number"),
        ([{"tool": "erase", "radius": 2, "points": []}], "non-empty"),
        ([{"tool": "erase", "radius": 2, "points": [[1, "a"]]}], "points must be"),
        ([{"tool": "erase", "radius": 2, "points": [[1, float("nan")]]}], "finite"),
        ([{"tool": "erase", "radius": 2, "points": [[1, 2, 3]]}], "points must be"),
    ],
)
def test_a_bad_stroke_is_one_line_naming_it(items, message):
    with pytest.raises(StrokeError, match=message) as caught:
        parse_strokes(items, 5)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------- project


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "images").mkdir(parents=True)
    write_image(root / "images" / "field 1.png", micrograph(60, 80, seed=1))
    p = Project(root, TABLE)
    yield p
    p.close()


def test_saves_are_versions_and_two_pages_merge_their_strokes(project):
    name = "field 1"
    a = [_stroke([(10, 10), (40, 10)], 3, cls=1)]
    b = [_stroke([(30, 5), (30, 40)], 2, cls=3)]
    first = project.save_strokes(name, 0, a)
    assert (first.version, first.merged_with, first.message) == (1, (), "saved as version 1")
    second = project.save_strokes(name, 0, b)  # made on version 0 by another page
    assert second.version == 2 and second.merged_with == (1,) and "merged" in second.message
    labels = read_labels(project.root / "masks" / f"{name}.png", TABLE)
    expected = np.full((60, 80), IGNORE, np.uint8)
    expected[covered_exactly([(10, 10), (40, 10)], 3, (60, 80))] = 1
    expected[covered_exactly([(30, 5), (30, 40)], 2, (60, 80))] = 3  # the later save wins the overlap
    assert np.array_equal(labels, expected)
    assert project.versions(name) == [1, 2]
    log = [
        json.loads(line)
        for line in (project.root / ".semphase/labels" / name / "log.jsonl").read_text().splitlines()
    ]
    assert [(r["version"], r["base"], r["source"]) for r in log] == [(1, 0, "strokes"), (2, 0, "strokes")]
    # nothing lost: version 1 restored is a new version with version 1's labels
    restored = project.restore(name, 1)
    assert restored.version == 3
    assert np.array_equal(
        project.labels(name)[0], read_labels(project.root / ".semphase/labels" / name / "v000001.png", TABLE)
    )
    with pytest.raises(Conflict, match="does not exist"):
        project.save_strokes(name, 7, a)
    unchanged = project.save_strokes(name, 3, a)
    assert unchanged.version == 3 and unchanged.changed == 0 and project.versions(name) == [1, 2, 3]


def test_the_project_is_a_training_set_at_every_save(project):
    project.save_strokes("field 1", 0, [_stroke([(10, 10), (40, 30)], 4, cls=4)])
    dataset = open_dataset(project.root)
    assert [s.name for s in dataset.samples] == ["field 1.png"]
    _, labels = load_pair(dataset.samples[0], TABLE)
    assert np.array_equal(labels, project.labels("field 1")[0])
    assert set(np.unique(labels)) == {4, IGNORE}


def test_a_whole_label_image_is_checked_and_never_merged(project, tmp_path):
    name = "field 1"
    good = np.full((60, 80), IGNORE, np.uint8)
    good[5:9, 5:9] = 2
    png = encode_image(
        np.where(good == IGNORE, 255, good + 1).astype(np.uint8), ".png"
    )  # index mask, raw 1..5
    assert project.put_labels(name, png, base=0).version == 1
    assert np.array_equal(project.labels(name)[0], good)
    wrong_size = encode_image(np.full((61, 80), 255, np.uint8), ".png")
    with pytest.raises(Rejected, match="61 x 80|80 x 61"):
        project.put_labels(name, wrong_size, base=1)
    unknown = good.copy()
    unknown[0, 0] = 9
    with pytest.raises(Rejected, match="values 10 are no class"):
        project.put_labels(
            name, encode_image(np.where(unknown == IGNORE, 255, unknown + 1).astype(np.uint8), ".png"), base=1
        )
    colour = np.zeros((60, 80, 4), np.uint8)
    colour[0, 0] = (1, 2, 3, 255)
    with pytest.raises(Rejected, match=r"colour \(1, 2, 3\)"):
        project.put_labels(name, encode_image(colour, ".png"), base=1)
    with pytest.raises(Rejected, match="PNG or TIFF"):
        project.put_labels(name, b"GIF89a....", base=1)
    assert project.versions(name) == [1]  # nothing changed by the refusals
    with pytest.raises(Conflict, match="cannot be merged"):
        project.put_labels(name, png, base=0)
    empty = encode_image(np.full((60, 80), 255, np.uint8), ".png")
    assert project.put_labels(name, empty, base=0, force=True).version == 2


def test_labels_edited_outside_become_a_version_and_a_lost_mask_comes_back(project):
    name = "field 1"
    project.save_strokes(name, 0, [_stroke([(10, 10)], 3, cls=1)])
    mask = project.root / "masks" / f"{name}.png"
    outside = project.labels(name)[0]
    outside[50:55, 60:70] = 0  # painted in GIMP
    write_colour_labels(mask, outside, TABLE)
    assert project.current_version(name) == 2
    assert project.history(name)[0]["source"] == "found on disk"
    assert np.array_equal(project.labels(name)[0], outside)
    mask.unlink()  # deleted (or a crash between the version's write and the mask's)
    assert project.current_version(name) == 2 and mask.exists()
    assert np.array_equal(read_labels(mask, TABLE), outside)


def test_names_from_a_client_never_reach_the_filesystem(project, tmp_path):
    for name in ("../images/field 1", "/etc/passwd", "field 1/..", "field 1.png", "", "..", "masks/field 1"):
        with pytest.raises(NotFound):
            project.entry(name)
    assert safe_stem("../../etc/passwd.png") == "passwd"
    assert safe_stem("C:\\Users\\x\\field [3] 5kx.tif") == "field_3_5kx"
    assert safe_stem("...") == "micrograph" and safe_stem(".hidden.png") == "hidden"
    upload = tmp_path / "upload.png"
    write_image(upload, micrograph(20, 30, seed=2))
    entry = project.add(upload, "../../field 1.png", ".png")
    assert entry.name == "field_1" and entry.path.parent == project.root / "images"
    again = project.add(upload, "field_1.png", ".png")
    assert again.name == "field_1-2" and upload.exists()  # never replaces, never moves the original


def test_one_server_per_project(project):
    with pytest.raises(InputError, match="another semphase serve uses this project"):
        Project(project.root, TABLE)


# ------------------------------------------------------------------------------------------ HTTP

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi", reason="the serve extra is not installed")

from _serve_server import Server  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return model_with_reference(tmp_path_factory.mktemp("model"), "model", variant="fp32")


def _project_folder(root: Path, size=(300, 340)) -> Path:
    (root / "images").mkdir(parents=True)
    write_image(root / "images" / "field A.png", micrograph(*size, seed=4))
    return root


def test_the_label_api_over_http(model, tmp_path):
    root = _project_folder(tmp_path / "project", size=(600, 700))
    s = Server(model, "--project", str(root))
    try:
        listing = httpx.get(s.url + "/project").json()
        assert [i["name"] for i in listing["images"]] == ["field A"] and listing["classes"][1] == "Carbide"
        image = httpx.get(s.url + "/project/images/field%20A").json()
        assert (image["width"], image["height"], image["levels"], image["version"]) == (700, 600, 3, 0)
        assert httpx.get(s.url + "/project/images/field%20A/tiles/prediction/0/0/0.png").status_code == 409
        r = httpx.post(s.url + "/project/images/field%20A/predict", timeout=120)
        assert r.status_code == 200 and len(r.json()["phases"]) == 5
        tile = httpx.get(s.url + "/project/images/field%20A/tiles/image/0/2/2.png")
        assert tile.status_code == 200
        import cv2

        decoded = cv2.imdecode(np.frombuffer(tile.content, np.uint8), cv2.IMREAD_UNCHANGED)
        assert decoded.shape == (600 - 512, 700 - 512)  # the edge tile is the image's remainder
        top = cv2.imdecode(
            np.frombuffer(
                httpx.get(s.url + "/project/images/field%20A/tiles/prediction/2/0/0.png").content, np.uint8
            ),
            cv2.IMREAD_UNCHANGED,
        )
        assert top.shape == (150, 175, 4)
        assert httpx.get(s.url + "/project/images/field%20A/tiles/image/0/3/0.png").status_code == 404
        assert httpx.get(s.url + "/project/images/field%20A/tiles/secret/0/0/0.png").status_code == 404
        assert httpx.get(s.url + "/project/images/..%2Fimages%2Ffield%20A").status_code == 404
        stroke = {"tool": "paint", "class": 1, "radius": 5, "points": [[10, 10], [50, 12]]}
        saved = httpx.post(
            s.url + "/project/images/field%20A/strokes", json={"base": 0, "strokes": [stroke]}
        ).json()
        assert saved["version"] == 1 and saved["counts"][1] == saved["labelled"] > 0
        accept = {"tool": "accept", "radius": 20, "points": [[300, 300]]}
        merged = httpx.post(
            s.url + "/project/images/field%20A/strokes", json={"base": 0, "strokes": [accept]}
        ).json()
        assert merged["merged_with"] == [1] and merged["version"] == 2
        bad = httpx.post(
            s.url + "/project/images/field%20A/strokes", json={"base": 2, "strokes": [{**stroke, "class": 7}]}
        )
        assert bad.status_code == 422 and "class 7" in bad.json()["detail"]
        assert (
            httpx.post(s.url + "/project/images/field%20A/strokes", json={"strokes": []}).status_code == 422
        )
        stale = httpx.put(
            s.url + "/project/images/field%20A/labels?base=1",
            content=httpx.get(s.url + "/project/images/field%20A/labels.png").content,
        )
        assert stale.status_code == 409
        wrong = httpx.put(
            s.url + "/project/images/field%20A/labels?base=2",
            content=encode_image(np.zeros((5, 5), np.uint8), ".png"),
        )
        assert wrong.status_code == 422 and "5 x 5" in wrong.json()["detail"]
        added = httpx.post(
            s.url + "/project/images",
            files={"file": ("new [1].tif", encode_image(micrograph(100, 120, seed=9), ".tif"))},
        )
        assert added.status_code == 200 and added.json()["name"] == "new_1"
        assert (root / "images" / "new_1.tif").exists()
        junk = httpx.post(
            s.url + "/project/images", files={"file": ("x.png", b"\x89PNG\r\n\x1a\n" + b"0" * 50)}
        )
        assert junk.status_code == 422 and "x.png" in junk.json()["detail"] and "Traceback" not in junk.text
        assert (
            "semphase.serve.label" not in httpx.get(s.url + "/label").text
            and "<canvas" in httpx.get(s.url + "/label").text
        )
    finally:
        _, err = s.stop()
    assert "Traceback" not in err
    assert [p.name for p in sorted((root / ".semphase/labels/field A").glob("v*.png"))] == [
        "v000001.png",
        "v000002.png",
    ]


def test_without_a_project_the_label_paths_say_how_to_start_one(model):
    s = Server(model)
    try:
        answer = httpx.get(s.url + "/project")
        assert answer.status_code == 404 and "--project DIR" in answer.json()["detail"]
    finally:
        s.stop()


def test_a_project_held_by_another_server_is_refused_in_one_line(model, tmp_path):
    root = _project_folder(tmp_path / "project")
    s = Server(model, "--project", str(root))
    try:
        second = subprocess.run(
            [sys.executable, "-m", "semphase", "serve", str(model), "--port", "0", "--project", str(root)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        s.stop()
    assert second.returncode == 2 and "another semphase serve uses this project" in second.stderr
    assert "Traceback" not in second.stderr and second.stderr.strip().count("\n") == 0


# --------------------------------------------------------------------------------------- browser


def _open_label_page(browser, url: str, name: str) -> dict:
    browser.open(url + "/label")
    browser.wait_for(f"window.semphaseLabel && semphaseLabel.image() === {json.dumps(name)}")
    browser.wait_for("semphaseLabel.ready()", timeout=120)
    browser.evaluate("semphaseLabel.setView(0, 0, 2)")  # 200 %: image pixel = 2 screen pixels
    rect = browser.evaluate(
        "(() => { const r = document.getElementById('view').getBoundingClientRect(); "
        "return [r.left, r.top]; })()"
    )
    return {"left": rect[0], "top": rect[1], "scale": 2.0}


def _to_image(at: dict, points) -> list[tuple[float, float]]:
    """Image coordinates of viewport points, as the page records them (to 1/100 pixel)."""

    def hundredths(v: float) -> float:
        return math.floor(v * 100 + 0.5) / 100

    s = at["scale"]
    return [(hundredths((x - at["left"]) / s), hundredths((y - at["top"]) / s)) for x, y in points]


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="no chromium binary on PATH (apt-get install chromium)"
)
def test_painting_in_the_browser_saves_exactly_the_stroke_and_two_pages_merge(model, tmp_path):
    pytest.importorskip("websockets")
    from _cdp import Browser

    root = _project_folder(tmp_path / "project")
    s = Server(model, "--project", str(root))
    name = "field A"
    try:
        with Browser() as first, Browser() as second:
            at = _open_label_page(first, s.url, name)
            other = _open_label_page(second, s.url, name)  # opened on version 0, like the first
            x0, y0 = int(at["left"]) + 40, int(at["top"]) + 60
            path1 = [(x0, y0), (x0 + 30, y0 + 4), (x0 + 80, y0 + 40), (x0 + 120, y0 + 40)]
            first.press("2")  # Carbide
            first.drag(path1)
            first.press("4")  # Reprecipitate
            path2 = [(x0 + 10, y0 + 150), (x0 + 200, y0 + 160)]
            first.drag(path2)
            assert len(first.evaluate("semphaseLabel.pending()")) == 2
            first.press("z", ctrl=True)  # undo the second stroke
            pending = first.evaluate("semphaseLabel.pending()")
            assert len(pending) == 1 and pending[0]["class"] == 1 and pending[0]["radius"] == 6
            assert [tuple(p) for p in pending[0]["points"]] == _to_image(at, path1)
            first.press("s", ctrl=True)
            first.wait_for("semphaseLabel.version() === 1 && semphaseLabel.pending().length === 0")
            labels = read_labels(root / "masks" / f"{name}.png", TABLE)
            stroke1 = covered_exactly(_to_image(at, path1), 6, labels.shape)
            expected = np.full(labels.shape, IGNORE, np.uint8)
            expected[stroke1] = 1
            assert np.array_equal(labels, expected)  # the stroke's pixels exactly; the undone one nowhere

            path3 = [(x0 + 60, other["top"] + 20), (x0 + 60, other["top"] + 200)]
            second.press("3")  # Void, painted across the first page's stroke on a stale version
            second.drag(path3)
            second.evaluate("semphaseLabel.save()")
            second.wait_for("semphaseLabel.version() === 2")
            message = second.evaluate("document.getElementById('status').textContent")
            assert (
                "merged" in message
                and second.evaluate("document.getElementById('status').className") == "merged"
            )
            expected[covered_exactly(_to_image(other, path3), 6, labels.shape)] = 2
            assert np.array_equal(read_labels(root / "masks" / f"{name}.png", TABLE), expected)
            first.wait_for("semphaseLabel.tilesLoaded()")
            shot = tmp_path / "label.png"
            second.wait_for("semphaseLabel.tilesLoaded()")
            second.screenshot(shot)
    finally:
        _, err = s.stop()
    assert "Traceback" not in err
    assert shot.stat().st_size > 20_000
    out = os.environ.get("SEMPHASE_LABEL_SCREENSHOT")  # docs/serve-label.png is made this way
    if out:
        shutil.copyfile(shot, out)


def test_suggest_picks_in_the_project_come_first_in_their_rank_order(project):
    for name in ("a__y0_x0", "b__y0_x0"):
        write_image(project.root / "images" / f"{name}.png", micrograph(20, 30, seed=3))
    picks = [{"name": "b__y0_x0", "micrograph": "b.tif"}, {"name": "a__y0_x0", "micrograph": "a.tif"}]
    (project.root / "suggest.json").write_text(json.dumps({"picks": picks}))
    rows = project.listing()
    assert [(r["name"], r["suggested"]) for r in rows] == [
        ("b__y0_x0", 1),
        ("a__y0_x0", 2),
        ("field 1", None),
    ]


def test_off_localhost_the_label_api_needs_the_token(model, tmp_path):
    root = _project_folder(tmp_path / "project")
    token = "label-token-0123456789abcdef"
    (tmp_path / "token").write_text(token)
    s = Server(model, "--project", str(root), "--token-file", str(tmp_path / "token"), host="0.0.0.0")
    try:
        assert httpx.get(s.url + "/label").status_code == 200  # the page asks for the token
        for path in (
            "/project",
            "/project/images/field%20A",
            "/project/images/field%20A/tiles/image/0/0/0.png",
        ):
            assert httpx.get(s.url + path).status_code == 401, path
        stroke = {"base": 0, "strokes": [{"tool": "erase", "radius": 2, "points": [[1, 1]]}]}
        assert httpx.post(s.url + "/project/images/field%20A/strokes", json=stroke).status_code == 401
        right = {"Authorization": f"Bearer {token}"}
        assert httpx.get(s.url + "/project", headers=right).status_code == 200
    finally:
        s.stop()
    assert not (root / ".semphase" / "labels").exists()  # nothing was written without the token


def test_held_out_micrographs_are_whole_groups_stay_put_and_grow_with_the_project():
    from semphase.serve.finetune import HOLDOUT_EVERY, choose_holdout

    assert choose_holdout({}) == [] and choose_holdout({"a": "a.png"}) == []
    # regions suggest cut from one micrograph are one group: nothing to hold out against
    regions = {"m__y0_x0": "m__y0_x0.png", "m__y0_x512": "m__y0_x512.png"}
    assert choose_holdout(regions) == []

    two = {"a": "a.png", **regions}
    first = choose_holdout(two)
    assert first in (["a"], sorted(regions))  # a whole group, one of the two
    assert choose_holdout(two) == first  # the same every time

    fields = {f"f{i:02d}": f"f{i:02d}.tif" for i in range(2 * HOLDOUT_EVERY - 2)}
    picked = choose_holdout(fields)
    assert len(picked) == 1
    # the first pick stays held out as fields join, whatever their names sort like, ...
    for extra in ["a0", "zz", "f00b"] + [f"new{i}" for i in range(200)]:
        grown = {**fields, extra: extra + ".png"}
        assert choose_holdout(grown, picked) == picked
    # ... and a second joins at 2 x HOLDOUT_EVERY groups
    grown = {**fields, "zz": "zz.png", "a0": "a0.png"}
    second = choose_holdout(grown, picked)
    assert len(second) == 2 and set(picked) < set(second)
    # never everything: one group always trains
    assert len(choose_holdout({"a": "a.png", "b": "b.png"}, ["a", "b"])) == 1
    # without a record, the pick is spread by a fixed hash, not the first names in order
    many = {f"f{i:02d}": f"f{i:02d}.tif" for i in range(40)}
    assert choose_holdout(many) != sorted(many)[:8]
