import numpy as np
import pytest
import tifffile

from semphase import imageio
from semphase.errors import InputError


def test_read_gray_formats_round_trip(tmp_path):
    img = (np.arange(64 * 48) % 251).astype(np.uint8).reshape(48, 64)
    for suffix in (".png", ".bmp", ".tif"):
        p = tmp_path / f"a{suffix}"
        imageio.write_image(p, img)
        out = imageio.read_gray(p)
        assert out.dtype == np.uint8 and np.array_equal(out, img)


def test_16bit_maps_to_same_8bit_pixels(tmp_path):
    img8 = np.random.default_rng(0).integers(0, 256, (32, 40), dtype=np.uint8)
    img16 = img8.astype(np.uint16) * 257
    tifffile.imwrite(tmp_path / "a.tif", img16)
    read = imageio.read_gray(tmp_path / "a.tif")
    assert read.dtype == np.uint16
    assert np.array_equal(imageio.to_uint8(read), img8)


def test_percentile_stretch_uses_full_range():
    dim = np.linspace(1000, 3000, 100 * 100).reshape(100, 100).astype(np.uint16)
    out = imageio.to_uint8(dim, "percentile")
    assert out.min() <= 2 and out.max() >= 253


def test_rgb_is_converted_to_gray(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 200
    imageio.write_image(tmp_path / "c.png", rgb)
    gray = imageio.read_gray(tmp_path / "c.png")
    assert gray.shape == (10, 12) and 55 <= int(gray[0, 0]) <= 65  # 0.299 * 200


def test_multipage_tiff_takes_first_page(tmp_path):
    stack = np.stack([np.full((8, 8), 10, np.uint8), np.full((8, 8), 200, np.uint8)])
    tifffile.imwrite(tmp_path / "m.tif", stack)
    assert imageio.read_gray(tmp_path / "m.tif").max() == 10


@pytest.mark.parametrize("kind", ["missing", "empty", "corrupt", "truncated", "text"])
def test_bad_files_give_one_line_naming_the_file(tmp_path, kind):
    p = tmp_path / "x.png"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "corrupt":
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    elif kind == "truncated":
        imageio.write_image(p, np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8))
        p.write_bytes(p.read_bytes()[:100])
    elif kind == "text":
        p = tmp_path / "x.tif"
        p.write_text("not a tiff at all")
    with pytest.raises(InputError) as info:
        imageio.read_gray(p)
    msg = str(info.value)
    assert msg.startswith(str(p)) and "\n" not in msg


def test_label_reader_rejects_colour_masks(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    imageio.write_image(tmp_path / "m.png", rgb)
    with pytest.raises(InputError, match="colour"):
        imageio.read_label(tmp_path / "m.png")
    gray_as_rgb = np.repeat(np.full((4, 4, 1), 3, np.uint8), 3, axis=2)
    imageio.write_image(tmp_path / "g.png", gray_as_rgb)
    assert imageio.read_label(tmp_path / "g.png").tolist() == [[3] * 4] * 4


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), imageio.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_write_into_unwritable_place_is_an_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError) as info:
        imageio.write_bytes_atomic(blocker / "sub" / "out.bin", b"1")
    assert str(blocker) in str(info.value)


@pytest.mark.parametrize(
    "compression, dtype",
    [
        (c, d)
        for c in ("lzw", "zlib", "packbits", "jpeg")
        for d in ("uint8", "uint16")
        if (c, d) != ("jpeg", "uint16")
    ],
)  # baseline JPEG holds 8-bit samples only
@pytest.mark.parametrize("tiled", [False, True])
def test_compressed_and_tiled_tiffs_are_read(tmp_path, compression, dtype, tiled):
    # What acquisition software, ImageJ and OpenCV write: LZW, Deflate, PackBits and JPEG, strips or tiles.
    rng = np.random.default_rng(0)
    top = 255 if dtype == "uint8" else 65535
    pixels = np.clip(rng.normal(top / 2, top / 8, (96, 160)), 0, top).astype(dtype)
    pixels[:, :80] //= 2  # some structure for JPEG to keep
    path = tmp_path / f"{compression}.tif"
    tifffile.imwrite(path, pixels, compression=compression, tile=(32, 32) if tiled else None)
    got, _ = imageio.read_micrograph(path)
    assert got.dtype == pixels.dtype and got.shape == pixels.shape
    if compression == "jpeg":
        assert np.abs(got.astype(float) - pixels).mean() < 8  # lossy, but the same picture
    else:
        assert np.array_equal(got, pixels)


def test_a_tiff_written_by_opencv_is_read(tmp_path):
    import cv2

    pixels = np.random.default_rng(1).integers(0, 256, (64, 80), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "cv.tif"), pixels)  # OpenCV compresses TIFFs with LZW
    with tifffile.TiffFile(tmp_path / "cv.tif") as tif:
        assert tif.pages.first.compression != 1
    assert np.array_equal(imageio.read_gray(tmp_path / "cv.tif"), pixels)
