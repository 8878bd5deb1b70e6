"""Reading micrographs and label images, writing outputs atomically.

Torch-free: numpy, opencv, tifffile and imagecodecs only. Every reader raises
:class:`~semphase.errors.InputError` with a one-line message naming the file for anything it cannot use
(missing, zero bytes, truncated, not an image, unexpected channel layout).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import imagecodecs
import imagesize
import numpy as np
import tifffile

from semphase.errors import InputError, one_line
from semphase.limits import check_declared_size


def _load_opencv():
    """Import cv2 with its own image size limit lifted, unless the user set one.

    semphase checks the size every file declares against its own limit (:mod:`semphase.limits`,
    ``--max-megapixels``) before decoding; OpenCV's 2**30-pixel ``OPENCV_IO_MAX_IMAGE_PIXELS`` must not
    refuse an image the user raised that limit for. OpenCV reads the variable once, when it loads: a process
    that loaded cv2 before this module keeps OpenCV's default.
    """
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 40))
    import cv2

    return cv2


cv2 = _load_opencv()

# The readers name every file they cannot decode in one line; OpenCV's own stderr chatter about the same
# files would only bury that line.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

#: File types semphase reads, lower-case suffixes.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".bmp", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")


def is_image_name(path: str | os.PathLike) -> bool:
    """True when the suffix is one semphase reads."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _check_file(path: Path) -> None:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except OSError as exc:
        raise InputError(f"cannot access ({exc.strerror or exc})", path) from None
    if not path.is_file():
        raise InputError("not a file", path)
    if st.st_size == 0:
        raise InputError("empty file (0 bytes)", path)


def _read_tiff(path: Path) -> tuple[np.ndarray, MicrographInfo]:
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise InputError("TIFF has no pages", path)
            page = tif.pages.first
            check_declared_size(int(page.imagewidth), int(page.imagelength), path)
            arr = page.asarray()
            info = tiff_info(tif)
    except InputError:
        raise
    except MemoryError:
        raise InputError("not enough memory to decode this TIFF", path) from None
    except Exception as exc:  # tifffile raises many types for corrupt data
        raise InputError(f"cannot decode TIFF ({_short(exc)})", path) from None
    return arr, info


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of every complete PNG
_PNG_GRAY_ALPHA = 4  # IHDR colour type; the byte sits at offset 25 of every PNG


