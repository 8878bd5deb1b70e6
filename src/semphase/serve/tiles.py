"""Tiles of a micrograph and its layers for the labelling page (numpy and OpenCV, no web framework).

The page never loads a micrograph whole: it asks for 256 x 256 tiles of the zoom level it shows, as map
viewers (OpenSeadragon, QuPath) do. Level 0 is full resolution, level ``L`` is downsampled by ``2**L``
(area averaging for the micrograph, nearest neighbour for class layers so that every tile pixel is a
real class), up to the level where the whole image fits one tile. Layers:

- ``image``: the micrograph, 8-bit gray PNG (16-bit micrographs mapped as ``segment`` maps them);
- ``prediction``: the model's phases, RGBA in the class colours (transparent where it gave none);
- ``uncertainty``: the normalized entropy as an RGBA heat layer (transparent = certain);
- ``labels``: the current labels, RGBA in the class colours, transparent where unlabelled.

Levels are computed once per source array and kept in a small least-recently-used cache bounded in
bytes, keyed by what they were made from (the label version, the prediction's model), so a save or a new
model never shows a stale tile.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

TILE = 256
LAYERS = ("image", "prediction", "uncertainty", "labels")
#: Colour of the uncertainty layer; its alpha is the normalized entropy (0..255).
UNCERTAINTY_RGB = (255, 214, 0)


def level_count(height: int, width: int, tile: int = TILE) -> int:
    """Levels from full resolution down to the first that fits in one tile."""
    levels, side = 1, max(height, width)
    while side > tile:
        side = (side + 1) // 2
        levels += 1
    return levels


def _halve(array: np.ndarray, categorical: bool) -> np.ndarray:
    import cv2

    h, w = array.shape[:2]
    size = ((w + 1) // 2, (h + 1) // 2)
    if categorical:  # every other pixel: a real class, never a blend of two
        return np.ascontiguousarray(array[::2, ::2])
    return cv2.resize(array, size, interpolation=cv2.INTER_AREA)


class Pyramid:
    """The levels of one 2-D uint8 array (made lazily, each from the one above)."""

    def __init__(self, base: np.ndarray, categorical: bool) -> None:
        self.levels = [base]
        self.categorical = categorical
        self.count = level_count(*base.shape[:2])
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.levels)

    def level(self, level: int) -> np.ndarray:
        with self._lock:
            while len(self.levels) <= level:
                self.levels.append(_halve(self.levels[-1], self.categorical))
            return self.levels[level]

    def tile(self, level: int, col: int, row: int) -> np.ndarray | None:
        """The tile's pixels (at most TILE x TILE at the image's edges), or None outside the level."""
        if not 0 <= level < self.count:
            return None
        array = self.level(level)
        y, x = row * TILE, col * TILE
        if row < 0 or col < 0 or y >= array.shape[0] or x >= array.shape[1]:
            return None
        return array[y : y + TILE, x : x + TILE]


class PyramidCache:
    """Pyramids by key, least recently used dropped past ``max_bytes`` (the newest is always kept)."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, Pyramid] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, make: Callable[[], np.ndarray], categorical: bool) -> Pyramid:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        pyramid = Pyramid(make(), categorical)  # outside the lock: decoding may take seconds
        with self._lock:
            self._items[key] = pyramid
            self._items.move_to_end(key)
            while len(self._items) > 1 and sum(p.nbytes for p in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)
        return pyramid

    def drop(self, match: Callable[[tuple], bool]) -> None:
        with self._lock:
            for key in [k for k in self._items if match(k)]:
                del self._items[key]


def class_lut(colors: Sequence[Sequence[int]]) -> np.ndarray:
    """RGBA lookup of class ids: class colours opaque, every other value (255 = none) transparent."""
    lut = np.zeros((256, 4), np.uint8)
    for i, c in enumerate(colors):
        lut[i] = (c[0], c[1], c[2], 255)
    return lut


def uncertainty_rgba(tile: np.ndarray) -> np.ndarray:
    """The uncertainty layer of an entropy tile (uint8): one colour, alpha = entropy."""
    out = np.empty((*tile.shape, 4), np.uint8)
    out[..., :3] = UNCERTAINTY_RGB
    out[..., 3] = tile
    return out


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a gray or RGBA tile (fast settings: tiles are made on request)."""
    import cv2

    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    ok, data = cv2.imencode(".png", np.ascontiguousarray(array), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise RuntimeError("PNG encoding of a tile failed")
    return data.tobytes()
