"""What a semphase ONNX file says about itself: the ``semphase.*`` metadata contract, in one place.

The exporter writes these entries (:mod:`semphase.export.metadata`), the runtime reads them
(:mod:`semphase.runtime.model`), and both parse and check them here, so the two can never disagree. Values
are JSON strings in the model's ``metadata_props``:

- ``semphase.classes``: class names in id order; ``semphase.colors``: ``[[r, g, b], ...]``
- ``semphase.input``: ``{"channels": 1, "scale": s, "mean": [m], "std": [d], "size_multiple": 32}``
- ``semphase.variant``: ``"fp32"`` | ``"fp16"`` | ``"int8"``
- ``semphase.tile``: ``{"size": 512, "overlap": 32}`` (recommended sliding-window tiling)
- ``semphase.source``: ``{"checkpoint_sha256", "config_sha256", "semphase_version"}``
- ``semphase.metrics``: the checkpoint's test summary, or ``null``
- ``semphase.reference`` (optional; files from before it load without it): the self-check reference,
  a few uint8 held-out tiles and their FP32 labels (zlib + base64) and the agreement a run must reach
  (see ``semphase.runtime.selfcheck``)

It also holds the model's input contract, which training, export, the runtime and the benchmarks all
apply the same way: the size multiple, :func:`normalize`, :func:`pad_to_multiple`, and the tiling rule,
:class:`Tiling`: the recommendation export writes, what makes a tile and an overlap valid, and how a run's
tiling follows from the model's recommendation and the caller's ``tile`` and ``overlap``. numpy only:
neither onnx nor onnxruntime nor torch (the caller hands over the metadata's key/value pairs).
"""

from __future__ import annotations

import json
import math
import os
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from semphase.errors import InputError, OptionError

#: Every metadata key a semphase model carries, in the order ``semphase info`` prints them.
METADATA_KEYS = (
    "semphase.classes",
    "semphase.colors",
    "semphase.input",
    "semphase.variant",
    "semphase.tile",
    "semphase.source",
    "semphase.metrics",
)
#: The keys a model needs to run (source and metrics only describe it).
RUNTIME_KEYS = METADATA_KEYS[:5]
#: Keys a semphase model may carry; files exported before they existed lack them.
OPTIONAL_KEYS = ("semphase.reference",)
VARIANTS = ("fp32", "fp16", "int8")
#: Height and width of the network input must be multiples of this (five 2x down-samplings).
SIZE_MULTIPLE = 32
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
#: The sliding-window tiling written to ``semphase.tile`` unless the exporter says otherwise: with 512-pixel
#: tiles, an overlap of 32 was as accurate as 64 on the demo model for less work (measurements in
#: benchmarks/RESULTS.md, "Tiling").
RECOMMENDED_TILE = 512
RECOMMENDED_OVERLAP = 32
#: Class ids are stored in 8-bit masks where 255 means "no data".
MAX_CLASSES = 254


def parse(
    props: Mapping[str, str], path: str | os.PathLike | None = None, require_all: bool = False
) -> dict[str, object]:
    """Decode the ``semphase.*`` entries of a model's metadata.

    Parameters
    ----------
    props : the model's metadata key/value pairs (other keys are ignored).
    require_all : demand every key of :data:`METADATA_KEYS` (the exporter checking its own files); by
        default only :data:`RUNTIME_KEYS`.

    Returns
    -------
    dict of decoded JSON values, in :data:`METADATA_KEYS` order, then the other ``semphase.*`` keys.

    Raises
    ------
    InputError
        naming ``path``: no semphase metadata at all, keys missing, or a value that is not JSON.
    """
    required = METADATA_KEYS if require_all else RUNTIME_KEYS
    if not any(key.startswith("semphase.") for key in props):
        raise InputError("not a semphase model: no semphase metadata (made by 'semphase export')", path)
    missing = [k for k in required if k not in props]
    if missing:
        raise InputError(f"semphase metadata incomplete: missing {', '.join(missing)}", path)
    order = {key: i for i, key in enumerate(METADATA_KEYS + OPTIONAL_KEYS)}
    values: dict[str, object] = {}
    for key in sorted((k for k in props if k.startswith("semphase.")), key=lambda k: (order.get(k, 99), k)):
        try:
            values[key] = json.loads(props[key])
        except ValueError:
            raise InputError(f"metadata {key} is not valid JSON", path) from None
    return values


