"""Gate behaviour that mutation testing (`make mutation`) found unchecked: the thresholds' valid ranges at
their ends, the exact texts `export` and `benchmark` print, missing values, and mismatched class tables."""

from __future__ import annotations

import re

import pytest

from semphase.gates import Gates, changes_against, fp32_check, phase_fractions, variant_checks


def _result(miou, iou: list, pred_pixels: list, classes=("Matrix", "Carbide", "Void")) -> dict:
    return {
        "classes": list(classes),
        "summary": {"miou": {"mean": miou}},
        "per_class": {"iou": list(iou), "pred_pixels": list(pred_pixels)},
    }


# ------------------------------------------------------------------------------------- the thresholds


@pytest.mark.parametrize(
    "values",
    [
        {"min_fp32_agreement": 100.0, "min_fp16_agreement": 100.0, "min_int8_agreement": 100.0},
        {"min_fp32_agreement": 0.0, "min_fp16_agreement": 0.0, "min_int8_agreement": 0.5},
        {"max_delta_miou": 0.0, "max_delta_class_iou": 0.0, "max_fraction_change_pp": 0.0},
        {"max_delta_miou": 1.0, "max_delta_class_iou": 1.0, "max_fraction_change_pp": 100.0},
    ],
)
def test_thresholds_at_the_ends_of_their_ranges_are_valid(values):
    gates = Gates(**values)
    assert {k: getattr(gates, k) for k in values} == values


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"min_fp32_agreement": 100.5}, "min-fp32-agreement must be a percentage in 0..100"),
        ({"min_int8_agreement": -0.5}, "min-int8-agreement must be a percentage in 0..100"),
        ({"max_delta_miou": 1.5}, "max-delta-miou must be in 0..1"),
        ({"max_delta_class_iou": -0.1}, "max-delta-class-iou must be in 0..1"),
        ({"max_fraction_change_pp": 100.5}, "max-fraction-change must be in 0..100 percentage points"),
    ],
)
def test_thresholds_outside_their_ranges_are_refused_by_option_name(values, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        Gates(**values)


def test_each_variant_reads_its_own_threshold_and_the_gates_serialize():
    gates = Gates(min_fp32_agreement=99.0, min_fp16_agreement=98.0, min_int8_agreement=97.0)
    assert [gates.min_agreement(v) for v in ("fp32", "fp16", "int8")] == [99.0, 98.0, 97.0]
    assert gates.as_dict() == {
        "min_fp32_agreement": 99.0,
        "min_fp16_agreement": 98.0,
        "min_int8_agreement": 97.0,
        "max_delta_miou": 0.01,
        "max_delta_class_iou": 0.02,
        "max_fraction_change_pp": 0.5,
    }


# ------------------------------------------------------------------------------------------- the texts


def test_fp32_check_reads_as_printed():
    gates = Gates()
    assert fp32_check(99.995, gates) == {
        "name": "fp32_argmax_agreement_pct",
        "variant": "fp32",
        "value": 99.995,
        "threshold": 99.99,
        "passed": True,
        "text": "FP32 argmax agreement with PyTorch 99.9950% >= 99.99%",
    }
    assert fp32_check(99.9, gates)["text"] == "FP32 argmax agreement with PyTorch 99.9000% < 99.99%"
    assert fp32_check(None, gates)["text"] == "FP32 argmax agreement with PyTorch unknown"


def test_variant_checks_read_as_printed_passing_and_failing():
    changes = {
        "agreement_pct": 99.95,
        "delta_miou": -0.004,
        "max_delta_class_iou": 0.03,
        "max_delta_class_iou_class": "Carbide",
        "max_fraction_change_pp": 0.25,
        "max_fraction_change_class": "Void",
    }
    checks = variant_checks("fp16", changes, Gates())
    assert [(c["name"], c["variant"], c["passed"], c["text"]) for c in checks] == [
        ("fp16_agreement_vs_fp32_pct", "fp16", True, "FP16 argmax agreement with FP32 99.9500% >= 99.9%"),
        ("fp16_delta_miou", "fp16", True, "FP16 mIoU change -0.0040 (|.| <= 0.01)"),
        (
            "fp16_max_delta_class_iou",
            "fp16",
            False,
            "FP16 largest class IoU change (Carbide) +0.0300 (|.| > 0.02)",
        ),
        (
            "fp16_max_fraction_change_pp",
            "fp16",
            True,
            "FP16 largest phase-fraction change, pp (Void) +0.2500 (|.| <= 0.5)",
        ),
    ]
    changes = {"agreement_pct": 99.0, "delta_miou": 0.02, "max_delta_class_iou": 0.0}
    changes["max_fraction_change_pp"] = 0.0
    texts = [c["text"] for c in variant_checks("int8", changes, Gates())]
    assert texts == [
        "INT8 argmax agreement with FP32 99.0000% < 99.5%",
        "INT8 mIoU change +0.0200 (|.| > 0.01)",
        "INT8 largest class IoU change +0.0000 (|.| <= 0.02)",
        "INT8 largest phase-fraction change, pp +0.0000 (|.| <= 0.5)",
    ]


# ------------------------------------------------------------------------------------- missing values


def test_classes_missing_from_either_result_are_skipped_not_the_rest():
    reference = _result(0.8, [0.9, 0.6, 0.9], [5000, 1000, 4000])
    candidate = _result(0.8, [None, 0.6, 0.95], [5000, 1000, 4000])
    changes = changes_against(candidate, reference, 100.0)
    assert changes["max_delta_class_iou"] == pytest.approx(0.05)
    assert changes["max_delta_class_iou_class"] == "Void"
    changes = changes_against(reference, candidate, 100.0)
    assert changes["max_delta_class_iou"] == pytest.approx(-0.05)


@pytest.mark.parametrize("side", ["candidate", "reference"])
def test_an_unknown_miou_gives_an_unknown_change(side):
    known, unknown = _result(0.8, [0.9], [1], ("a",)), _result(None, [0.9], [1], ("a",))
    pair = (unknown, known) if side == "candidate" else (known, unknown)
    assert changes_against(*pair, 100.0)["delta_miou"] is None


def test_no_predicted_pixels_give_unknown_phase_fractions():
    assert phase_fractions(_result(None, [None, None], [0, 0], ("a", "b"))) == [None, None]


def test_results_of_different_class_tables_are_not_compared():
    two = _result(0.8, [0.9, 0.6], [5, 1], ("a", "b"))
    three = _result(0.8, [0.9, 0.6, 0.9], [5, 1, 4], ("a", "b", "c"))
    with pytest.raises(ValueError):
        changes_against(two, three, 100.0)
