"""Label images as people make them: index masks or colour PNGs, dense or sparse (numpy only, no torch).

A label image says which phase some or all of a micrograph's pixels belong to. Two forms are read:

- **index masks** (one channel, 8 or 16 bit): raw ids of the class table (the Zenodo set stores 1..5),
  mapped to class ids by :meth:`semphase.phases.ClassTable.remap`. The value 255 means *unlabelled*,
  as the SEM data bar already is (65535 too in a 16-bit mask), unless the table uses it as a raw id.
- **colour masks** (RGB or RGBA PNG/TIFF/BMP): each labelled pixel holds exactly the RGB colour of its
  class in the table (what ``segment``'s overlays and ``suggest``'s label images use), so a user can paint
  strokes in any paint program. *Unlabelled* are fully or partly transparent pixels (alpha < 255: the
  soft edges of a brush stroke are left out rather than guessed) and pure black or pure white ones (an
  empty canvas), unless a class has that colour. Any other colour is an error that names the colour,
  how many pixels have it and where the first one is: a stroke painted with antialiasing on, or a colour
  that is no class, must never silently become a phase.

An RGB image whose three channels are equal everywhere is a gray index mask saved as colour and is read
as ids. A label image may label every pixel (dense) or only strokes (sparse): everything downstream
(``data check``, the split, the training sampler and loss, every metric) looks at labelled pixels only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from semphase.errors import InputError
from semphase.imageio import read_raw, write_image
from semphase.phases import IGNORE, ClassTable

#: The raw value of an unlabelled pixel in an index mask (and 65535 in a 16-bit one).
UNLABELLED_RAW = 255
#: RGB colours that mean "unlabelled" in a colour mask (unless a class uses one of them).
UNLABELLED_COLOURS = ((0, 0, 0), (255, 255, 255))


def is_colour_mask(arr: np.ndarray) -> bool:
    """True when ``arr`` (as :func:`semphase.imageio.read_raw` returns it) is read as a colour mask: it has
    an alpha channel, or its RGB channels differ somewhere."""
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        return False
    if arr.shape[2] == 4:
        return True
    return not (np.array_equal(arr[:, :, 0], arr[:, :, 1]) and np.array_equal(arr[:, :, 1], arr[:, :, 2]))


def _packed(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., 3) -> one uint32 per pixel (r << 16 | g << 8 | b)."""
    rgb = rgb.astype(np.uint32, copy=False)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _colour_text(key: int) -> str:
    return f"({key >> 16}, {(key >> 8) & 255}, {key & 255})"


def check_colours(table: ClassTable, path: str | os.PathLike | None = None) -> None:
    """Raise InputError when two classes share a colour: a colour mask could not tell them apart."""
    seen: dict[tuple[int, int, int], str] = {}
    for phase in table.phases:
        if phase.color in seen:
            raise InputError(
                f"classes {seen[phase.color]!r} and {phase.name!r} share the colour {phase.color}; colour "
                "masks need one colour per class (give them different colours in the class table)",
                path,
            )
        seen[phase.color] = phase.name


