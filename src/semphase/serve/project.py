"""A labelling project on the server: micrographs, their sparse labels, every version (no web framework).

``semphase serve MODEL --project DIR`` keeps ``DIR`` in the dataset layout ``semphase train`` reads, so the
folder is a training set at every moment::

    DIR/images/NAME.tif|png|...       micrographs (uploads, ``suggest --out DIR`` picks, files put there)
    DIR/masks/NAME.png                 the current labels: RGBA colour PNG in the model's class colours,
                                       transparent = unlabelled (what suggest pre-fills, what GIMP edits)
    DIR/worklist.csv, suggest.json     ``semphase suggest``'s picks, when it wrote into DIR
    DIR/.semphase/labels/NAME/v000007.png   every saved version of NAME's labels (never deleted)
    DIR/.semphase/labels/NAME/log.jsonl     who saved which version when, from which base, merged or not
    DIR/.semphase/predictions/SHA/NAME.*.png  the served model's phases and uncertainty of NAME
    DIR/.semphase/lock                  one server per project (an OS lock, released when it dies)

**Saving.** A save is a list of strokes (:mod:`semphase.serve.strokes`) and the version the page started
from. Under the image's lock the server reads the current labels, applies the strokes, writes the new
version's file, then ``masks/NAME.png`` (each atomically: a temporary file renamed into place, so a
crash leaves the previous complete file), then a log line. The current version is the highest version
file; at every read ``masks/NAME.png`` is compared with it, so a crash between the two writes is repaired
and a mask edited outside the page (GIMP, ``suggest``) becomes a new version instead of being lost.

**Two browsers on one image: a merge.** Strokes are changes, not a picture, so a save made from an older
version is applied on top of the newer one: both users' strokes are kept, and where both painted the same
pixels the later save wins. The answer says it merged, and with which versions, and the page reloads the
labels. A whole label image uploaded (``PUT``) cannot be merged: from an older version it is refused
(HTTP 409, one line) unless forced. Nothing is ever lost: every version stays and can be restored (a
restore is a new version).

**Checks.** An uploaded label image must have the micrograph's size and only the model's class colours (or
index values): otherwise it is refused with one line (HTTP 422) and nothing changes. Names come from the
project's own listing: a client's name is looked up there, never joined to a path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semphase.data.labels import (
    as_label_array,
    check_colours,
    colour_labels,
    labelled_counts,
    labels_of,
    read_labels,
    unknown_ids,
)
from semphase.errors import InputError
from semphase.imageio import (
    IMAGE_SUFFIXES,
    atomic_path,
    encode_image,
    file_sha256,
    read_raw,
    write_bytes_atomic,
)
from semphase.phases import IGNORE, ClassTable
from semphase.runtime.ledger.files import file_signature
from semphase.runtime.ledger.lock import FolderLocked, OutputFolderLock
from semphase.runtime.suggest import DOCUMENT_NAME, IMAGES_DIR, MASKS_DIR, WORKLIST_NAME
from semphase.serve.strokes import Stroke, apply_strokes

STATE_DIR = ".semphase"
VERSION_RE = re.compile(r"^v(\d{6,})\.png$")
#: Characters kept in a name made from an upload's file name (anything else becomes ``_``).
_UNSAFE = re.compile(r"[^A-Za-z0-9._()+-]+")


class NotFound(InputError):
    """No micrograph of that name in the project (HTTP 404)."""


class Conflict(InputError):
    """A whole label image from an older version than the current one (HTTP 409)."""


class Rejected(InputError):
    """A label image of the wrong size or with values that are no class (HTTP 422)."""


@dataclass(frozen=True)
class Entry:
    """One micrograph of the project."""

    name: str
    path: Path
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)


@dataclass(frozen=True)
class Saved:
    """What a save did: the version now current, how many pixels changed, whether it merged with versions
    saved by someone else since the page's base, and the labelled pixels per class now."""

    name: str
    version: int
    base: int
    merged_with: tuple[int, ...]
    changed: int
    counts: tuple[int, ...]
    message: str

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "base": self.base,
            "merged": bool(self.merged_with),
            "merged_with": list(self.merged_with),
            "changed": self.changed,
            "labelled": int(sum(self.counts)),
            "counts": list(self.counts),
            "message": self.message,
        }


