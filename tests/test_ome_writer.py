"""The streaming pyramidal OME-TIFF writer: pixels of every level, OME-XML, memory, cleanup, errors."""

from __future__ import annotations

import gc
import os
import threading
import time
import tracemalloc
import xml.etree.ElementTree as ET

import numpy as np
import ome_types
import pytest
import tifffile

from semphase.errors import InputError
from semphase.runtime.outputs import ome
from semphase.runtime.outputs.ome import CLASSES_NAMESPACE, OmeTiffWriter

W, H = 1001, 777  # odd: every level has an odd right and bottom edge
BANDS = (1, 7, 300)  # then the rest
CLASSES = ["matrix", "pores", "Ωcarbide"]
COLORS = [(10, 20, 30), (255, 0, 128), (0, 200, 255)]


def _image(kind: str, width: int = W, height: int = H, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "labels":  # blobs of classes 0..2 and some no-data
        grid = rng.choice(np.array([0, 1, 2, 255], np.uint8), (height // 5 + 1, width // 5 + 1))
        return np.ascontiguousarray(np.repeat(np.repeat(grid, 5, 0), 5, 1)[:height, :width])
    shape = {"gray": (height, width), "rgb": (height, width, 3), "channels": (channels, height, width)}[kind]
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _bands(img: np.ndarray, kind: str, heights=BANDS):
    """Split the image into bands of the given heights, then the rest."""
    rows = img.shape[1] if kind == "channels" else img.shape[0]
    y = 0
    for n in (*heights, rows):
        n = min(n, rows - y)
        if n <= 0:
            break
        yield img[:, y : y + n] if kind == "channels" else img[y : y + n]
        y += n


def _write(path, img, kind, heights=BANDS, **options):
    width = img.shape[-1] if kind == "channels" else img.shape[1]
    height = img.shape[1] if kind == "channels" else img.shape[0]
    if kind == "channels":
        options.setdefault("channels", img.shape[0])
    writer = OmeTiffWriter(path, width, height, kind=kind, **options)
    for band in _bands(img, kind, heights):
        writer.write(band)
    return writer.commit()


def _planes(img: np.ndarray, kind: str) -> np.ndarray:
    """(P, h, w, S) view of an image of any kind."""
    if kind == "channels":
        return img[..., None]
    return img[None] if kind == "rgb" else img[None, ..., None]


def _reference_level(img: np.ndarray, kind: str) -> np.ndarray:
    """The next pyramid level, computed independently: nearest (even rows and columns) for labels, else
    the mean of the existing pixels of each 2 x 2 block, rounded to nearest with halves up."""
    a = _planes(img, kind)
    if kind == "labels":
        out = a[:, ::2, ::2]
    else:
        p, h, w, s = a.shape
        h2, w2 = -(-h // 2), -(-w // 2)
        total = np.zeros((p, h2, w2, s), np.int64)
        count = np.zeros((1, h2, w2, 1), np.int64)
        for dy in (0, 1):
            for dx in (0, 1):
                part = a[:, dy::2, dx::2].astype(np.int64)
                total[:, : part.shape[1], : part.shape[2]] += part
                count[:, : part.shape[1], : part.shape[2]] += 1
        out = ((2 * total + count) // (2 * count)).astype(np.uint8)  # floor(mean + 1/2)
    if kind == "channels":
        return out[..., 0]
    return out[0] if kind == "rgb" else out[0, ..., 0]


def _no_temporaries(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".part")]


TIFF_COMPRESSION = {
    "zlib": tifffile.COMPRESSION.ADOBE_DEFLATE,
    "lzw": tifffile.COMPRESSION.LZW,
    "zstd": tifffile.COMPRESSION.ZSTD,
    "none": tifffile.COMPRESSION.NONE,
}


@pytest.mark.parametrize(
    ("kind", "compression"), [("labels", "zlib"), ("gray", "lzw"), ("rgb", "zstd"), ("channels", "none")]
)
def test_every_level_round_trips(tmp_path, kind, compression):
    img = _image(kind)
    path = _write(tmp_path / f"{kind}.ome.tif", img, kind, tile=256, compression=compression)
    assert _no_temporaries(tmp_path) == []
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and not tif.is_bigtiff
        planes = img.shape[0] if kind == "channels" else 1
        assert len(tif.pages) == planes  # the sub-resolutions are SubIFDs, not pages of the main chain
        levels = tif.series[0].levels
        sizes = [(1001, 777), (501, 389), (251, 195)]  # down to the first level that fits one tile
        assert len(levels) == len(sizes)
        expected = img
        for k, (level, (w, h)) in enumerate(zip(levels, sizes, strict=True)):
            data = level.asarray()
            assert data.shape == {"rgb": (h, w, 3), "channels": (planes, h, w)}.get(kind, (h, w))
            assert np.array_equal(data, expected), f"level {k} differs"
            for frame in level.pages:
                page = frame.aspage()  # a TiffFrame has no tile tags
                assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
                assert page.compression == TIFF_COMPRESSION[compression]
                assert page.is_reduced == (k > 0)
                assert page.dtype == np.uint8
            expected = _reference_level(expected, kind)
        assert len(tif.pages[0].subifds) == len(sizes) - 1


def test_ome_xml_validates_and_carries_the_class_table(tmp_path):
    img = _image("labels", 300, 200)
    path = _write(
        tmp_path / "mask.ome.tif", img, "labels", classes=CLASSES, colors=COLORS, pixel_size_um=0.25
    )
    with tifffile.TiffFile(path) as tif:
        xml = tif.pages[0].description
    meta = ome_types.from_xml(xml, validate=True)
    (image,) = meta.images
    assert image.name == "mask"
    pixels = image.pixels
    assert (pixels.size_x, pixels.size_y, pixels.size_c, pixels.size_z, pixels.size_t) == (300, 200, 1, 1, 1)
    assert pixels.type.value == "uint8"
    assert pixels.physical_size_x == pytest.approx(0.25) and pixels.physical_size_y == pytest.approx(0.25)
    assert pixels.physical_size_x_unit.value == "µm" and pixels.physical_size_y_unit.value == "µm"
    stated = ET.fromstring(xml).find("ome:Image/ome:Pixels", {"ome": ome.OME_NAMESPACE}).attrib
    assert stated["PhysicalSizeXUnit"] == stated["PhysicalSizeYUnit"] == "µm"  # stated, not the default
    assert [c.name for c in pixels.channels] == ["labels"]
    (table,) = meta.structured_annotations.map_annotations
    assert table.namespace == CLASSES_NAMESPACE
    assert [ref.id for ref in image.annotation_refs] == [table.id]
    pairs = {m.k: m.value for m in table.value.ms}
    assert {k: v for k, v in pairs.items() if k.isdigit() and k != "255"} == {
        "0": "matrix",
        "1": "pores",
        "2": "Ωcarbide",
    }
    assert [pairs[f"{i}.color"] for i in range(3)] == ["#0a141e", "#ff0080", "#00c8ff"]
    assert pairs["255"] == "no data"


def test_ome_xml_of_rgb_and_channels(tmp_path):
    rgb = _write(tmp_path / "overlay.ome.tif", _image("rgb", 64, 40), "rgb")
    probs = _write(
        tmp_path / "probs.ome.tif", _image("channels", 64, 40), "channels", channel_names=["a", "b", "c"]
    )
    with tifffile.TiffFile(rgb) as tif:
        meta = ome_types.from_xml(tif.pages[0].description, validate=True)
    pixels = meta.images[0].pixels
    assert pixels.size_c == 3 and pixels.interleaved is True
    assert [c.samples_per_pixel for c in pixels.channels] == [3]
    assert pixels.physical_size_x is None  # no pixel size given, none written
    with tifffile.TiffFile(probs) as tif:
        meta = ome_types.from_xml(tif.pages[0].description, validate=True)
    pixels = meta.images[0].pixels
    assert pixels.size_c == 3 and [c.name for c in pixels.channels] == ["a", "b", "c"]
    assert pixels.tiff_data_blocks[0].ifd == 0 and pixels.tiff_data_blocks[0].plane_count == 3


def test_an_image_that_fits_one_tile_has_one_level(tmp_path):
    img = _image("gray", 200, 130)
    path = _write(tmp_path / "small.ome.tif", img, "gray", tile=256, pixel_size_um=1.5)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        assert len(tif.series[0].levels) == 1 and not tif.pages[0].subifds
        assert np.array_equal(tif.series[0].asarray(), img)
        ome_types.from_xml(tif.pages[0].description, validate=True)
    assert _no_temporaries(tmp_path) == []


def test_level_sizes_stop_at_the_first_level_that_fits_a_tile():
    assert ome.level_sizes(512, 100, 512) == [(512, 100)]
    assert ome.level_sizes(513, 100, 512) == [(513, 100), (257, 50)]
    assert ome.level_sizes(65536, 16384, 512)[-1] == (512, 128)


def test_bigtiff_only_when_the_file_could_pass_4_gib(tmp_path, monkeypatch):
    montage = ome.level_sizes(65536, 16384, 512)
    assert not ome.needs_bigtiff(montage, 512, 1, "zlib")  # a 1 GiB mask stays classic TIFF
    assert ome.needs_bigtiff(montage, 512, 3, "zlib")  # a 3 GiB overlay (4 GiB with its pyramid)
    assert ome.needs_bigtiff(ome.level_sizes(32768, 8192, 512), 512, 8, "lzw")  # LZW may expand
    monkeypatch.setattr(ome, "_CLASSIC_LIMIT", 0)  # the BigTIFF layout itself, on a small image
    img = _image("channels", 600, 300, channels=2)
    path = _write(tmp_path / "big.ome.tif", img, "channels", tile=128)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_bigtiff and tif.is_ome
        assert len(tif.series[0].levels) == 4
        assert np.array_equal(tif.series[0].levels[1].asarray(), _reference_level(img, "channels"))


def test_memory_stays_bounded_by_tile_rows(tmp_path):
    # 4096 x 8192 labels (32 MiB) in 64-row bands: the writer holds about two tile rows of the width
    # (2 MiB) and three bands (0.75 MiB). The limit leaves room for allocations of the process that merely
    # happen while tracing (growing the table of interned strings: up to 2 MiB in a pytest run).
    width, height = 4096, 8192
    img = np.repeat(np.repeat(_image("labels", 512, 1024), 8, 0), 8, 1)  # made before tracing
    tracemalloc.start()
    try:
        writer = OmeTiffWriter(tmp_path / "big.ome.tif", width, height, kind="labels", tile=256)
        for y in range(0, height, 64):
            writer.write(img[y : y + 64])
        writer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < img.nbytes // 4, f"peak {peak / 2**20:.1f} MiB"
    with tifffile.TiffFile(tmp_path / "big.ome.tif") as tif:
        assert np.array_equal(tif.series[0].levels[5].asarray(), img[::32, ::32])


def test_abort_midway_removes_temporaries_and_keeps_the_previous_file(tmp_path):
    target = tmp_path / "mask.ome.tif"
    target.write_bytes(b"previous run")
    img = _image("channels", W, H)
    writer = OmeTiffWriter(target, W, H, kind="channels", channels=3, tile=256)
    assert len(_no_temporaries(tmp_path)) == 2  # the file being written and the side file
    try:
        writer.write(img[:, :300])
        raise KeyboardInterrupt  # Ctrl-C between two bands
    except KeyboardInterrupt:
        writer.abort()
    writer.abort()  # idempotent
    assert not writer._worker.thread.is_alive()
    assert _no_temporaries(tmp_path) == [] and target.read_bytes() == b"previous run"
    with pytest.raises(ValueError, match="committed or aborted"):
        writer.write(img[:, :1])
    complete = OmeTiffWriter(target, W, H, kind="channels", channels=3, tile=256)
    complete.write(img)  # every row: the worker is copying the sub-levels, or done
    complete.abort()
    assert _no_temporaries(tmp_path) == [] and target.read_bytes() == b"previous run"


def test_abort_before_any_band_and_an_abandoned_writer_leave_nothing(tmp_path):
    writer = OmeTiffWriter(tmp_path / "a.ome.tif", W, H, kind="gray", tile=256)
    writer.abort()
    assert not writer._worker.thread.is_alive() and _no_temporaries(tmp_path) == []
    abandoned = OmeTiffWriter(tmp_path / "b.ome.tif", W, H, kind="gray", tile=256)
    abandoned.write(_image("gray")[:100])
    thread = abandoned._worker.thread
    del abandoned
    gc.collect()
    thread.join(5)
    assert not thread.is_alive() and _no_temporaries(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_commit_with_missing_rows_raises_and_removes_temporaries(tmp_path):
    writer = OmeTiffWriter(tmp_path / "m.ome.tif", W, H, kind="labels", tile=256)
    writer.write(_image("labels")[: H - 1])
    with pytest.raises(ValueError, match=f"{H - 1} of {H} rows"):
        writer.commit()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kind", "band"),
    [
        ("labels", np.zeros((4, W), np.uint16)),  # dtype
        ("labels", np.zeros((4, W + 1), np.uint8)),  # width
        ("gray", np.zeros((4, W, 3), np.uint8)),  # RGB for a gray image
        ("rgb", np.zeros((4, W), np.uint8)),  # gray for an RGB image
        ("rgb", np.zeros((4, W, 4), np.uint8)),  # RGBA
        ("channels", np.zeros((2, 4, W), np.uint8)),  # 2 channels for 3
        ("channels", np.zeros((4, W, 3), np.uint8)),  # rows first
        ("gray", np.zeros((H + 1, W), np.uint8)),  # too many rows
    ],
)
def test_bad_bands_raise_value_error(tmp_path, kind, band):
    writer = OmeTiffWriter(tmp_path / "x.ome.tif", W, H, kind=kind, channels=3, tile=256)
    try:
        with pytest.raises(ValueError):
            writer.write(band)
        assert writer.rows_written == 0
    finally:
        writer.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "options",
    [
        {"tile": 100},
        {"tile": 0},
        {"compression": "jpeg"},
        {"kind": "mask"},
        {"pixel_size_um": 0.0},
        {"classes": ["a"], "colors": [(1, 2, 3), (4, 5, 6)]},
        {"classes": ["a"], "colors": [(1, 2, 300)]},
        {"channel_names": ["a", "b"]},
    ],
)
def test_bad_options_raise_value_error_before_any_file(tmp_path, options):
    options = {"kind": "labels", **options}
    with pytest.raises(ValueError):
        OmeTiffWriter(tmp_path / "x.ome.tif", W, H, **options)
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_folder_is_an_input_error_naming_it(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    target = blocker / "out" / "mask.ome.tif"  # fails even as root: a parent is a regular file
    with pytest.raises(InputError) as caught:
        OmeTiffWriter(target, W, H, kind="labels")
    assert caught.value.path is not None and str(target).startswith(caught.value.path)
    assert str(blocker) in str(caught.value)
    if os.name == "posix" and os.geteuid() != 0:  # a read-only folder, where chmod means something
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        try:
            with pytest.raises(InputError, match="ro"):
                OmeTiffWriter(folder / "mask.ome.tif", W, H, kind="labels")
        finally:
            folder.chmod(0o755)


def _run_with_deadline(work, seconds: float = 10.0) -> BaseException | None:
    """Run ``work`` on a thread; fail the test if it has not ended within ``seconds`` (a hang)."""
    caught: list[BaseException] = []

    def target():
        try:
            work()
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the writer hung"
    return caught[0] if caught else None


@pytest.mark.parametrize(
    ("failing_call", "delay"),
    [
        (1, 0.0),  # fails at once: the next write() finds the error
        (3, 0.3),  # fails late, while the caller waits for room in the full queue
    ],
)
def test_an_error_in_the_worker_surfaces_in_the_caller(tmp_path, monkeypatch, failing_call, delay):
    calls = []

    def broken(tile, compress, predictor):
        calls.append(1)
        if len(calls) >= failing_call:
            time.sleep(delay)
            raise RuntimeError("encoder exploded")
        return compress(np.ascontiguousarray(tile))

    monkeypatch.setattr(ome, "_encode_tile", broken)
    img = _image("gray")

    def work():
        writer = OmeTiffWriter(tmp_path / "g.ome.tif", W, H, kind="gray", tile=256)
        try:
            for band in _bands(img, "gray", (300,) * 3):
                writer.write(band)
            writer.commit()
        finally:
            writer.abort()

    error = _run_with_deadline(work)
    assert isinstance(error, RuntimeError) and "encoder exploded" in str(error)
    assert list(tmp_path.iterdir()) == []


def test_an_os_error_in_the_worker_is_an_input_error_naming_the_file(tmp_path, monkeypatch):
    def full(tile, compress, predictor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ome, "_encode_tile", full)
    target = tmp_path / "o.ome.tif"
    img = _image("rgb")

    def work():
        writer = OmeTiffWriter(target, W, H, kind="rgb", tile=256)
        for band in _bands(img, "rgb", (256,) * 3):
            writer.write(band)
        writer.commit()

    error = _run_with_deadline(work)
    assert isinstance(error, InputError) and error.path == str(target)
    assert "No space left" in error.reason
    assert list(tmp_path.iterdir()) == []


def test_an_rgb_image_given_as_palette_indices_is_the_rgb_image(tmp_path):
    """A palette overlay handed over as indices (a third of the memory per band) makes the same file
    pixels, every level, as its RGB expansion handed over directly."""
    rng = np.random.default_rng(7)
    palette = rng.integers(0, 256, (256, 3), dtype=np.uint8)
    indices = rng.integers(0, 256, (301, 517), dtype=np.uint8)
    direct = _write(tmp_path / "direct.ome.tif", palette[indices], "rgb", tile=64)
    width, height = 517, 301
    writer = OmeTiffWriter(tmp_path / "indexed.ome.tif", width, height, kind="rgb", tile=64, palette=palette)
    for y in range(0, height, 37):
        writer.write(indices[y : y + 37])
    indexed = writer.commit()
    with tifffile.TiffFile(direct) as a, tifffile.TiffFile(indexed) as b:
        for la, lb in zip(a.series[0].levels, b.series[0].levels, strict=True):
            np.testing.assert_array_equal(la.asarray(), lb.asarray())
    with pytest.raises(ValueError, match="palette"):
        OmeTiffWriter(tmp_path / "x.ome.tif", 8, 8, kind="labels", palette=palette)
    with pytest.raises(ValueError, match="expected uint8 rows"):
        OmeTiffWriter(tmp_path / "y.ome.tif", 8, 8, kind="rgb", palette=palette).write(
            palette[indices[:2, :8]]
        )