def _to_8bit_colour(arr: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.uint16 and not np.any(arr % 257):
        return (arr // 257).astype(np.uint8)  # an 8-bit colour saved at 16 bits (each value v * 257)
    raise InputError(
        f"colour mask of pixel type {arr.dtype} that is not an 8-bit colour; save it as an 8-bit RGB(A) PNG",
        path,
    )


def labels_from_colours(arr: np.ndarray, table: ClassTable, path: str | os.PathLike) -> np.ndarray:
    """Class ids of a colour mask.

    Parameters
    ----------
    arr : uint8 (or 8-bit-valued uint16) array (H, W, 3) RGB or (H, W, 4) RGBA.
    table : the class table whose colours the mask uses.
    path : the file, for messages.

    Returns
    -------
    uint8 (H, W): class ids, 255 where unlabelled.

    Raises
    ------
    InputError
        naming ``path`` when an opaque pixel has a colour that is neither a class colour nor an
        unlabelled one (the message gives the colour, its pixel count and the first such pixel), or when
        two classes of the table share a colour.
    """
    check_colours(table, path)
    arr = _to_8bit_colour(arr, path)
    keys = _packed(arr[:, :, :3])
    class_keys = np.array([(r << 16) | (g << 8) | b for r, g, b in table.colors], dtype=np.uint32)
    order = np.argsort(class_keys)
    sorted_keys = class_keys[order]
    where = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    matched = sorted_keys[where] == keys
    labels = np.where(matched, order[where], IGNORE).astype(np.uint8)
    opaque = arr[:, :, 3] == 255 if arr.shape[2] == 4 else np.ones(keys.shape, bool)
    labels[~opaque] = IGNORE
    blank = np.zeros(keys.shape, bool)
    for colour in UNLABELLED_COLOURS:
        if colour not in table.colors:
            blank |= keys == _packed(np.array(colour, np.uint8))
    wrong = opaque & ~matched & ~blank
    if wrong.any():
        ys, xs = np.nonzero(wrong)
        first = int(keys[ys[0], xs[0]])
        count = int(np.count_nonzero(keys[wrong] == first))
        others = len(np.unique(keys[wrong])) - 1
        more = f" and {others} other colours" if others else ""
        known = ", ".join(f"{p.name} {p.color}" for p in table.phases)
        raise InputError(
            f"colour {_colour_text(first)} on {count} pixels (first at x={xs[0]}, y={ys[0]}){more} is no "
            f"class colour; classes: {known}; unlabelled: transparent, black or white (paint with a "
            "hard-edged pencil, antialiasing off)",
            path,
        )
    return labels


def labels_from_ids(raw: np.ndarray, table: ClassTable) -> np.ndarray:
    """Class ids of an index mask (raw ids -> 0..C-1; unlabelled and unknown ids -> 255).

    Parameters
    ----------
    raw : uint8 or uint16 (H, W) raw ids.

    Returns
    -------
    uint8 (H, W).
    """
    return table.remap(raw)


def unknown_ids(raw: np.ndarray, table: ClassTable) -> list[int]:
    """Raw ids of an index mask that are neither a class of ``table`` nor the unlabelled value."""
    unlabelled = {UNLABELLED_RAW, 65535} if raw.dtype == np.uint16 else {UNLABELLED_RAW}
    return [v for v in table.unknown_raw_ids(raw) if v not in unlabelled]


def as_label_array(arr: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """A decoded label file as (H, W) raw ids or (H, W, 3|4) colours; InputError for other forms."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 2:
        raise InputError("gray + alpha label image; save it as an index mask or an RGB(A) colour mask", path)
    if arr.dtype not in (np.uint8, np.uint16):
        raise InputError(f"unsupported mask pixel type {arr.dtype} (expected 8- or 16-bit)", path)
    if arr.ndim == 3 and not is_colour_mask(arr):
        arr = np.ascontiguousarray(arr[:, :, 0])  # gray ids saved as RGB
    return arr


def labels_of(arr: np.ndarray, table: ClassTable, path: str | os.PathLike) -> np.ndarray:
    """Class ids (uint8 (H, W), 255 = unlabelled) of a decoded label file, either form."""
    arr = as_label_array(arr, path)
    if arr.ndim == 3:
        return labels_from_colours(arr, table, path)
    return labels_from_ids(arr, table)


def read_labels(path: str | os.PathLike, table: ClassTable) -> np.ndarray:
    """Read a label image (index or colour mask, dense or sparse) as class ids.

    Returns
    -------
    uint8 (H, W): class ids ``0..C-1``, 255 where unlabelled (or an id the table lacks).

    Raises
    ------
    InputError
        naming the file when it cannot be read or holds a colour that is no class.
    """
    return labels_of(read_raw(path), table, path)


def colour_labels(labels: np.ndarray, table: ClassTable) -> np.ndarray:
    """An RGBA colour mask of class ids: class colours, transparent where unlabelled (255).

    Parameters
    ----------
    labels : uint8 (H, W) class ids, 255 = unlabelled.

    Returns
    -------
    uint8 (H, W, 4).
    """
    lut = np.zeros((256, 4), np.uint8)
    for phase in table.phases:
        lut[phase.id] = (*phase.color, 255)
    return lut[labels]


def write_colour_labels(path: str | os.PathLike, labels: np.ndarray, table: ClassTable) -> None:
    """Write class ids as an RGBA colour PNG (see :func:`colour_labels`), atomically.

    It opens as a layer in GIMP, Fiji or Photoshop: paint over it in the class colours, erase to
    unlabel. :func:`read_labels` reads it back to the same ids.
    """
    check_colours(table, path)
    if Path(path).suffix.lower() != ".png":
        raise ValueError(f"colour label images are written as PNG, got {path}")
    write_image(path, colour_labels(labels, table))


def labelled_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Labelled pixels per class, int64 (C,) (255 and ids >= C not counted)."""
    return np.bincount(labels.ravel(), minlength=256)[:num_classes].astype(np.int64)
