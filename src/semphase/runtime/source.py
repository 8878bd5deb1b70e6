"""Micrographs as rows on demand, so that a gigapixel montage is never decoded whole.

The sliding window asks for the rows of one tile row at a time, top to bottom; the data-bar detector for
a few rows at the bottom; the overlay for the rows it paints. :func:`open_micrograph` answers all of them
from a :class:`Micrograph`, which reads:

- **TIFF and BigTIFF, tiled or in strips, compressed or not** (the first page): only the strips or tiles
  that cover the asked rows are read and decoded (tifffile's own per-segment decoder, so every
  compression tifffile and imagecodecs know works), the last two decoded rows of segments are kept, and
  an uncompressed contiguous image is read row range by row range with positioned reads. Memory grows with
  the width, not the height: a 65536 x 16384 montage never occupies 1 GB.
- **Everything else** (PNG, BMP, JPEG, and TIFF layouts the segment reader does not handle: planar RGB,
  3-D tiles, a single compressed strip holding the whole image) is decoded whole, within the size limit of
  :mod:`semphase.limits`, and served from memory.

Either way the rows come out as the 8-bit grayscale the model reads (:func:`semphase.imageio.to_uint8`):
colour is converted to luma per row and 16-bit values are mapped linearly, or, with ``percentile``, by
the percentiles of a strided sample taken in a first pass over the bands, the same sample the whole-image
path takes, so both give identical pixels.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from semphase.errors import InputError, one_line
from semphase.imageio import (
    TIFF_SUFFIXES,
    MicrographInfo,
    _check_file,
    _gray_8_or_16,
    percentile_range,
    percentile_sample_steps,
    read_micrograph,
    scale_to_uint8,
    tiff_info,
    to_uint8,
)
from semphase.limits import check_declared_size

#: Rows read per request when the percentile sample or the bottom rows are gathered.
_CHUNK_ROWS = 256


class _ArrayRows:
    """Rows of an image already in memory (views, no copies)."""

    streamed = False

    def __init__(self, array: np.ndarray) -> None:
        self.array = array
        self.shape = (int(array.shape[0]), int(array.shape[1]))
        self.dtype = array.dtype

    def rows(self, y0: int, y1: int) -> np.ndarray:
        return self.array[y0:y1]

    def close(self) -> None:
        self.array = None  # type: ignore[assignment]


def _streamable(page: tifffile.TiffPage) -> bool:
    """Whether the segment reader handles this page (else it is decoded whole)."""
    if page.imagedepth != 1 or page.dtype is None:
        return False
    if page.samplesperpixel > 1 and page.planarconfig != 1:  # planar RGB: one plane after the other
        return False
    if page.dtype not in (np.uint8, np.uint16, np.bool_):
        return False
    if page.is_final:
        return True
    # A compressed image in one strip would be decoded whole anyway: let the plain reader do that.
    return len(page.dataoffsets) > 1


class _TiffRows:
    """Rows of a TIFF page read segment by segment (strips or tiles)."""

    streamed = True

    def __init__(self, path: Path, tif: tifffile.TiffFile, page: tifffile.TiffPage) -> None:
        self.path = path
        self._tif = tif
        self._page = page
        self._lock = threading.Lock()  # the prefetch thread and the caller share one file handle
        height, width = int(page.imagelength), int(page.imagewidth)
        self.shape = (height, width)
        self.dtype = np.dtype(page.dtype)
        self._samples = int(page.samplesperpixel)
        self._tail = () if self._samples == 1 else (self._samples,)
        self._contiguous: int | None = None  # offset of uncompressed pixels stored in one piece
        if page.is_final and page.bitspersample in (8, 16):
            self._contiguous = int(page.dataoffsets[0])
            self._row_bytes = width * self._samples * self.dtype.itemsize
        if page.is_tiled:
            self._seg_h, self._seg_w = int(page.tilelength), int(page.tilewidth)
        else:
            self._seg_h, self._seg_w = min(int(page.rowsperstrip) or height, height), width
        self._across = -(-width // self._seg_w)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._decode = page.decode
        self._decode_args: dict = {"_fullsize": page.is_tiled}
        if page.compression in (6, 7, 34892, 33007):  # JPEG variants need their tables
            self._decode_args.update(jpegtables=page.jpegtables, jpegheader=page.jpegheader)

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0:y1`` as stored: (n, W) or (n, W, samples), the page's dtype."""
        try:
            with self._lock:
                if self._contiguous is not None:
                    return self._read_contiguous(y0, y1)
                return self._read_segments(y0, y1)
        except InputError:
            raise
        except MemoryError:
            raise InputError("not enough memory to decode this TIFF", self.path) from None
        except Exception as exc:  # corrupt segments raise many types inside tifffile and imagecodecs
            raise InputError(f"cannot decode TIFF rows {y0}-{y1} ({one_line(exc, 160)})", self.path) from None

    def _read_contiguous(self, y0: int, y1: int) -> np.ndarray:
        fh = self._tif.filehandle
        fh.seek(self._contiguous + y0 * self._row_bytes)
        wanted = (y1 - y0) * self._row_bytes
        data = fh.read(wanted)
        if len(data) != wanted:
            raise InputError(f"truncated TIFF (rows {y0}-{y1} are missing)", self.path)
        dtype = self.dtype.newbyteorder(self._tif.byteorder)
        pixels = np.frombuffer(data, dtype).astype(self.dtype, copy=False)
        return pixels.reshape((y1 - y0, self.shape[1], *self._tail))

    def _read_segments(self, y0: int, y1: int) -> np.ndarray:
        out = np.empty((y1 - y0, self.shape[1], *self._tail), self.dtype)
        for r in range(y0 // self._seg_h, (y1 - 1) // self._seg_h + 1):
            block = self._segment_row(r)
            top = r * self._seg_h
            a, b = max(y0, top), min(y1, top + block.shape[0])
            out[a - y0 : b - y0] = block[a - top : b - top]
        return out

    def _segment_row(self, r: int) -> np.ndarray:
        """Decoded rows of the r-th row of segments (kept: the next tile row reads most of them again)."""
        if r in self._cache:
            self._cache.move_to_end(r)
            return self._cache[r]
        page, fh = self._page, self._tif.filehandle
        height, width = self.shape
        top = r * self._seg_h
        rows = min(self._seg_h, height - top)
        block = np.zeros((rows, width, *self._tail), self.dtype)
        for c in range(self._across):
            index = r * self._across + c
            offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
            data = None
            if count:
                fh.seek(offset)
                data = fh.read(count)
                if len(data) != count:
                    raise InputError(f"truncated TIFF (segment {index} is cut short)", self.path)
            segment, _, _ = self._decode(data, index, **self._decode_args)
            if segment is None:  # a segment the writer left empty: zeros, as tifffile reads it
                continue
            segment = segment.reshape(segment.shape[-3:])  # (length, width, samples)
            x0 = c * self._seg_w
            h, w = min(rows, segment.shape[0]), min(width - x0, segment.shape[1])
            if self._tail:
                block[:h, x0 : x0 + w] = segment[:h, :w]
            else:
                block[:h, x0 : x0 + w] = segment[:h, :w, 0]
        self._cache[r] = block
        while len(self._cache) > 2:
            self._cache.popitem(last=False)
        return block

    def close(self) -> None:
        self._cache.clear()
        self._tif.close()


@dataclass
class Micrograph:
    """A micrograph opened for reading rows: its size, what its file says, and 8-bit gray rows on demand.

    Attributes
    ----------
    path : the file.
    height, width : pixels.
    bit_depth : 8 or 16, as stored.
    info : pixel size, vendor and data-bar height from the file's metadata.
    streamed : True when rows are decoded as they are asked for (TIFF strips or tiles), False when the
        image was decoded whole.
    """

    path: Path
    height: int
    width: int
    bit_depth: int
    info: MicrographInfo
    streamed: bool
    _reader: _ArrayRows | _TiffRows
    _normalize: str
    _range: tuple[float, float] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0:y1`` as uint8 gray (n, W), ``0 <= y0 < y1 <= height``."""
        if not 0 <= y0 < y1 <= self.height:
            raise ValueError(f"rows {y0}:{y1} outside an image of {self.height} rows")
        raw = _gray_8_or_16(self._reader.rows(y0, y1), self.path)
        if self._range is not None:
            return scale_to_uint8(raw, *self._range)
        return to_uint8(raw, "linear")

    def bottom(self) -> _BottomRows:
        """A lazy (H, W) view for the data-bar detector: indexing a row reads it (and its neighbours)."""
        return _BottomRows(self)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Micrograph:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _BottomRows:
    """What :func:`semphase.runtime.databar.detect_databar` reads: ``shape``, ``ndim`` and ``view[i]``,
    rows fetched in chunks as the detector walks up from the last row."""

    ndim = 2

    def __init__(self, micrograph: Micrograph) -> None:
        self._m = micrograph
        self.shape = micrograph.shape
        self._chunk: tuple[int, np.ndarray] | None = None

    def __getitem__(self, index: int) -> np.ndarray:
        y = int(index)
        if y < 0:
            y += self.shape[0]
        if self._chunk is None or not self._chunk[0] <= y < self._chunk[0] + len(self._chunk[1]):
            y0 = max(0, y - _CHUNK_ROWS + 1)
            self._chunk = (y0, self._m.rows(y0, y + 1))
        return self._chunk[1][y - self._chunk[0]]


def _open_tiff(path: Path) -> tuple[_TiffRows | None, MicrographInfo]:
    """The TIFF's row reader when its first page can be streamed (else None), and its metadata."""
    try:
        tif = tifffile.TiffFile(path)
    except Exception as exc:
        raise InputError(f"cannot decode TIFF ({one_line(exc, 160)})", path) from None
    try:
        if not tif.pages:
            raise InputError("TIFF has no pages", path)
        page = tif.pages.first
        check_declared_size(int(page.imagewidth), int(page.imagelength), path)
        info = tiff_info(tif)
        if not _streamable(page):
            tif.close()
            return None, info
        return _TiffRows(path, tif, page), info
    except InputError:
        tif.close()
        raise
    except Exception as exc:
        tif.close()
        raise InputError(f"cannot decode TIFF ({one_line(exc, 160)})", path) from None


def open_micrograph(path: str | os.PathLike, normalize: str = "linear", stream: bool = True) -> Micrograph:
    """Open a micrograph for reading 8-bit gray rows.

    Parameters
    ----------
    path : TIFF/BigTIFF (first page), PNG, BMP or JPEG; gray, RGB or RGBA; 8 or 16 bits.
    normalize : 16-bit to 8-bit mapping, ``"linear"`` or ``"percentile"`` (see :func:`to_uint8`).
    stream : read TIFF strips and tiles as rows are asked for (False: decode every file whole).

    Raises
    ------
    InputError
        naming the file, for anything the readers of :mod:`semphase.imageio` reject (a corrupt segment
        of a streamed TIFF is only found when its rows are read, and raises then).
    """
    if normalize not in ("linear", "percentile"):
        raise ValueError(f"normalize must be 'linear' or 'percentile', got {normalize!r}")
    src = Path(path)
    reader: _ArrayRows | _TiffRows | None = None
    info = MicrographInfo()
    if stream and src.suffix.lower() in TIFF_SUFFIXES:
        _check_file(src)
        reader, info = _open_tiff(src)
    if reader is None:
        array, info = read_micrograph(src)
        reader = _ArrayRows(array)
    height, width = reader.shape
    depth = 16 if reader.dtype == np.uint16 else 8
    micrograph = Micrograph(src, height, width, depth, info, reader.streamed, reader, normalize)
    try:
        if normalize == "percentile":
            micrograph._range = percentile_range(_strided_sample(micrograph))
    except BaseException:
        micrograph.close()
        raise
    return micrograph


def _strided_sample(micrograph: Micrograph) -> np.ndarray:
    """The sample :func:`~semphase.imageio.to_uint8` takes for its percentiles
    (:func:`~semphase.imageio.percentile_sample_steps`), gathered band by band as stored."""
    height, width = micrograph.shape
    sy, sx = percentile_sample_steps(height, width)
    reader = micrograph._reader
    if isinstance(reader, _ArrayRows):
        return _gray_8_or_16(reader.array, micrograph.path)[::sy, ::sx]
    parts = []
    step = max(_CHUNK_ROWS // sy, 1) * sy  # chunks start on sampled rows
    for y0 in range(0, height, step):
        chunk = _gray_8_or_16(reader.rows(y0, min(height, y0 + step)), micrograph.path)
        parts.append(chunk[::sy, ::sx])
    return np.concatenate(parts, axis=0)
