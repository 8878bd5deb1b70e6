"""What a watcher reports: events for the operator and the log, counts for the status line."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WatchEvent:
    """Something the operator may want to see or log.

    ``kind`` is one of: start, done, failed, waiting (not decodable yet, retried), changed (modified while
    being segmented, redone), vanished, moved, move-failed, cleaned, inbox-unreachable, inbox-back,
    left (``--once`` gave up on a file still being written), stop.
    """

    kind: str
    file: str | None = None
    message: str = ""


@dataclass
class WatchStats:
    """Counts for this run; throughput is over the time spent segmenting, not idle time."""

    done: int = 0
    failed: int = 0
    queued: int = 0
    busy_seconds: float = 0.0
    megapixels: float = 0.0

    @property
    def images_per_minute(self) -> float:
        """Images finished per minute of segmenting (0 before the first)."""
        return 60.0 * self.done / self.busy_seconds if self.busy_seconds > 0 else 0.0

    @property
    def megapixels_per_second(self) -> float:
        """Megapixels segmented per second of segmenting (0 before the first)."""
        return self.megapixels / self.busy_seconds if self.busy_seconds > 0 else 0.0
