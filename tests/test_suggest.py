"""`semphase suggest`: uncertainty per pixel, ranking and picking, the files written, and no torch."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _runtime_models import build_blur_classifier, micrograph
from semphase.cli.main import main
from semphase.data.check import check_dataset
from semphase.data.labels import read_labels
from semphase.errors import OptionError
from semphase.imageio import read_gray, write_image
from semphase.phases import IGNORE
from semphase.runtime import load_model, segment_array
from semphase.runtime.suggest import (
    CELL,
    LOOKS,
    PHOTOMETRIC,
    PLANES,
    Candidate,
    PassStack,
    Scan,
    SuggestOptions,
    combine,
    model_table,
    phase_turns,
    pick,
    pixel_uncertainty,
    rarity,
)
from test_layering import TORCH_NAMES
from test_segment_cli import BLOCKED


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_blur_classifier(tmp_path_factory.mktemp("m") / "blur.onnx", tile=64, overlap=16)


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fields")
    for i, (h, w) in enumerate(((160, 224), (192, 160), (128, 128))):
        write_image(folder / f"f{i}.png", micrograph(h, w, seed=i))
    return folder


def run(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(["suggest", *map(str, args)])
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_pixel_uncertainty_of_agreeing_and_disagreeing_flips():
    sure = np.array([10.0, 0.0])  # class 0, near certain
    torn = np.array([0.0, 0.0])  # two classes equally likely
    flips = np.stack([sure, sure, sure, np.array([0.0, 10.0])])  # three flips say 0, one says 1
    logits = np.zeros((4 * 2, 1, 3), np.float32)
    for f in range(4):
        logits[2 * f : 2 * f + 2, 0, 0] = sure
        logits[2 * f : 2 * f + 2, 0, 1] = torn
        logits[2 * f : 2 * f + 2, 0, 2] = flips[f]
    labels, entropy, disagreement, photometric = pixel_uncertainty(logits, 2, tta=True)
    assert labels.tolist() == [[0, 0, 0]]
    assert entropy[0, 0] < 0.01 and entropy[0, 1] == pytest.approx(1.0)
    assert disagreement.tolist() == [[0.0, 0.0, 0.25]] and not photometric.any()
    plain = pixel_uncertainty(logits[:2], 2, tta=False)
    assert plain[2].tolist() == [[0.0, 0.0, 0.0]] and plain[1][0, 1] == pytest.approx(1.0)


def test_photometric_disagreement_sees_a_confident_answer_that_hangs_on_the_grey_levels():
    # pixel 0: every flip and every photometric variant says class 0; pixel 1: the flips say 0 with
    # certainty (entropy ~0, no flip disagrees) but three of the four brightness variants say 1
    logits = np.zeros((8 * 2, 1, 2), np.float32)
    for p in range(8):
        logits[2 * p, 0, :] = 20.0  # class 0 everywhere ...
    for p in (4, 5, 7):
        logits[2 * p : 2 * p + 2, 0, 1] = [0.0, 20.0]  # ... except pixel 1 in three variants
    labels, entropy, disagreement, photometric = pixel_uncertainty(logits, 2, tta=True, photometric=True)
    assert labels.tolist() == [[0, 0]] and entropy.max() < 1e-6 and not disagreement.any()
    assert photometric.tolist() == [[0.0, 0.75]]
    assert combine(entropy, disagreement, photometric, "photometric").tolist() == [[0.0, 0.75]]
    assert combine(entropy, disagreement, photometric, "combined").max() < 1e-6  # blind to it


def test_the_pass_stack_runs_each_photometric_variant_on_the_tile_unflipped():
    class Recorder:
        tile_size, overlap, classes = 64, 16, ["a", "b"]
        size_multiple = 32

        def __init__(self):
            self.seen = []

        def logits(self, batch):
            self.seen.append(batch.copy())
            return np.zeros((batch.shape[0], 2, *batch.shape[1:]), np.float32)

    tile = np.arange(64, dtype=np.uint8).reshape(1, 8, 8) * 3
    model = Recorder()
    out = PassStack(model, flips=True, photometric=True).logits(tile)
    assert out.shape == (1, 16, 8, 8) and len(model.seen) == 8
    for seen, (_, table) in zip(model.seen[4:], PHOTOMETRIC, strict=True):
        assert np.array_equal(seen, table[tile])
    darker, brighter = PHOTOMETRIC[1][1], PHOTOMETRIC[0][1]  # gamma 1.4 darkens, 0.7 brightens
    assert darker[128] < 128 < brighter[128] and darker[0] == 0 and brighter[255] == 255
    assert PassStack(model, flips=False, photometric=False).logits(tile).shape == (1, 2, 8, 8)


def _scan(stem: str, u: np.ndarray, predicted: int, classes: int = 2, grey: float | None = None) -> Scan:
    """A scan whose cells all hold uncertainty ``u`` (per pixel) and predict one class; with ``grey``,
    every pixel of it that grey level (a flat field: no texture)."""
    rows, cols = u.shape
    sums = np.zeros((PLANES + classes, rows, cols))
    sums[0] = u * CELL * CELL
    sums[PLANES + predicted] = sums[0]
    counts = np.zeros((classes, rows, cols), np.int64)
    counts[predicted] = CELL * CELL
    looks = None
    if grey is not None:
        looks = np.zeros((LOOKS, rows, cols))
        looks[0], looks[1] = grey * CELL * CELL, grey**2 * CELL * CELL
    return Scan(Path(f"{stem}.png"), stem, cols * CELL, rows * CELL, sums, counts, Path("."), looks)


def test_rare_phases_weigh_more_and_picks_spread_without_overlap():
    common = _scan("common", np.full((4, 4), 0.5), predicted=0)
    rare = _scan("rare", np.full((2, 2), 0.45), predicted=1)
    weights = rarity([common, rare], 2)
    assert weights.tolist() == pytest.approx([0.5, 1.0])  # 16 : 4 cells, f ** -0.5 scaled to 1
    by_uncertainty = pick([common, rare], weights, SuggestOptions(n=1, region=64, rare_weight=0.0), set())
    assert by_uncertainty[0].scan is common
    by_rarity = pick([common, rare], weights, SuggestOptions(n=1, region=64, rare_weight=1.0), set())
    assert by_rarity[0].scan is rare  # 0.45 * (1 + 1) beats 0.5 * (1 + 0.5)
    many = pick([common, rare], weights, SuggestOptions(n=5, region=64, per_image=3), set())
    assert [c.scan.stem for c in many].count("common") == 3 and len(many) == 4  # rare has one region
    for a in many:
        assert not any(a.overlaps(b) for b in many if b is not a)
    taken = {many[0].name}
    assert many[0].name not in {
        c.name for c in pick([common, rare], weights, SuggestOptions(n=4, region=64), taken)
    }


def test_order_phases_takes_the_phases_in_turn_rarest_first_then_falls_back_to_the_score():
    common = _scan("common", np.full((4, 4), 0.9), predicted=0, classes=4)  # 16 cells, most uncertain
    middle = _scan("middle", np.full((2, 4), 0.3), predicted=1, classes=4)  # 8 cells
    rare = _scan("rare", np.full((2, 2), 0.2), predicted=2, classes=4)  # 4 cells: one 64 px region
    scans = [common, middle, rare]
    assert phase_turns(scans, 6) == [3, 2, 1, 0, 3, 2]  # phase 3 is never predicted: rarest of all
    weights = rarity(scans, 4)
    options = {"region": 64, "per_image": 2, "rare_weight": 0.0}
    by_score = pick(scans, weights, SuggestOptions(n=3, **options), set())
    assert [c.scan.stem for c in by_score] == ["common", "common", "middle"]
    by_phase = pick(scans, weights, SuggestOptions(n=4, order="phases", **options), set())
    # phase 3 has no uncertain pixels anywhere: its turn falls to the best score; then phases 2, 1, 0
    assert [c.scan.stem for c in by_phase] == ["common", "rare", "middle", "common"]
    for a in by_phase:
        assert not any(a.overlaps(b) for b in by_phase if b is not a)
    with pytest.raises(OptionError, match="order"):
        SuggestOptions(order="random")


def test_order_diverse_covers_the_kinds_of_micrograph_before_the_most_uncertain_of_one_kind():
    # three dark fields the model is unsure of and a bright one it is surer of; one 64 px region each
    dark = [
        _scan(f"dark{i}", np.full((2, 2), u), predicted=0, grey=40.0 + i)
        for i, u in enumerate((0.9, 0.8, 0.7))
    ]
    bright = _scan("bright", np.full((2, 2), 0.3), predicted=0, grey=210.0)
    scans = [*dark, bright]
    weights = rarity(scans, 2)
    options = {"n": 2, "region": 64, "rare_weight": 0.0}
    by_score = pick(scans, weights, SuggestOptions(**options), set())
    assert [c.scan.stem for c in by_score] == ["dark0", "dark1"]
    diverse = pick(scans, weights, SuggestOptions(order="diverse", **options), set())
    assert [c.scan.stem for c in diverse] == ["dark0", "bright"]  # each kind's most uncertain, best first
    # the predicted phases tell kinds apart too: same look, one field predicted as the other class
    alike = [_scan(f"a{i}", np.full((2, 2), u), predicted=0, grey=100.0) for i, u in enumerate((0.9, 0.8))]
    other = _scan("other", np.full((2, 2), 0.2), predicted=1, grey=100.0)
    picked = pick(
        [*alike, other], rarity([*alike, other], 2), SuggestOptions(order="diverse", **options), set()
    )
    assert [c.scan.stem for c in picked] == ["a0", "other"]
    # a kind whose regions are all taken: the score order fills the pick in
    filled = pick(scans, weights, SuggestOptions(order="diverse", **options), {"bright__y0_x0"})
    assert [c.scan.stem for c in filled] == ["dark0", "dark1"]


def test_region_candidates_cover_the_frame_flush_with_its_edges():
    scan = _scan("s", np.zeros((5, 7)), predicted=0)  # 160 x 224 pixels
    from semphase.runtime.suggest import candidates

    found = candidates(scan, np.ones(2), SuggestOptions(region=64))
    assert sorted({c.y for c in found}) == [0, 64, 96] and sorted({c.x for c in found}) == [0, 64, 128, 160]
    assert isinstance(found[0], Candidate) and {(c.width, c.height) for c in found} == {(64, 64)}


def test_suggest_writes_exactly_n_picks_prefilled_with_the_models_confident_labels(
    model_path, fields, tmp_path, capsys
):
    out = tmp_path / "next"
    code, text, err = run([model_path, fields, "--out", out, "--n", "3", "--region", "64"], capsys)
    assert code == 0, err
    document = json.loads((out / "suggest.json").read_text())
    picks = document["picks"]
    assert len(picks) == 3 and [p["rank"] for p in picks] == [1, 2, 3]
    assert [p["score"] for p in picks] == sorted((p["score"] for p in picks), reverse=True)
    for sub in ("images", "masks", "previews"):
        assert sorted(p.stem for p in (out / sub).iterdir()) == sorted(p["name"] for p in picks)
    with open(out / "worklist.csv", newline="") as fh:
        assert [r["name"] for r in csv.DictReader(fh)] == [p["name"] for p in picks]
    model = load_model(model_path)
    table = model_table(model)
    some_unlabelled = False
    for p in picks:
        whole = read_gray(p["micrograph"])
        crop = read_gray(out / "images" / f"{p['name']}.png")
        y, x, h, w = p["y"], p["x"], p["height"], p["width"]
        assert np.array_equal(crop, whole[y : y + h, x : x + w])
        labels = read_labels(out / "masks" / f"{p['name']}.png", table)
        predicted = segment_array(model, whole)[y : y + h, x : x + w]
        confident = labels != IGNORE
        assert np.array_equal(labels[confident], predicted[confident])  # the model's phase, where sure
        assert np.mean(confident) == pytest.approx(p["prefilled"])
        some_unlabelled |= bool((~confident).any())
    assert some_unlabelled  # the uncertain pixels are left for the user
    assert "Label next" in text and len(document["micrographs"]) == 3
    report = check_dataset(out)  # the folder is a dataset train reads
    assert report.ok and report.n_images == 3
    for order, n in (("phases", 2), ("diverse", 3)):
        args = [model_path, fields, "--out", tmp_path / order, "--n", n, "--region", "64", "--order", order]
        code, _, err = run(args, capsys)
        assert code == 0, err
        document = json.loads((tmp_path / order / "suggest.json").read_text())
        assert document["settings"]["order"] == order and len(document["picks"]) == n
    assert len({p["micrograph"] for p in document["picks"]}) == 3  # diverse too: one per micrograph


def test_a_second_run_suggests_new_regions_and_never_overwrites_a_corrected_mask(
    model_path, fields, tmp_path, capsys
):
    out = tmp_path / "next"
    assert run([model_path, fields, "--out", out, "--n", "2", "--region", "64"], capsys)[0] == 0
    first = json.loads((out / "suggest.json").read_text())["picks"]
    corrected = out / "masks" / f"{first[0]['name']}.png"
    edited = read_labels(corrected, model_table(load_model(model_path)))
    edited[edited == IGNORE] = 0  # the user labelled every pixel Matrix
    from semphase.data.labels import write_colour_labels

    write_colour_labels(corrected, edited, model_table(load_model(model_path)))
    before = corrected.read_bytes()
    assert run([model_path, fields, "--out", out, "--n", "2", "--region", "64"], capsys)[0] == 0
    second = json.loads((out / "suggest.json").read_text())
    assert not {p["name"] for p in first} & {p["name"] for p in second["picks"]}
    assert sorted(second["already_labelled"]) == sorted(p["name"] for p in first)
    assert corrected.read_bytes() == before
    assert len(list((out / "masks").iterdir())) == 4


def test_bad_options_and_inputs_are_one_line(model_path, fields, tmp_path, capsys):
    for args, expected in (
        (["--region", "100"], "--region"),
        (["--n", "0"], "--n"),
        (["--no-tta", "--score", "combined"], "--score combined needs them"),
        (["--no-photometric"], "--no-photometric"),
        (["--score", "luck"], "--score"),
        (["--order", "luck"], "--order"),
    ):
        code, _, err = run([model_path, fields, "--out", tmp_path / "o", *args], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, (args, err)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnope")
    code, _, err = run(
        [model_path, fields / "f0.png", tmp_path / "broken.png", "--out", tmp_path / "o2"], capsys
    )
    assert code == 2 and "broken.png" in err
    assert len(json.loads((tmp_path / "o2" / "suggest.json").read_text())["picks"]) >= 1  # the good one ran


def test_suggest_runs_with_torch_unimportable(model_path, fields, tmp_path):
    code = BLOCKED.format(names=set(TORCH_NAMES))
    args = [
        "suggest",
        str(model_path),
        str(fields),
        "--out",
        str(tmp_path / "o"),
        "--n",
        "1",
        "--region",
        "64",
    ]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "o" / "masks").iterdir())) == 1
