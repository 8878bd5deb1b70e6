"""The synthetic Ni-WC generator: determinism, Zenodo layout, plausible phases, aligned variants,
large TIFF with data bar and FEI pixel size, and the `semphase synth` command's argument errors."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import tifffile

from semphase.cli.main import main
from semphase.data.synth import (
    MAGNIFICATIONS,
    VARIANTS,
    augment,
    crop_specs,
    synth_micrograph,
    write_dataset,
    write_large,
)
from semphase.data.synth.render import prepare
from semphase.errors import InputError
from semphase.imageio import read_label
from semphase.phases import DEFAULT_TABLE, IGNORE

NAME = re.compile(r"^sem(600|700|800|1000)_x(\d+)_y(\d+)_(\w+)\.bmp$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    images = write_dataset(out, groups=4, size=128, seed=11)
    return out, images


def test_micrograph_same_seed_same_bytes_other_seed_differs():
    image, labels = synth_micrograph(160, 128, seed=3, magnification=800)
    again = synth_micrograph(160, 128, seed=3, magnification=800)
    other = synth_micrograph(160, 128, seed=4, magnification=800)
    assert image.shape == labels.shape == (160, 128)
    assert image.dtype == labels.dtype == np.uint8
    assert labels.max() <= 4
    assert image.tobytes() == again[0].tobytes() and labels.tobytes() == again[1].tobytes()
    assert image.tobytes() != other[0].tobytes()


def test_rendering_in_row_bands_equals_the_whole_frame():
    # What lets write_large render huge frames band by band without seams.
    micrograph = prepare(300, 200, seed=5, magnification=600)
    whole_image, whole_labels = micrograph.render(0, 300)
    parts = [micrograph.render(y, min(y + 64, 300)) for y in range(0, 300, 64)]
    assert np.array_equal(np.concatenate([p[0] for p in parts]), whole_image)
    assert np.array_equal(np.concatenate([p[1] for p in parts]), whole_labels)


def test_image_is_brighter_where_labels_say_so():
    # Image and labels come from one geometry: per-phase mean grey levels follow the phase order.
    image, labels = synth_micrograph(384, 384, seed=21, magnification=700)
    means = [float(image[labels == c].mean()) for c in range(5)]
    matrix, carbide, void, reprecipitate, dilution = means
    assert matrix < carbide < reprecipitate < dilution < void
    assert 10 < carbide - matrix < 45  # faint, but visible


def test_dataset_layout_names_and_mask_ids(dataset):
    out, images = dataset
    image_names = sorted(p.name for p in (out / "AugmentedImages").iterdir())
    mask_names = sorted(p.name for p in (out / "AugmentedMasks").iterdir())
    assert image_names == mask_names == sorted(p.name for p in images)
    assert len(image_names) == 4 * 9
    groups: dict[tuple, set] = {}
    for name in image_names:
        match = NAME.match(name)
        assert match, name
        mag, x, y, variant = int(match[1]), int(match[2]), int(match[3]), match[4]
        assert x % 32 == 0 and y % 32 == 0
        groups.setdefault((mag, x, y), set()).add(variant)
    assert len(groups) == 4 and {g[0] for g in groups} == set(MAGNIFICATIONS)
    assert all(v == set(VARIANTS) for v in groups.values())
    for name in image_names[:9]:
        for folder in ("AugmentedImages", "AugmentedMasks"):
            path = out / folder / name
            data = path.read_bytes()
            assert data[:2] == b"BM" and int.from_bytes(data[28:30], "little") == 8  # 8 bits per pixel
            array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            assert array.dtype == np.uint8 and array.shape == (128, 128)
        raw = read_label(out / "AugmentedMasks" / name)
        assert set(np.unique(raw).tolist()) <= {1, 2, 3, 4, 5}


def test_dataset_is_deterministic(tmp_path):
    first = write_dataset(tmp_path / "a", groups=1, size=64, seed=2)
    second = write_dataset(tmp_path / "b", groups=1, size=64, seed=2)
    third = write_dataset(tmp_path / "c", groups=1, size=64, seed=3)
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]
    assert {p.read_bytes() for p in first}.isdisjoint(p.read_bytes() for p in third)


def test_class_fractions_are_plausible():
    counts = np.zeros(5)
    for i in range(8):
        _, labels = synth_micrograph(320, 320, seed=40 + i, magnification=MAGNIFICATIONS[i % 4])
        counts += np.bincount(labels.ravel(), minlength=5)
    fraction = counts / counts.sum()
    matrix, carbide, void, reprecipitate, dilution = fraction
    assert (fraction > 0).all()
    assert carbide < 0.02
    assert 0.2 < matrix < 0.5 and 0.25 < void < 0.55
    assert 0.05 < reprecipitate < 0.2 and 0.05 < dilution < 0.2
    assert carbide < min(reprecipitate, dilution)


def test_flips_and_rotation_transform_the_base_crop(dataset):
    out, _ = dataset
    spec = crop_specs(4, seed=11)[1]
    image, labels = synth_micrograph(128, 128, spec.seed, spec.magnification)
    raw = DEFAULT_TABLE.to_raw(labels)

    def pair(variant):
        name = spec.file_name(variant)
        img = cv2.imread(str(out / "AugmentedImages" / name), cv2.IMREAD_UNCHANGED)
        return img, read_label(out / "AugmentedMasks" / name)

    img, mask = pair("HorizontalFlip")
    assert np.array_equal(img, image[:, ::-1]) and np.array_equal(mask, raw[:, ::-1])
    img, mask = pair("VerticalFlip")
    assert np.array_equal(img, image[::-1]) and np.array_equal(mask, raw[::-1])
    img, mask = pair("RandomRotate90")
    k = [k for k in (1, 2, 3) if np.array_equal(img, np.rot90(image, k))]
    assert len(k) == 1 and np.array_equal(mask, np.rot90(raw, k[0]))
    for variant in ("brightness_1", "brightness_2", "contrast_1", "contrast_2"):
        img, mask = pair(variant)
        assert np.array_equal(mask, raw) and not np.array_equal(img, image)


@pytest.mark.parametrize("variant", ["ElasticTransform", "GridDistortion"])
def test_warps_move_image_and_mask_together(variant):
    _, labels = synth_micrograph(192, 192, seed=8, magnification=1000)
    image = (labels.astype(np.uint8) * 50).astype(np.uint8)  # image that *is* the mask
    warped, warped_labels = augment(image, labels, variant, seed=1)
    assert not np.array_equal(warped_labels, labels)
    assert set(np.unique(warped_labels)) <= set(np.unique(labels))
    # Away from class edges (where bilinear and nearest-neighbour sampling legitimately differ) the
    # warped image must still read the warped label (a one-pixel misalignment drops this to ~0.985).
    kernel = np.ones((3, 3), np.uint8)
    interior = cv2.erode(warped_labels, kernel) == cv2.dilate(warped_labels, kernel)
    assert interior.mean() > 0.5
    match = np.abs(warped.astype(int) - warped_labels.astype(int) * 50)[interior] <= 1
    assert match.mean() > 0.998


def test_augment_rejects_unknown_variant():
    image = np.zeros((8, 8), np.uint8)
    with pytest.raises(ValueError, match="unknown variant"):
        augment(image, image, "Solarize", seed=0)


def test_large_tiff_with_databar_and_pixel_size_roundtrips(tmp_path):
    tif, truth = write_large(tmp_path / "big.tif", (1024, 640), seed=2, databar_px=48, pixel_size_um=0.125)
    assert truth == tmp_path / "big_truth.png"
    with tifffile.TiffFile(tif) as handle:
        fei = handle.fei_metadata
        page = handle.pages.first
        pixels = page.asarray()
        x_res = page.tags["XResolution"].value
        unit = page.tags["ResolutionUnit"].value
    assert pixels.shape == (688, 1024) and pixels.dtype == np.uint8
    assert fei["Scan"]["PixelWidth"] == pytest.approx(0.125e-6)
    assert fei["Image"]["ResolutionY"] == 640 and fei["Image"]["ResolutionX"] == 1024
    assert x_res[0] / x_res[1] == pytest.approx(1e4 / 0.125) and unit == 3  # pixels per centimetre
    labels = read_label(truth)
    assert labels.shape == (688, 1024)
    assert (labels[640:] == IGNORE).all() and labels[:640].max() <= 4
    bar = pixels[640:]
    assert (bar == 0).mean() > 0.6 and (bar == 255).any()  # black band with white text and scale bar


def test_large_tiff_is_deterministic_and_plain_without_pixel_size(tmp_path):
    tif, _ = write_large(tmp_path / "a.tiff", 200, seed=9)
    again, _ = write_large(tmp_path / "b.tiff", 200, seed=9)
    assert tif.read_bytes() == again.read_bytes()
    with tifffile.TiffFile(tif) as handle:
        assert handle.fei_metadata is None and handle.pages.first.shape == (200, 200)


def test_large_rejects_non_tiff_names_and_bad_sizes(tmp_path):
    with pytest.raises(InputError, match="TIFF"):
        write_large(tmp_path / "big.png", 64)
    with pytest.raises(InputError, match="positive"):
        write_large(tmp_path / "big.tif", (64, 0))


def test_cli_writes_dataset_and_large_micrograph(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(tmp_path / "ds"), "--groups", "1", "--size", "64", "--seed", "1"])
    assert exc.value.code == 0
    assert len(list((tmp_path / "ds" / "AugmentedMasks").glob("*.bmp"))) == 9
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "synth",
                str(tmp_path / "m.tif"),
                "--large",
                "96x64",
                "--databar",
                "16",
                "--pixel-size-um",
                "0.2",
            ]
        )
    assert exc.value.code == 0
    assert tifffile.imread(tmp_path / "m.tif").shape == (80, 96)
    assert "m_truth.png" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args",
    [
        ["{tmp}/m.tif"],  # a TIFF needs --large
        ["{tmp}/ds", "--large", "64"],  # --large needs a TIFF name
        ["{tmp}/m.tif", "--large", "0"],
        ["{tmp}/m.tif", "--large", "64xq"],
        ["{tmp}/m.tif", "--large", "64", "--groups", "2"],
        ["{tmp}/m.tif", "--large", "64", "--databar", "-3"],
        ["{tmp}/m.tif", "--large", "64", "--pixel-size-um", "0"],
        ["{tmp}/ds", "--groups", "0"],
        ["{tmp}/ds", "--size", "-5"],
        ["{tmp}/ds", "--databar", "20"],
        ["{tmp}/ds", "--seed", "-1"],
        ["{tmp}/file.txt/ds", "--groups", "1"],  # output below a file: unwritable
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, capsys, args):
    (tmp_path / "file.txt").write_text("not a folder")
    with pytest.raises(SystemExit) as exc:
        main(["synth", *[a.format(tmp=tmp_path) for a in args]])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert not (tmp_path / "m.tif").exists() and not (tmp_path / "ds").exists()
