"""Writers that take an image a band of rows at a time, so a 16384 x 16384 mask never sits in memory.

OpenCV and tifffile encode whole arrays; the runtime finalizes rows band by band and hands each band to
these writers at once. Each writes to a temporary ``.NAME.*.part`` file beside the target and renames it
onto the target only in :meth:`commit`, so a crash or Ctrl-C never leaves a half-written file under a
finished name.

- :class:`PngRowWriter`: 8-bit gray, palette or RGB PNG; label images use the PNG "Up" filter and run-length
  deflate, which turn their long runs into almost nothing (a mask compresses to a few percent).
- :class:`TiffPlaneWriter`: an uncompressed multi-page TIFF (one page per channel) laid out by tifffile,
  whose pixel data is then filled in place with plain positioned writes (no memory map, so the written
  pages do not count against the process's resident memory).
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from semphase.errors import InputError
from semphase.imageio import temporary_beside

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IDAT_CHUNK = 1 << 20  # bytes of compressed data per IDAT chunk


class _RowWriter:
    """Shared bookkeeping: the temporary file, the row count, commit and abort."""

    def __init__(self, path: str | os.PathLike, width: int, height: int) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"image size must be positive, got {width} x {height}")
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.rows_written = 0
        self.tmp = temporary_beside(self.path)
        self._closed = False

    def _check_band(self, band: np.ndarray, shape_tail: tuple[int, ...]) -> None:
        if band.dtype != self.dtype or band.shape[1:] != shape_tail:  # type: ignore[attr-defined]
            raise ValueError(
                f"expected {self.dtype} rows of shape (n, *{shape_tail}), got {band.dtype} {band.shape}"
            )
        if self.rows_written + band.shape[0] > self.height:
            raise ValueError(f"{self.rows_written + band.shape[0]} rows for an image of {self.height}")

    def commit(self) -> Path:
        """Finish the file and rename it onto its final name; returns that name."""
        if self.rows_written != self.height:
            raise ValueError(f"{self.path.name}: {self.rows_written} of {self.height} rows written")
        try:
            self._finish()
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise InputError(f"cannot write ({exc.strerror or exc})", self.path) from None
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop the temporary file (the final name, if it existed before, is untouched)."""
        if self._closed:
            return
        self._closed = True
        self._close_handle()
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def _finish(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _close_handle(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class PngRowWriter(_RowWriter):
    """Stream an 8-bit gray (``channels=1``) or RGB (``channels=3``) PNG band by band.

    Parameters
    ----------
    path : final file name.
    width, height : image size in pixels.
    channels : 1 or 3.
    level : zlib compression level; 1 is several times faster than OpenCV's default and loses a few
        percent of size on noisy overlays.
    label_image : the rows are a label image (long runs): "Up" filter and run-length deflate, which
        compress a mask faster and smaller than anything else tried; photographs (overlays) compress
        best unfiltered with ordinary deflate.
    palette : uint8 (256, 3) RGB entries: write an indexed-colour PNG whose pixels are the indices.
    """

    dtype = np.dtype(np.uint8)

    def __init__(
        self,
        path,
        width: int,
        height: int,
        channels: int = 1,
        level: int = 1,
        label_image: bool = False,
        palette: np.ndarray | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        if palette is not None and (channels != 1 or palette.shape != (256, 3) or palette.dtype != np.uint8):
            raise ValueError("a palette image has one channel and a uint8 (256, 3) palette")
        super().__init__(path, width, height)
        self.channels = channels
        strategy = zlib.Z_RLE if label_image else zlib.Z_DEFAULT_STRATEGY
        self._zlib = zlib.compressobj(level, zlib.DEFLATED, 15, 9, strategy)
        self._filter = 2 if label_image else 0
        self._previous = np.zeros(width * channels, dtype=np.uint8)
        self._pending = bytearray()
        try:
            self._fh = open(self.tmp, "wb")  # noqa: SIM115 - closed in _finish or abort
            color_type = 3 if palette is not None else (0 if channels == 1 else 2)
            self._fh.write(_PNG_SIGNATURE)
            self._chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
            if palette is not None:
                self._chunk(b"PLTE", palette.tobytes())
        except OSError as exc:
            self.abort()
            raise InputError(f"cannot write ({exc.strerror or exc})", self.path) from None

    def _chunk(self, kind: bytes, data: bytes) -> None:
        self._fh.write(struct.pack(">I", len(data)) + kind + data)
        self._fh.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))

    def write(self, band: np.ndarray) -> None:
        """Append rows: uint8 of shape (n, width) for gray, (n, width, 3) for RGB."""
        tail = (self.width,) if self.channels == 1 else (self.width, 3)
        self._check_band(band, tail)
        rows = np.ascontiguousarray(band).reshape(band.shape[0], -1)
        filtered = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
        filtered[:, 0] = self._filter  # every PNG row starts with its filter type
        if self._filter == 2:  # "Up": each byte minus the byte above (mod 256)
            filtered[0, 1:] = rows[0] - self._previous
            np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
            self._previous = rows[-1].copy()
        else:
            filtered[:, 1:] = rows
        try:
            self._pending += self._zlib.compress(filtered)  # the buffer itself: no bytes copy of the band
            while len(self._pending) >= _IDAT_CHUNK:
                self._chunk(b"IDAT", bytes(self._pending[:_IDAT_CHUNK]))
                del self._pending[:_IDAT_CHUNK]
        except OSError as exc:
            self.abort()
            raise InputError(f"cannot write ({exc.strerror or exc})", self.path) from None
        self.rows_written += band.shape[0]

    def _finish(self) -> None:
        self._pending += self._zlib.flush()
        if self._pending:
            self._chunk(b"IDAT", bytes(self._pending))
        self._chunk(b"IEND", b"")
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def _close_handle(self) -> None:
        with contextlib.suppress(Exception):
            self._fh.close()


class TiffPlaneWriter(_RowWriter):
    """Stream a (channels, height, width) array into an uncompressed TIFF, one page per channel.

    tifffile writes the header and reserves the pixel data (contiguous, page after page); bands of rows
    are then written in place with positioned writes. Files over 4 GB become BigTIFF.

    Parameters
    ----------
    path : final file name (.tif).
    width, height : image size; channels : pages; dtype : pixel type (float16 for probabilities).
    description : optional text for the first page's ImageDescription.
    """

    def __init__(self, path, width: int, height: int, channels: int, dtype=np.float16, description=None):
        super().__init__(path, width, height)
        import tifffile

        self.channels = int(channels)
        self.dtype = np.dtype(dtype)
        nbytes = self.channels * self.height * self.width * self.dtype.itemsize
        try:
            mapped = tifffile.memmap(
                self.tmp,
                shape=(self.channels, self.height, self.width),
                dtype=self.dtype,
                photometric="minisblack",
                metadata={"axes": "CYX"},
                description=description,
                bigtiff=nbytes > 2**32 - 2**25,
            )
            self._offset = int(mapped.offset)
            mapped._mmap.close()  # only the layout was wanted; data goes in with positioned writes
            del mapped
            self._fd = os.open(self.tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            self.abort()
            raise InputError(f"cannot write ({exc.strerror or exc})", self.path) from None

    def write(self, band: np.ndarray) -> None:
        """Append rows: ``dtype`` array of shape (channels, n, width)."""
        if band.ndim != 3 or band.shape[0] != self.channels:
            raise ValueError(f"expected ({self.channels}, n, {self.width}) rows, got {band.shape}")
        self._check_band(np.moveaxis(band, 0, 1), (self.channels, self.width))
        n = band.shape[1]
        row_bytes = self.width * self.dtype.itemsize
        plane_bytes = self.height * row_bytes
        try:
            for c in range(self.channels):
                data = np.ascontiguousarray(band[c]).tobytes()
                position = self._offset + c * plane_bytes + self.rows_written * row_bytes
                _write_at(self._fd, data, position)
        except OSError as exc:
            self.abort()
            raise InputError(f"cannot write ({exc.strerror or exc})", self.path) from None
        self.rows_written += n

    def _finish(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)

    def _close_handle(self) -> None:
        with contextlib.suppress(Exception):
            os.close(self._fd)


def _write_at(fd: int, data: bytes, position: int) -> None:
    if hasattr(os, "pwrite"):
        view = memoryview(data)
        while view:
            done = os.pwrite(fd, view, position)
            view, position = view[done:], position + done
    else:  # Windows
        os.lseek(fd, position, os.SEEK_SET)
        view = memoryview(data)
        while view:
            done = os.write(fd, view)
            view = view[done:]
