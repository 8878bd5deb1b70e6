"""The ledger of an output folder written exactly once per input: by ``segment --cluster`` (through the
batch engine, :mod:`semphase.runtime.run`) and by the watcher (:mod:`semphase.runtime.watch`).

- :mod:`.folder`: :class:`Ledger`, the lock, the journal, failure notes and stale temporaries together;
- :mod:`.journal`: the append-only, fsync'ed journal and reading it back after a crash; its file names
  (:data:`WATCH_JOURNAL`, :data:`SEGMENT_JOURNAL`);
- :mod:`.lock`: one writer per output folder (an OS lock a dead process releases; :data:`LOCK_NAME`);
- :mod:`.notes`: ``failed/`` notes (:data:`FAILED_DIR`), output lists, removing a dead writer's temporaries;
- :mod:`.files`: an input's key, location and signature (size, mtime).
"""

from semphase.runtime.ledger.files import FileState, file_signature
from semphase.runtime.ledger.folder import Ledger, temporary_tag
from semphase.runtime.ledger.journal import SEGMENT_JOURNAL, WATCH_JOURNAL
from semphase.runtime.ledger.lock import LOCK_NAME, FolderLocked
from semphase.runtime.ledger.notes import FAILED_DIR

__all__ = [
    "FAILED_DIR",
    "LOCK_NAME",
    "SEGMENT_JOURNAL",
    "WATCH_JOURNAL",
    "FileState",
    "FolderLocked",
    "Ledger",
    "file_signature",
    "temporary_tag",
]
