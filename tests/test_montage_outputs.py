"""Pyramidal OME-TIFF outputs of `semphase segment` (issue 15): the same labels, overlay and maps as the
PNG outputs, every level readable, OME-XML that validates, and the rule that picks the format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from _cli import run_semphase
from _runtime_models import build_blur_classifier, micrograph
from semphase.imageio import read_label, read_raw
from semphase.runtime.model import load_model
from semphase.runtime.segment import AUTO_OME_TIFF_PIXELS, SegmentOptions, segment_file

ome_types = pytest.importorskip("ome_types")  # the dev extra has it: make test never skips this


@pytest.fixture(scope="module")
def blur_model(tmp_path_factory):
    return load_model(
        build_blur_classifier(tmp_path_factory.mktemp("blur") / "blur.onnx", tile=64, overlap=16)
    )


@pytest.fixture(scope="module")
def montage(tmp_path_factory):
    """A 700 x 610 tiled, compressed TIFF with a 30-row data bar and a 0.05 um pixel in its resolution
    tags."""
    folder = tmp_path_factory.mktemp("montage")
    image = micrograph(580, 700, seed=11)
    bar = np.zeros((30, 700), np.uint8)
    bar[12:18, 40:300] = 255
    per_cm = 1e4 / 0.05
    path = folder / "montage.tif"
    tifffile.imwrite(
        path,
        np.vstack([image, bar]),
        tile=(128, 128),
        compression="zlib",
        resolution=(per_cm, per_cm),
        resolutionunit="CENTIMETER",
    )
    return path


@pytest.fixture(scope="module")
def both(tmp_path_factory, blur_model, montage):
    """The montage segmented twice, as PNG and as OME-TIFF, with uncertainty and probabilities."""
    runs = {}
    for fmt in ("png", "ome-tiff"):
        out = tmp_path_factory.mktemp(fmt)
        options = SegmentOptions(tile=64, overlap=16, format=fmt, uncertainty=True, probs=True)
        runs[fmt] = (out, segment_file(blur_model, montage, out, options))
    return runs


def _levels(path):
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        return [level.asarray() for level in tif.series[0].levels], tif.ome_metadata


def test_the_ome_tiff_mask_holds_the_png_masks_labels_at_full_resolution(both):
    (png_dir, png), (_, ome) = both["png"], both["ome-tiff"]
    assert ome["format"] == "ome-tiff" and png["format"] == "png"
    assert ome["outputs"]["mask"].endswith("montage_mask.ome.tif")
    levels, _ = _levels(ome["outputs"]["mask"])
    np.testing.assert_array_equal(levels[0], read_label(png_dir / "montage_mask.png"))
    assert (levels[0][580:] == 255).all()  # the data bar is no data in both
    assert ome["phases"] == png["phases"]
    # A pyramid of 256-pixel tiles: halves down to one tile, labels kept by nearest neighbour (no mixed
    # classes).
    assert [lv.shape for lv in levels] == [(610, 700), (305, 350), (153, 175)]
    np.testing.assert_array_equal(levels[1], levels[0][::2, ::2])
    np.testing.assert_array_equal(levels[2], levels[0][::4, ::4])
    with tifffile.TiffFile(ome["outputs"]["mask"]) as tif:
        assert tif.pages.first.tilewidth == 256 and tif.pages.first.compression.name == "ADOBE_DEFLATE"


def test_the_ome_tiff_overlay_uncertainty_and_probabilities_match_the_png_outputs(both):
    (png_dir, _), (_, ome) = both["png"], both["ome-tiff"]
    overlay, _ = _levels(ome["outputs"]["overlay"])
    np.testing.assert_array_equal(overlay[0], read_raw(png_dir / "montage_overlay.png"))
    uncertainty, _ = _levels(ome["outputs"]["uncertainty"])
    np.testing.assert_array_equal(uncertainty[0], read_label(png_dir / "montage_uncertainty.png"))
    probs, _ = _levels(ome["outputs"]["probs"])
    reference = tifffile.imread(png_dir / "montage_probs.tif").astype(np.float32)  # float16, (C, H, W)
    assert probs[0].shape == reference.shape and probs[0].dtype == np.uint8
    assert np.abs(probs[0] / 255.0 - reference).max() <= 0.5 / 255 + 1e-3  # uint8 rounding, float16 storage


def test_the_ome_xml_validates_and_states_the_pixel_size_and_the_classes(both, blur_model):
    _, ome = both["ome-tiff"]
    _, xml = _levels(ome["outputs"]["mask"])
    document = ome_types.from_xml(xml, validate=True)
    pixels = document.images[0].pixels
    assert (pixels.size_x, pixels.size_y) == (700, 610)
    assert pixels.physical_size_x == pytest.approx(0.05) and pixels.physical_size_x_unit.value == "µm"
    annotation = document.structured_annotations.map_annotations[0]
    table = {m.k: m.value for m in annotation.value.ms}
    assert [table[str(i)] for i in range(len(blur_model.classes))] == list(blur_model.classes)
    assert table["255"] == "no data"
    _, probs_xml = _levels(ome["outputs"]["probs"])
    channels = ome_types.from_xml(probs_xml, validate=True).images[0].pixels.channels
    assert [c.name for c in channels] == list(blur_model.classes)


def test_auto_chooses_ome_tiff_above_8192_squared_and_png_up_to_it():
    auto = SegmentOptions()
    assert AUTO_OME_TIFF_PIXELS == 8192 * 8192
    assert auto.format_for(8192, 8192) == "png" and auto.format_for(8193, 8192) == "ome-tiff"
    assert auto.format_for(65536, 16384) == "ome-tiff" and auto.format_for(1024, 768) == "png"
    assert SegmentOptions(format="png").format_for(65536, 16384) == "png"
    assert SegmentOptions(format="ome-tiff").format_for(64, 64) == "ome-tiff"


def test_an_unknown_format_is_one_usage_line(tmp_path, capsys, blur_model, montage):
    code, _, err = run_semphase(
        ["segment", blur_model.path, montage, "--out", tmp_path / "o", "--format", "jpeg2000"], capsys
    )
    assert code == 2 and err.count("\n") == 1 and "--format must be auto, png or ome-tiff" in err
    assert not (tmp_path / "o").exists()


def test_the_cli_writes_ome_tiff_and_quantify_reads_its_masks_like_pngs(
    tmp_path, capsys, blur_model, montage
):
    results = {}
    for fmt in ("png", "ome-tiff"):
        out = tmp_path / fmt / "sample-A"  # the same sample name for both
        code, _, err = run_semphase(
            ["segment", blur_model.path, montage, "--out", out, "--format", fmt, "--tile", 64, "--quiet"],
            capsys,
        )
        assert code == 0, err
        code, _, err = run_semphase(["quantify", out, "--out", tmp_path / f"q-{fmt}", "--quiet"], capsys)
        assert code == 0, err
        results[fmt] = json.loads((tmp_path / f"q-{fmt}" / "quantify.json").read_text())
    assert (tmp_path / "ome-tiff" / "sample-A" / "montage_mask.ome.tif").is_file()
    assert results["png"]["samples"] == results["ome-tiff"]["samples"]


def test_ctrl_c_in_the_middle_of_a_montage_leaves_no_file_and_no_thread(tmp_path, blur_model, montage):
    import threading

    from semphase.progress import Progress

    class Interrupt(Progress):
        def start(self, key, description, total):
            pass

        def advance(self, key, steps=1):
            self.done = getattr(self, "done", 0) + steps
            if self.done >= 20:  # a few tile rows in: every OME-TIFF writer has its threads running
                raise KeyboardInterrupt

        def say(self, text):
            pass

        def log(self, text):
            pass

    out = tmp_path / "out"
    options = SegmentOptions(tile=64, overlap=16, format="ome-tiff", uncertainty=True, probs=True)
    with pytest.raises(KeyboardInterrupt):
        segment_file(blur_model, montage, out, options, progress=Interrupt())
    assert sorted(p.name for p in out.iterdir()) == []
    names = {t.name for t in threading.enumerate()}
    assert not any(n.startswith(("semphase-ome-tiff", "semphase-read", "semphase-output")) for n in names)


def test_auto_counts_the_image_without_its_data_bar(tmp_path, monkeypatch, blur_model, montage):
    """An 8192 x 8192 frame with its data bar below is still a single frame: PNG. Here the threshold is
    moved to the montage fixture's image (700 x 580, with a 30-row bar below it)."""
    from semphase.runtime import segment

    options = SegmentOptions(tile=64, overlap=16)
    monkeypatch.setattr(segment, "AUTO_OME_TIFF_PIXELS", 700 * 580)
    assert segment_file(blur_model, montage, tmp_path / "a", options)["format"] == "png"
    monkeypatch.setattr(segment, "AUTO_OME_TIFF_PIXELS", 700 * 580 - 1)
    assert segment_file(blur_model, montage, tmp_path / "b", options)["format"] == "ome-tiff"