class _QuietWhileDecoding(logging.Filter):
    """Drops what a logger says on a thread while that thread decodes a micrograph for semphase.

    imagecodecs hands libpng's warnings (``iCCP: known incorrect sRGB profile``, a bad ancillary CRC) to the
    ``imagecodecs`` logger, where Python's last-resort handler would print them on stderr without the
    file's name. A logger's filters run on the thread that logs, so a thread-local flag drops exactly the
    decoding thread's records; other threads, and imagecodecs used outside semphase's readers, are untouched.
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        self._local.active = True
        try:
            yield
        finally:
            self._local.active = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self._local, "active", False)


_PNG_WARNINGS = _QuietWhileDecoding()
logging.getLogger("imagecodecs").addFilter(_PNG_WARNINGS)


def _decode_png(data: np.ndarray, path: Path) -> np.ndarray:
    """libpng through imagecodecs, whose errors arrive as exceptions naming libpng's reason.

    OpenCV's libpng prints its ``libpng error: ...`` lines on file descriptor 2, where only redirecting the
    whole process's stderr could catch them (and other threads' output with them). The array is laid out as
    OpenCV's ``IMREAD_UNCHANGED`` lays it out (in RGB order): gray with alpha as RGBA, a gray image's tRNS
    transparency dropped.
    """
    try:
        with _PNG_WARNINGS.decoding():
            arr = imagecodecs.png_decode(data)
    except imagecodecs.PngError as exc:
        raise InputError(f"cannot decode image (libpng: {_short(exc)})", path) from None
    except MemoryError:
        raise InputError("not enough memory to decode this image", path) from None
    except Exception:  # libpng's message was not text, or a layout imagecodecs does not return
        raise InputError("cannot decode image (corrupt, truncated or not an image)", path) from None
    if arr.ndim == 3 and arr.shape[2] == 2:
        gray, alpha = arr[:, :, 0], arr[:, :, 1]
        with_alpha = data[25] == _PNG_GRAY_ALPHA
        arr = np.dstack([gray, gray, gray, alpha]) if with_alpha else np.ascontiguousarray(gray)
    return arr


def _decode_with_opencv(data: np.ndarray, path: Path) -> np.ndarray:
    """BMP, JPEG (or anything else OpenCV reads), colour returned in RGB(A) order.

    libjpeg's warnings about a JPEG it still decodes (``Corrupt JPEG data: ...``) reach file descriptor 2
    as libjpeg prints them: semphase leaves the process's stderr to the threads that share it.
    """
    try:
        arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InputError(f"cannot decode image ({_short(exc).rsplit(':', 1)[-1].strip()})", path) from None
    except MemoryError:
        raise InputError("not enough memory to decode this image", path) from None
    if arr is None:
        raise InputError("cannot decode image (corrupt, truncated or not an image)", path)
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = cv2.cvtColor(arr, cv2.COLOR_BGRA2RGBA)
    return arr


def _decode_other(data: np.ndarray, path: Path) -> np.ndarray:
    """PNG, BMP, JPEG (or anything OpenCV reads) after checking the size the header declares."""
    width, height = imagesize.get(path, exif_rotation=False)  # reads the header only
    header_read = width > 0 and height > 0
    if header_read:
        check_declared_size(width, height, path)
    is_png = data[:8].tobytes() == _PNG_SIGNATURE
    if is_png and data[-8:].tobytes() != _PNG_END:
        raise InputError("truncated PNG (it does not end with an IEND chunk)", path)  # still being copied?
    arr = _decode_png(data, path) if is_png else _decode_with_opencv(data, path)
    if not header_read:  # a format or a header imagesize does not know: the decoded size is checked
        check_declared_size(arr.shape[1], arr.shape[0], path)
    return arr


def _short(exc: BaseException) -> str:
    return one_line(exc, 160)


def _read_with_info(p: Path) -> tuple[np.ndarray, MicrographInfo]:
    _check_file(p)
    info = MicrographInfo()
    if p.suffix.lower() in TIFF_SUFFIXES:
        arr, info = _read_tiff(p)
    else:
        try:
            data = np.fromfile(p, dtype=np.uint8)  # works with non-ASCII paths on Windows too
        except OSError as exc:
            raise InputError(f"cannot read ({exc.strerror or exc})", p) from None
        arr = _decode_other(data, p)
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar TIFF
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise InputError(f"unexpected image shape {tuple(arr.shape)}", p)
    return arr, info


def read_raw(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as stored: first page of a TIFF, or what OpenCV decodes unchanged.

    Returns
    -------
    ndarray, shape (H, W) or (H, W, 3|4), dtype uint8 or uint16 (other TIFF dtypes are returned as is;
    callers decide). Colour images from OpenCV are converted to RGB(A) order.
    """
    return _read_with_info(Path(path))[0]


def to_gray(arr: np.ndarray, path: str | os.PathLike | None = None) -> np.ndarray:
    """RGB/RGBA -> gray (ITU-R BT.601 luma, as OpenCV); gray passes through. Keeps dtype."""
    if arr.ndim == 2:
        return arr
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = arr[:, :, :3]
        if np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 1], rgb[:, :, 2]):
            return np.ascontiguousarray(rgb[:, :, 0])
        return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    raise InputError(f"unexpected image shape {tuple(arr.shape)}", path)