def normalization_affine(normalization: Mapping) -> tuple[np.float32, np.float32]:
    """``(gain, offset)`` with ``network input = pixel * gain - offset``: ``scale / std`` and ``mean / std``,
    in float32. Every path that feeds a network (numpy here, torch in training) applies exactly these two
    numbers, so the runtime's arithmetic is the one export validates."""
    scale = np.float32(normalization["scale"])
    mean = np.float32(normalization["mean"][0])
    std = np.float32(normalization["std"][0])
    return np.float32(scale / std), np.float32(mean / std)


def normalize(images_u8: np.ndarray, normalization: Mapping) -> np.ndarray:
    """uint8 ``(N, H, W)`` -> float32 ``(N, 1, H, W)``, the tensor the network sees."""
    gain, offset = normalization_affine(normalization)
    x = images_u8.astype(np.float32)[:, None]
    x *= gain
    x -= offset
    return x


def pad_to_multiple(image: np.ndarray, multiple: int = SIZE_MULTIPLE) -> np.ndarray:
    """Pad a 2-D image at the bottom and right to multiples of ``multiple`` by mirror reflection.

    Reflection (no repeated edge pixel) keeps a micrograph's texture at its border, where zeros would read
    as a dark phase; images a pixel thin are edge-padded (reflection needs two pixels). Returns ``image``
    itself when no padding is needed; the caller crops results back to ``image.shape``.
    """
    h, w = image.shape[:2]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return image
    return np.pad(image, ((0, ph), (0, pw)), mode="reflect" if min(h, w) > 1 else "edge")


class RecommendsTiling(Protocol):
    """What :meth:`Tiling.resolve` reads of a model: its recommended tile and overlap (``semphase.tile``)
    and its size multiple (a :class:`~semphase.runtime.model.SegmentationModel`, a checkpoint model)."""

    tile_size: int
    overlap: int

    @property
    def size_multiple(self) -> int: ...


