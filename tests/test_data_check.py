"""Dataset integrity check: every problem reported with its file, class counts, panels, CLI exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from semphase.cli.main import main
from semphase.data.check import check_dataset, report_to_dict, split_pixel_counts
from semphase.data.overlay import overlay, panel
from semphase.data.split import find_leaks, load_split
from semphase.imageio import read_raw
from semphase.phases import DEFAULT_TABLE, load_class_table


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, array)
    else:
        assert cv2.imwrite(str(path), array)
    return path


def clean_zenodo(
    root: Path, n_crops: int = 4, augs=("HorizontalFlip", "VerticalFlip")
) -> dict[str, np.ndarray]:
    """A tiny valid Zenodo-layout set; returns the raw mask of each name."""
    masks = {}
    for c in range(n_crops):
        for a, aug in enumerate(augs):
            name = f"sem700_x{32 * c}_y0_{aug}.bmp"
            raw = np.random.default_rng(10 * c + a).choice(np.array([1, 2, 3, 4, 5], np.uint8), size=(10, 12))
            _write(root / "AugmentedImages" / name, np.full((10, 12), 20 * c, np.uint8))
            _write(root / "AugmentedMasks" / name, raw)
            masks[name] = raw
    return masks


def test_clean_dataset_counts_every_class_pixel(tmp_path):
    masks = clean_zenodo(tmp_path)
    report = check_dataset(tmp_path)
    assert report.ok and report.problems == []
    assert report.n_images == len(masks)
    expected = sum(np.bincount(m.ravel(), minlength=6)[1:] for m in masks.values())
    np.testing.assert_array_equal(report.pixel_counts, expected)
    assert report.pixel_counts.dtype == np.int64
    np.testing.assert_allclose(report.fractions, expected / expected.sum())
    name = sorted(masks)[3]
    np.testing.assert_array_equal(
        report.per_image_counts[name], np.bincount(masks[name].ravel(), minlength=6)[1:]
    )


def test_split_pixel_counts_add_up_to_the_total(tmp_path):
    masks = clean_zenodo(tmp_path, n_crops=3)
    report = check_dataset(tmp_path)
    names = sorted(masks)
    per_split = split_pixel_counts(report, {"train": names[:4], "val": names[4:5], "test": names[5:]})
    np.testing.assert_array_equal(sum(per_split.values()), report.pixel_counts)
    np.testing.assert_array_equal(per_split["val"], report.per_image_counts[names[4]])


def _problems_by_file(report) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for p in report.problems:
        found.setdefault(p.path.name, []).append(p.reason)
    return found


def test_every_problem_is_reported_with_its_file(tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    ok = np.ones((6, 8), np.uint8)
    _write(images / "good.png", ok)
    _write(masks / "good.tif", ok)
    _write(images / "lonely.png", ok)  # no mask
    _write(masks / "orphan.png", ok)  # no image
    _write(images / "size.png", ok)
    _write(masks / "size.png", np.ones((6, 9), np.uint8))
    _write(images / "unknown.png", ok)
    _write(masks / "unknown.png", np.array([[0, 1, 7, 7, 2, 2, 2, 2]] * 6, np.uint8))
    _write(images / "rgb.png", np.dstack([ok, ok * 2, ok * 3]))
    _write(masks / "rgb.png", ok)
    _write(images / "float.tif", ok.astype(np.float32))
    _write(masks / "float.tif", ok)
    _write(images / "colourmask.png", ok)
    _write(masks / "colourmask.png", np.dstack([ok, ok, ok * 4]))
    (images / "empty.png").write_bytes(b"")
    _write(masks / "empty.png", ok)
    _write(images / "corrupt.bmp", ok)
    _write(masks / "corrupt.bmp", ok)
    (masks / "corrupt.bmp").write_bytes((masks / "corrupt.bmp").read_bytes()[:30])  # truncated
    (images / "garbage.tif").write_bytes(b"this is not a tiff at all")
    _write(masks / "garbage.png", ok)
    (images / "gone.png").symlink_to(tmp_path / "nowhere.png")  # unreadable: dangling link
    _write(masks / "gone.png", ok)
    (images / "readme.txt").write_text("notes")

    report = check_dataset(tmp_path)
    assert not report.ok
    found = _problems_by_file(report)
    assert any("image has no mask" in r for r in found["lonely.png"])
    assert any("mask has no image" in r for r in found["orphan.png"])
    assert any("mask is 9x6" in r and "size.png is 8x6" in r for r in found["size.png"])
    assert any("raw ids not in the class table: 0, 7" in r and "18 pixels" in r for r in found["unknown.png"])
    rgb_reasons = [p.reason for p in report.problems if p.path == images / "rgb.png"]
    assert rgb_reasons and "RGB image (colour)" in rgb_reasons[0]
    assert any("float32" in r for r in found["float.tif"])
    assert any("is no class colour" in r for r in found["colourmask.png"])
    assert any("0 bytes" in r for r in found["empty.png"])
    assert any("cannot decode" in r for r in found["corrupt.bmp"])
    assert any("cannot decode TIFF" in r for r in found["garbage.tif"])
    assert any("no such file" in r for r in found["gone.png"])
    assert any("not a dataset file" in r for r in found["readme.txt"])
    # Only the good pair and the pair with unknown ids (minus those pixels) are counted.
    assert sorted(report.per_image_counts) == ["good.png", "unknown.png"]
    assert report.ignored_pixels == 18
    np.testing.assert_array_equal(report.pixel_counts, [48 + 6, 24, 0, 0, 0])
    assert all("\n" not in p.reason for p in report.problems)


def test_gray_stored_as_rgb_image_is_flagged_as_such(tmp_path):
    ok = np.ones((4, 4), np.uint8)
    _write(tmp_path / "images" / "a.png", np.dstack([ok, ok, ok]))
    _write(tmp_path / "masks" / "a.png", ok)
    (problem,) = check_dataset(tmp_path).problems
    assert problem.path.name == "a.png" and "gray values stored as colour" in problem.reason


def test_sixteen_bit_tiff_images_are_fine(tmp_path):
    _write(tmp_path / "images" / "a.tif", np.full((4, 4), 40000, np.uint16))
    _write(tmp_path / "masks" / "a.png", np.full((4, 4), 3, np.uint8))
    report = check_dataset(tmp_path)
    assert report.ok and report.pixel_counts.tolist() == [0, 0, 16, 0, 0]


def test_custom_table_changes_what_is_unknown(tmp_path):
    _write(tmp_path / "images" / "a.png", np.ones((2, 3), np.uint8))
    _write(tmp_path / "masks" / "a.png", np.array([[0, 0, 255], [255, 255, 1]], np.uint8))
    default = check_dataset(tmp_path)  # 255 is "unlabelled" there, not an unknown id
    assert "raw ids not in the class table: 0 (" in default.problems[0].reason
    assert (default.ignored_pixels, default.unknown_pixels) == (5, 2)
    table_path = tmp_path / "classes.toml"
    table_path.write_text('[[classes]]\nname = "Bg"\nraw_id = 0\n[[classes]]\nname = "Fg"\nraw_id = 255\n')
    report = check_dataset(tmp_path, load_class_table(table_path))
    assert report.problems[0].reason.startswith("raw ids not in the class table: 1 ")
    assert report.pixel_counts.tolist() == [2, 3]
    assert report_to_dict(report)["class_names"] == ["Bg", "Fg"]


def test_missing_layout_is_one_problem_not_an_exception(tmp_path):
    report = check_dataset(tmp_path / "absent")
    assert report.dataset is None and not report.ok
    (problem,) = report.problems
    assert problem.path == tmp_path / "absent" and "images/ + masks/" in problem.reason


def test_overlay_colours_labels_and_leaves_ignored_pixels():
    image = np.full((2, 3), 100, np.uint8)
    labels = np.array([[0, 1, 255], [1, 9, 0]], np.uint8)
    out = overlay(image, labels, [(255, 0, 0), (0, 0, 255)], alpha=0.5)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [178, 50, 50])
    np.testing.assert_array_equal(out[0, 1], [50, 50, 178])
    np.testing.assert_array_equal(out[0, 2], [100, 100, 100])  # 255: uncoloured
    np.testing.assert_array_equal(out[1, 1], [100, 100, 100])  # no colour for id 9
    with pytest.raises(ValueError, match="uint8"):
        overlay(image.astype(np.uint16), labels, [(255, 0, 0)])


def test_panel_shows_three_panes_title_and_legend():
    image = np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))
    labels = (np.arange(64)[None, :] // 13 * np.ones((48, 1))).astype(np.uint8)
    out = panel(image, labels, DEFAULT_TABLE, "sem700_x0_y0_HorizontalFlip.bmp")
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[1] == 3 * 64 + 4 * 6
    assert out.shape[0] > 48 + 30  # title, captions and legend around the panes
    for phase in DEFAULT_TABLE.phases:  # every class colour is drawn (mask pane and legend)
        assert np.all(out == phase.color, axis=2).any(), phase.name
    big = panel(np.zeros((2000, 1000), np.uint8), np.zeros((2000, 1000), np.uint8), DEFAULT_TABLE, "big")
    assert big.shape[1] == 3 * 384 + 4 * 6  # shrunk to max_side 768 on the long side


# ------------------------------------------------------------------------------------------- CLI


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_cli_clean_dataset_exit_0_with_json_overlays_and_split(tmp_path, capsys):
    clean_zenodo(tmp_path / "ds", n_crops=5)
    out = tmp_path / "out"
    argv = ["data", "check", str(tmp_path / "ds"), "--json", str(out / "report.json")]
    argv += ["--overlays", str(out / "panels"), "--n-overlays", "3", "--split-out", str(out / "split.json")]
    assert _run(argv) == 0
    stdout = capsys.readouterr().out
    assert "Matrix" in stdout and "No leaks" in stdout and "No problems found" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] and report["n_images"] == 10 and report["problems"] == []
    assert [c["name"] for c in report["classes"]] == DEFAULT_TABLE.names
    assert sum(report["pixel_counts"]) == 10 * 120 and abs(sum(report["fractions"]) - 1) < 1e-9
    panels = sorted(p.name for p in (out / "panels").iterdir())
    assert len(panels) == 3 and len({n.split("_")[1] for n in panels}) == 3  # three different crops
    assert read_raw(out / "panels" / panels[0]).ndim == 3
    split = load_split(out / "split.json")
    assert find_leaks(split) == [] and all(split.values())
    assert report["split"]["train"] == len(split["train"])


def test_cli_problems_exit_1_and_list_each_file(tmp_path, capsys):
    clean_zenodo(tmp_path)
    bad = tmp_path / "AugmentedMasks" / "sem700_x0_y0_HorizontalFlip.bmp"
    bad.write_bytes(b"")
    (tmp_path / "AugmentedImages" / "sem700_x999_y0_Extra.bmp").write_bytes(b"BM garbage")
    report_path = tmp_path / "report.json"
    assert _run(["data", "check", str(tmp_path), "--json", str(report_path)]) == 1
    stdout = capsys.readouterr().out
    assert f"{bad}: empty file (0 bytes)" in stdout
    assert "sem700_x999_y0_Extra.bmp: image has no mask" in stdout.replace("\n", "")
    problems = json.loads(report_path.read_text())["problems"]
    assert {Path(p["path"]).name for p in problems} == {bad.name, "sem700_x999_y0_Extra.bmp"}


def test_cli_nothing_there_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert _run(["data", "check", str(tmp_path / "empty")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "no dataset found" in captured.err


def test_cli_unusable_classes_or_outputs_exit_2(tmp_path, capsys):
    clean_zenodo(tmp_path / "ds")
    ds = str(tmp_path / "ds")
    (tmp_path / "classes.json").write_text("{broken")
    (tmp_path / "a_file").write_text("x")
    assert _run(["data", "check", ds, "--classes", str(tmp_path / "classes.json")]) == 2
    assert _run(["data", "check", ds, "--classes", str(tmp_path / "missing.toml")]) == 2
    assert _run(["data", "check", ds, "--json", str(tmp_path / "a_file" / "r.json")]) == 2
    assert _run(["data", "check", ds, "--split-out", str(tmp_path)]) == 2
    assert _run(["data", "check", ds, "--overlays", str(tmp_path / "a_file")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 5 and "Traceback" not in err