def safe_stem(filename: str) -> str:
    """A file stem for an upload: the client's name without its suffix, odd characters as ``_``."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    stem = _UNSAFE.sub("_", stem).strip("._") or "micrograph"
    return stem[:120]


class Project:
    """A labelling project folder (see the module docstring).

    Parameters
    ----------
    root : the project folder (created with ``images/`` and ``masks/`` when missing).
    table : the served model's class table (names and colours).
    lock : hold the project's lock (one server per project); False for a read-only look.

    Raises
    ------
    InputError
        when the folder cannot be created or another live server holds it.
    """

    def __init__(self, root: str | os.PathLike, table: ClassTable, lock: bool = True) -> None:
        self.root = Path(root)
        self.table = table
        check_colours(table, self.root)
        try:
            for sub in (IMAGES_DIR, MASKS_DIR, STATE_DIR):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the project folder ({exc.strerror or exc})", self.root) from None
        self._lock = None
        if lock:
            try:
                self._lock = OutputFolderLock(self.root / STATE_DIR).acquire()
            except FolderLocked as exc:
                reason = f"another semphase serve uses this project ({exc.reason})"
                raise InputError(reason, self.root) from None
        self._guard = threading.Lock()
        self._image_locks: dict[str, threading.Lock] = {}
        self._sizes: dict[tuple[str, tuple[int, int] | None], tuple[int, int]] = {}
        #: name -> (mask file signature, version) last found equal, so reads skip hashing both files
        self._synced: dict[str, tuple[tuple[int, int] | None, int]] = {}
        self._version_counts: dict[tuple, list[int]] = {}

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # ------------------------------------------------------------------------------------ listing

    def _image_files(self) -> dict[str, Path]:
        """Micrographs by name (file stem); of two files with one stem the first in name order."""
        found: dict[str, Path] = {}
        folder = self.root / IMAGES_DIR
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            found.setdefault(path.stem, path)
        return found

    def entry(self, name: str) -> Entry:
        """The micrograph called ``name`` (looked up in the listing, never used as a path)."""
        path = self._image_files().get(name) if isinstance(name, str) else None
        if path is None:
            raise NotFound("no micrograph of that name in the project", name)
        return self._entry(name, path)

    def _entry(self, name: str, path: Path) -> Entry:
        key = (path.name, file_signature(path))
        size = self._sizes.get(key)
        if size is None:
            image = read_raw(path)  # InputError names the file when it is unreadable
            size = (int(image.shape[0]), int(image.shape[1]))
            self._sizes[key] = size
        return Entry(name=name, path=path, width=size[1], height=size[0])

    def listing(self) -> list[dict]:
        """Every micrograph with its size, current version and labelled pixels per class; unreadable ones
        with their one-line reason."""
        picks = self._worklist_order()
        rows = []
        for name, path in self._image_files().items():
            try:
                entry = self._entry(name, path)
                version = self.current_version(name)
                counts = self._counts(entry, version)
            except InputError as exc:  # an unreadable micrograph, or a mask painted outside the page
                rows.append({"name": name, "file": path.name, "error": str(exc)})
                continue
            rows.append(
                {
                    "name": name,
                    "file": path.name,
                    "width": entry.width,
                    "height": entry.height,
                    "version": version,
                    "counts": counts,
                    "labelled": sum(counts) / float(entry.width * entry.height),
                    "suggested": picks.get(name),
                }
            )
        rows.sort(key=lambda r: (r.get("suggested") is None, r.get("suggested") or 0, r["name"]))
        return rows

    def _worklist_order(self) -> dict[str, int]:
        """Rank (1 = best) of suggest's picks written into this project."""
        path = self.root / DOCUMENT_NAME
        try:
            picks = json.loads(path.read_text(encoding="utf-8")).get("picks", [])
        except (OSError, ValueError, AttributeError):
            return {}
        ranks = {}
        for i, pick in enumerate(picks, 1):
            name = pick.get("name") if isinstance(pick, dict) else None
            if isinstance(name, str):
                ranks[name] = i
        return ranks

    def has_worklist(self) -> bool:
        return (self.root / WORKLIST_NAME).is_file()

    # ------------------------------------------------------------------------------------- uploads

    def add(self, upload: Path, filename: str, suffix: str, shape: tuple[int, int] | None = None) -> Entry:
        """Copy ``upload`` (a checked micrograph in the service's private folder) into ``images/`` under a
        new name made from the client's ``filename`` (never replacing a micrograph). ``shape`` (rows,
        columns), when the caller decoded it already, spares decoding it again for its size."""
        stem = safe_stem(filename)
        with self._guard:
            taken = {p.stem for p in (self.root / IMAGES_DIR).iterdir()}
            name, n = stem, 1
            while name in taken:
                n += 1
                name = f"{stem}-{n}"
            target = self.root / IMAGES_DIR / f"{name}{suffix}"
            try:
                with atomic_path(target) as tmp, open(upload, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                    dst.flush()
                    os.fsync(dst.fileno())
            except OSError as exc:
                raise InputError(f"cannot add it to the project ({exc.strerror or exc})", filename) from None
            if shape is not None:
                self._sizes[(target.name, file_signature(target))] = (int(shape[0]), int(shape[1]))
        return self.entry(name)

    # -------------------------------------------------------------------------------------- labels

    def _versions_dir(self, name: str) -> Path:
        return self.root / STATE_DIR / "labels" / name

    def _mask_path(self, name: str) -> Path:
        return self.root / MASKS_DIR / f"{name}.png"

    def versions(self, name: str) -> list[int]:
        folder = self._versions_dir(name)
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := VERSION_RE.match(p.name)))

    def current_version(self, name: str) -> int:
        """The current version of ``name``'s labels (0: never labelled), adopting a mask changed on disk."""
        with self._lock_of(name):
            return self._sync(name)

    def _lock_of(self, name: str) -> threading.Lock:
        with self._guard:
            return self._image_locks.setdefault(name, threading.Lock())

    def _version_file(self, name: str, version: int) -> Path:
        return self._versions_dir(name) / f"v{version:06d}.png"

    def _sync(self, name: str) -> int:
        """Make ``masks/NAME.png`` and the newest version agree (lock held); return the current version.

        A mask on disk that is no saved version (pre-filled by suggest, painted in GIMP, or left by a
        crash between the version's write and the mask's) becomes a version; a missing mask is written
        again from the newest version."""
        versions = self.versions(name)
        mask = self._mask_path(name)
        current = versions[-1] if versions else 0
        signature = file_signature(mask)
        if signature is not None:
            if current and self._synced.get(name) == (signature, current):
                return current  # unchanged since it was compared: no need to read both files again
            if current and file_sha256(mask) == file_sha256(self._version_file(name, current)):
                self._synced[name] = (signature, current)
                return current
            entry = self.entry(name)
            labels = self._read_mask(mask, entry)
            return self._commit(name, labels, source="found on disk", base=current, client=None)
        if current:  # the mask was deleted (or a crash): the newest version is the labels
            write_bytes_atomic(mask, self._version_file(name, current).read_bytes())
            self._synced[name] = (file_signature(mask), current)
        return current

    def _read_mask(self, path: Path, entry: Entry) -> np.ndarray:
        labels = read_labels(path, self.table)
        _check_size(labels.shape, entry, path)
        return labels

    def labels(self, name: str) -> tuple[np.ndarray, int]:
        """The current labels of ``name`` (uint8 class ids, 255 = unlabelled) and their version."""
        entry = self.entry(name)
        with self._lock_of(name):
            version = self._sync(name)
            return self.version_labels(entry, version), version

    def _counts(self, entry: Entry, version: int) -> list[int]:
        """Labelled pixels per class of one version, decoded once per version file (the page lists the
        project after every save, and a version file is written once)."""
        stored = file_signature(self._version_file(entry.name, version)) if version else None
        key = (entry.name, version, stored)
        if key not in self._version_counts:
            labels = self.version_labels(entry, version)
            self._version_counts[key] = [int(n) for n in labelled_counts(labels, self.table.num_classes)]
        return self._version_counts[key]

    def _commit(self, name: str, labels: np.ndarray, source: str, base: int, client: str | None) -> int:
        """Write ``labels`` as the next version and as the current mask (lock held); returns the version."""
        versions = self.versions(name)
        version = (versions[-1] if versions else 0) + 1
        png = encode_image(colour_labels(labels, self.table), ".png")
        folder = self._versions_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(self._version_file(name, version), png)
        write_bytes_atomic(self._mask_path(name), png)
        self._synced[name] = (file_signature(self._mask_path(name)), version)
        line = {
            "version": version,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "source": source,
            "base": base,
            "client": client,
            "labelled": int(np.count_nonzero(labels != IGNORE)),
        }
        with open(folder / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return version

    def history(self, name: str) -> list[dict]:
        """The log of ``name``'s versions, newest first."""
        self.entry(name)
        path = self._versions_dir(name) / "log.jsonl"
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        rows = []
        for text in lines:
            try:
                rows.append(json.loads(text))
            except ValueError:  # a line cut by a crash: the version file is what counts
                continue
        return rows[::-1]

    def save_strokes(
        self,
        name: str,
        base: int,
        strokes: list[Stroke],
        prediction: Callable[[], np.ndarray] | None = None,
        client: str | None = None,
    ) -> Saved:
        """Apply ``strokes`` (made on version ``base``) to the current labels and save them as a new version.

        From an older ``base`` the strokes are merged onto the newer labels (the module docstring says
        why). ``prediction`` returns the model's phases, needed for ``accept`` strokes.
        """
        entry = self.entry(name)
        with self._lock_of(name):
            current = self._sync(name)
            if base < 0 or base > current:
                raise Conflict(f"version {base} does not exist (current: {current}); reload the page", name)
            labels = self.version_labels(entry, current)
            needs = any(s.tool == "accept" for s in strokes)
            changed = apply_strokes(labels, strokes, prediction() if needs and prediction else None)
            merged = tuple(v for v in self.versions(name) if base < v <= current)
            version = current
            if changed:
                version = self._commit(name, labels, source="strokes", base=base, client=client)
        counts = tuple(int(n) for n in labelled_counts(labels, self.table.num_classes))
        if merged:
            message = (
                f"merged: {'versions' if len(merged) > 1 else 'version'} {', '.join(map(str, merged))} "
                f"{'were' if len(merged) > 1 else 'was'} saved from another page since yours ({base}); "
                "your strokes were applied on top "
                f"(where both painted the same pixels, yours win) as version {version}"
            )
        elif changed:
            message = f"saved as version {version}"
        else:
            message = f"nothing changed; still version {version}"
        return Saved(name, version, base, merged, changed, counts, message)

    def put_labels(
        self, name: str, data: bytes, base: int, force: bool = False, client: str | None = None
    ) -> Saved:
        """Replace ``name``'s labels with an uploaded label image (PNG/TIFF, index or colour), checked.

        Raises
        ------
        Rejected
            wrong size, a colour or value that is no class, not an image: nothing changes.
        Conflict
            ``base`` is older than the current version and ``force`` is False.
        """
        entry = self.entry(name)
        labels = _decode_labels(data, self.table, entry)
        with self._lock_of(name):
            current = self._sync(name)
            if base != current and not force:
                raise Conflict(
                    f"labels were saved as version {current} since version {base}; a whole label image "
                    "cannot be merged: reload, or send it again with force=true to replace them",
                    name,
                )
            before = self.version_labels(entry, current)
            changed = int(np.count_nonzero(before != labels))
            version = current
            if changed:
                version = self._commit(name, labels, source="label image", base=base, client=client)
        counts = tuple(int(n) for n in labelled_counts(labels, self.table.num_classes))
        message = f"saved as version {version}" if changed else f"nothing changed; still version {version}"
        return Saved(name, version, base, (), changed, counts, message)

    def restore(self, name: str, version: int, client: str | None = None) -> Saved:
        """Make an earlier version current again (as a new version: nothing is lost)."""
        entry = self.entry(name)
        with self._lock_of(name):
            current = self._sync(name)
            if version not in self.versions(name):
                raise NotFound(f"no version {version} of these labels", name)
            labels = self.version_labels(entry, version)
            before = self.version_labels(entry, current)
            changed = int(np.count_nonzero(before != labels))
            new = current
            if changed:
                source = f"restored version {version}"
                new = self._commit(name, labels, source=source, base=current, client=client)
        counts = tuple(int(n) for n in labelled_counts(labels, self.table.num_classes))
        return Saved(name, new, current, (), changed, counts, f"version {version} restored as version {new}")

    def version_labels(self, entry: Entry, version: int) -> np.ndarray:
        """The labels of one version of ``entry`` (version 0: nothing labelled)."""
        if not version:
            return np.full(entry.shape, IGNORE, np.uint8)
        return read_labels(self._version_file(entry.name, version), self.table)

    def mask_png(self, name: str) -> bytes:
        """The current labels as the colour PNG in ``masks/`` (empty labels: an all-transparent PNG)."""
        labels, version = self.labels(name)
        if version:
            return self._version_file(name, version).read_bytes()
        return encode_image(colour_labels(labels, self.table), ".png")

    def prediction_dir(self, model_sha256: str) -> Path:
        return self.root / STATE_DIR / "predictions" / model_sha256[:16]


def _check_size(shape: tuple[int, ...], entry: Entry, path) -> None:
    """Rejected (naming ``path``) when a label image of ``shape`` is not the micrograph's size."""
    if tuple(shape[:2]) != entry.shape:
        raise Rejected(
            f"label image is {shape[1]} x {shape[0]} but the micrograph is {entry.width} x {entry.height}",
            path,
        )


def _decode_labels(data: bytes, table: ClassTable, entry: Entry) -> np.ndarray:
    """An uploaded label image's bytes as class ids of ``entry``'s size; Rejected (one line) for anything
    else: not a PNG/TIFF, another size, values or colours that are no class."""
    name = entry.name
    from semphase.serve.service import sniff_suffix

    suffix = sniff_suffix(data[:16])
    if suffix not in (".png", ".tif"):
        raise Rejected("a label image must be a PNG or TIFF (index or colour mask)", name)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="semphase-labels-") as folder:
        path = Path(folder) / f"labels{suffix}"
        path.write_bytes(data)
        try:
            raw = as_label_array(read_raw(path), name)
            _check_size(raw.shape, entry, name)
            if raw.ndim == 2 and (wrong := unknown_ids(raw, table)):
                shown = ", ".join(map(str, wrong[:5])) + (" ..." if len(wrong) > 5 else "")
                known = ", ".join(f"{p.raw_id} {p.name}" for p in table.phases)
                raise Rejected(f"values {shown} are no class (classes: {known}; 255 = unlabelled)", name)
            return labels_of(raw, table, name)
        except Rejected:
            raise
        except InputError as exc:
            raise Rejected(exc.reason, name) from None
