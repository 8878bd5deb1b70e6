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


# Run as a script by the test below: semphase's decoders are wrapped so that, once a file is decoded and
# before the reader goes on, another thread writes to stderr (through sys.stderr and straight to fd 2) and
# the reader waits for it. Nothing else is changed; the reasons the readers give are printed on stdout.
_DECODE_WHILE_ANOTHER_THREAD_WRITES = """
import os, sys, threading
import cv2, imagecodecs
from semphase import imageio
from semphase.errors import InputError

go, written = threading.Event(), threading.Event()

def other_thread():
    while go.wait(30):
        go.clear()
        sys.stderr.write("other thread via sys.stderr\\n")
        sys.stderr.flush()
        os.write(2, b"libpng error: other thread via fd 2\\n")
        written.set()

def while_another_thread_writes(decode):
    def wrapped(*args, **kwargs):
        try:
            return decode(*args, **kwargs)
        finally:
            go.set()
            written.wait(30)
            written.clear()
    return wrapped

cv2.imdecode = while_another_thread_writes(cv2.imdecode)
imagecodecs.png_decode = while_another_thread_writes(imagecodecs.png_decode)
threading.Thread(target=other_thread, daemon=True).start()
for path in sys.argv[1:]:
    try:
        print(imageio.read_gray(path).shape)
    except InputError as exc:
        print(exc.reason)
"""


def test_another_threads_stderr_is_left_alone_while_a_micrograph_decodes(tmp_path):
    # `semphase serve` and `watch` decode on worker threads: a reader that redirected fd 2 to catch libpng's
    # messages swallowed whatever other threads wrote meanwhile, and took their lines for the file's reason.
    import subprocess
    import sys

    from _bombs import BOMBS

    broken = tmp_path / "broken.png"
    broken.write_bytes(BOMBS["png"](4, 4))  # complete, but its pixel data is 16 bytes short
    paths = [broken, tmp_path / "good.png", tmp_path / "good.bmp", tmp_path / "good.jpg"]
    for path in paths[1:]:
        imageio.write_image(path, np.full((8, 6), 128, np.uint8))
    done = subprocess.run(
        [sys.executable, "-c", _DECODE_WHILE_ANOTHER_THREAD_WRITES, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "cannot decode image (libpng: Not enough image data)",
        "(8, 6)",
        "(8, 6)",
        "(8, 6)",
    ]
    other = ["other thread via sys.stderr", "libpng error: other thread via fd 2"]
    assert done.stderr.splitlines() == other * len(paths)  # every line, in order, none taken by a reader


def _png_with_chunk(png: bytes, kind: bytes, data: bytes) -> bytes:
    """``png`` with one more chunk right after its IHDR chunk."""
    import struct
    import zlib

    chunk = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return png[:33] + chunk + png[33:]


def test_libpng_warnings_stay_off_stderr_and_other_imagecodecs_records_pass(tmp_path, caplog):
    # libpng warns about an invalid sRGB chunk and decodes the image; imagecodecs logs the warning, which
    # Python's last-resort handler would print without the file's name
    import logging

    import cv2

    pixels = np.random.default_rng(2).integers(0, 256, (12, 10), dtype=np.uint8)
    path = tmp_path / "warns.png"
    path.write_bytes(_png_with_chunk(cv2.imencode(".png", pixels)[1].tobytes(), b"sRGB", b"\x09"))
    with caplog.at_level(logging.WARNING, logger="imagecodecs"):
        assert np.array_equal(imageio.read_gray(path), pixels)
        logging.getLogger("imagecodecs").warning("said outside semphase's readers")
    assert [record.getMessage() for record in caplog.records] == ["said outside semphase's readers"]


def test_gray_pngs_with_alpha_or_transparency_read_as_opencv_read_them(tmp_path):
    import cv2
    import imagecodecs

    rng = np.random.default_rng(3)
    gray, alpha = rng.integers(0, 256, (2, 6, 9), dtype=np.uint8)
    imageio.write_bytes_atomic(tmp_path / "la.png", imagecodecs.png_encode(np.dstack([gray, alpha])))
    assert np.array_equal(imageio.read_raw(tmp_path / "la.png"), np.dstack([gray, gray, gray, alpha]))
    trns = _png_with_chunk(cv2.imencode(".png", gray)[1].tobytes(), b"tRNS", b"\x00\x07")  # gray 7 is clear
    imageio.write_bytes_atomic(tmp_path / "trns.png", trns)
    assert np.array_equal(imageio.read_raw(tmp_path / "trns.png"), gray)
