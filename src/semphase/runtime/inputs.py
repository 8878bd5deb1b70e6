"""Turning what a user typed (files, folders, globs) into the list of micrographs to segment, and giving
each a distinct output stem."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from semphase.imageio import is_image_name


def _is_candidate(path: Path) -> bool:
    name = path.name
    if not is_image_name(name) or name.startswith((".", "~")):
        return False
    # a link that leads nowhere (deleted target, a loop) is listed too: reading it names the problem
    return path.is_file() or (path.is_symlink() and not path.exists())


def _resolved(path: Path) -> Path:
    """The real path, or the absolute one where it has none (a symlink loop: reported when read)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: "Symlink loop" before Python 3.13
        return Path(os.path.abspath(path))


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    resolved = _resolved(path)
    return any(resolved == f or f in resolved.parents for f in folders)


def expand_inputs(
    specs: Iterable[str | os.PathLike], exclude: Sequence[str | os.PathLike] = ()
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Micrograph files named by ``specs``, in order, each once.

    Parameters
    ----------
    specs : file paths (taken as given, whatever the suffix, so a bad file is reported, not skipped),
        folders (their image files, sorted, not recursive) and glob patterns (``*``, ``?``, ``[..]``,
        ``**``; image files only).
    exclude : folders whose contents are never picked from folders or globs (the output folder).

    Returns
    -------
    (files, problems) where problems are ``(spec, reason)`` for specs that matched nothing.
    """
    folders = [_resolved(Path(f)) for f in exclude]
    files: list[Path] = []
    seen: set[Path] = set()
    problems: list[tuple[str, str]] = []

    def add(path: Path) -> None:
        key = _resolved(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for spec in specs:
        text = os.fspath(spec)
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if _is_candidate(p) and not _inside(p, folders))
            if not found:
                problems.append((text, "folder holds no image files (tif, tiff, png, bmp, jpg, jpeg)"))
            for p in found:
                add(p)
        elif os.path.lexists(text) or not glob.has_magic(text):
            # an existing name is taken literally, glob characters and all (SEM exports carry brackets),
            # and so is a link that leads nowhere: reading it names the problem
            add(path)  # a missing file is reported by the reader, with its name
        else:
            found = sorted(
                Path(p)
                for p in glob.glob(text, recursive=True)
                if _is_candidate(Path(p)) and not _inside(Path(p), folders)
            )
            if not found:
                problems.append((text, "pattern matches no image files"))
            for p in found:
                add(p)
    return files, problems


def output_stems(files: Sequence[Path]) -> list[str]:
    """A distinct output stem per input: the file stem, made unique where two inputs share it.

    ``a.tif`` and ``a.png`` become ``a_tif`` and ``a_png``; ``x/a.tif`` and ``y/a.tif`` become ``x_a_tif``
    and ``y_a_tif``; anything still equal gets ``_2``, ``_3``, ...
    """
    stems = [p.stem for p in files]
    if len(set(stems)) == len(stems):
        return stems
    counts = {s: stems.count(s) for s in stems}
    stems = [f"{p.stem}_{p.suffix.lstrip('.').lower()}" if counts[p.stem] > 1 else p.stem for p in files]
    counts = {s: stems.count(s) for s in stems}
    stems = [
        f"{p.parent.name}_{s}" if counts[s] > 1 and p.parent.name else s
        for p, s in zip(files, stems, strict=True)
    ]
    used: dict[str, int] = {}
    unique = []
    for s in stems:
        used[s] = used.get(s, 0) + 1
        unique.append(s if used[s] == 1 else f"{s}_{used[s]}")
    return unique
