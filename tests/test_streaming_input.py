"""Streaming input (issue 15): TIFF micrographs read strip by strip and tile by tile, and the sliding
window's column-finalized accumulator, give exactly the labels of the whole-image path."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import tifffile

from _runtime_models import build_blur_classifier, micrograph
from semphase.errors import InputError
from semphase.imageio import read_label, read_micrograph, to_uint8
from semphase.model_format import Tiling
from semphase.runtime.databar import detect_databar
from semphase.runtime.model import load_model
from semphase.runtime.segment import SegmentOptions, segment_file
from semphase.runtime.sliding import _flip_average, iter_bands, segment_array
from semphase.runtime.source import open_micrograph
from semphase.runtime.tiling import blend_window, pad_reflect, plan_tiles, weight_profile


class PositionModel:
    """Logits that depend on each pixel's neighbours and its place in the tile, so every tile disagrees
    with its neighbours in the overlaps and only an exact blend reproduces the reference."""

    classes = ["a", "b", "c", "d"]

    def __init__(self, tile_size: int = 64, overlap: int = 16, size_multiple: int = 32) -> None:
        self.tile_size, self.overlap, self.size_multiple = tile_size, overlap, size_multiple

    def logits(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float32) / 255.0
        n, h, w = x.shape
        ramp = np.linspace(-1, 1, w, dtype=np.float32)[None, None, :] * np.linspace(1, 2, h)[None, :, None]
        shifted = np.roll(x, 3, axis=2)
        out = np.stack([x, shifted * ramp, 1 - x + 0.1 * ramp, np.sin(7 * x) * ramp], axis=1)
        return out.astype(np.float32)


def _whole_row_reference(model, image, tile, overlap, batch, window, tta):
    """The sliding window as it was before streaming: the whole padded image and an accumulator of one
    tile row times the image width, slid down between tile rows. Returns (labels, blended logits)."""
    tiling = Tiling.resolve(model, tile, overlap)
    height, width = image.shape
    plan = plan_tiles(height, width, tiling.tile, tiling.overlap, model.size_multiple)
    rows, cols = plan.rows, plan.cols
    th = rows.window
    padded = pad_reflect(image, rows.padded, cols.padded)
    classes = len(model.classes)
    acc = np.zeros((classes, th, cols.padded), np.float32)
    row_weight = weight_profile(rows, window).astype(np.float32)
    col_weight = weight_profile(cols, window)[:width].astype(np.float32)
    widths: dict[int, list[int]] = {}
    for x, w in zip(cols.starts, cols.sizes, strict=True):
        widths.setdefault(w, []).append(x)
    labels = np.empty((height, width), np.uint8)
    logits = np.empty((classes, height, width), np.float32)
    top = emitted = 0
    for band_index, (y, h) in enumerate(zip(rows.starts, rows.sizes, strict=True)):
        if y > top:
            shift = y - top
            acc[:, : th - shift] = acc[:, shift:].copy()
            acc[:, th - shift :] = 0.0
            top = y
        for w, xs in widths.items():
            weight = blend_window(h, w, window)
            for i in range(0, len(xs), batch):
                chunk = xs[i : i + batch]
                tiles = np.stack([padded[y : y + h, x : x + w] for x in chunk])
                out = _flip_average(model, tiles) if tta else model.logits(tiles)
                out *= weight
                for k, x in enumerate(chunk):
                    acc[:, :h, x : x + w] += out[k]
        final = plan.finalized_before(band_index)
        sums = acc[:, emitted - top : final - top, :width]
        labels[emitted:final] = np.argmax(sums, axis=0)
        logits[:, emitted:final] = sums / (row_weight[emitted:final, None] * col_weight[None, :])
        emitted = final
    return labels, logits


CASES = [
    # (height, width, tile, overlap, batch, window, tta)
    ((300, 200), 64, 16, 2, "gaussian", False),
    ((257, 411), 64, 24, 3, "cosine", False),  # narrower last tiles on both axes
    ((40, 300), 64, 16, 2, "gaussian", False),  # shorter than a tile: padded below
    ((300, 33), 64, 16, 1, "gaussian", False),  # narrower than a tile: padded right
    ((31, 45), 64, 16, 2, "gaussian", False),  # one tile, padded both ways
    ((200, 200), 64, 0, 2, "constant", False),  # no overlap at all
    ((160, 130), 64, 16, 2, "gaussian", True),
    ((500, 96), 96, 32, 4, "gaussian", False),
    ((70, 1), 64, 16, 2, "gaussian", False),  # one column: a block one pixel wide
]


@pytest.mark.parametrize(("shape", "tile", "overlap", "batch", "window", "tta"), CASES)
def test_the_column_finalized_accumulator_gives_the_whole_row_accumulators_labels_and_logits_bitwise(
    shape, tile, overlap, batch, window, tta
):
    model = PositionModel(tile_size=tile, overlap=overlap)
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    labels_ref, logits_ref = _whole_row_reference(model, image, tile, overlap, batch, window, tta)
    labels = np.empty(shape, np.uint8)
    logits = np.empty((4, *shape), np.float32)
    for band in iter_bands(
        model, image, tile=tile, overlap=overlap, batch=batch, window=window, tta=tta, logits=True
    ):
        labels[band.y0 : band.y1] = band.labels()
        logits[:, band.y0 : band.y1] = band.logits
    np.testing.assert_array_equal(labels, labels_ref)
    np.testing.assert_array_equal(logits, logits_ref)  # bitwise: the same sums in the same order


# ------------------------------------------------------------------------------------ TIFF row reader


def _layouts(image: np.ndarray) -> dict[str, dict]:
    return {
        "tiled-zlib-bigtiff": {"tile": (64, 64), "compression": "zlib", "bigtiff": True},
        "tiled-uncompressed": {"tile": (32, 48)},
        "strips-lzw-predictor": {"rowsperstrip": 37, "compression": "lzw", "predictor": True},
        "strips-zstd": {"rowsperstrip": 16, "compression": "zstd"},
        "strips-uncompressed": {"rowsperstrip": 10},
        "contiguous": {},
    }


@pytest.fixture(scope="module")
def scene():
    return micrograph(203, 317, seed=4)


@pytest.mark.parametrize("layout", list(_layouts(np.zeros(1))))
def test_rows_read_segment_by_segment_equal_the_whole_decode(tmp_path, scene, layout):
    path = tmp_path / f"{layout}.tif"
    tifffile.imwrite(path, scene, **_layouts(scene)[layout])
    with open_micrograph(path) as m:
        assert m.streamed and m.shape == scene.shape
        for y0, y1 in [(0, 1), (0, 203), (63, 130), (200, 203), (5, 6), (64, 128)]:
            np.testing.assert_array_equal(m.rows(y0, y1), scene[y0:y1])


@pytest.mark.parametrize(
    ("kind", "normalize"), [("gray16", "linear"), ("gray16", "percentile"), ("rgb", "linear")]
)
def test_sixteen_bit_and_colour_tiffs_stream_to_the_same_8_bit_rows(tmp_path, scene, kind, normalize):
    if kind == "gray16":
        stored = (scene.astype(np.uint16) * 41 + 300).astype(np.uint16)
    else:
        stored = np.dstack([scene, np.roll(scene, 5, axis=1), 255 - scene])
    path = tmp_path / f"{kind}.tif"
    tifffile.imwrite(path, stored, tile=(64, 64), compression="zlib", photometric=None)
    whole = to_uint8(read_micrograph(path)[0], normalize)
    with open_micrograph(path, normalize) as m:
        assert m.streamed
        np.testing.assert_array_equal(
            np.concatenate([m.rows(y, min(203, y + 50)) for y in range(0, 203, 50)]), whole
        )


def test_layouts_the_segment_reader_does_not_handle_are_decoded_whole(tmp_path, scene):
    planar = tmp_path / "planar.tif"
    tifffile.imwrite(planar, np.stack([scene, scene, scene]), photometric="rgb", planarconfig="separate")
    one_strip = tmp_path / "one-strip.tif"
    tifffile.imwrite(one_strip, scene, compression="zlib", rowsperstrip=203)
    png = tmp_path / "m.png"
    import cv2

    cv2.imwrite(str(png), scene)
    for path in (planar, one_strip, png):
        with open_micrograph(path) as m:
            assert not m.streamed
            np.testing.assert_array_equal(m.rows(0, 203), scene)


@pytest.fixture(scope="module")
def blur_model(tmp_path_factory):
    return load_model(
        build_blur_classifier(tmp_path_factory.mktemp("blur") / "blur.onnx", tile=64, overlap=16)
    )


@pytest.mark.parametrize("layout", ["tiled-zlib-bigtiff", "strips-lzw-predictor", "contiguous"])
def test_a_streamed_tiff_segments_to_the_labels_of_the_whole_image_path(tmp_path, blur_model, layout):
    image = micrograph(300, 420, seed=9)
    bar = np.zeros((24, 420), np.uint8)
    bar[10:14, 30:200] = 255  # a data bar: flat rows with some text
    full = np.vstack([image, bar])
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, full, **_layouts(full)[layout])
    options = SegmentOptions(tile=64, overlap=16, format="png")
    result = segment_file(blur_model, path, tmp_path / "out", options)
    assert result["streamed"] is True and result["databar"] == {"rows": 24, "source": "detected"}
    mask = read_label(tmp_path / "out" / "m_mask.png")
    expected = segment_array(blur_model, image, tile=64, overlap=16)
    np.testing.assert_array_equal(mask[:300], expected)
    assert (mask[300:] == 255).all()
    assert detect_databar(full) == 24


def test_the_data_bar_is_found_from_the_bottom_rows_alone(tmp_path, monkeypatch):
    image = micrograph(600, 200, seed=3)
    full = np.vstack([image, np.zeros((20, 200), np.uint8)])
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, full, rowsperstrip=20, compression="zlib")
    from semphase.runtime import source

    decoded: list[int] = []
    original = source._TiffRows._segment_row

    def record(self, r):
        decoded.append(r)
        return original(self, r)

    monkeypatch.setattr(source._TiffRows, "_segment_row", record)
    from semphase.runtime.databar import resolve_databar

    with open_micrograph(path) as m:
        assert resolve_databar("auto", m.bottom(), None) == (20, "detected")
    assert decoded and min(decoded) >= (620 - 256) // 20  # one chunk from the bottom, not the image


def test_a_corrupt_tile_in_the_middle_fails_that_file_in_one_line_and_leaves_no_output(tmp_path, blur_model):
    image = micrograph(256, 256, seed=5)
    path = tmp_path / "bad.tif"
    tifffile.imwrite(path, image, tile=(64, 64), compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset = tif.pages.first.dataoffsets[9]
    with open(path, "r+b") as fh:  # garble tile 9 (the third tile row): the header still reads fine
        fh.seek(offset)
        fh.write(b"\x00garbage\xff" * 4)
    out = tmp_path / "out"
    with pytest.raises(InputError) as info:
        segment_file(blur_model, path, out, SegmentOptions(tile=64, overlap=16))
    assert str(info.value).startswith(str(path)) and "cannot decode TIFF rows" in str(info.value)
    assert "\n" not in str(info.value)
    assert not out.exists() or not [p for p in out.iterdir() if p.name != ".semphase-write-test"]


def test_a_truncated_streamed_tiff_is_one_named_problem(tmp_path, blur_model):
    image = micrograph(256, 256, seed=6)
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, image, rowsperstrip=16)  # tifffile writes the IFD first, the strips after it
    data = path.read_bytes()
    with tifffile.TiffFile(path) as tif:
        last = int(tif.pages.first.dataoffsets[-1])
    path.write_bytes(data[: last + 10])  # cut inside the last strip: the header still reads
    with pytest.raises(InputError, match="truncated TIFF|cannot decode TIFF"):
        segment_file(blur_model, path, tmp_path / "out", SegmentOptions(tile=64, overlap=16))


def test_stopping_early_stops_the_read_ahead_thread(tmp_path, blur_model):
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, micrograph(512, 128, seed=1), tile=(64, 64), compression="zlib")
    before = {t.name for t in threading.enumerate()}
    with open_micrograph(path) as m:
        bands = iter_bands(blur_model, m, tile=64, overlap=16)
        next(bands)
        assert any(t.name == "semphase-read" for t in threading.enumerate())
        bands.close()
    assert {t.name for t in threading.enumerate()} <= before


def test_a_read_error_on_the_read_ahead_thread_reaches_the_caller(tmp_path, blur_model, monkeypatch):
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, micrograph(512, 128, seed=1), tile=(64, 64), compression="zlib")
    with open_micrograph(path) as m:
        original = m.rows

        def failing(y0, y1):
            if y0 > 200:
                raise InputError("cannot decode TIFF rows (planted)", path)
            return original(y0, y1)

        monkeypatch.setattr(m, "rows", failing)
        with pytest.raises(InputError, match="planted"):
            for _ in iter_bands(blur_model, m, tile=64, overlap=16):
                pass
    assert not any(t.name == "semphase-read" for t in threading.enumerate())


# The child reports its own high-water mark (VmHWM), see tests/test_runtime_segment.py.
PEAK_RSS = """
import sys
from semphase.benchmarks.rss import own_peak_rss_mb
from semphase.runtime.model import load_model
from semphase.runtime.segment import SegmentOptions, segment_file
model = load_model(sys.argv[1], threads=1)
segment_file(model, sys.argv[2], sys.argv[3], SegmentOptions(format="png"))
print(*own_peak_rss_mb())
"""


@pytest.mark.slow
def test_a_tiled_tiff_is_segmented_in_memory_that_does_not_grow_with_its_height(tmp_path, blur_model):
    """8 times the rows of a tiled, compressed 1024-wide TIFF may add at most 0.25 bytes per extra pixel.

    Exact accounting (VmHWM), not timing. Measured on the 2-core Xeon: 4096 rows 107 MiB, 32768 rows
    109 MiB (0.07 bytes per extra pixel; the allocator still settles between 1024 and 4096 rows, so the
    smaller run is not smaller). Any whole-image uint8 array (the decoded input, a padded copy, the mask)
    adds 1 byte per pixel and fails the bound by four times."""
    peaks = {}
    for rows in (4096, 32768):
        image = np.tile(micrograph(1024, 1024, seed=rows), (rows // 1024, 1))
        tif = tmp_path / f"r{rows}.tif"
        tifffile.imwrite(tif, image, tile=(256, 256), compression="zlib")
        del image
        done = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, str(blur_model.path), str(tif), str(tmp_path / f"o{rows}")],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        peak, source = done.stdout.split()
        if source not in ("VmHWM", "PeakWorkingSetSize"):
            pytest.skip(f"no per-process peak memory on this platform ({source})")
        peaks[rows] = float(peak) * 2**20
        streamed = json.loads((tmp_path / f"o{rows}" / f"r{rows}.json").read_text())["streamed"]
    extra = 1024 * (32768 - 4096)
    growth = peaks[32768] - peaks[4096]
    print(f"peak RSS 4096 rows {peaks[4096] / 2**20:.0f} MiB, 32768 rows {peaks[32768] / 2**20:.0f} MiB")
    assert growth < 0.25 * extra, f"peak RSS grew by {growth / extra:.2f} bytes per extra pixel"
    assert streamed is True


def test_argmax_classes_gives_uint8_ids_first_index_on_ties():
    from semphase.runtime.sliding import argmax_classes

    scores = np.array([[[1.0, 2.0]], [[3.0, 2.0]], [[3.0, 0.0]]], np.float32)  # (C=3, 1, 2)
    labels = argmax_classes(scores)
    assert labels.dtype == np.uint8 and labels.tolist() == [[1, 0]]
    # np.argmax's answer for any number of classes, ties everywhere (small integers), on a strided view
    rng = np.random.default_rng(0)
    for classes in (1, 2, 3, 5, 9):
        block = rng.integers(0, 3, (classes, 40, 50)).astype(np.float32)
        view = block[:, 5:35, 7:47]
        assert np.array_equal(argmax_classes(view), np.argmax(view, axis=0).astype(np.uint8)), classes


class _SlowModel(PositionModel):
    """A model slower than the read-ahead thread's 0.1 s put timeout: the queue is found full."""

    def logits(self, batch):
        import time

        time.sleep(0.15)
        return super().logits(batch)


def test_a_read_ahead_that_finds_its_queue_full_waits_and_loses_no_strip(tmp_path):
    image = micrograph(300, 100, seed=2)
    path = tmp_path / "m.tif"
    tifffile.imwrite(path, image, tile=(32, 32), compression="zlib")
    model = _SlowModel(tile_size=64, overlap=16)
    with open_micrograph(path) as m:
        streamed = segment_array_from(model, m)
    np.testing.assert_array_equal(streamed, segment_array(PositionModel(64, 16), image, batch=8))


def segment_array_from(model, source):
    labels = np.empty(source.shape, np.uint8)
    for band in iter_bands(model, source, batch=8):
        labels[band.y0 : band.y1] = band.labels()
    return labels


def test_a_streamed_tiff_smaller_than_one_tile_is_padded_like_an_array(tmp_path):
    image = micrograph(40, 50, seed=8)
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, image, rowsperstrip=8, compression="zlib")
    model = PositionModel(tile_size=64, overlap=16)
    with open_micrograph(path) as m:
        assert m.streamed
        np.testing.assert_array_equal(segment_array_from(model, m), segment_array(model, image, batch=8))
