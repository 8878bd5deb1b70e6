"""Large synthetic micrographs as stitched SEM montages: tiled, compressed BigTIFF written band by band.

The pixels must not depend on the layout (tiles regroup the renderer's bands), the truth and the FEI
metadata survive every layout, memory stays bounded by a tile row, nothing is left behind on Ctrl-C,
and the `semphase synth` options that choose the layout fail on one line.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import tifffile

from _cli import run_semphase
from semphase.data.synth import large
from semphase.data.synth.large import tiff_layout, write_large
from semphase.imageio import read_label
from semphase.phases import IGNORE

# 1000 image rows + 48 data-bar rows: the tile row 768..1023 spans the last image band and the data bar.
SIZE, BAR, SEED, PIXEL_UM = (1536, 1000), 48, 5, 0.125


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """Reference: the plain layout (uncompressed strips), pixels and truth."""
    tif, truth = write_large(
        tmp_path_factory.mktemp("plain") / "plain.tif", SIZE, SEED, BAR, pixel_size_um=PIXEL_UM
    )
    with tifffile.TiffFile(tif) as handle:
        page = handle.pages.first
        assert not page.is_tiled and page.compression == 1 and not handle.is_bigtiff
        pixels = page.asarray()
    return pixels, read_label(truth)


def _read(tif):
    with tifffile.TiffFile(tif) as handle:
        page = handle.pages.first
        x_res = page.tags["XResolution"].value
        info = {
            "bigtiff": handle.is_bigtiff,
            "tiled": page.is_tiled,
            "tile": (page.tilelength, page.tilewidth),
            "compression": tifffile.COMPRESSION(page.compression).name,
            "fei": handle.fei_metadata,
            "per_cm": x_res[0] / x_res[1],
            "unit": page.tags["ResolutionUnit"].value,
        }
        return page.asarray(), info


def test_tiled_zlib_bigtiff_has_the_pixels_truth_and_metadata_of_plain_strips(tmp_path, plain):
    pixels_ref, truth_ref = plain
    tif, truth = write_large(
        tmp_path / "montage.tif", SIZE, SEED, BAR, pixel_size_um=PIXEL_UM, tile=256, bigtiff=True
    )
    pixels, info = _read(tif)
    assert info["bigtiff"] and info["tiled"] and info["tile"] == (256, 256)
    assert info["compression"] == "ADOBE_DEFLATE"  # zlib, the default with tiles
    assert pixels.shape == (SIZE[1] + BAR, SIZE[0]) and pixels.dtype == np.uint8
    assert np.array_equal(pixels, pixels_ref)
    labels = read_label(truth)
    assert np.array_equal(labels, truth_ref)
    assert (labels[SIZE[1] :] == IGNORE).all() and labels[: SIZE[1]].max() <= 4
    assert info["fei"]["Scan"]["PixelWidth"] == pytest.approx(PIXEL_UM * 1e-6)
    assert info["fei"]["Image"]["ResolutionY"] == SIZE[1] and info["fei"]["Image"]["ResolutionX"] == SIZE[0]
    assert info["per_cm"] == pytest.approx(1e4 / PIXEL_UM) and info["unit"] == 3
    bar = pixels[SIZE[1] :]
    assert (bar == 0).mean() > 0.6 and (bar == 255).any()  # black band with white text and scale bar


@pytest.mark.parametrize(
    ("compression", "tile"),
    [("lzw", None), ("lzw", 256), ("zstd", 256), ("zstd", None), ("zlib", None), ("jpeg", 256), ("none", 48)],
)
def test_every_compression_reads_back_with_the_same_pixels_jpeg_close(tmp_path, plain, compression, tile):
    pixels_ref, truth_ref = plain
    tif, truth = write_large(
        tmp_path / "m.tiff", SIZE, SEED, BAR, pixel_size_um=PIXEL_UM, tile=tile, compression=compression
    )
    pixels, info = _read(tif)
    names = {"none": "NONE", "zlib": "ADOBE_DEFLATE", "lzw": "LZW", "zstd": "ZSTD", "jpeg": "JPEG"}
    assert info["compression"] == names[compression]
    assert info["tiled"] == (tile is not None) and not info["bigtiff"]
    assert info["fei"]["Scan"]["PixelWidth"] == pytest.approx(PIXEL_UM * 1e-6)
    assert np.array_equal(read_label(truth), truth_ref)  # the truth is the rendered scene's, always
    if compression == "jpeg":
        difference = np.abs(pixels.astype(np.int16) - pixels_ref)
        assert not np.array_equal(pixels, pixels_ref) and difference.mean() < 3.0
    else:
        assert np.array_equal(pixels, pixels_ref)


def test_plain_strips_can_be_bigtiff_too(tmp_path, plain):
    tif, _ = write_large(tmp_path / "b.tif", SIZE, SEED, BAR, pixel_size_um=PIXEL_UM, bigtiff=True)
    pixels, info = _read(tif)
    assert info["bigtiff"] and not info["tiled"] and info["compression"] == "NONE"
    assert np.array_equal(pixels, plain[0]) and info["fei"]["Scan"]["PixelWidth"] == pytest.approx(1.25e-7)


def test_jpeg_strips_read_back_close(tmp_path, plain):
    pixels_ref, _ = plain
    tif, _ = write_large(tmp_path / "j.tif", SIZE, SEED, BAR, compression="jpeg")
    pixels, info = _read(tif)
    assert info["compression"] == "JPEG" and not info["tiled"]
    assert pixels.shape == pixels_ref.shape and not np.array_equal(pixels, pixels_ref)
    assert np.abs(pixels.astype(np.int16) - pixels_ref).mean() < 3.0


def test_regrouping_keeps_every_row_in_order_whatever_the_band_edges():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (301, 70), dtype=np.uint8)
    edges = [0, 1, 2, 64, 65, 200, 263, 301]
    bands = [image[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]
    blocks = [block.copy() for block in large._regroup(iter(bands), 48, 70)]  # one buffer, reused
    assert [b.shape[0] for b in blocks] == [48] * 6 + [13]
    assert np.array_equal(np.concatenate(blocks), image)
    tiles = list(large._tiles(iter(blocks[:1]), 70, 32))
    assert [t.shape for t in tiles] == [(48, 32), (48, 32), (48, 6)]
    assert np.array_equal(np.concatenate(tiles, axis=1), image[:48])


def test_layout_defaults_checks_and_automatic_bigtiff():
    assert tiff_layout(1536, 1048).plain and not tiff_layout(1536, 1048).bigtiff
    tiled = tiff_layout(1536, 1048, tile=512)
    assert (tiled.tile, tiled.compression, tiled.bigtiff) == (512, "zlib", False)
    assert tiff_layout(1536, 1048, compression="ZSTD").rows_per_strip == 160
    assert tiff_layout(64, 64, bigtiff=True).bigtiff
    # 1 gigapixel: fits a classic TIFF uncompressed or as zlib, LZW could pass 4 GB only above ~2.8 Gpx.
    assert not tiff_layout(65536, 16384 + 96, tile=512).bigtiff
    assert tiff_layout(65536, 65536, tile=512).bigtiff  # 4 Gpx montage
    assert not tiff_layout(60000, 60000).bigtiff
    assert tiff_layout(60000, 60000, compression="lzw").bigtiff
    for tile in (0, 8, 100, -16, 1.5):
        with pytest.raises(ValueError, match="multiple of 16"):
            tiff_layout(64, 64, tile=tile)
    with pytest.raises(ValueError, match="compression must be one of"):
        tiff_layout(64, 64, compression="foo")
    with pytest.raises(ValueError, match="JPEG strips"):
        tiff_layout(65536, 64, compression="jpeg")


@pytest.mark.parametrize(
    "layout", [{"tile": 256}, {"tile": 256, "compression": "none"}, {"compression": "zstd"}, {}]
)
def test_interrupt_leaves_no_file(tmp_path, layout):
    def interrupt(done, total):
        if done >= 64:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_large(tmp_path / "m.tif", (512, 512), progress=interrupt, **layout)
    assert list(tmp_path.iterdir()) == []  # neither file, nor a temporary .part


class _CheapMicrograph:
    """Stands in for the renderer (whose own band work space, ~35 bytes per band pixel, would dwarf a
    4096 x 4096 test image): 64-row bands of a pattern, made with uint8 arithmetic only."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self._row = (np.arange(width) * 37 % 251).astype(np.uint8)

    def bands(self):
        return [(y, min(y + 64, self.height)) for y in range(0, self.height, 64)]

    def render(self, y0, y1):
        image = self._row[None, :] + (np.arange(y0, y1) % 256).astype(np.uint8)[:, None]
        return image, image >> 6


