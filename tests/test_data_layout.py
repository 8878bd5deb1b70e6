"""Dataset layout detection, pairing by name/stem, crop groups, and loading pairs through a class table."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from semphase.data.layout import group_key, load_pair, open_dataset
from semphase.errors import InputError
from semphase.phases import DEFAULT_TABLE, load_class_table

AUGS = ("HorizontalFlip", "VerticalFlip", "brightness_1")


def _write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, array)
    else:
        assert cv2.imwrite(str(path), array)


def _mask(seed: int, shape=(12, 16), ids=(1, 2, 3, 4, 5)) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array(ids, dtype=np.uint8), size=shape)


def make_zenodo(root: Path, crops=((700, 0, 0), (700, 256, 0), (800, 0, 288)), augs=AUGS) -> list[str]:
    names = []
    for i, (mag, x, y) in enumerate(crops):
        for aug in augs:
            name = f"sem{mag}_x{x}_y{y}_{aug}.bmp"
            _write(root / "AugmentedImages" / name, np.full((12, 16), 10 * i, dtype=np.uint8))
            _write(root / "AugmentedMasks" / name, _mask(i))
            names.append(name)
    return sorted(names)


def test_zenodo_layout_pairs_same_names_sorted(tmp_path):
    names = make_zenodo(tmp_path)
    ds = open_dataset(tmp_path)
    assert ds.kind == "zenodo"
    assert ds.root == tmp_path
    assert [s.name for s in ds.samples] == names
    assert all(s.mask_path == tmp_path / "AugmentedMasks" / s.name for s in ds.samples)
    assert ds.unpaired_images == [] and ds.unpaired_masks == []
    assert ds.select([names[2], names[0]]) == [ds.by_name()[names[2]], ds.by_name()[names[0]]]


def test_generic_layout_matches_by_stem_across_suffixes_and_subfolders(tmp_path):
    _write(tmp_path / "Images" / "a.tif", np.zeros((8, 8), np.uint16))
    _write(tmp_path / "masks" / "a.png", _mask(0, (8, 8)))
    _write(tmp_path / "Images" / "b.bmp", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "masks" / "b.tiff", _mask(1, (8, 8)))
    _write(tmp_path / "Images" / "run2" / "c.png", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "masks" / "run2" / "c.png", _mask(2, (8, 8)))
    _write(tmp_path / "Images" / "lonely.png", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "masks" / "orphan.png", _mask(3, (8, 8)))
    (tmp_path / "Images" / ".a.png.123.part").write_bytes(b"half-written")  # hidden: skipped
    (tmp_path / "Images" / "notes.txt").write_text("x")
    ds = open_dataset(tmp_path)
    assert ds.kind == "generic"
    assert [s.name for s in ds.samples] == ["a.tif", "b.bmp", "run2/c.png"]
    assert ds.by_name()["a.tif"].mask_path == tmp_path / "masks" / "a.png"
    assert ds.by_name()["run2/c.png"].mask_path == tmp_path / "masks" / "run2" / "c.png"
    assert ds.unpaired_images == [tmp_path / "Images" / "lonely.png"]
    assert ds.unpaired_masks == [tmp_path / "masks" / "orphan.png"]
    assert ds.ignored_files == [tmp_path / "Images" / "notes.txt"]


def test_same_stem_twice_is_not_paired_silently(tmp_path):
    _write(tmp_path / "images" / "a.png", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "images" / "a.tif", np.zeros((8, 8), np.uint8))
    _write(tmp_path / "masks" / "a.png", _mask(0, (8, 8)))
    ds = open_dataset(tmp_path)
    assert ds.samples == []
    assert ds.ambiguous_files == [tmp_path / "images" / "a.png", tmp_path / "images" / "a.tif"]
    assert ds.unpaired_masks == []  # its problem is the ambiguity, reported once per image file


def test_parent_folder_and_image_folder_are_accepted(tmp_path):
    make_zenodo(tmp_path / "ni-wc")
    (tmp_path / "notes").mkdir()
    assert open_dataset(tmp_path).root == tmp_path / "ni-wc"
    assert open_dataset(tmp_path / "ni-wc" / "AugmentedImages").root == tmp_path / "ni-wc"


def test_two_datasets_below_the_folder_is_ambiguous(tmp_path):
    make_zenodo(tmp_path / "one")
    make_zenodo(tmp_path / "two")
    with pytest.raises(InputError, match="several datasets found"):
        open_dataset(tmp_path)


@pytest.mark.parametrize("setup", ["missing", "empty", "images_only", "no_images"])
def test_no_dataset_raises_one_line_naming_both_layouts(tmp_path, setup):
    root = tmp_path / "ds"
    if setup != "missing":
        root.mkdir()
    if setup == "images_only":
        _write(root / "images" / "a.png", np.zeros((4, 4), np.uint8))
    if setup == "no_images":
        (root / "images").mkdir()
        (root / "masks").mkdir()
        (root / "images" / "a.jpg").write_bytes(b"x")
    with pytest.raises(InputError) as info:
        open_dataset(root)
    message = str(info.value)
    assert "\n" not in message and str(root) in message
    assert "AugmentedImages/ + AugmentedMasks/" in message and "images/ + masks/" in message
    if setup == "images_only":
        assert "found images/ but no masks/" in message


def test_group_key_zenodo_stem_and_regex():
    assert group_key("sem700_x256_y288_ElasticTransform.bmp") == "sem700_x256_y288"
    assert group_key("sem1000_x0_y0_brightness_2.bmp") == "sem1000_x0_y0"
    assert group_key("run2/sem600_x0_y32_contrast_1.bmp") == "run2/sem600_x0_y32"
    assert group_key("sample_A_tile3.tif") == "sample_A_tile3"
    assert group_key("sample_A_tile3.tif", r"^(sample_[A-Z])_") == "sample_A"
    assert group_key("sample_A_tile3.tif", r"sample_[A-Z]") == "sample_A"
    with pytest.raises(InputError, match="other_B.tif"):
        group_key("other_B.tif", r"^(sample_[A-Z])_")
    with pytest.raises(InputError, match="invalid group regex"):
        group_key("a.tif", "(")


def test_select_names_the_missing_sample(tmp_path):
    names = make_zenodo(tmp_path)
    with pytest.raises(InputError, match="nope.bmp"):
        open_dataset(tmp_path).select([names[0], "nope.bmp", "also.bmp"])


def test_load_pair_remaps_through_default_table(tmp_path):
    make_zenodo(tmp_path)
    sample = open_dataset(tmp_path).samples[0]
    raw = cv2.imread(str(sample.mask_path), cv2.IMREAD_UNCHANGED)
    image, labels = load_pair(sample, DEFAULT_TABLE)
    assert image.dtype == np.uint8 and image.shape == (12, 16)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, raw.astype(np.int16) - 1)


@pytest.mark.parametrize("fmt", ["json", "toml"])
def test_load_pair_remaps_through_custom_table(tmp_path, fmt):
    raw = np.array([[0, 128, 255, 7]] * 4, dtype=np.uint8)
    _write(tmp_path / "images" / "a.png", np.zeros((4, 4), np.uint16))
    _write(tmp_path / "masks" / "a.png", raw)
    classes = [("Matrix", 0), ("Carbide", 128), ("Pore", 255)]
    if fmt == "json":
        text = json.dumps({"classes": [{"name": n, "raw_id": r} for n, r in classes]})
    else:
        text = "".join(f'[[classes]]\nname = "{n}"\nraw_id = {r}\n' for n, r in classes)
    table_path = tmp_path / f"classes.{fmt}"
    table_path.write_text(text)
    image, labels = load_pair(open_dataset(tmp_path).samples[0], load_class_table(table_path))
    assert image.dtype == np.uint16
    np.testing.assert_array_equal(labels[0], [0, 1, 2, 255])  # 7 is unknown -> ignored


def test_load_pair_rejects_size_mismatch_naming_the_mask(tmp_path):
    _write(tmp_path / "images" / "a.png", np.zeros((4, 4), np.uint8))
    _write(tmp_path / "masks" / "a.png", _mask(0, (4, 5)))
    with pytest.raises(InputError, match=r"masks.a\.png: mask is 5x4"):
        load_pair(open_dataset(tmp_path).samples[0], DEFAULT_TABLE)