def _gray_8_or_16(arr: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    arr = to_gray(arr, path)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype not in (np.uint8, np.uint16):
        raise InputError(f"unsupported pixel type {arr.dtype} (expected 8- or 16-bit)", path)
    return arr


def read_gray(path: str | os.PathLike) -> np.ndarray:
    """Read a micrograph as a 2-D grayscale array, uint8 or uint16 as stored.

    Raises InputError for other dtypes (float, 32-bit) since their scale is unknown.
    """
    return _gray_8_or_16(read_raw(path), path)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a label/mask image as a 2-D uint8 or uint16 array of raw ids.

    Colour masks are accepted only when all channels are equal (a gray mask saved as RGB); anything else
    is rejected because colours are not ids.
    """
    arr = read_raw(path)
    if arr.ndim == 3:
        rgb = arr[:, :, :3]
        if not (np.array_equal(rgb[:, :, 0], rgb[:, :, 1]) and np.array_equal(rgb[:, :, 1], rgb[:, :, 2])):
            raise InputError("mask is a colour image; expected one channel of integer ids", path)
        arr = np.ascontiguousarray(rgb[:, :, 0])
    if arr.dtype not in (np.uint8, np.uint16):
        raise InputError(f"unsupported mask pixel type {arr.dtype} (expected 8- or 16-bit)", path)
    return arr


def to_uint8(
    image: np.ndarray, normalize: str = "linear", percentiles: tuple[float, float] = (0.5, 99.5)
) -> np.ndarray:
    """Map a uint8/uint16 micrograph to uint8.

    ``linear``: 16-bit values are divided by 257 (rounded), so an image stored at both depths gives the
    same pixels. ``percentile``: stretch the given percentiles to 0..255 (for dim acquisitions).
    """
    if normalize not in ("linear", "percentile"):
        raise ValueError(f"normalize must be 'linear' or 'percentile', got {normalize!r}")
    if normalize == "linear":
        if image.dtype == np.uint8:
            return image
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    sy, sx = percentile_sample_steps(image.shape[0], image.shape[1])
    return scale_to_uint8(image, *percentile_range(image[::sy, ::sx], percentiles))


def percentile_sample_steps(height: int, width: int) -> tuple[int, int]:
    """Row and column strides of the sample the percentile mapping takes (about 1024 x 1024 pixels);
    the streamed reader gathers the same sample band by band."""
    return max(1, height // 1024), max(1, width // 1024)


def percentile_range(sample: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> tuple:
    """The values ``to_uint8(..., "percentile")`` stretches to 0 and 255, from a sample of the image
    (never an empty range)."""
    lo, hi = np.percentile(sample, percentiles)
    if hi <= lo:
        hi = lo + 1
    return lo, hi  # numpy float64, as the stretch has always used them


def scale_to_uint8(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Stretch ``lo..hi`` to 0..255 (rounded, clipped): the percentile mapping of :func:`to_uint8`."""
    scaled = (image.astype(np.float32) - lo) * (255.0 / (hi - lo))
    return np.clip(scaled + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------------------- writing


#: Folders whose temporaries this process marks with an owner tag: ``(folder + os.sep, tag)``.
_TAGGED_FOLDERS: list[tuple[str, str]] = []


@contextlib.contextmanager
def tagged_temporaries(folders: Iterable[str | os.PathLike], tag: str) -> Iterator[None]:
    """While active, temporaries this process creates under ``folders`` are named ``.NAME.<random>.TAG.part``.

    A watcher holds its output folder's lock while it writes there, so a temporary carrying its tag can
    only have been left by a watcher of that folder that has died (kill -9, power loss): the next one may
    delete it. Temporaries of anything else (a ``semphase segment`` writing into a subfolder, another
    program's ``.part`` files) carry no such tag and are never touched.
    """
    if not tag.replace("-", "").isalnum():
        raise ValueError(f"temporary tag must be letters, digits and '-', got {tag!r}")
    entries = [(os.path.join(os.path.abspath(folder), ""), tag) for folder in folders]
    _TAGGED_FOLDERS.extend(entries)
    try:
        yield
    finally:
        for entry in entries:
            _TAGGED_FOLDERS.remove(entry)


def _temporary_tag(folder: Path) -> str:
    if not _TAGGED_FOLDERS:
        return ""
    where = os.path.join(os.path.abspath(folder), "")
    for root, tag in _TAGGED_FOLDERS:
        if where.startswith(root):
            return f".{tag}"
    return ""


def is_tagged_temporary(name: str, tag: str) -> bool:
    """True for a temporary file name that :func:`temporary_beside` made under ``tagged_temporaries(tag)``."""
    return name.startswith(".") and name.endswith(f".{tag}.part")


def temporary_beside(path: str | os.PathLike) -> Path:
    """Create an empty temporary file ``.NAME.<random>.part`` beside ``path`` and return its name.

    Unlike ``tempfile.mkstemp`` (mode 0600) the file gets the permissions any new file gets (0666 minus
    the umask), so outputs on a shared folder stay readable by colleagues once renamed into place. Under
    :func:`tagged_temporaries` the name also carries the owner's tag.

    Raises
    ------
    InputError
        naming the folder when it cannot be created or written.
    """
    final = Path(path)
    folder = final.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tag = _temporary_tag(folder)
        for _ in range(100):
            tmp = folder / f".{final.name}.{secrets.token_hex(4)}{tag}.part"
            try:
                os.close(
                    os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0), 0o666)
                )
                return tmp
            except FileExistsError:
                continue
        raise OSError("no free temporary name")
    except OSError as exc:
        raise InputError(f"cannot write here ({exc.strerror or exc})", folder) from None


