"""The gates that decide whether FP16/INT8 give the same phases as FP32: every check at, just inside and just
outside its threshold, changes in both directions, and the same verdict in `export` and `benchmark`."""

from __future__ import annotations

import numpy as np
import pytest

from semphase.export.report import check_gates
from semphase.gates import Gates, changes_against, failures, fp32_check, phase_fractions, variant_checks
from semphase.metrics import Scorer

NAMES = ["Matrix", "Carbide", "Void"]
EPS = 1e-6  # far above the gates' float slack (1e-12), far below any shown digit


def _result(miou: float, iou: list, pred_pixels: list) -> dict:
    """A scoring result with just the fields the gates read."""
    return {
        "classes": list(NAMES),
        "summary": {"miou": {"mean": miou}},
        "per_class": {"iou": list(iou), "pred_pixels": list(pred_pixels)},
    }


REFERENCE = _result(0.80, [0.90, 0.60, 0.90], [5000, 1000, 4000])


def _check(checks: list[dict], name: str) -> dict:
    (found,) = [c for c in checks if c["name"].endswith(name)]
    return found


@pytest.mark.parametrize("variant", ["fp16", "int8"])
def test_agreement_passes_at_the_threshold_and_fails_just_below(variant):
    gates = Gates()
    threshold = gates.min_agreement(variant)
    changes = changes_against(REFERENCE, REFERENCE, threshold)
    assert _check(variant_checks(variant, changes, gates), "agreement_vs_fp32_pct")["passed"]
    changes["agreement_pct"] = threshold - EPS
    check = _check(variant_checks(variant, changes, gates), "agreement_vs_fp32_pct")
    assert not check["passed"] and check["threshold"] == threshold
    changes["agreement_pct"] = threshold + EPS
    assert _check(variant_checks(variant, changes, gates), "agreement_vs_fp32_pct")["passed"]


def test_each_variant_has_its_own_agreement_threshold():
    gates = Gates(min_fp16_agreement=99.9, min_int8_agreement=99.5)
    changes = changes_against(REFERENCE, REFERENCE, 99.7)
    assert _check(variant_checks("int8", changes, gates), "agreement_vs_fp32_pct")["passed"]
    assert not _check(variant_checks("fp16", changes, gates), "agreement_vs_fp32_pct")["passed"]


@pytest.mark.parametrize("sign", [1, -1])
def test_miou_change_fails_in_either_direction(sign):
    gates = Gates(max_delta_miou=0.01)
    for delta, passed in ((0.01, True), (0.01 + EPS, False), (0.0, True)):
        candidate = _result(0.80 + sign * delta, REFERENCE["per_class"]["iou"], [5000, 1000, 4000])
        check = _check(
            variant_checks("int8", changes_against(candidate, REFERENCE, 100.0), gates), "delta_miou"
        )
        assert check["passed"] is passed, (delta, sign)
        assert check["value"] == pytest.approx(sign * delta)


@pytest.mark.parametrize("sign", [1, -1])
def test_one_class_iou_change_fails_even_when_the_mean_does_not_move(sign):
    gates = Gates(max_delta_class_iou=0.02)
    for delta, passed in ((0.02, True), (0.02 + EPS, False)):
        # Carbide moves by delta, Matrix the other way: the mean stays put.
        candidate = _result(0.80, [0.90 - sign * delta, 0.60 + sign * delta, 0.90], [5000, 1000, 4000])
        changes = changes_against(candidate, REFERENCE, 100.0)
        checks = variant_checks("int8", changes, gates)
        assert _check(checks, "delta_miou")["passed"]
        check = _check(checks, "max_delta_class_iou")
        assert check["passed"] is passed and abs(check["value"]) == pytest.approx(delta)
    assert changes["max_delta_class_iou_class"] in ("Matrix", "Carbide")


@pytest.mark.parametrize("sign", [1, -1])
def test_phase_fraction_change_in_percentage_points(sign):
    gates = Gates(max_fraction_change_pp=0.5)
    # 10000 predicted pixels: 50 pixels are 0.5 percentage points.
    for moved, passed in ((50, True), (51, False)):
        pixels = [5000, 1000 + sign * moved, 4000 - sign * moved]
        candidate = _result(0.80, REFERENCE["per_class"]["iou"], pixels)
        changes = changes_against(candidate, REFERENCE, 100.0)
        check = _check(variant_checks("int8", changes, gates), "max_fraction_change_pp")
        assert check["passed"] is passed
        assert abs(check["value"]) == pytest.approx(moved / 100.0)
    assert phase_fractions(REFERENCE) == pytest.approx([50.0, 10.0, 40.0])