@pytest.mark.parametrize(
    "layout", [{"tile": 256}, {"tile": 256, "compression": "none"}, {"compression": "zstd"}, {}]
)
def test_memory_stays_far_below_the_image_size(tmp_path, monkeypatch, layout):
    width = height = 4096
    monkeypatch.setattr(
        large, "prepare", lambda h, w, seed, magnification, domain=None: _CheapMicrograph(h, w)
    )
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tif, truth = write_large(tmp_path / "m.tif", (width, height), databar_px=96, **layout)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    image_bytes = width * (height + 96)
    assert peak < image_bytes / 4, f"peak {peak / 2**20:.1f} MiB for a {image_bytes / 2**20:.0f} MiB image"
    with tifffile.TiffFile(tif) as handle:
        page = handle.pages.first
        assert page.shape == (height + 96, width) and page.is_tiled == ("tile" in layout)
        expected = _CheapMicrograph(height, width).render(1000, 1100)[0]
        assert np.array_equal(page.asarray()[1000:1100], expected)
    assert (read_label(truth)[height:] == IGNORE).all()


def test_cli_writes_a_tiled_bigtiff_montage(tmp_path, capsys):
    out = tmp_path / "montage.tif"
    args = ["synth", out, "--large", "200x96", "--tile", "64", "--bigtiff", "--compression", "zstd"]
    code, stdout, _ = run_semphase([*args, "--databar", "16", "--pixel-size-um", "0.05"], capsys)
    assert code == 0
    assert "tiled 64 x 64, zstd, BigTIFF" in " ".join(stdout.split())
    pixels, info = _read(out)
    assert pixels.shape == (112, 200) and info["bigtiff"] and info["tile"] == (64, 64)
    assert info["compression"] == "ZSTD" and info["fei"]["Scan"]["PixelWidth"] == pytest.approx(0.05e-6)
    assert (read_label(tmp_path / "montage_truth.png")[96:] == IGNORE).all()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["{tmp}/m.tif", "--large", "64", "--tile", "100"], "--tile must be a positive multiple of 16"),
        (["{tmp}/m.tif", "--large", "64", "--tile", "0"], "--tile must be a positive multiple of 16"),
        (["{tmp}/m.tif", "--large", "64", "--tile", "-32"], "--tile must be a positive multiple of 16"),
        (["{tmp}/m.tif", "--large", "64", "--compression", "foo"], "--compression must be one of"),
        (["{tmp}/ds", "--bigtiff"], "--bigtiff applies only with --large"),
        (["{tmp}/ds", "--tile", "256"], "--tile applies only with --large"),
        (["{tmp}/ds", "--compression", "zlib"], "--compression applies only with --large"),
        (["{tmp}/ds", "--tile", "256", "--bigtiff"], "--tile, --bigtiff apply only with --large"),
    ],
)
def test_cli_layout_errors_exit_2_with_one_line(tmp_path, capsys, args, says):
    code, _, err = run_semphase(["synth", *[a.format(tmp=tmp_path) for a in args]], capsys)
    assert code == 2
    err = err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert says in err
    assert list(tmp_path.iterdir()) == []


def test_wide_frames_are_remapped_in_column_chunks_with_the_pixels_of_one_remap(monkeypatch):
    """OpenCV's remap takes fewer than 32767 columns: frames wider than a chunk are jittered chunk by
    chunk, which must not change a pixel (here a 1000-pixel frame in chunks of 96 against one chunk)."""
    from semphase.data.synth import render

    scene = render.prepare(130, 1000, 5, 700)
    whole = [scene.render(y0, y1)[0] for y0, y1 in scene.bands()]
    monkeypatch.setattr(render, "_REMAP_COLUMNS", 96)
    chunked = [scene.render(y0, y1)[0] for y0, y1 in scene.bands()]
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_array_equal(a, b)