def ensure_output_folder(path: str | os.PathLike) -> Path:
    """Create an output folder if needed and prove it can be written, before any work is done.

    Raises
    ------
    InputError
        naming the folder: it exists as a file, cannot be created, or a file cannot be written in it.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError("exists and is not a folder", folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = temporary_beside(folder / ".semphase-write-test")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"output folder cannot be written ({exc.strerror or exc})", folder) from None
    except InputError as exc:
        raise InputError(f"output folder cannot be written ({exc.reason})", folder) from None
    return folder


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` atomically.

    On any exception (Ctrl-C included) the temporary file is removed and ``path`` is untouched, so a
    crash never leaves a half-written file under the final name. Temporary names start with ``.`` and
    end with ``.part`` so they never look like finished outputs.
    """
    final = Path(path)
    tmp_path = temporary_beside(final)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (fsync before the rename)."""
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise InputError(f"cannot write ({exc.strerror or exc})", path) from None


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def encode_image(array: np.ndarray, suffix: str) -> bytes:
    """Encode gray (H, W), RGB (H, W, 3) or RGBA (H, W, 4) uint8/uint16 as PNG/BMP/JPEG/TIFF bytes."""
    suffix = suffix.lower()
    if suffix in TIFF_SUFFIXES:
        import io

        buf = io.BytesIO()
        rgba = array.ndim == 3 and array.shape[2] == 4
        extra = {"extrasamples": ["unassalpha"]} if rgba else {}
        tifffile.imwrite(buf, array, photometric="rgb" if array.ndim == 3 else "minisblack", **extra)
        return buf.getvalue()
    if array.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if array.shape[2] == 4 else cv2.COLOR_RGB2BGR
        arr = cv2.cvtColor(array, code)
    else:
        arr = array
    params = [cv2.IMWRITE_PNG_COMPRESSION, 3] if suffix == ".png" else []
    ok, buf = cv2.imencode(suffix, arr, params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode {suffix}")
    return buf.tobytes()


def write_image(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an image atomically; the format follows the suffix. RGB(A) arrays are in RGB(A) order."""
    write_bytes_atomic(path, encode_image(array, Path(path).suffix))


# ----------------------------------------------------------------------------- SEM metadata (TIFF)

#: TIFF tag that FEI/Thermo Helios instruments use for their INI-style metadata (tifffile: FEI_HELIOS).
FEI_HELIOS_TAG = 34682


@dataclass
class MicrographInfo:
    """What the file says about a micrograph besides its pixels."""

    pixel_size_um: float | None = None
    #: Height of the image proper, without an appended data bar, when the vendor metadata states it.
    image_height: int | None = None
    vendor: str | None = None
    notes: list[str] = field(default_factory=list)


#: TIFF tag of TESCAN's INI-style header (Zeiss SmartSEM's tag 34118 is parsed by tifffile: ``sem_metadata``).
TESCAN_TAG = 50431
_LENGTH_UNITS_UM = {"pm": 1e-6, "nm": 1e-3, "um": 1.0, "µm": 1.0, "μm": 1.0, "mm": 1e3, "m": 1e6}
#: Resolution tags that only state a screen or print density (72 dpi and friends) say nothing about the
#: sample; a pixel size taken from them is only believed when it is this small or smaller.
_MAX_TAG_PIXEL_UM = {2: 10.0, 3: 50.0}  # inch, centimetre


