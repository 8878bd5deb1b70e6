"""The watch folder (``semphase watch``): segment every micrograph that lands in an inbox, exactly once.

- :mod:`.watcher`: :class:`Watcher`, the scan / settle / segment / journal loop (injectable clock);
- :mod:`.scan`: which inbox files are candidates, and their size + mtime signatures;
- :mod:`.journal`: the append-only, fsync'ed ``watch-journal.jsonl`` and reading it back after a crash;
- :mod:`.lock`: one watcher per output folder (an OS lock a dead process releases);
- :mod:`.move`: ``--move-done``, moving originals without ever losing one;
- :mod:`.notes`: ``failed/`` notes and removing a dead watcher's temporaries;
- :mod:`.stats`: events and counters for the status line and the log.
"""

from semphase.runtime.watch.stats import WatchEvent, WatchStats
from semphase.runtime.watch.watcher import Watcher

__all__ = ["WatchEvent", "WatchStats", "Watcher"]
