"""A watcher's counts for the status line (its events are :class:`semphase.progress.Event`)."""

from __future__ import annotations

from dataclasses import dataclass


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
