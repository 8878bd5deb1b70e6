"""A streaming writer of pyramidal, tiled, compressed OME-TIFF files, for outputs of gigapixel montages.

The segmentation runtime finalizes an image band by band (a few hundred rows of the full width at a time,
top to bottom). :class:`OmeTiffWriter` turns those bands into one OME-TIFF that QuPath, Bio-Formats, Fiji
and napari open at any zoom, without ever holding the image: a label mask (with its class table), an RGB
overlay, a gray map (uncertainty) or one channel per class (probabilities scaled 0..255).

File layout
-----------
- One OME Image of uint8 pixels, tiled ``tile`` x ``tile`` and compressed (deflate by default). Labels,
  gray maps and channels also use the horizontal-differencing predictor (TIFF Predictor 2), which makes
  their runs and ramps a third to a half smaller; noisy RGB overlays compress better without it.
- Full resolution in the main IFD chain (one page per channel for kind ``"channels"``, one interleaved
  RGB page for ``"rgb"``), each page carrying its sub-resolutions as SubIFDs (NewSubfileType 1): the
  OME-TIFF 6 pyramid convention. Each level is half the previous one (rounded up), down to the first level
  whose larger side fits one tile. Label levels keep every second pixel (nearest neighbour, so classes
  never mix); the others are 2 x 2 means rounded to nearest (halves up), and at an odd right or bottom
  edge the mean of the pixels that exist.
- Classic TIFF while the file is sure to stay under 4 GiB (more programs read it, ImageJ's own TIFF
  reader among them); BigTIFF when the worst case of all levels (uncompressed size, times 1.5 for LZW,
  which can expand data) could pass that. The choice is made before the first byte, from the size alone.
- OME-XML (schema 2016-06) in the first page's ImageDescription, as 7-bit ASCII (other characters as
  numeric character references): Pixels Type uint8, SizeX/SizeY/SizeZ 1/SizeT 1/SizeC, DimensionOrder
  XYCZT, PhysicalSizeX/Y in µm when known, the Channel names (an RGB image is one Channel with
  SamplesPerPixel 3, Interleaved), and one TiffData from IFD 0 for all planes. When the class names are
  known (always for labels), a MapAnnotation in namespace :data:`CLASSES_NAMESPACE`, linked to the Image,
  holds the class table: key ``"<id>"`` -> class name, ``"<id>.color"`` -> ``"#rrggbb"``, and for labels
  ``"255"`` -> ``"no data"`` (the IGNORE label of :mod:`semphase.phases`).

How it streams
--------------
tifffile's ``TiffWriter.write`` pulls the tiles of a page from an iterator, which may yield tiles that are
already compressed. A worker thread runs that write; :meth:`OmeTiffWriter.write` hands it a copy of each
band through a queue of one item, so the caller waits only when the worker is a band behind. The worker
cuts the bands into tile rows, compresses each tile once (the tiles of a row on a few threads: libdeflate
and zstd release the GIL) and:

- gives tifffile the tiles of the full-resolution first plane as they are made (written while the bands
  arrive);
- appends every other tile (the sub-resolutions, computed from the bands on the fly, and the other planes
  of kind ``"channels"``, which can only follow the first one) already compressed to one temporary file
  beside the target, remembering each tile's offset and length.

When the last row has arrived it copies those tiles into the file page by page (no compression left to
do), fsyncs it, and :meth:`OmeTiffWriter.commit` renames it onto its final name. Memory: one tile row of
each level's width per channel and sample (two tile rows of the full width in all) plus up to three band
copies (queued, being processed, waiting to be queued); the compressed tiles are on disk.

Both temporaries are ``.NAME.<random>.part`` files made by :func:`semphase.imageio.temporary_beside`. An
error in the worker is raised by the next :meth:`~OmeTiffWriter.write` or by :meth:`~OmeTiffWriter.commit`
(an ``OSError`` as :class:`~semphase.errors.InputError` naming the target); :meth:`~OmeTiffWriter.abort`
stops the worker, wherever it is, and removes both temporaries, and so does the garbage collection of a
writer that was neither committed nor aborted.
"""

from __future__ import annotations

import array
import contextlib
import math
import os
import queue
import threading
import uuid
import weakref
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from semphase import __version__
from semphase.errors import InputError
from semphase.imageio import temporary_beside
from semphase.phases import IGNORE

