"""`semphase quantify`: E562/E1245 sample statistics and particle measurements, on known masks."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import stats as scipy_stats

from _cli import run_semphase
from semphase.imageio import write_image
from semphase.quantify import QuantifyOptions, quantify
from semphase.quantify.features import measure_phase
from semphase.quantify.stats import fields_needed, phase_statistics

CLASSES = ["Matrix", "Carbide", "Void"]


def write_field(folder: Path, name: str, mask: np.ndarray, classes=CLASSES, pixel_size_um=None) -> None:
    """A field as `semphase segment` leaves it: X_mask.png and X.json naming classes and pixel size."""
    folder.mkdir(parents=True, exist_ok=True)
    write_image(folder / f"{name}_mask.png", mask)
    document = {
        "input": f"{name}.tif",
        "pixel_size_um": pixel_size_um,
        "phases": [{"id": i, "name": n, "pixels": int((mask == i).sum())} for i, n in enumerate(classes)],
        "outputs": {"mask": str(folder / f"{name}_mask.png"), "json": str(folder / f"{name}.json")},
    }
    (folder / f"{name}.json").write_text(json.dumps(document))


def field_with_fraction(carbide: float, shape=(100, 100), seed=0) -> np.ndarray:
    """Matrix with exactly round(carbide * pixels) Carbide pixels in one block, and a fixed Void square."""
    mask = np.zeros(shape, np.uint8)
    mask[:10, :10] = 2
    flat = mask.reshape(-1)
    n = round(carbide * flat.size)
    free = np.flatnonzero(flat == 0)[:n]
    flat[free] = 1
    return mask


def test_sample_statistics_match_an_independent_computation():
    fractions = [0.10, 0.12, 0.08, 0.11, 0.09, 0.13]
    result = phase_statistics(fractions, target_ra_pct=10)
    n, mean, s = len(fractions), statistics.fmean(fractions), statistics.stdev(fractions)
    ci = scipy_stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    assert result["n"] == n and result["mean"] == pytest.approx(mean) and result["std"] == pytest.approx(s)
    assert result["ci95"] == pytest.approx(ci) and result["ra_pct"] == pytest.approx(ci / mean * 100)
    needed = result["fields_needed"]
    t = scipy_stats.t.ppf
    assert t(0.975, needed - 1) * s / math.sqrt(needed) <= 0.1 * mean  # the target is reached ...
    assert t(0.975, needed - 2) * s / math.sqrt(needed - 1) > 0.1 * mean  # ... not with one field fewer


def test_one_field_an_absent_phase_and_no_spread_say_so_instead_of_inventing_numbers():
    single = phase_statistics([0.3])
    assert single["n"] == 1 and single["std"] is None and single["ci95"] is None and single["ra_pct"] is None
    absent = phase_statistics([0.0, 0.0, 0.0])
    assert absent["mean"] == 0 and absent["ra_pct"] is None and absent["fields_needed"] is None
    assert fields_needed(0.2, 0.0, 10) == 2
    with pytest.raises(ValueError):
        phase_statistics([])


def test_discs_of_known_diameter_give_their_ecd_count_and_edge_corrected_density():
    mask = np.zeros((400, 400), np.uint8)
    diameters = {(100, 100): 40, (300, 100): 20, (100, 300): 30, (300, 300): 50}
    for (x, y), d in diameters.items():
        cv2.circle(mask, (x, y), d // 2, 1, -1)
    cv2.circle(mask, (0, 200), 10, 1, -1)  # cut by the left border: counts 1/2 in N_A
    mask[200, 200] = 1  # a one-pixel speck: noise
    f = measure_phase(mask, 1, min_pixels=4)
    assert f.count == 5 and f.touching_border == 1 and f.too_small == 1 and f.n_a_count == 4.5
    inside = sorted((r["ecd_px"], r["feret_max_px"]) for r in f.rows if not r["touches_border"])
    assert [ecd for ecd, _ in inside] == pytest.approx([20, 30, 40, 50], rel=0.02)  # area pi r^2
    assert [feret for _, feret in inside] == pytest.approx([21, 31, 41, 51], rel=0.05)  # 2r + 1 pixels across
    for row in f.rows:
        if not row["touches_border"]:
            assert row["aspect_ratio"] == pytest.approx(1.0, abs=0.08) and row["roundness"] > 0.8


def test_a_checkerboard_has_half_the_area_and_a_mean_free_path_of_one_square():
    k = 8
    board = ((np.indices((128, 128)) // k).sum(axis=0) % 2).astype(np.uint8)
    f = measure_phase(board, 1, min_pixels=1)
    n_l = f.intercepts / f.line_length
    assert n_l == pytest.approx(1 / (2 * k))  # every row and column enters a square every 2k pixels
    assert (1 - board.mean()) / n_l == pytest.approx(k)  # lambda = (1 - A_A) / N_L: the gap between squares
    assert feret_of_squares(f, k)


def feret_of_squares(f, k) -> bool:
    # squares touch at corners, so with 8-connectivity they merge into diagonal chains: one feature per
    # anti-diagonal band; each chain is longer than a square
    return all(r["feret_max_px"] >= k * math.sqrt(2) - 1e-9 for r in f.rows)


def test_quantify_reports_each_sample_with_the_statistics_of_its_fields(tmp_path):
    carbide = {"A": [0.10, 0.12, 0.08, 0.11], "B": [0.30, 0.25, 0.35]}
    for sample, values in carbide.items():
        for i, v in enumerate(values):
            write_field(
                tmp_path / "results" / sample, f"{sample}{i}", field_with_fraction(v), pixel_size_um=0.5
            )
    doc = quantify([tmp_path / "results"], tmp_path / "q", QuantifyOptions(features=["Carbide"]))
    assert sorted(doc["samples"]) == ["A", "B"] and doc["problems"] == []
    for sample, values in carbide.items():
        got = doc["samples"][sample]["phases"]["Carbide"]
        expected = phase_statistics(values)
        assert got["mean"] == pytest.approx(expected["mean"]) and got["ci95"] == pytest.approx(
            expected["ci95"]
        )
        assert doc["samples"][sample]["unit"] == "um"
        assert got["analysed_area"] == pytest.approx(len(values) * 100 * 100 * 0.25)
    rows = list(csv.DictReader((tmp_path / "q" / "samples.csv").open()))
    assert {(r["sample"], r["phase"]) for r in rows} == {(s, p) for s in "AB" for p in CLASSES}
    assert "mean_free_path_um" in rows[0] and "analysed_area_um2" in rows[0]
    fields = list(csv.DictReader((tmp_path / "q" / "fields.csv").open()))
    assert len(fields) == 7 * len(CLASSES)
    assert (tmp_path / "q" / "features.csv").is_file() and (tmp_path / "q" / "quantify.json").is_file()


def test_group_by_names_samples_from_file_names(tmp_path):
    for name, v in (("s1_a", 0.1), ("s1_b", 0.2), ("s2_a", 0.3)):
        write_field(tmp_path / "flat", name, field_with_fraction(v))
    doc = quantify([tmp_path / "flat"], tmp_path / "q", QuantifyOptions(group_by=r"^(?P<sample>s\d)_"))
    assert {s: d["fields"] for s, d in doc["samples"].items()} == {"s1": ["s1_a", "s1_b"], "s2": ["s2_a"]}
    assert doc["samples"]["s1"]["unit"] == "px" and doc["samples"]["s1"]["notes"]


def test_the_cli_prints_the_sample_table_skips_a_broken_field_and_exits_2(tmp_path, capsys):
    for i, v in enumerate([0.1, 0.2, 0.15]):
        write_field(tmp_path / "r" / "S", f"f{i}", field_with_fraction(v))
    (tmp_path / "r" / "S" / "f1_mask.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    code, out, err = run_semphase(["quantify", tmp_path / "r", "--out", tmp_path / "q"], capsys)
    assert code == 2 and "f1_mask.png" in err and err.count("\n") == 1 and "skipped" in err
    assert "Area fractions per sample" in out and "Carbide" in out
    doc = json.loads((tmp_path / "q" / "quantify.json").read_text())
    assert doc["samples"]["S"]["fields"] == ["f0", "f2"]  # the broken field does not count
    measured = [name for name, p in doc["samples"]["S"]["phases"].items() if "features" in p]
    assert measured == ["Carbide", "Void"]  # by default every phase but the largest (from X.json's counts)


@pytest.mark.parametrize("case", ["empty", "mixed", "bare-mask", "bad-regex", "unknown-phase"])
def test_unusable_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, case):
    results = tmp_path / "r"
    results.mkdir()
    extra = []
    if case == "mixed":
        write_field(results, "a", field_with_fraction(0.1))
        write_field(results, "b", field_with_fraction(0.1), classes=["Matrix", "Carbide", "Pore"])
    elif case == "bare-mask":
        write_image(results / "a_mask.png", field_with_fraction(0.1))
    elif case == "bad-regex":
        write_field(results, "a", field_with_fraction(0.1))
        extra = ["--group-by", "(unclosed"]
    elif case == "unknown-phase":
        write_field(results, "a", field_with_fraction(0.1))
        extra = ["--features", "Graphite"]
    code, out, err = run_semphase(["quantify", results, "--out", tmp_path / "q", *extra], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert not (tmp_path / "q" / "quantify.json").exists()


def test_without_scipy_the_command_says_what_to_install(tmp_path, capsys, monkeypatch):
    import sys

    write_field(tmp_path / "r", "a", field_with_fraction(0.1))
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # the base install has no scipy
    code, _, err = run_semphase(["quantify", tmp_path / "r", "--out", tmp_path / "q"], capsys)
    assert code == 2 and err.count("\n") == 1 and "semphase[quantify]" in err


def test_watch_quantify_keeps_each_samples_report_current(tmp_path, capsys):
    from _runtime_models import build_blur_classifier, micrograph

    model = build_blur_classifier(tmp_path / "m.onnx", tile=64, overlap=16)
    inbox = tmp_path / "in"
    for rel, seed in (("A/f1.png", 1), ("A/f2.png", 2), ("B/f1.png", 3), ("top.png", 4)):
        write_image(inbox / rel, micrograph(96, 96, seed=seed))
    out = tmp_path / "out"
    argv = ["watch", inbox, "--model", model, "--out", out, "--once", "--recursive", "--settle", "0"]
    code, stdout, err = run_semphase([*argv, "--quantify"], capsys)
    assert code == 0, err
    for sample, n in (("A", 2), ("B", 1), ("out", 1)):
        rows = list(csv.DictReader((out / "quantify" / sample / "samples.csv").open()))
        assert {r["fields"] for r in rows} == {str(n)}, sample
    assert stdout.count("quantified") == 4  # once per new field


def test_samples_with_and_without_a_pixel_size_share_the_tables(tmp_path):
    write_field(tmp_path / "r" / "um", "a", field_with_fraction(0.1), pixel_size_um=0.2)
    write_field(tmp_path / "r" / "px", "b", field_with_fraction(0.2))
    doc = quantify([tmp_path / "r"], tmp_path / "q", QuantifyOptions(features=["Carbide"]))
    assert doc["samples"]["um"]["unit"] == "um" and doc["samples"]["px"]["unit"] == "px"
    rows = list(csv.DictReader((tmp_path / "q" / "samples.csv").open()))
    by_sample = {r["sample"]: r for r in rows if r["phase"] == "Carbide"}
    assert by_sample["um"]["analysed_area_um2"] and not by_sample["um"]["analysed_area_px2"]
    assert by_sample["px"]["analysed_area_px2"] and not by_sample["px"]["analysed_area_um2"]