@dataclass(frozen=True)
class Tiling:
    """A sliding-window tiling, checked when made: tiles of ``tile`` pixels that neighbours overlap by at
    least ``overlap`` pixels, for a model whose input sides must be multiples of ``multiple``.

    The one place the tiling rule lives. A tile is a positive multiple of the size multiple and the
    overlap is in ``0..tile-1``. Without arguments it is the recommendation export writes to
    ``semphase.tile`` (:data:`RECOMMENDED_TILE`, :data:`RECOMMENDED_OVERLAP`). A run's tiling comes from
    :meth:`resolve`, once; what runs it (the sliding window, the tile plan, the result's ``tiling``) is
    handed the resolved value.

    Raises
    ------
    OptionError
        (a ValueError) naming the argument: ``tile must be a positive multiple of 32, got 500``, ``overlap
        must be in 0..63 for tile 64, got 64``.
    """

    tile: int = RECOMMENDED_TILE
    overlap: int = RECOMMENDED_OVERLAP
    multiple: int = SIZE_MULTIPLE

    def __post_init__(self) -> None:
        if self.multiple < 1:
            raise ValueError(f"the size multiple must be >= 1, got {self.multiple}")
        if self.tile < self.multiple or self.tile % self.multiple:
            raise OptionError(
                f"must be a positive multiple of {self.multiple}, got {self.tile}", argument="tile"
            )
        if not 0 <= self.overlap < self.tile:
            raise OptionError(
                f"must be in 0..{self.tile - 1} for tile {self.tile}, got {self.overlap}", argument="overlap"
            )

    @classmethod
    def resolve(cls, model: RecommendsTiling, tile: int | None = None, overlap: int | None = None) -> Tiling:
        """The tiling a run of ``model`` uses: the caller's ``tile`` and ``overlap`` where given, else the
        model's recommendation. A default overlap is at most half the tile: the model's overlap with a
        small ``tile`` would leave strides of a few pixels.

        Raises
        ------
        OptionError
            for a tile the model cannot take or an overlap outside ``0..tile-1``.
        """
        size = int(model.tile_size) if tile is None else int(tile)
        lap = min(int(model.overlap), size // 2) if overlap is None else int(overlap)
        return cls(size, lap, int(model.size_multiple))

    @staticmethod
    def check_arguments(tile: int | None, overlap: int | None) -> None:
        """The part of the rule that holds for every model, for settings checked before the model is
        loaded: a tile of at least one pixel, an overlap of none or more (None: the model's).

        Raises
        ------
        OptionError
            naming ``tile`` or ``overlap``.
        """
        if tile is not None and tile < 1:
            raise OptionError(f"must be positive, got {tile}", argument="tile")
        if overlap is not None and overlap < 0:
            raise OptionError(f"must be >= 0, got {overlap}", argument="overlap")


@dataclass(frozen=True)
class Contract:
    """What the runtime needs from a model's metadata, checked."""

    classes: list[str]
    colors: list[tuple[int, int, int]]
    #: ``{"channels": 1, "scale", "mean": [m], "std": [s], "size_multiple"}``
    normalization: dict
    tile_size: int
    overlap: int
    variant: str


def check(meta: Mapping[str, object], path: str | os.PathLike | None = None) -> Contract:
    """Check decoded metadata (from :func:`parse`) and return what it promises.

    Raises
    ------
    InputError
        naming ``path`` for anything unusable: classes that are not unique, printable names; colours that
        are not one RGB triple per class; an input spec other than one channel with positive scale and
        std; a recommended tiling that is not a multiple of the size multiple with overlap in 0..tile-1.
    """
    try:
        classes, colors = meta["semphase.classes"], meta["semphase.colors"]
        spec, tile = meta["semphase.input"], meta["semphase.tile"]
        if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
            raise ValueError("semphase.classes must be a non-empty list of names")
        bad = [c for c in classes if not c.strip() or any(unicodedata.category(ch) == "Cc" for ch in c)]
        if bad:
            # names reach terminals, CSV and JSON: control characters (ANSI escapes) have no place there
            raise ValueError(f"class names must be printable and not blank, got {bad[0]!r}")
        if len(set(classes)) != len(classes):
            raise ValueError(f"class names must be unique (they name the columns of summary.csv): {classes}")
        if len(classes) > MAX_CLASSES:
            raise ValueError(f"more than {MAX_CLASSES} classes do not fit an 8-bit mask")
        if not isinstance(colors, list) or len(colors) != len(classes):
            raise ValueError("semphase.colors must hold one [r, g, b] per class")
        if any(
            not isinstance(c, list) or len(c) != 3 or not all(0 <= int(v) <= 255 for v in c) for c in colors
        ):
            raise ValueError("semphase.colors must hold one [r, g, b] per class")
        if int(spec["channels"]) != 1:
            raise ValueError(f"only 1-channel models are supported, got {spec['channels']}")
        scale, mean, std = float(spec["scale"]), float(spec["mean"][0]), float(spec["std"][0])
        multiple = int(spec["size_multiple"])
        if not (scale > 0 and std > 0 and math.isfinite(mean) and multiple >= 1):
            raise ValueError("semphase.input needs scale > 0, std > 0 and size_multiple >= 1")
        size, overlap = int(tile["size"]), int(tile["overlap"])
        try:
            Tiling(size, overlap, multiple)
        except ValueError as exc:
            raise ValueError(f"bad recommended tiling {tile} ({exc})") from None
        variant = str(meta["semphase.variant"])
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"unusable semphase metadata: {exc}", path) from None
    norm = {"channels": 1, "scale": scale, "mean": [mean], "std": [std], "size_multiple": multiple}
    return Contract(
        classes=list(classes),
        colors=[(int(c[0]), int(c[1]), int(c[2])) for c in colors],
        normalization=norm,
        tile_size=size,
        overlap=overlap,
        variant=variant,
    )


@dataclass
class ModelSummary:
    """What ``semphase info`` shows about a model file.

    Read with onnx when it is installed (:func:`semphase.export.metadata.summarize_model`, which knows the
    opset) or with onnxruntime alone on the base install (:func:`semphase.runtime.model.summarize_file`,
    ``opset`` None).
    """

    path: Path
    size_bytes: int
    metadata: dict[str, object]
    opset: int | None
    producer: str
    #: (name, element type, shape with symbolic dims as strings), one per graph input / output.
    inputs: list[tuple[str, str, list[int | str]]]
    outputs: list[tuple[str, str, list[int | str]]]