#: Namespace of the MapAnnotation that holds the class table (key "<id>": name, "<id>.color": "#rrggbb",
#: "255": "no data" for label images).
CLASSES_NAMESPACE = "urn:semphase:classes:1"

#: Output kinds: label ids (n, W), gray (n, W), RGB (n, W, 3), one plane per channel (C, n, W); all uint8.
KINDS = ("labels", "gray", "rgb", "channels")
#: Tile compressions: TIFF deflate (Adobe), LZW, Zstandard, or none.
COMPRESSIONS = ("zlib", "lzw", "zstd", "none")

OME_NAMESPACE = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
_XSI = "http://www.w3.org/2001/XMLSchema-instance"
#: Deflate level by kind. Labels are long runs: level 6 (libdeflate's default) costs little there. An RGB
#: overlay, a probability or an entropy map is noisy: on a demo overlay level 1 ran 5x faster than level 6
#: (421 vs 84 MB/s on the 2-core EPYC) for a 14 % larger file, and on a montage those tiles are the
#: writers' main work, competing with the model for the same cores.
_DEFLATE_LEVELS = {"labels": 6, "gray": 1, "rgb": 1, "channels": 1}
_CLASSIC_LIMIT = 2**32 - 2**25  # bytes a classic TIFF may safely hold (offsets are 32-bit)
#: Threads that compress the tiles of a tile row in parallel (deflate and zstd release the GIL); a
#: writer's other work (downsampling, copying) is a small part of its time.
_ENCODERS = min(4, os.cpu_count() or 1)
#: Pixels of palette indices expanded to RGB at a time.
_PALETTE_PIXELS = 1 << 22
_JOIN_SECONDS = 60.0  # abort waits this long for the worker (it stops within one tile row)


class _Aborted(Exception):
    """Raised inside the worker to unwind tifffile's write when the writer is aborted."""


