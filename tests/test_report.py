"""Study tables, per-image CSV and evaluation figures from a scoring result."""

from __future__ import annotations

import csv
import io

import cv2
import numpy as np
import pytest
from rich.console import Console

from semphase.errors import InputError
from semphase.evaluation.plots import log_frequency_correlation, row_percentages
from semphase.evaluation.report import (
    OverlayItem,
    format_summary_line,
    plot_confusion,
    plot_frequency_vs_iou,
    study_tables,
    write_overlay_panels,
    write_per_image_csv,
)
from semphase.metrics import Scorer
from semphase.phases import DEFAULT_TABLE


def _result() -> dict:
    scorer = Scorer(["Matrix", "Carbide", "Void"])
    scorer.add("a.png", np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8))
    scorer.add("sub/b.png", np.ones((2, 2), np.uint8), np.array([[1, 0], [0, 0]], np.uint8))
    return scorer.result()


def _read_png(path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image


def test_study_tables_show_summary_and_per_class_rows():
    from semphase.cli.common import print_tables

    console = Console(record=True, width=160)
    tables = study_tables(_result())
    assert [t.key for t in tables] == ["summary", "per_class"]  # plain text cells: the library prints nothing
    print_tables(tables, console)
    text = console.export_text()
    # summary: mIoU over images 1 and 1/8 -> mean 0.5625, std 0.4375
    assert "Summary over 2 images" in text
    assert "0.5625" in text and "0.4375" in text and "0.1250" in text
    carbide = next(line for line in text.splitlines() if "Carbide" in line)
    # IoU 1/4, Dice 2/5, BF1 0, 25% correct, mistaken for Matrix in 75%, half of the pixels
    for cell in ("0.2500", "0.4000", "0.0000", "25.00%", "Matrix (75.0%)", "50.000%"):
        assert cell in carbide, (cell, carbide)
    void = next(line for line in text.splitlines() if "Void" in line)
    assert void.count("-") >= 4  # no pixels anywhere: no values
    assert "pixel accuracy 62.50%" in text
    assert "left out" in text
    assert format_summary_line(_result()).startswith("mIoU 0.5625 +- 0.4375 | mDice 0.6000")


def test_per_image_csv_round_trips(tmp_path):
    path = tmp_path / "per_image.csv"
    write_per_image_csv(_result(), path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [r["name"] for r in rows] == ["a.png", "sub/b.png"]
    assert float(rows[1]["miou"]) == pytest.approx(0.125)
    assert float(rows[1]["iou_Carbide"]) == pytest.approx(0.25)
    assert rows[0]["iou_Carbide"] == ""  # left out of image a
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_row_percentages_and_correlation_by_hand():
    pct = row_percentages(_result())
    np.testing.assert_allclose(pct[:2], [[100, 0, 0], [75, 25, 0]])
    assert np.isnan(pct[2]).all()
    # perfectly linear in log10(frequency): r = 1
    assert log_frequency_correlation(
        np.array([0.001, 0.01, 0.1]), np.array([0.2, 0.5, 0.8])
    ) == pytest.approx(1.0)
    assert log_frequency_correlation(np.array([0.1, 0.5]), np.array([0.2, 0.4])) is None


def test_figures_are_written_as_png(tmp_path):
    result = _result()
    confusion = plot_confusion(result, tmp_path / "confusion.png")
    scatter = plot_frequency_vs_iou(result, tmp_path / "plots" / "frequency_vs_iou.png")
    assert _read_png(confusion).shape[2] in (3, 4)
    assert _read_png(scatter).shape[0] > 100
    empty = Scorer(["a", "b"]).result()  # no images: still a figure, no crash
    plot_frequency_vs_iou(empty, tmp_path / "empty.png")
    plot_confusion(empty, tmp_path / "empty_confusion.png")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.name.startswith(".")) == []


def test_overlay_panels_for_best_and_worst(tmp_path):
    rng = np.random.default_rng(0)
    truth = np.zeros((40, 60), np.uint8)
    truth[10:30, 20:50] = 2
    truth[-3:] = 255
    pred = truth.copy()
    pred[-3:] = 0
    pred[12:18, 22:30] = 4
    image = rng.integers(0, 255, truth.shape, dtype=np.uint8)
    items = [
        OverlayItem("best-1", "sem700_x0_y0_HorizontalFlip.bmp", image, truth, pred, 0.91, 0.8),
        OverlayItem("worst-1", "run/a b.png", image, truth, pred, None, None),
    ]
    paths = write_overlay_panels(items, DEFAULT_TABLE, tmp_path / "overlays")
    assert [p.name for p in paths] == [
        "overlay_best-1_sem700_x0_y0_HorizontalFlip.png",
        "overlay_worst-1_run__a_b.png",
    ]
    panel = _read_png(paths[0])
    assert panel.shape[1] > 3 * panel.shape[0]  # five panes side by side
    with pytest.raises(ValueError, match="one shape"):
        write_overlay_panels([OverlayItem("x", "x", image, truth[:10], pred, None)], DEFAULT_TABLE, tmp_path)


def test_unwritable_output_is_an_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError, match="file"):
        write_per_image_csv(_result(), blocker / "per_image.csv")
    with pytest.raises(InputError):
        plot_confusion(_result(), blocker / "confusion.png")
