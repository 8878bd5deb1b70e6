"""Which files in the inbox the watcher considers, and one cheap scan of their size and mtime.

A scan is one ``os.scandir`` walk: on Windows (and SMB shares) the directory listing already carries
size and mtime, on POSIX each candidate costs one ``stat``. Hidden names (``.*``), editor/acquisition
temporaries (``~*``, ``*.part``, ``*.tmp``) and the excluded folders (our own outputs when they sit inside
the inbox) are never looked at.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from fnmatch import translate
from pathlib import Path

from semphase.imageio import IMAGE_SUFFIXES
from semphase.runtime.ledger.files import FileState, file_signature

__all__ = ["DEFAULT_PATTERNS", "FileState", "InboxScanner", "file_signature", "is_ignored_name"]

#: Default patterns: every image type semphase reads (matched case-insensitively).
DEFAULT_PATTERNS = tuple(f"*{suffix}" for suffix in IMAGE_SUFFIXES)
_TEMP_SUFFIXES = (".part", ".tmp")


def _compile(patterns: list[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{translate(p)})" for p in patterns)) if patterns else None


def is_ignored_name(name: str) -> bool:
    """True for hidden files and temporaries that are never inputs (``.*``, ``~*``, ``*.part``, ``*.tmp``)."""
    lower = name.lower()
    return lower.startswith((".", "~")) or lower.endswith(_TEMP_SUFFIXES)


class InboxScanner:
    """Lists candidate files of an inbox.

    Parameters
    ----------
    inbox : path
        Folder to scan.
    recursive : bool
        Descend into subfolders (hidden and excluded ones are skipped).
    patterns : sequence of str, optional
        Glob patterns matched case-insensitively against the file name (or against the inbox-relative
        path when the pattern contains ``/``). Default: :data:`DEFAULT_PATTERNS`.
    exclude : iterable of path
        Folders never entered (our output and move folders when inside the inbox).
    """

    def __init__(
        self,
        inbox: str | os.PathLike,
        recursive: bool = False,
        patterns: Sequence[str] | None = None,
        exclude: Iterable[str | os.PathLike] = (),
    ) -> None:
        self.inbox = Path(inbox)
        self.recursive = recursive
        self.patterns = tuple(p.lower() for p in (patterns or DEFAULT_PATTERNS))
        # One compiled alternation per kind keeps a 10k-file scan cheap (fnmatch per pattern is not).
        self._by_name = _compile([p for p in self.patterns if "/" not in p])
        self._by_rel = _compile([p for p in self.patterns if "/" in p])
        self._exclude = {os.path.normcase(os.path.realpath(p)) for p in exclude}

    def matches(self, rel: str) -> bool:
        """True when the inbox-relative path ``rel`` is a candidate by name."""
        name = rel.rsplit("/", 1)[-1]
        if is_ignored_name(name):
            return False
        return bool(
            (self._by_name and self._by_name.match(name.lower()))
            or (self._by_rel and self._by_rel.match(rel.lower()))
        )

    def scan(self) -> dict[str, FileState]:
        """Every candidate file now in the inbox, keyed by relative path.

        Raises
        ------
        OSError
            When the inbox itself cannot be listed (e.g. the network share is down). Unreadable
            subfolders and files that vanish mid-scan are skipped silently.
        """
        found: dict[str, FileState] = {}
        visited = {os.path.normcase(os.path.realpath(self.inbox))}
        self._scan_dir(self.inbox, "", found, visited, top=True)
        return found

    def _scan_dir(
        self, folder: Path, prefix: str, found: dict[str, FileState], visited: set[str], top: bool
    ) -> None:
        try:
            entries = os.scandir(folder)
        except OSError:
            if top:
                raise
            return
        with entries:
            for entry in entries:
                rel = prefix + entry.name
                try:
                    if entry.is_dir(follow_symlinks=True):
                        if self.recursive and not is_ignored_name(entry.name):
                            real = os.path.normcase(os.path.realpath(entry.path))
                            # a symlink loop or our own output folder is never entered
                            if real not in self._exclude and real not in visited:
                                visited.add(real)
                                self._scan_dir(Path(entry.path), rel + "/", found, visited, top=False)
                        continue
                    if not self.matches(rel) or not entry.is_file(follow_symlinks=True):
                        continue
                    st = entry.stat(follow_symlinks=True)
                except OSError:  # vanished or unreadable between listing and stat
                    continue
                found[rel] = FileState(rel, entry.path, st.st_size, st.st_mtime_ns)
