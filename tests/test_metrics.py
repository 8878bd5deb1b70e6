"""Metrics against hand-computed cases and a loop-by-loop reference of the definitions."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from semphase.metrics import (
    Scorer,
    boundary,
    boundary_f1,
    confusion_counts,
    confusion_matrix,
    score_image,
)

NAN = float("nan")


def assert_scores(actual, expected):
    np.testing.assert_allclose(
        np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), equal_nan=True
    )


# ------------------------------------------------------------------------------------- confusion


def test_confusion_matrix_counts_rows_truth_and_skips_ignored_pixels():
    truth = np.array([[0, 0, 1], [1, 1, 255]], np.uint8)
    pred = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    # valid pixels: T0P0, T0P1, T1P1, T1P1, T1P0; the ignored (1, 2) is in no cell
    np.testing.assert_array_equal(confusion_matrix(truth, pred, 2), [[1, 1], [1, 2]])


def test_prediction_without_data_is_a_miss_for_the_truth_class():
    truth = np.array([[0, 0], [1, 1]], np.uint8)
    pred = np.array([[0, 255], [1, 1]], np.uint8)
    np.testing.assert_array_equal(confusion_matrix(truth, pred, 2), [[1, 0], [0, 2]])
    np.testing.assert_array_equal(confusion_counts(truth, pred, 2), [[1, 0, 1], [0, 2, 0]])
    s = score_image(truth, pred, 2)
    # class 0: |T|=2, |P|=1, inter=1 -> IoU 1/2, Dice 2/3; class 1 perfect
    assert_scores(s.iou, [0.5, 1.0])
    assert_scores(s.dice, [2 / 3, 1.0])
    np.testing.assert_array_equal(s.unpredicted, [1, 0])


def test_truth_ids_outside_the_table_are_rejected():
    truth = np.array([[0, 3]], np.uint8)
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        confusion_matrix(truth, np.zeros_like(truth), 2)


def test_shape_mismatch_and_float_labels_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        score_image(np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), 2)
    with pytest.raises(ValueError, match="integer"):
        score_image(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.float32), 2)


# -------------------------------------------------------------------------------------- boundary


def test_boundary_of_a_centred_square_is_its_ring():
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    expected = mask.copy()
    expected[2, 2] = False  # the only pixel whose 3 x 3 neighbourhood lies inside the square
    np.testing.assert_array_equal(boundary(mask), expected)


def test_the_image_frame_is_not_a_boundary():
    mask = np.zeros((6, 6), bool)
    mask[:3, :3] = True  # a square in the corner, touching the frame on two sides
    expected = np.zeros((6, 6), bool)
    expected[2, :3] = True
    expected[:3, 2] = True  # (2,0) (2,1) (2,2) (0,2) (1,2): the sides facing the rest of the image
    np.testing.assert_array_equal(boundary(mask), expected)
    assert not boundary(np.ones((4, 7), bool)).any()
    assert not boundary(np.zeros((4, 7), bool)).any()


def test_ignored_pixels_behave_like_the_frame_for_boundaries():
    mask = np.zeros((6, 6), bool)
    mask[:, :3] = True
    valid = np.ones((6, 6), bool)
    valid[:, 3] = False  # an ignored column right next to the region: no boundary there
    assert not boundary(mask, valid).any()
    assert boundary(mask)[:, 2].all()


# ------------------------------------------------------------------------------------ boundary F1


def _stripes(width: int, edge: int) -> np.ndarray:
    """5 x width labels: class 0 left of column ``edge``, class 1 from it on."""
    labels = np.zeros((5, width), np.uint8)
    labels[:, edge:] = 1
    return labels


@pytest.mark.parametrize(
    ("shift", "tolerance", "expected"), [(2, 2, 1.0), (3, 2, 0.0), (3, 3, 1.0), (1, 0, 0.0)]
)
def test_boundary_f1_tolerance_is_a_chebyshev_square(shift, tolerance, expected):
    # truth edge between columns 9 | 10; the prediction's edge is `shift` columns to the right, so every
    # boundary pixel is exactly `shift` px from the other boundary: all match or none do.
    truth, pred = _stripes(20, 10), _stripes(20, 10 + shift)
    assert boundary_f1(pred == 1, truth == 1, tolerance) == expected
    s = score_image(truth, pred, 2, tolerance=tolerance)
    assert_scores(s.bf1, [expected, expected])


def test_boundary_f1_diagonal_offset_counts_by_chebyshev_distance():
    truth = np.zeros((12, 12), bool)
    truth[2:5, 2:5] = True
    pred = np.zeros((12, 12), bool)
    pred[4:7, 4:7] = True  # moved (2, 2): every ring pixel has a partner at Chebyshev distance <= 2
    assert boundary_f1(pred, truth, 2) == 1.0
    assert boundary_f1(pred, truth, 1) < 1.0


def test_boundary_f1_with_an_extra_predicted_blob():
    truth = np.zeros((8, 16), np.uint8)
    truth[2:6, 2:6] = 1
    pred = truth.copy()
    pred[2:6, 10:14] = 1
    # class 1: Bt = ring of the 4x4 square (12 px); Bp = two rings (24 px), the far one 5 px away ->
    #   precision 12/24, recall 12/12, BF1 = 2 * 0.5 * 1 / 1.5 = 2/3.
    # class 0: Bt = the 6x6 ring around the square (20 px); Bp = two such rings (40 px), the far one
    #   starts at column 9, 3 px from column 6 -> precision 1/2, recall 1, BF1 2/3.
    # IoU: class 1 16/32; class 0 |T| = 112, |P| = 96, inter 96 -> 6/7. Dice: 32/48, 192/208.
    s = score_image(truth, pred, 2)
    assert_scores(s.bf1, [2 / 3, 2 / 3])
    assert_scores(s.iou, [6 / 7, 0.5])
    assert_scores(s.dice, [12 / 13, 2 / 3])
    assert boundary_f1(pred == 1, truth == 1) == pytest.approx(2 / 3)


def test_boundary_f1_special_cases():
    empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    speck = empty.copy()
    speck[1, 1] = True
    assert np.isnan(boundary_f1(empty, empty))  # absent from both: left out
    assert boundary_f1(full, full) == 1.0  # fills the image in both: no boundary in either
    assert boundary_f1(speck, empty) == 0.0  # present in only one
    assert boundary_f1(full, speck) == 0.0  # present in both, only the prediction lacks a boundary
    with pytest.raises(ValueError, match="tolerance"):
        boundary_f1(full, full, -1)


# ----------------------------------------------------------------------------------- one image


def test_half_and_half_image_scores_by_hand():
    truth = np.zeros((4, 4), np.uint8)
    truth[:, 2:] = 1
    pred = np.zeros((4, 4), np.uint8)
    pred[:, 3] = 1
    # class 0: |T| 8, |P| 12, inter 8 -> IoU 2/3, Dice 16/20; class 1: |T| 8, |P| 4, inter 4 -> IoU 1/2,
    # Dice 8/12. Boundaries: Bt0 = col 1, Bp0 = col 2, Bt1 = col 2, Bp1 = col 3: all within 1 px -> BF1 1.
    # Class 2 is absent from both and is left out of the means.
    s = score_image(truth, pred, 3, name="a")
    assert s.name == "a"
    assert_scores(s.iou, [2 / 3, 0.5, NAN])
    assert_scores(s.dice, [0.8, 2 / 3, NAN])
    assert_scores(s.bf1, [1.0, 1.0, NAN])
    assert s.miou == pytest.approx(7 / 12)
    assert s.mdice == pytest.approx((0.8 + 2 / 3) / 2)
    assert s.mbf1 == 1.0
    # with tolerance 0 the edges (1 px apart) no longer match
    assert_scores(score_image(truth, pred, 3, tolerance=0).bf1, [0.0, 0.0, NAN])


def test_study_convention_counts_absent_classes_as_iou_1_and_bf1_0():
    truth = np.zeros((4, 4), np.uint8)
    truth[:, 2:] = 1
    pred = np.zeros((4, 4), np.uint8)
    pred[:, 3] = 1
    s = score_image(truth, pred, 3, absent_as_study=True)
    assert_scores(s.iou, [2 / 3, 0.5, 1.0])
    assert_scores(s.dice, [0.8, 2 / 3, 1.0])
    assert_scores(s.bf1, [1.0, 1.0, 0.0])
    assert s.miou == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert s.mbf1 == pytest.approx(2 / 3)


def test_class_present_only_in_prediction_scores_zero():
    truth = np.zeros((4, 4), np.uint8)
    pred = truth.copy()
    pred[1, 1] = 1
    # class 0: |T| 16, |P| 15 -> IoU 15/16, Dice 30/31; BF1: truth fills the image (no boundary), the
    # prediction has a ring around the speck -> only one boundary empty -> 0. Class 1 only in P -> 0.
    s = score_image(truth, pred, 2)
    assert_scores(s.iou, [15 / 16, 0.0])
    assert_scores(s.dice, [30 / 31, 0.0])
    assert_scores(s.bf1, [0.0, 0.0])
    assert s.miou == pytest.approx(15 / 32)
    # and the mirror case: only in truth
    s = score_image(pred, truth, 2)
    assert_scores(s.iou, [15 / 16, 0.0])
    assert_scores(s.bf1, [0.0, 0.0])


def test_class_filling_the_image_in_both_scores_one():
    labels = np.full((6, 9), 2, np.uint8)
    s = score_image(labels, labels.copy(), 4)
    assert_scores(s.iou, [NAN, NAN, 1.0, NAN])
    assert (s.miou, s.mdice, s.mbf1) == (1.0, 1.0, 1.0)


def test_ignored_truth_pixels_are_neither_matches_nor_misses():
    # A data bar (rows 4-5) is ignored in the truth; the prediction labels it class 1 and so draws an
    # edge between rows 3 and 4. Inside the scored area class 0 fills everything in both.
    truth = np.zeros((6, 8), np.uint8)
    truth[4:] = 255
    pred = np.zeros((6, 8), np.uint8)
    pred[4:] = 1
    s = score_image(truth, pred, 2)
    assert_scores(s.iou, [1.0, NAN])
    assert_scores(s.bf1, [1.0, NAN])
    assert (s.miou, s.mbf1) == (1.0, 1.0)
    np.testing.assert_array_equal(s.confusion, [[32, 0], [0, 0]])
    valid = truth != 255
    assert boundary_f1(pred == 0, truth == 0, valid=valid) == 1.0


def test_all_pixels_ignored_gives_nan_means():
    truth = np.full((3, 3), 255, np.uint8)
    s = score_image(truth, np.zeros_like(truth), 2)
    assert np.isnan(s.miou) and np.isnan(s.mbf1)


def _reference_bf1(pred: np.ndarray, truth: np.ndarray, valid: np.ndarray, r: int) -> float:
    """The definition, pixel by pixel (slow; for small arrays)."""
    h, w = truth.shape
    p, t = pred & valid, truth & valid

    def edge(m):
        out = np.zeros_like(m)
        for y, x in itertools.product(range(h), range(w)):
            if not m[y, x]:
                continue
            for dy, dx in itertools.product((-1, 0, 1), repeat=2):
                yy, xx = y + dy, x + dx
                if 0 <= yy < h and 0 <= xx < w and valid[yy, xx] and not m[yy, xx]:
                    out[y, x] = True
        return out

    def matched(a, b):
        ys, xs = np.nonzero(b)
        return sum(
            bool(np.any((np.abs(ys - y) <= r) & (np.abs(xs - x) <= r)))
            for y, x in zip(*np.nonzero(a), strict=True)
        )

    if not p.any() and not t.any():
        return NAN
    if not (p.any() and t.any()):
        return 0.0
    bp, bt = edge(p), edge(t)
    if not bp.any() and not bt.any():
        return 1.0
    if not (bp.any() and bt.any()):
        return 0.0
    prec, rec = matched(bp, bt) / bp.sum(), matched(bt, bp) / bt.sum()
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def test_boundary_f1_agrees_with_a_pixel_by_pixel_reference():
    rng = np.random.default_rng(7)
    for trial in range(12):
        h, w = rng.integers(5, 14, size=2)
        truth = (rng.random((h, w)) < 0.4).astype(np.uint8)
        truth[rng.random((h, w)) < 0.15 * (trial % 2)] = 255
        pred = np.where(rng.random((h, w)) < 0.2, 1 - np.minimum(truth, 1), np.minimum(truth, 1))
        valid = truth != 255
        r = int(trial % 3)
        s = score_image(truth, pred.astype(np.uint8), 2, tolerance=r)
        for c in (0, 1):
            expected = _reference_bf1(pred == c, truth == c, valid, r)
            assert_scores(s.bf1[c], expected)
            assert_scores(boundary_f1(pred == c, truth == c, r, valid), expected)


# --------------------------------------------------------------------------------------- data set


def _two_images() -> Scorer:
    scorer = Scorer(["Matrix", "Carbide", "Void"])
    # A: 2x2 all class 0 in both -> IoU0 1, BF1 1 (fills the image); classes 1, 2 left out.
    scorer.add("a.png", np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    # B: truth all class 1, prediction one class-1 pixel -> class 0 only in P (0, 0, 0); class 1
    #   IoU 1/4, Dice 2/5, BF1 0 (truth has no boundary, prediction does); mIoU 1/8, mDice 1/5.
    scorer.add("b.png", np.ones((2, 2), np.uint8), np.array([[1, 0], [0, 0]], np.uint8))
    return scorer


def test_dataset_iou_comes_from_the_summed_confusion_not_the_image_mean():
    result = _two_images().result()
    assert result["confusion"] == [[4, 0, 0], [3, 1, 0], [0, 0, 0]]
    pc = result["per_class"]
    # summed: class 0 tp 4, |T| 4, |P| 7 -> IoU 4/7, Dice 8/11; class 1 tp 1, |T| 4, |P| 1 -> 1/4, 2/5.
    assert_scores(pc["iou"][:2], [4 / 7, 1 / 4])
    assert_scores(pc["dice"][:2], [8 / 11, 2 / 5])
    # BF1: class 0 over A (1) and B (0) -> 1/2; class 1 over B only -> 0
    assert_scores(pc["bf1"][:2], [0.5, 0.0])
    # class 2 has no pixel anywhere -> null
    assert (pc["iou"][2], pc["dice"][2], pc["bf1"][2]) == (None, None, None)
    assert pc["frequency"] == [0.5, 0.5, 0.0]
    assert_scores(pc["correct_pct"][:2], [100.0, 25.0])
    assert pc["main_confusion"][0] is None
    assert pc["main_confusion"][1] == {"class": "Matrix", "id": 0, "pct": 75.0}
    assert result["pixel_accuracy"] == pytest.approx(5 / 8)
    summary = result["summary"]
    assert summary["miou"] == pytest.approx({"mean": 0.5625, "std": 0.4375, "min": 0.125, "max": 1.0})
    assert summary["mdice"] == pytest.approx({"mean": 0.6, "std": 0.4, "min": 0.2, "max": 1.0})
    assert summary["mbf1"] == pytest.approx({"mean": 0.5, "std": 0.5, "min": 0.0, "max": 1.0})


def test_dataset_under_the_study_convention():
    scorer = Scorer(["Matrix", "Carbide"], absent_as_study=True)
    scorer.add("a.png", np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    scorer.add("b.png", np.ones((2, 2), np.uint8), np.array([[1, 0], [0, 0]], np.uint8))
    result = scorer.result()
    # A: class 1 absent -> IoU 1, BF1 0 -> mIoU 1, mBF1 1/2. B unchanged (both classes present).
    assert [i["miou"] for i in result["per_image"]] == pytest.approx([1.0, 0.125])
    assert [i["mbf1"] for i in result["per_image"]] == pytest.approx([0.5, 0.0])
    # class 1 BF1 is now averaged over both images (A counts 0)
    assert_scores(result["per_class"]["bf1"], [0.5, 0.0])
    assert result["convention"] == "absent-as-study"


def test_result_follows_the_json_schema():
    result = _two_images().result()
    text = json.dumps(result, allow_nan=False)  # no NaN may leak into the file
    assert json.loads(text) == result
    assert {"classes", "confusion", "per_class", "per_image", "summary"} <= result.keys()
    assert result["classes"] == ["Matrix", "Carbide", "Void"]
    assert {"iou", "dice", "bf1"} <= result["per_class"].keys()
    for values in result["per_class"].values():
        assert len(values) == 3
    assert [set(i) >= {"name", "miou", "mdice", "mbf1"} for i in result["per_image"]] == [True, True]
    assert result["per_image"][0]["name"] == "a.png"
    assert result["per_image"][0]["iou"] == [1.0, None, None]
    for key in ("miou", "mdice", "mbf1"):
        assert set(result["summary"][key]) == {"mean", "std", "min", "max"}
    assert all(isinstance(v, int) for row in result["confusion"] for v in row)


def test_empty_scorer_gives_null_summary():
    result = Scorer(["a", "b"]).result()
    json.dumps(result, allow_nan=False)
    assert result["per_image"] == []
    assert result["summary"]["miou"] == {"mean": None, "std": None, "min": None, "max": None}
    assert result["per_class"]["iou"] == [None, None]
    assert result["confusion"] == [[0, 0], [0, 0]]
    assert result["pixel_accuracy"] is None


def test_boundary_f1_valid_region_behaves_like_the_image_frame():
    # Scored area: the top 10 rows. The documented rule: ignored pixels behave like the space beyond the
    # frame, so scoring with `valid` must equal scoring the cropped top rows alone.
    truth = np.zeros((20, 20), bool)
    truth[:10, :10] = True  # touches the ignored rows along its bottom
    pred = np.zeros((20, 20), bool)
    pred[:8, :10] = True  # stops two rows short of them
    pred[12:, :] = True  # and claims pixels in the ignored rows
    valid = np.zeros((20, 20), bool)
    valid[:10] = True
    for tolerance in (0, 1, 2, 3):
        cropped = boundary_f1(pred[:10], truth[:10], tolerance)
        assert boundary_f1(pred, truth, tolerance, valid=valid) == pytest.approx(cropped), tolerance
    assert boundary_f1(pred, truth, 2, valid=valid) < 1.0


def test_boundary_f1_of_a_class_found_only_in_ignored_pixels_is_left_out():
    valid = np.zeros((12, 12), bool)
    valid[:6] = True
    pred = np.zeros((12, 12), bool)
    pred[8:, 3:7] = True
    assert np.isnan(boundary_f1(pred, np.zeros((12, 12), bool), valid=valid))