def level_sizes(width: int, height: int, tile: int) -> list[tuple[int, int]]:
    """(width, height) of each pyramid level: halved (rounded up) until the larger side fits one tile."""
    sizes = [(int(width), int(height))]
    while max(sizes[-1]) > tile:
        w, h = sizes[-1]
        sizes.append(((w + 1) // 2, (h + 1) // 2))
    return sizes


def needs_bigtiff(sizes: Sequence[tuple[int, int]], tile: int, samples: int, compression: str) -> bool:
    """Whether a file of these levels could pass what a classic TIFF can address, whatever the data.

    The bound is the padded tiles' uncompressed size (``samples`` bytes per pixel, all channels), 1.5 times
    that for LZW (up to 12-bit codes per byte), 1 % more for the others (deflate and zstd store
    incompressible blocks with a few bytes of framing), plus the tile offsets and counts and 1 MiB of
    header and OME-XML.
    """
    tiles = sum(-(-w // tile) * -(-h // tile) for w, h in sizes)
    raw = tiles * tile * tile * samples
    worst = raw * 3 // 2 if compression == "lzw" else raw + raw // 100
    return worst + tiles * samples * 16 + (1 << 20) > _CLASSIC_LIMIT


def _expand_palette(indices: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(n, W) palette indices -> (1, n, W, 3) RGB. OpenCV's per-channel lookup on a gray-to-RGB copy: six
    times faster than numpy's ``palette[indices]`` (0.55 vs 3.5 ms of CPU per 512 x 512 tile)."""
    rgb = cv2.cvtColor(np.ascontiguousarray(indices), cv2.COLOR_GRAY2RGB)
    return cv2.LUT(rgb, palette.reshape(256, 1, 3))[None]


def _downsample_nearest(rows: np.ndarray) -> np.ndarray:
    """(P, n, w, S) -> (P, ceil(n/2), ceil(w/2), S): every second row and column, from the first."""
    return rows[:, 0::2, 0::2]


def _downsample_mean(rows: np.ndarray) -> np.ndarray:
    """(P, n, w, S) -> (P, ceil(n/2), ceil(w/2), S): 2 x 2 means rounded half up; an odd last row or
    column averages the pixels that exist (repeating them gives exactly that mean)."""
    if rows.shape[1] % 2:
        rows = np.concatenate([rows, rows[:, -1:]], axis=1)
    w = rows.shape[2]
    even = w - w % 2
    out = np.empty((rows.shape[0], rows.shape[1] // 2, (w + 1) // 2, rows.shape[3]), np.uint16)
    body = out[:, :, : even // 2]
    np.add(rows[:, 0::2, 0:even:2], rows[:, 1::2, 0:even:2], out=body, dtype=np.uint16)
    body += rows[:, 0::2, 1:even:2]
    body += rows[:, 1::2, 1:even:2]
    if w % 2:
        last = out[:, :, -1]
        np.add(rows[:, 0::2, -1], rows[:, 1::2, -1], out=last, dtype=np.uint16)
        last *= 2
    out += 2
    out >>= 2
    return out.astype(np.uint8)


def _compressor(compression: str, level: int = 6) -> Callable[[np.ndarray], bytes]:
    """The function that compresses one contiguous tile into the bytes of a TIFF segment (``level``:
    deflate's)."""
    if compression == "none":
        return lambda tile: tile.tobytes()
    import imagecodecs

    if compression == "zlib":
        if imagecodecs.DEFLATE.available:  # libdeflate: zlib-format output, about twice zlib's speed
            return lambda tile: imagecodecs.deflate_encode(tile, level=level)
        return lambda tile: zlib.compress(tile, level)
    if compression == "lzw":
        return imagecodecs.lzw_encode
    return imagecodecs.zstd_encode


def _uses_predictor(kind: str, compression: str) -> bool:
    """Horizontal differencing shrinks labels, probabilities and uncertainty maps (long runs and smooth
    ramps become runs of zeros: a third to a half smaller); on a noisy RGB overlay it makes deflate's
    output about 10 % larger, so RGB goes without."""
    return compression != "none" and kind != "rgb"


def _encode_tile(tile: np.ndarray, compress: Callable[[np.ndarray], bytes], predictor: bool) -> bytes:
    """One tile (tile, tile, S) as a TIFF segment: horizontal differencing (TIFF predictor 2), then the
    compression."""
    tile = np.ascontiguousarray(tile)
    if predictor:
        diff = tile.copy()
        np.subtract(tile[:, 1:], tile[:, :-1], out=diff[:, 1:])  # uint8: modulo 256, as TIFF wants
        tile = diff
    return compress(tile)


def _xml_text(value: object) -> str:
    """A string XML 1.0 can hold: characters it forbids (controls, lone surrogates) become U+FFFD."""
    return "".join(ch if ch.isprintable() or ch == " " else "\ufffd" for ch in str(value))


def _color_int(rgb: tuple[int, int, int]) -> int:
    """An OME Color: RGBA packed in a signed 32-bit integer."""
    value = (rgb[0] << 24) | (rgb[1] << 16) | (rgb[2] << 8) | 255
    return value - (1 << 32) if value >= 1 << 31 else value


def ome_xml(
    width: int,
    height: int,
    *,
    kind: str,
    channel_names: Sequence[str],
    pixel_size_um: float | None = None,
    classes: Sequence[str] | None = None,
    colors: Sequence[tuple[int, int, int]] | None = None,
    name: str = "image",
) -> bytes:
    """The OME-XML of one uint8 image as written by :class:`OmeTiffWriter` (7-bit ASCII bytes).

    Parameters
    ----------
    width, height : full-resolution size; kind : one of :data:`KINDS`.
    channel_names : one name per OME Channel (``len(channel_names)`` planes for kind ``"channels"``, one
        channel otherwise; for ``"rgb"`` a channel of three interleaved samples).
    pixel_size_um : PhysicalSizeX/Y in µm, or None to leave them out.
    classes, colors : the class table for the MapAnnotation (and, for ``"channels"``, the Channel colours).
    name : the Image name.
    """
    samples = 3 if kind == "rgb" else 1
    planes = len(channel_names)
    root = ET.Element(
        "OME",
        {
            "xmlns": OME_NAMESPACE,
            "xmlns:xsi": _XSI,
            "xsi:schemaLocation": f"{OME_NAMESPACE} {OME_NAMESPACE}/ome.xsd",
            "UUID": f"urn:uuid:{uuid.uuid4()}",
            "Creator": f"semphase {__version__}",
        },
    )
    image = ET.SubElement(root, "Image", {"ID": "Image:0", "Name": _xml_text(name)})
    pixels_attributes = {
        "ID": "Pixels:0",
        "DimensionOrder": "XYCZT",
        "Type": "uint8",
        "SignificantBits": "8",
        "Interleaved": "true" if samples > 1 else "false",
        "SizeX": str(width),
        "SizeY": str(height),
        "SizeZ": "1",
        "SizeC": str(planes * samples),
        "SizeT": "1",
    }
    if pixel_size_um is not None:
        size = repr(float(pixel_size_um))
        pixels_attributes.update(
            PhysicalSizeX=size, PhysicalSizeXUnit="µm", PhysicalSizeY=size, PhysicalSizeYUnit="µm"
        )
    pixels = ET.SubElement(image, "Pixels", pixels_attributes)
    for c, channel_name in enumerate(channel_names):
        attributes = {
            "ID": f"Channel:0:{c}",
            "Name": _xml_text(channel_name),
            "SamplesPerPixel": str(samples),
        }
        if kind == "channels" and colors is not None:
            attributes["Color"] = str(_color_int(colors[c]))
        ET.SubElement(pixels, "Channel", attributes)
    ET.SubElement(pixels, "TiffData", {"IFD": "0", "PlaneCount": str(planes)})
    if classes is not None or kind == "labels":
        ET.SubElement(image, "AnnotationRef", {"ID": "Annotation:0"})
        annotations = ET.SubElement(root, "StructuredAnnotations")
        table = ET.SubElement(
            annotations, "MapAnnotation", {"ID": "Annotation:0", "Namespace": CLASSES_NAMESPACE}
        )
        ET.SubElement(table, "Description").text = (
            "semphase class table: key N is the name of class id N, N.color its colour (#rrggbb)"
            + ("; label 255 marks pixels without data" if kind == "labels" else "")
        )
        value = ET.SubElement(table, "Value")
        for i, class_name in enumerate(classes or ()):
            ET.SubElement(value, "M", {"K": str(i)}).text = _xml_text(class_name)
            if colors is not None:
                r, g, b = colors[i]
                ET.SubElement(value, "M", {"K": f"{i}.color"}).text = f"#{r:02x}{g:02x}{b:02x}"
        if kind == "labels":
            ET.SubElement(value, "M", {"K": str(IGNORE)}).text = "no data"
    text = ET.tostring(root, encoding="unicode")
    return ('<?xml version="1.0" encoding="UTF-8"?>' + text).encode("ascii", "xmlcharrefreplace")


class _Level:
    """One pyramid level being filled: its tile-row buffer and the row that waits for its partner."""

    def __init__(self, width: int, height: int, planes: int, samples: int, tile: int) -> None:
        self.width, self.height = width, height
        padded = -(-width // tile) * tile  # columns past the width stay 0: the right tiles' padding
        self.buffer = np.zeros((planes, tile, padded, samples), np.uint8)
        self.fill = 0  # rows of the current tile row received
        self.received = 0  # rows of this level received
        self.carry: np.ndarray | None = None  # an odd row kept for the 2 x 2 (or nearest) step


class _Pyramid:
    """Takes full-resolution rows (P, n, W, S) top to bottom and hands out compressed tiles of every level.

    ``emit(level, plane, segments)`` receives the compressed tiles of one tile row of one plane, left to
    right, as soon as that tile row of that level is complete.
    """

    def __init__(
        self,
        sizes: Sequence[tuple[int, int]],
        planes: int,
        samples: int,
        tile: int,
        nearest: bool,
        compress: Callable[[np.ndarray], bytes],
        predictor: bool,
        emit: Callable[[int, int, list[bytes]], None],
    ) -> None:
        self.levels = [_Level(w, h, planes, samples, tile) for w, h in sizes]
        self.tile = tile
        self.downsample = _downsample_nearest if nearest else _downsample_mean
        self.compress, self.predictor, self.emit = compress, predictor, emit
        self.map: Callable = map  # the worker swaps in a thread pool's map (compressing tiles in parallel)

    def push(self, rows: np.ndarray, k: int = 0) -> None:
        level = self.levels[k]
        self._fill(k, rows)
        if k + 1 == len(self.levels):
            return
        if level.carry is not None:
            rows = np.concatenate([level.carry, rows], axis=1)
            level.carry = None
        if level.received < level.height and rows.shape[1] % 2:
            level.carry = rows[:, -1:].copy()
            rows = rows[:, :-1]
        if rows.shape[1]:
            self.push(self.downsample(rows), k + 1)

    def _fill(self, k: int, rows: np.ndarray) -> None:
        level, tile = self.levels[k], self.tile
        i, n = 0, rows.shape[1]
        while i < n:
            take = min(tile - level.fill, n - i)
            level.buffer[:, level.fill : level.fill + take, : level.width] = rows[:, i : i + take]
            level.fill += take
            level.received += take
            i += take
            if level.fill == tile or level.received == level.height:
                level.buffer[:, level.fill :] = 0  # the bottom tiles' padding
                for p in range(level.buffer.shape[0]):
                    plane = level.buffer[p]
                    segments = self.map(
                        lambda x, plane=plane: _encode_tile(
                            plane[:, x : x + tile], self.compress, self.predictor
                        ),
                        range(0, plane.shape[1], tile),
                    )
                    self.emit(k, p, list(segments))
                level.fill = 0


class _Worker:
    """The thread that runs tifffile's write of the whole file, fed bands through a queue.

    It owns both temporaries (``tmp``: the OME-TIFF being written; ``side``: compressed tiles that must
    wait for their turn) and removes them in :meth:`stop` (abort), which is also the writer's finalizer.
    """

    _END = object()  # the abort signal in the queue

    def __init__(
        self,
        tif,
        fh,
        side_fh,
        tmp: Path,
        side: Path | None,
        pyramid_args: dict,
        pages: list,
        palette: np.ndarray | None = None,
    ) -> None:
        self.tif, self.fh, self.side_fh = tif, fh, side_fh
        self.palette = palette
        self.tmp, self.side = tmp, side
        self.pages = pages  # per level: keyword arguments of TiffWriter.write
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.outbox: list[bytes] = []  # full-resolution first-plane tiles, next for tifffile
        self.index: dict[tuple[int, int], tuple[array.array, array.array]] = {}
        self.side_size = 0
        self.pyramid = _Pyramid(**pyramid_args, emit=self._emit)
        self.height = pyramid_args["sizes"][0][1]
        self.thread = threading.Thread(target=self._run, name="semphase-ome-tiff", daemon=True)

    # -- in the worker thread
    def _emit(self, level: int, plane: int, segments: list[bytes]) -> None:
        if level == 0 and plane == 0:
            self.outbox.extend(segments)
            return
        offsets, lengths = self.index.setdefault((level, plane), (array.array("Q"), array.array("Q")))
        for data in segments:
            self.side_fh.write(data)
            offsets.append(self.side_size)
            lengths.append(len(data))
            self.side_size += len(data)

    def _stored(self, level: int, plane: int) -> Iterator[bytes]:
        offsets, lengths = self.index[(level, plane)]
        for offset, length in zip(offsets, lengths, strict=True):
            if self.stopping.is_set():
                raise _Aborted
            self.side_fh.seek(offset)
            data = self.side_fh.read(length)
            if len(data) != length:
                raise OSError(f"temporary file {self.side} is shorter than written")
            yield data

    def _first_level(self) -> Iterator[bytes]:
        level = self.pyramid.levels[0]
        while level.received < self.height:
            band = self.queue.get()
            if band is self._END or self.stopping.is_set():
                raise _Aborted
            if self.palette is None:
                self.pyramid.push(band)
            else:  # (1, n, W, 1) indices: RGB a few rows at a time
                step = max(1, _PALETTE_PIXELS // band.shape[2])
                for r in range(0, band.shape[1], step):
                    self.pyramid.push(_expand_palette(band[0, r : r + step, :, 0], self.palette))
            del band
            segments, self.outbox = self.outbox, []
            yield from segments
            del segments
        for plane in range(1, level.buffer.shape[0]):
            yield from self._stored(0, plane)

    def _level(self, k: int) -> Iterator[bytes]:
        for plane in range(self.pyramid.levels[k].buffer.shape[0]):
            yield from self._stored(k, plane)

    def _run(self) -> None:
        pool = ThreadPoolExecutor(_ENCODERS, "semphase-ome-tiff-encode") if _ENCODERS > 1 else None
        if pool is not None:
            self.pyramid.map = pool.map
        try:
            self.tif.write(self._first_level(), **self.pages[0])
            for k in range(1, len(self.pages)):
                self.tif.write(self._level(k), **self.pages[k])
            self.tif.close()
            self.fh.flush()
            os.fsync(self.fh.fileno())
        except _Aborted:
            pass
        except BaseException as exc:  # handed to the caller's thread
            self.error = exc
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            self._close_files()

    def _close_files(self) -> None:
        for handle in (self.fh, self.side_fh):
            if handle is not None:
                with contextlib.suppress(Exception):
                    handle.close()

    # -- in the caller's thread
    def put(self, band: np.ndarray) -> bool:
        """Queue a band; False when the thread failed or ended instead of taking it (never blocks on a
        dead thread)."""
        while self.error is None and self.thread.is_alive():
            try:
                self.queue.put(band, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def stop(self) -> None:
        """Stop the thread wherever it is (waiting for a band, compressing, copying) and remove both
        temporaries. Safe to call more than once, from the finalizer too."""
        self.stopping.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self.queue.get_nowait()
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(self._END)
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(_JOIN_SECONDS)
        if not self.thread.is_alive():
            self._close_files()
        for path in (self.tmp, self.side):
            if path is not None:
                with contextlib.suppress(OSError):
                    path.unlink()


class OmeTiffWriter:
    """Stream a uint8 image band by band into a pyramidal, tiled, compressed OME-TIFF (see the module).

    Parameters
    ----------
    path : final file name; readers recognize OME-TIFF by the ``.ome.tif`` suffix.
    width, height : full-resolution size in pixels.
    kind : ``"labels"`` (class ids, 255 = no data; bands uint8 (n, W)), ``"gray"`` (uint8 (n, W)),
        ``"rgb"`` (uint8 (n, W, 3)) or ``"channels"`` (uint8 (C, n, W), e.g. class probabilities scaled to
        0..255, one OME channel each).
    channels : C for kind ``"channels"`` (1 otherwise).
    pixel_size_um : physical pixel size, written as PhysicalSizeX/Y in µm.
    channel_names : one per OME channel (C for ``"channels"``, else 1); by default the class names for
        ``"channels"``, else the kind.
    classes, colors : class names in id order and their (r, g, b) colours: the class table annotation
        (labels: at most 255 classes; channels: one class per channel, colours as Channel colours).
    name : the OME Image name (default: the file name without ``.ome.tif``).
    tile : tile side, a multiple of 16; compression : one of :data:`COMPRESSIONS`.
    palette : for kind ``"rgb"`` only: uint8 (256, 3) colours; bands are then uint8 (n, W) indices into
        it, expanded to RGB a few rows at a time on the worker thread (a palette overlay band is a third
        of its RGB: on a 65536-pixel-wide montage that saves two 90 MB bands).

    Attributes
    ----------
    rows_written : rows of the full-resolution image received so far.
    levels : (width, height) of each pyramid level, full resolution first.
    bigtiff : whether the file is a BigTIFF.

    Raises
    ------
    ValueError
        for a bad size, kind, tile, compression, or names and colours that do not fit.
    InputError
        when the temporary files cannot be made (naming the folder) or written (naming the file).
    """

    def __init__(
        self,
        path,
        width: int,
        height: int,
        *,
        kind: str,
        channels: int = 1,
        pixel_size_um: float | None = None,
        channel_names: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        colors: Sequence[tuple[int, int, int]] | None = None,
        name: str | None = None,
        tile: int = 512,
        compression: str = "zlib",
        palette: np.ndarray | None = None,
    ) -> None:
        if palette is not None and (
            kind != "rgb" or np.shape(palette) != (256, 3) or np.asarray(palette).dtype != np.uint8
        ):
            raise ValueError("a palette is a uint8 (256, 3) array, for kind 'rgb' only")
        self.palette = None if palette is None else np.ascontiguousarray(palette)
        self.path = Path(path)
        self.width, self.height, self.tile = int(width), int(height), int(tile)
        self.kind, self.compression = kind, compression
        self.channels = int(channels) if kind == "channels" else 1
        self.rows_written = 0
        self._closed = False
        self._worker: _Worker | None = None
        names, classes, colors = self._check(channel_names, classes, colors, pixel_size_um)
        samples = 3 if kind == "rgb" else 1
        self.levels = level_sizes(self.width, self.height, self.tile)
        self.bigtiff = needs_bigtiff(self.levels, self.tile, self.channels * samples, compression)
        if name is None:
            name = self.path.name
            for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
                if name.lower().endswith(suffix):
                    name = name[: -len(suffix)]
                    break
        xml = ome_xml(
            self.width,
            self.height,
            kind=kind,
            channel_names=names,
            pixel_size_um=pixel_size_um,
            classes=classes,
            colors=colors,
            name=name,
        )
        pages = self._pages(samples, xml, pixel_size_um)
        needs_side = len(self.levels) > 1 or self.channels > 1
        tmp = temporary_beside(self.path)
        side = fh = side_fh = None
        try:
            side = temporary_beside(self.path) if needs_side else None
            import tifffile

            fh = open(tmp, "r+b")  # noqa: SIM115 - the worker closes it
            side_fh = open(side, "w+b") if side is not None else None  # noqa: SIM115
            tif = tifffile.TiffWriter(fh, bigtiff=self.bigtiff, byteorder="<", ome=False, shaped=False)
        except BaseException as exc:
            for handle in (fh, side_fh):
                if handle is not None:
                    handle.close()
            for p in (tmp, side):
                if p is not None:
                    with contextlib.suppress(OSError):
                        p.unlink()
            if isinstance(exc, OSError):
                raise InputError(f"cannot write ({exc.strerror or exc})", self.path) from None
            raise
        pyramid_args = {
            "sizes": self.levels,
            "planes": self.channels,
            "samples": samples,
            "tile": self.tile,
            "nearest": kind == "labels",
            "compress": _compressor(compression, _DEFLATE_LEVELS[kind]),
            "predictor": _uses_predictor(kind, compression),
        }
        self._worker = _Worker(tif, fh, side_fh, tmp, side, pyramid_args, pages, self.palette)
        self.tmp, self.side = tmp, side
        # abort() runs it; so does the garbage collection (or interpreter exit) of an abandoned writer
        self._finalizer = weakref.finalize(self, self._worker.stop)
        self._worker.thread.start()

    def _check(self, channel_names, classes, colors, pixel_size_um):
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image size must be positive, got {self.width} x {self.height}")
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.compression not in COMPRESSIONS:
            raise ValueError(
                f"compression must be one of {', '.join(COMPRESSIONS)}, got {self.compression!r}"
            )
        if self.tile < 16 or self.tile % 16:
            raise ValueError(f"tile must be a positive multiple of 16, got {self.tile}")
        if self.channels < 1:
            raise ValueError(f"channels must be at least 1, got {self.channels}")
        if pixel_size_um is not None and not (math.isfinite(pixel_size_um) and pixel_size_um > 0):
            raise ValueError(f"pixel size must be a positive number of µm, got {pixel_size_um}")
        if classes is not None:
            classes = [str(c) for c in classes]
            if self.kind == "labels" and len(classes) > IGNORE:
                raise ValueError(f"a label image holds at most {IGNORE} classes, got {len(classes)}")
            if self.kind == "channels" and len(classes) != self.channels:
                raise ValueError(f"{self.channels} channels but {len(classes)} class names")
        if colors is not None:
            if classes is None or len(colors) != len(classes):
                raise ValueError("colors needs one (r, g, b) per class name")
            colors = [tuple(int(v) for v in c) for c in colors]
            if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in colors):
                raise ValueError("colors must be (r, g, b) triples of 0..255")
        count = self.channels
        if channel_names is None:
            if self.kind == "channels":
                channel_names = classes or [f"channel {c}" for c in range(count)]
            else:
                channel_names = [{"labels": "labels", "gray": "gray", "rgb": "RGB"}[self.kind]]
        channel_names = [str(n) for n in channel_names]
        if len(channel_names) != count:
            raise ValueError(f"{count} channel(s) but {len(channel_names)} channel names")
        return channel_names, classes, colors

    def _pages(self, samples: int, xml: bytes, pixel_size_um: float | None) -> list[dict]:
        """Keyword arguments of tifffile's ``TiffWriter.write`` for each level."""
        pages = []
        for k, (w, h) in enumerate(self.levels):
            shape = (
                (h, w, 3) if samples == 3 else (self.channels, h, w) if self.kind == "channels" else (h, w)
            )
            page = {
                "shape": shape,
                "dtype": np.uint8,
                "photometric": "rgb" if samples == 3 else "minisblack",
                "planarconfig": "contig" if samples == 3 else None,
                "tile": (self.tile, self.tile),
                "compression": None if self.compression == "none" else self.compression,
                "predictor": "horizontal" if _uses_predictor(self.kind, self.compression) else None,
                "metadata": None,
                "software": False,
            }
            if pixel_size_um is not None:
                # TIFF resolution (pixels per cm) for readers that ignore OME-XML, scaled to the level
                page["resolution"] = (
                    1e4 * w / (pixel_size_um * self.width),
                    1e4 * h / (pixel_size_um * self.height),
                )
                page["resolutionunit"] = "CENTIMETER"
            if k == 0:
                page.update(description=xml, software=f"semphase {__version__}")
                if len(self.levels) > 1:
                    page["subifds"] = len(self.levels) - 1
            else:
                page["subfiletype"] = 1  # reduced-resolution image
            pages.append(page)
        return pages

    def _fail(self) -> None:
        """Raise the worker's error in the caller's thread, after removing the temporaries."""
        worker = self._worker
        exc = worker.error if worker is not None else None
        self.abort()
        if exc is None:
            raise RuntimeError(f"{self.path.name}: the OME-TIFF writer thread ended unexpectedly")
        if isinstance(exc, OSError):
            raise InputError(f"cannot write ({exc.strerror or exc})", self.path) from None
        raise exc

    def write(self, band: np.ndarray, *, owned: bool = False) -> None:
        """Append rows: uint8 (n, W) for labels and gray, (n, W, 3) for rgb, (C, n, W) for channels.

        ``owned=True`` hands the array over (the caller will not change it again): it is queued as it is,
        not copied, which saves a band of memory per output on a wide montage.

        Raises
        ------
        ValueError
            for a band of another dtype or shape, more rows than the image has, or a closed writer.
        InputError, or the worker's exception
            when the worker failed (the temporaries are removed by then).
        """
        if self._closed:
            raise ValueError(f"{self.path.name}: writer already committed or aborted")
        band = np.asarray(band)
        if self.kind == "channels":
            expected = (self.channels, None, self.width)
        elif self.kind == "rgb" and self.palette is None:
            expected = (None, self.width, 3)
        else:
            expected = (None, self.width)
        if (
            band.dtype != np.uint8
            or band.ndim != len(expected)
            or any(e is not None and e != s for e, s in zip(expected, band.shape, strict=True))
        ):
            shown = tuple("n" if e is None else e for e in expected)
            raise ValueError(f"expected uint8 rows of shape {shown}, got {band.dtype} {band.shape}")
        n = band.shape[1] if self.kind == "channels" else band.shape[0]
        if self.rows_written + n > self.height:
            raise ValueError(f"{self.rows_written + n} rows for an image of {self.height}")
        if n == 0:
            return
        if self.kind == "channels":
            rows = band[:, :, :, None]
        elif self.kind == "rgb" and self.palette is None:
            rows = band[None]
        else:
            rows = band[None, :, :, None]
        worker = self._worker
        if worker.error is not None:
            self._fail()
        if not worker.put(rows if owned else rows.copy()):  # the caller may reuse an array it still owns
            self._fail()
        self.rows_written += n

    def commit(self) -> Path:
        """Wait for the worker to finish the file, rename it onto :attr:`path` and return that path.

        Raises
        ------
        ValueError
            when fewer than ``height`` rows were written (the temporaries are removed).
        InputError
            when the file cannot be finished or renamed.
        """
        if self._closed:
            raise ValueError(f"{self.path.name}: writer already committed or aborted")
        if self.rows_written != self.height:
            self.abort()
            raise ValueError(f"{self.path.name}: {self.rows_written} of {self.height} rows written")
        worker = self._worker
        worker.thread.join()
        if worker.error is not None:
            self._fail()
        try:
            os.replace(worker.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise InputError(f"cannot write ({exc.strerror or exc})", self.path) from None
        worker.tmp = None  # the finalizer must not remove the finished file...
        self._finalizer()  # ...only the side file
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Stop the worker and remove every temporary this writer made (the final name, if it existed
        before, is untouched). Idempotent."""
        self._closed = True
        if self._worker is not None:
            self._finalizer()

    def __enter__(self) -> OmeTiffWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.abort()  # a no-op after commit
