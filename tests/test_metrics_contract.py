"""Metrics behaviour that mutation testing (`make mutation`) found unchecked: input checks and their
messages, one-pixel and whole-image classes, the Scorer's totals, keys and conventions, and no warnings."""

from __future__ import annotations

import re

import numpy as np
import pytest

from semphase.metrics import Scorer, boundary, boundary_f1, confusion_counts, score_image

U8 = np.uint8


def _pair(h: int = 3, w: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((h, w), U8), np.zeros((h, w), U8)


# ------------------------------------------------------------------------------------ input checks


@pytest.mark.parametrize(
    ("truth", "pred", "classes", "message"),
    [
        (*_pair(), 0, "num_classes must be in 1..254, got 0"),
        (*_pair(), 255, "num_classes must be in 1..254, got 255"),
        (
            np.zeros((2, 2, 2), U8),
            np.zeros((2, 2, 2), U8),
            2,
            "truth and prediction must be 2-D of one shape, got (2, 2, 2) and (2, 2, 2)",
        ),
        (
            np.zeros((2, 2), U8),
            np.zeros((2, 3), U8),
            2,
            "truth and prediction must be 2-D of one shape, got (2, 2) and (2, 3)",
        ),
        (np.zeros((2, 2), np.float32), np.zeros((2, 2), U8), 2, "truth must hold integer class ids"),
        (np.zeros((2, 2), U8), np.zeros((2, 2), np.float32), 2, "prediction must hold integer class ids"),
        (np.full((2, 2), -1, np.int16), np.zeros((2, 2), U8), 2, "truth holds negative class ids"),
        (np.zeros((2, 2), U8), np.full((2, 2), -1, np.int32), 2, "prediction holds negative class ids"),
        (np.array([[0, 2]], U8), np.zeros((1, 2), U8), 2, "truth holds ids [2] outside 0..1 and 255"),
    ],
)
def test_bad_inputs_are_refused_with_a_message_that_names_the_problem(truth, pred, classes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        confusion_counts(truth, pred, classes)


def test_the_message_about_stray_truth_ids_lists_at_most_ten():
    truth = np.arange(2, 14, dtype=U8)[None]  # twelve ids outside 0..1
    with pytest.raises(ValueError) as info:
        confusion_counts(truth, np.zeros_like(truth), 2)
    assert str(info.value) == f"truth holds ids {list(range(2, 12))} outside 0..1 and 255"


def test_one_class_and_254_classes_are_valid_tables():
    truth, pred = _pair()
    assert confusion_counts(truth, pred, 1).tolist() == [[9, 0]]
    counts = confusion_counts(truth + 253, pred + 253, 254)
    assert counts.shape == (254, 255) and counts[253, 253] == 9 and counts.sum() == 9


def test_signed_integer_labels_with_class_zero_are_counted():
    truth = np.array([[0, 1], [1, 0]], np.int64)
    pred = np.array([[0, 0], [1, 1]], np.int32)
    assert confusion_counts(truth, pred, 2).tolist() == [[1, 1, 0], [1, 1, 0]]


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_an_empty_image_has_empty_counts(dtype):
    empty = np.zeros((0, 0), dtype)
    assert confusion_counts(empty, empty, 2).tolist() == [[0, 0, 0], [0, 0, 0]]


def test_score_image_names_nothing_unless_told():
    assert score_image(*_pair(), 2).name == ""


# ------------------------------------------------------------------------- presence and BF1 per class


def test_a_class_that_fills_one_side_only_scores_bf1_zero():
    # Truth all class 0, prediction all class 1: neither mask has a boundary, yet each class is present on
    # one side only, so both score 0 (not the 1 of a class filling the image in both).
    truth, pred = np.zeros((4, 5), U8), np.ones((4, 5), U8)
    s = score_image(truth, pred, 2)
    assert s.bf1.tolist() == [0.0, 0.0] and s.iou.tolist() == [0.0, 0.0]
    assert boundary_f1(np.ones((4, 5), bool), np.zeros((4, 5), bool)) == 0.0


def test_a_class_of_a_single_pixel_is_present():
    truth = np.zeros((5, 5), U8)
    truth[2, 2] = 1
    s = score_image(truth, truth.copy(), 2)
    assert s.iou.tolist() == [1.0, 1.0] and s.bf1.tolist() == [1.0, 1.0]
    scorer = Scorer(["a", "b"])
    scorer.add("x", truth, truth.copy())
    assert scorer.result()["per_class"]["correct_pct"] == [100.0, 100.0]


# ---------------------------------------------------------------------------------------- boundaries


def test_boundaries_are_boolean_for_integer_and_empty_masks():
    mask = np.zeros((5, 5), U8)
    mask[1:4, 1:4] = 1
    valid = np.ones((5, 5), bool)
    for edge in (boundary(mask), boundary(mask, valid), boundary(np.zeros((5, 5), U8))):
        assert edge.dtype == bool
    assert boundary(mask).tolist() == boundary(mask.astype(bool)).tolist()
    assert boundary(mask).sum() == 8


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: boundary(np.zeros(4, bool)), "mask must be 2-D, got shape (4,)"),
        (
            lambda: boundary(np.zeros((2, 2), bool), np.ones((2, 3), bool)),
            "valid must have the mask's shape (2, 2), got (2, 3)",
        ),
        (
            lambda: boundary_f1(np.ones((2, 2), bool), np.ones((2, 3), bool)),
            "masks must be 2-D of one shape, got (2, 2) and (2, 3)",
        ),
    ],
)
def test_boundary_input_checks_name_the_shapes(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()


# -------------------------------------------------------------------------------------------- Scorer


def test_scorer_needs_a_class_name():
    with pytest.raises(ValueError, match="^need at least one class name$"):
        Scorer([])


def test_scorer_scores_every_image_at_its_own_tolerance():
    truth = np.zeros((4, 4), U8)
    truth[:, 2:] = 1
    pred = np.zeros((4, 4), U8)
    pred[:, 3] = 1  # every edge one pixel off: matched at tolerance 1 and up, not at 0
    strict, lenient = Scorer(["a", "b"], tolerance=0), Scorer(["a", "b"])
    assert strict.add("x", truth, pred).bf1.tolist() == [0.0, 0.0]
    assert lenient.add("x", truth, pred).bf1.tolist() == [1.0, 1.0]
    assert strict.result()["tolerance_px"] == 0 and lenient.result()["tolerance_px"] == 2


def test_unpredicted_pixels_add_up_over_images():
    scorer = Scorer(["a", "b"])
    truth = np.array([[0, 0], [1, 1]], U8)
    scorer.add("x", truth, np.array([[0, 255], [1, 255]], U8))
    scorer.add("y", truth, np.array([[255, 255], [1, 1]], U8))
    per_class = scorer.result()["per_class"]
    assert per_class["unpredicted"] == [3, 1]
    assert per_class["truth_pixels"] == [4, 4] and per_class["pred_pixels"] == [1, 3]


def test_main_confusion_can_be_no_prediction_or_any_class():
    scorer = Scorer(["a", "b", "c"])
    truth = np.array([[0, 0, 0, 1, 2]], U8)
    pred = np.array([[255, 255, 2, 0, 255]], U8)
    scorer.add("x", truth, pred)
    main = scorer.result()["per_class"]["main_confusion"]
    assert main[0] == {"class": "(no prediction)", "id": None, "pct": pytest.approx(200 / 3)}
    assert main[1] == {"class": "a", "id": 0, "pct": 100.0}  # a class of one pixel, mistaken
    assert main[2] == {"class": "(no prediction)", "id": None, "pct": 100.0}
    scorer = Scorer(["a", "b", "c"])
    scorer.add("y", np.zeros((1, 4), U8), np.array([[0, 2, 2, 1]], U8))
    assert scorer.result()["per_class"]["main_confusion"][0] == {"class": "c", "id": 2, "pct": 50.0}


def test_result_holds_exactly_the_documented_keys():
    scorer = Scorer(["a", "b"])
    truth = np.array([[0, 0], [1, 1]], U8)
    image = scorer.add("x", truth, np.array([[0, 1], [1, 1]], U8))
    result = scorer.result()
    assert set(result) == {
        "classes",
        "confusion",
        "per_class",
        "per_image",
        "summary",
        "pixel_accuracy",
        "images",
        "convention",
        "tolerance_px",
    }
    assert set(result["per_class"]) == {
        "iou",
        "dice",
        "bf1",
        "frequency",
        "correct_pct",
        "main_confusion",
        "truth_pixels",
        "pred_pixels",
        "unpredicted",
    }
    (entry,) = result["per_image"]
    assert set(entry) == {"name", "miou", "mdice", "mbf1", "iou", "dice", "bf1"}
    assert entry["mdice"] == pytest.approx(image.mdice) and entry["mdice"] == pytest.approx((2 / 3 + 0.8) / 2)
    assert entry["dice"] == pytest.approx([2 / 3, 0.8]) and entry["bf1"] == image.bf1.tolist()
    assert result["images"] == 1 and result["convention"] == "absent-left-out"
    assert result["tolerance_px"] == 2


def test_study_convention_still_leaves_a_class_absent_from_every_image_null():
    scorer = Scorer(["a", "b", "c"], absent_as_study=True)
    truth = np.array([[0, 0], [1, 1]], U8)
    scorer.add("x", truth, truth.copy())
    scorer.add("y", truth, truth.copy())
    per_class = scorer.result()["per_class"]
    assert per_class["bf1"] == [1.0, 1.0, None]
    assert per_class["iou"] == [1.0, 1.0, None]


@pytest.mark.filterwarnings("error")
def test_scoring_absent_classes_and_ignored_images_raises_no_warning():
    # NaN for a left-out class, an image whose every truth pixel is ignored, a scorer without images:
    # all defined results, and no RuntimeWarning on the console of `semphase score`.
    s = score_image(*_pair(), 3)
    assert np.isnan(s.iou[1:]).all() and s.miou == 1.0
    ignored = np.full((3, 3), 255, U8)
    s = score_image(ignored, np.zeros((3, 3), U8), 2)
    assert np.isnan(s.miou) and np.isnan(s.mdice) and np.isnan(s.mbf1)
    for images in ([], [(ignored, np.zeros((3, 3), U8))], [_pair()]):
        scorer = Scorer(["a", "b"])
        for truth, pred in images:
            scorer.add("x", truth, pred)
        result = scorer.result()
        assert result["per_class"]["bf1"][1] is None and result["per_class"]["correct_pct"][1] is None
        if not images or images[0][0] is ignored:
            assert result["pixel_accuracy"] is None
            assert result["per_class"]["frequency"] == [None, None]
