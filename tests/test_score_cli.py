"""`semphase score`: pairing by stem, raw vs contiguous ids, per-file problems, JSON equal to the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from semphase.cli.main import main
from semphase.evaluation.folders import choose_id_kind, pair_predictions, score_folders
from semphase.metrics import Scorer
from semphase.phases import DEFAULT_TABLE


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _labels(seed: int, shape=(24, 32)) -> np.ndarray:
    """Blocky class ids 0..4 (so boundaries exist), uint8."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 5, size=(shape[0] // 8, shape[1] // 8), dtype=np.uint8)
    return np.kron(small, np.ones((8, 8), np.uint8))


def _noisy(labels: np.ndarray, seed: int) -> np.ndarray:
    pred = labels.copy()
    pred[np.random.default_rng(seed).random(labels.shape) < 0.1] = 3
    return pred


def _run(args: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(args)
    return info.value.code


def test_plain_folders_scored_like_the_metrics_with_problems_listed(tmp_path, capsys):
    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
    expected = Scorer(DEFAULT_TABLE.names)
    for i in range(3):
        truth = _labels(i)
        pred = _noisy(truth, 10 + i)
        _write(truth_dir / f"img{i}.png", truth)
        _write(pred_dir / f"img{i}_mask.png", pred)  # semphase segment's naming
        _write(pred_dir / f"img{i}_overlay.png", np.zeros((24, 32, 3), np.uint8))  # not a label image
        expected.add(f"img{i}.png", truth, pred)
    _write(truth_dir / "lonely.png", _labels(5))
    _write(truth_dir / "small.png", _labels(6))
    _write(pred_dir / "small.png", _labels(6, (16, 16)))
    out = tmp_path / "score.json"
    assert _run(["score", str(pred_dir), str(truth_dir), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    reference = expected.result()
    for key in ("classes", "confusion", "per_class", "per_image", "summary"):
        assert result[key] == reference[key]  # JSON floats round-trip exactly
    assert result["truth_ids"]["kind"] == "contiguous" and result["pred_ids"]["kind"] == "contiguous"
    problems = {p["name"]: p["problem"] for p in result["problems"]}
    assert problems["lonely.png"] == "no prediction found"
    assert "16x16" in problems["small.png"] and "32x24" in problems["small.png"]
    assert result["unused_predictions"] == 3  # the overlays
    captured = capsys.readouterr()
    assert "lonely.png" in captured.err and "small.png" in captured.err
    assert "Per class" in captured.out and "mIoU" in captured.out


def test_dataset_truth_holds_raw_ids(tmp_path):
    dataset = tmp_path / "ds"
    pred_dir = tmp_path / "pred"
    expected = Scorer(DEFAULT_TABLE.names)
    for i in range(2):
        name = f"sem700_x{i * 256}_y0_HorizontalFlip"
        truth = _labels(i)
        _write(dataset / "AugmentedImages" / f"{name}.bmp", np.full(truth.shape, 100, np.uint8))
        _write(dataset / "AugmentedMasks" / f"{name}.bmp", truth + 1)  # raw ids 1..5
        pred = _noisy(truth, i)
        _write(pred_dir / f"{name}.png", pred)
        expected.add(f"{name}.bmp", truth, pred)
    result = score_folders(pred_dir, dataset, DEFAULT_TABLE)
    assert result["truth_is_dataset"] and result["truth_ids"]["kind"] == "raw"
    assert result["confusion"] == expected.result()["confusion"]
    assert [i["name"] for i in result["per_image"]] == [i["name"] for i in expected.result()["per_image"]]


def test_ilastik_style_predictions_with_raw_ids_are_detected(tmp_path):
    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
    truth = _labels(1)
    assert truth.max() == 4 and truth.min() == 0
    _write(truth_dir / "a.png", truth)
    _write(pred_dir / "a_Simple Segmentation.png", truth + 1)  # ilastik writes 1..N
    result = score_folders(pred_dir, truth_dir, DEFAULT_TABLE)
    assert result["pred_ids"]["kind"] == "raw"
    assert result["summary"]["miou"]["mean"] == 1.0
    # told otherwise, the raw 5s are "no prediction" and 1..4 land in the wrong classes
    wrong = score_folders(pred_dir, truth_dir, DEFAULT_TABLE, pred_ids="contiguous")
    assert wrong["summary"]["miou"]["mean"] < 0.5


def test_choose_id_kind_says_why():
    table = DEFAULT_TABLE  # raw ids 1..5
    assert choose_id_kind({0: 5, 2: 1}, table, "raw")[0] == "contiguous"
    assert choose_id_kind({5: 5, 2: 1, 255: 3}, table, "contiguous")[0] == "raw"
    kind, reason = choose_id_kind({1: 5, 2: 1}, table, "raw")
    assert kind == "raw" and "fit both" in reason
    assert choose_id_kind({1: 5, 2: 1}, table, "contiguous")[0] == "contiguous"
    kind, reason = choose_id_kind({0: 1, 5: 100, 9: 1}, table, "contiguous")
    assert kind == "raw" and "{0,9}" in reason  # raw leaves fewer pixels unexplained


def test_two_predictions_for_one_image_are_not_guessed(tmp_path):
    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
    _write(truth_dir / "a.png", _labels(0))
    _write(truth_dir / "sub" / "b.png", _labels(1))
    _write(pred_dir / "a.png", _labels(0))
    _write(pred_dir / "a_mask.png", _labels(0))
    _write(pred_dir / "b_mask.png", _labels(1))  # flat folder: found by file name
    pairing = pair_predictions(pred_dir, truth_dir)
    assert [(n, p.name) for n, _, p in pairing.pairs] == [("sub/b.png", "b_mask.png")]
    assert pairing.problems == [("a.png", "several predictions fit: a.png, a_mask.png")]


def test_nothing_to_score_exits_2_with_one_line(tmp_path, capsys):
    truth_dir, pred_dir = tmp_path / "truth", tmp_path / "pred"
    _write(truth_dir / "a.png", _labels(0))
    _write(pred_dir / "other.png", _labels(0))
    assert _run(["score", str(pred_dir), str(truth_dir)]) == 2
    err = capsys.readouterr().err
    assert "nothing could be scored" in err and "a.png: no prediction found" in err
    assert "Traceback" not in err
    assert _run(["score", str(tmp_path / "missing"), str(truth_dir)]) == 2
    assert "no such folder" in capsys.readouterr().err
