"""The watch folder (``semphase watch``): segment every micrograph that lands in an inbox, exactly once.

The inbox side of the batch engine (:mod:`semphase.runtime.run`; ``segment_many(Inbox(...), ...)``): files
are fed to the engine's in-process executor as they settle; the output folder's lock, journal, failure
notes and temporaries are its ledger (:mod:`semphase.runtime.ledger`).

- :mod:`.watcher`: :class:`Watcher`, the scan / settle / segment / record loop (injectable clock);
- :mod:`.scan`: which inbox files are candidates, and their size + mtime signatures;
- :mod:`.move`: ``--move-done``, moving originals without ever losing one;
- :mod:`.stats`: counts for the status line and the log.
"""

from semphase.runtime.watch.stats import WatchStats
from semphase.runtime.watch.watcher import Watcher

__all__ = ["WatchStats", "Watcher"]
