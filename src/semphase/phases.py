"""The class table: the one place where phases (ids, raw mask ids, names, colours) are defined.

A label image holds contiguous class indices ``0..C-1``; ``255`` means "no data / ignore". Datasets on
disk may store other raw ids (the Zenodo Ni-WC set stores 1..5); :meth:`ClassTable.remap` converts them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semphase.errors import InputError

#: Label value for pixels that carry no data (SEM data bar, unknown raw ids) and are never scored.
IGNORE = 255


@dataclass(frozen=True)
class Phase:
    """One class: contiguous index ``id``, the ``raw_id`` stored in mask files, a name and an RGB colour."""

    id: int
    raw_id: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ClassTable:
    """Ordered phases; ``phases[i].id == i``."""

    phases: tuple[Phase, ...]

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError("a class table needs at least one class")
        if len(self.phases) > 254:
            raise ValueError("at most 254 classes fit an 8-bit label image")
        for i, p in enumerate(self.phases):
            if p.id != i:
                raise ValueError(f"class ids must be 0..C-1 in order, got {p.id} at position {i}")
        raws = [p.raw_id for p in self.phases]
        if len(set(raws)) != len(raws):
            raise ValueError(f"raw ids must be unique, got {raws}")
        if any(not 0 <= r <= 65535 for r in raws):
            raise ValueError(f"raw ids must be in 0..65535, got {raws}")

    @property
    def num_classes(self) -> int:
        return len(self.phases)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.phases]

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        return [p.color for p in self.phases]

    @property
    def raw_ids(self) -> list[int]:
        return [p.raw_id for p in self.phases]

    def remap(self, raw: np.ndarray) -> np.ndarray:
        """Map raw mask ids to class indices.

        Parameters
        ----------
        raw : ndarray of uint8 or uint16, shape (H, W)

        Returns
        -------
        ndarray of uint8, shape (H, W): class index, or ``IGNORE`` (255) for ids not in the table.
        """
        lut = np.full(65536 if raw.dtype == np.uint16 else 256, IGNORE, dtype=np.uint8)
        for p in self.phases:
            if p.raw_id < lut.size:
                lut[p.raw_id] = p.id
        return lut[raw]

    def unknown_raw_ids(self, raw: np.ndarray) -> list[int]:
        """Raw ids present in ``raw`` that the table does not know, sorted."""
        present = np.unique(raw)
        known = set(self.raw_ids)
        return [int(v) for v in present if int(v) not in known]

    def to_raw(self, labels: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`remap` for class indices (``IGNORE`` stays 0)."""
        lut = np.zeros(256, dtype=np.uint16 if max(self.raw_ids) > 255 else np.uint8)
        for p in self.phases:
            lut[p.id] = p.raw_id
        return lut[labels]

    def color_lut(self) -> np.ndarray:
        """(256, 3) uint8 RGB lookup table; ignored/unknown labels are black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        for p in self.phases:
            lut[p.id] = p.color
        return lut

    def to_dict(self) -> dict:
        return {
            "classes": [
                {"id": p.id, "raw_id": p.raw_id, "name": p.name, "color": list(p.color)} for p in self.phases
            ]
        }

    @classmethod
    def from_dict(cls, data: dict) -> ClassTable:
        """Build from ``{"classes": [{"name": ..., "raw_id": ..., "color": [r, g, b]}, ...]}``.

        ``raw_id`` defaults to ``id + 1`` (the Zenodo convention) and ``color`` to a default palette.
        """
        entries = data.get("classes") if isinstance(data, dict) else None
        if not isinstance(entries, list) or not entries:
            raise ValueError("expected a non-empty list under 'classes'")
        phases = []
        for i, e in enumerate(entries):
            if isinstance(e, str):
                e = {"name": e}
            if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not e["name"]:
                raise ValueError(f"class {i} needs a name")
            color = e.get("color", PALETTE[i % len(PALETTE)])
            if len(color) != 3 or any(not 0 <= int(c) <= 255 for c in color):
                raise ValueError(f"class {e['name']!r}: color must be [r, g, b] in 0..255")
            phases.append(Phase(i, int(e.get("raw_id", i + 1)), e["name"], tuple(int(c) for c in color)))
        return cls(tuple(phases))


PALETTE: list[tuple[int, int, int]] = [
    (52, 101, 164),  # blue
    (239, 41, 41),  # red
    (252, 233, 79),  # yellow
    (78, 154, 6),  # green
    (173, 127, 168),  # violet
    (245, 121, 0),  # orange
    (6, 152, 154),  # teal
    (193, 125, 17),  # brown
]

#: The Zenodo Ni-WC table of the study: raw ids 1..5 -> 0..4.
DEFAULT_TABLE = ClassTable(
    (
        Phase(0, 1, "Matrix", (52, 101, 164)),
        Phase(1, 2, "Carbide", (239, 41, 41)),
        Phase(2, 3, "Void", (252, 233, 79)),
        Phase(3, 4, "Reprecipitate", (78, 154, 6)),
        Phase(4, 5, "Dilution", (173, 127, 168)),
    )
)


def load_class_table(path: str | os.PathLike | None) -> ClassTable:
    """Read a class table from a JSON or TOML file, or return :data:`DEFAULT_TABLE` for ``None``.

    TOML form::

        [[classes]]
        name = "Matrix"
        raw_id = 1
        color = [52, 101, 164]
    """
    if path is None:
        return DEFAULT_TABLE
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read class table ({exc.strerror or exc})", p) from None
    try:
        if p.suffix.lower() == ".toml":
            import tomllib  # Python >= 3.11

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
        return ClassTable.from_dict(data)
    except ModuleNotFoundError:
        raise InputError("TOML class tables need Python >= 3.11; use JSON", p) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise InputError(f"not a valid class table: {exc}", p) from None