def test_a_variant_whose_miou_rises_by_trading_phases_still_fails():
    # The issue-10 case: INT8 "improved" mIoU while moving Void pixels into another phase.
    candidate = _result(0.812, [0.90, 0.695, 0.858], [5000, 1400, 3600])
    changes = changes_against(candidate, REFERENCE, 92.2)
    missed = failures(variant_checks("int8", changes, Gates()))
    assert len(missed) == 4
    assert "INT8 argmax agreement with FP32 92.2000% < 99.5%" in missed[0]
    assert "(Carbide)" in missed[2] and "(Carbide)" in missed[3]


def test_missing_numbers_fail_their_check():
    checks = variant_checks("fp16", {}, Gates())
    assert not any(c["passed"] for c in checks)
    assert all("unknown" in c["text"] for c in checks)


def test_fp32_is_judged_against_pytorch_at_its_threshold():
    gates = Gates(min_fp32_agreement=99.99)
    assert fp32_check(99.99, gates)["passed"]
    assert not fp32_check(99.99 - EPS, gates)["passed"]


def test_export_report_applies_the_gates_of_each_variant():
    gates = Gates()
    variants = {
        "pytorch": {},
        "fp32": {"argmax_agreement_pct": 100.0},
        "fp16": {"vs_fp32": changes_against(REFERENCE, REFERENCE, 99.95)},
        "int8": {"vs_fp32": changes_against(REFERENCE, REFERENCE, 99.4)},
    }
    checks = check_gates(variants, gates)
    assert len(checks) == 1 + 4 + 4
    assert [c["name"] for c in checks if not c["passed"]] == ["int8_agreement_vs_fp32_pct"]
    del variants["fp16"]
    assert len(check_gates(variants, gates)) == 1 + 4


@pytest.mark.parametrize(
    "field, value",
    [
        ("min_int8_agreement", 100.5),
        ("min_fp32_agreement", -1),
        ("max_delta_miou", 1.5),
        ("max_fraction_change_pp", -1),
    ],
)
def test_thresholds_out_of_range_are_refused(field, value):
    with pytest.raises(ValueError):
        Gates(**{field: value})


def test_changes_against_real_scoring_results():
    truth = np.zeros((20, 20), np.uint8)
    truth[:, 10:] = 2
    truth[:4, :4] = 1
    fp32 = truth.copy()
    int8 = truth.copy()
    int8[10:, 8:10] = 2  # 20 Matrix pixels become Void
    scorers = {name: Scorer(NAMES) for name in ("fp32", "int8")}
    scorers["fp32"].add("a", truth, fp32)
    scorers["int8"].add("a", truth, int8)
    agreement = 100.0 * float((int8 == fp32).mean())
    changes = changes_against(scorers["int8"].result(), scorers["fp32"].result(), agreement)
    assert changes["agreement_pct"] == pytest.approx(95.0)
    assert abs(changes["max_fraction_change_pp"]) == pytest.approx(5.0) and changes[
        "max_fraction_change_class"
    ] in (
        "Matrix",
        "Void",
    )
    assert changes["delta_miou"] < 0


def test_benchmark_marks_a_variant_that_misses_the_gates_as_failed_and_keeps_its_numbers():
    from semphase.benchmarks.accuracy import ParityRun

    truth = np.zeros((20, 20), np.uint8)
    truth[:, 10:] = 2
    changed = truth.copy()
    changed[:, 8:10] = 2  # 10 % of the pixels change phase
    run = ParityRun(NAMES, ["fp32", "fp16", "int8"])
    run.add("a", truth, {"fp32": truth, "fp16": truth.copy(), "int8": changed})
    rows = {r["variant"]: r for r in run.rows()}
    assert rows["fp32"]["status"] == "ok" and rows["fp32"]["gates"] is None
    assert rows["fp16"]["status"] == "ok" and all(g["passed"] for g in rows["fp16"]["gates"])
    assert rows["int8"]["status"] == "failed" and rows["int8"]["miou"] is not None
    assert rows["int8"]["reason"].startswith("misses the gates on this machine: INT8 argmax agreement")


def test_the_largest_change_is_found_by_magnitude_when_it_is_a_loss():
    # 60 Void pixels (0.6 pp) split between Matrix and Carbide (0.3 pp each): the loss is the largest change.
    candidate = _result(0.80, [0.91, 0.61, 0.87], [5030, 1030, 3940])
    changes = changes_against(candidate, REFERENCE, 100.0)
    assert changes["max_fraction_change_pp"] == pytest.approx(-0.6)
    assert changes["max_fraction_change_class"] == "Void"
    assert (
        changes["max_delta_class_iou"] == pytest.approx(-0.03)
        and changes["max_delta_class_iou_class"] == "Void"
    )
    assert len(failures(variant_checks("int8", changes, Gates()))) == 2