def _positive(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number > 0 and np.isfinite(number) else None


def _micrometres(value: float) -> float:
    """Drop the float noise of unit conversions (0.1 um, not 0.09999999999999999)."""
    return float(f"{value:.9g}")


def _fei_info(fei: dict, info: MicrographInfo) -> None:
    scan = fei.get("Scan") or fei.get("EScan") or {}
    metres = _positive(scan.get("PixelWidth"))
    if metres is not None:
        info.pixel_size_um = _micrometres(metres * 1e6)
    height = (fei.get("Image") or {}).get("ResolutionY")
    if isinstance(height, int) and height > 0:
        info.image_height = height
    info.vendor = "FEI/Thermo"


def _zeiss_info(sem: dict, info: MicrographInfo) -> None:
    for key in ("ap_image_pixel_size", "ap_pixel_size"):
        entry = sem.get(key)
        if isinstance(entry, tuple) and len(entry) >= 3:
            value, unit = _positive(entry[1]), _LENGTH_UNITS_UM.get(str(entry[2]).strip())
            if value is not None and unit is not None:
                info.pixel_size_um = _micrometres(value * unit)
                break
    info.vendor = "Zeiss"


def _tescan_info(text: str, info: MicrographInfo) -> None:
    import re

    match = re.search(r"^\s*PixelSizeX\s*=\s*([0-9.eE+-]+)", text, re.M)
    metres = _positive(match.group(1)) if match else None
    if metres is not None:
        info.pixel_size_um = _micrometres(metres * 1e6)
    info.vendor = "TESCAN"


def _resolution_info(page: tifffile.TiffPage, info: MicrographInfo) -> None:
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return
    unit = int(tags["ResolutionUnit"].value)
    numerator, denominator = tags["XResolution"].value
    per_unit = _positive(numerator / denominator) if denominator else None
    if unit not in _MAX_TAG_PIXEL_UM or per_unit is None:
        return
    pixel_um = (25_400.0 if unit == 2 else 10_000.0) / per_unit
    if pixel_um <= _MAX_TAG_PIXEL_UM[unit]:
        info.pixel_size_um = _micrometres(pixel_um)
        info.notes.append("pixel size from the TIFF resolution tags")


def tiff_info(tif: tifffile.TiffFile) -> MicrographInfo:
    """Pixel size and data-bar-free image height from an open TIFF's vendor metadata.

    Reads FEI/Thermo (tags 34680/34682: ``Scan.PixelWidth``, ``Image.ResolutionY``), Zeiss (tag 34118:
    ``ap_image_pixel_size``) and TESCAN (tag 50431: ``PixelSizeX``) headers, and, failing those, the
    standard resolution tags when they state a microscopic pixel. What could not be parsed is noted, not
    raised: a micrograph without metadata is still segmented.
    """
    info = MicrographInfo()
    page = tif.pages.first
    try:
        fei = tif.fei_metadata
        if fei:
            _fei_info(fei, info)
        elif tif.is_sem:
            _zeiss_info(tif.sem_metadata or {}, info)
        elif TESCAN_TAG in page.tags:
            value = page.tags[TESCAN_TAG].value
            text = value.decode("latin-1", "replace") if isinstance(value, bytes) else str(value)
            _tescan_info(text, info)
    except Exception as exc:  # vendor headers are free text; a bad one must not stop segmentation
        info.notes.append(f"vendor metadata unreadable ({_short(exc)})")
    if info.pixel_size_um is None:
        with contextlib.suppress(Exception):
            _resolution_info(page, info)
    return info


def read_micrograph(path: str | os.PathLike) -> tuple[np.ndarray, MicrographInfo]:
    """Read a micrograph as a 2-D gray array (uint8 or uint16, as stored) with what its file says.

    TIFFs are opened once for both the pixels (first page) and the metadata (:func:`tiff_info`); other
    formats carry no SEM metadata and get an empty :class:`MicrographInfo`.

    Raises
    ------
    InputError
        naming the file, for anything :func:`read_gray` rejects.
    """
    arr, info = _read_with_info(Path(path))
    return _gray_8_or_16(arr, path), info
