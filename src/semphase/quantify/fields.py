"""Finding the fields to quantify and grouping them into samples.

A field is a label mask written by ``semphase segment`` or ``watch`` (``X_mask.png`` or ``X_mask.ome.tif``
beside its ``X.json``,
which names the classes and the pixel size), or a mask file given with a class table. Samples are the
subfolders of a results folder (fields directly in it form one sample named after it), or the named group
``sample`` (else the first group) of ``--group-by REGEX`` matched against each field's file name.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from semphase.errors import InputError, OptionError

#: Mask names of ``semphase segment``: PNG, or pyramidal OME-TIFF for montages (its full resolution is read).
MASK_SUFFIXES = ("_mask.png", "_mask.ome.tif")


def _mask_stem(name: str) -> str | None:
    """``X`` for a mask file named ``X_mask.png`` or ``X_mask.ome.tif``, else None."""
    for suffix in MASK_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


@dataclass
class Field:
    """One micrograph's segmentation."""

    name: str
    sample: str
    mask: Path
    classes: list[str]
    pixel_size_um: float | None
    #: Pixels per class as X.json states them (None for a bare mask: read from the mask when needed).
    pixels: list[int] | None = None


def _from_json(path: Path) -> tuple[Path, list[str], float | None, list[int] | None] | None:
    """(mask, classes, pixel size, pixels per class) from a segment/watch ``X.json``; None for another
    JSON file."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read ({exc.__class__.__name__})", path) from None
    if not isinstance(document, dict) or "phases" not in document or "outputs" not in document:
        return None
    try:
        phases = sorted(document["phases"], key=lambda p: p["id"])
        classes = [str(p["name"]) for p in phases]
        counts = [int(p["pixels"]) for p in phases] if all("pixels" in p for p in phases) else None
        mask_name = Path(document["outputs"]["mask"]).name
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"not a semphase phase table ({exc})", path) from None
    pixel = document.get("pixel_size_um")
    return path.with_name(mask_name), classes, float(pixel) if pixel else None, counts


def _sample_of(name: str, folder_sample: str, pattern: re.Pattern | None) -> str | None:
    if pattern is None:
        return folder_sample
    match = pattern.search(name)
    if match is None:
        return None
    if "sample" in pattern.groupindex:
        return match.group("sample")
    return match.group(1) if pattern.groups else match.group(0)


def find_fields(
    specs: list[str | os.PathLike], group_by: str | None = None, classes: list[str] | None = None
) -> tuple[list[Field], list[tuple[str, str]]]:
    """The fields under ``specs`` (results folders, ``X.json`` files, or mask files with ``classes``).

    Returns
    -------
    (fields, problems): problems are ``(path, reason)`` for files that are not usable fields (listed, not
    raised: one bad field must not stop a sample).

    Raises
    ------
    InputError
        for a spec that does not exist; OptionError for a ``group_by`` that is not a regular expression.
    """
    try:
        pattern = re.compile(group_by) if group_by else None
    except re.error as exc:
        raise OptionError(f"--group-by is not a regular expression ({exc})") from None
    fields: list[Field] = []
    problems: list[tuple[str, str]] = []
    for spec in specs:
        root = Path(spec)
        if not root.exists():
            raise InputError("no such file or folder", root)
        if root.is_dir():
            candidates = sorted(p for p in root.rglob("*.json") if not p.name.startswith("."))
            candidates += (
                sorted(
                    p
                    for p in root.rglob("*_mask.*")
                    if _mask_stem(p.name) is not None
                    and not p.with_name(f"{_mask_stem(p.name)}.json").exists()
                )
                if classes
                else []
            )
        else:
            candidates = [root]
        for path in candidates:
            if root.is_dir() and path.parent != root:
                folder_sample = path.parent.relative_to(root).as_posix()
            else:
                folder_sample = root.name if root.is_dir() else path.parent.name
            try:
                if path.suffix.lower() == ".json":
                    found = _from_json(path)
                    if found is None:
                        continue
                    mask, names, pixel, counts = found
                    name = path.stem
                elif classes:
                    mask, names, pixel, counts = path, list(classes), None, None
                    name = _mask_stem(path.name) or path.stem
                else:
                    problems.append((str(path), "a mask without its X.json needs --classes"))
                    continue
            except InputError as exc:
                problems.append((str(path), exc.reason))
                continue
            if not mask.is_file():
                problems.append((str(path), f"its mask {mask.name} is missing"))
                continue
            sample = _sample_of(name, folder_sample, pattern)
            if sample is None:
                problems.append((str(path), f"its name does not match --group-by {group_by!r}"))
                continue
            fields.append(Field(name, sample, mask, names, pixel, counts))
    return fields, problems
