"""Progress display of a long benchmark (rich, on stderr), or nothing at all."""

from __future__ import annotations


class Steps:
    """One progress bar per benchmark stage plus a line saying what runs now.

    Parameters
    ----------
    enabled : False makes every method a no-op (tests, ``--quiet``).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress = None
        self._tasks: dict[str, int] = {}
        self._current: str | None = None

    def __enter__(self) -> Steps:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description:<18}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[now]}", style="dim", markup=False),
                console=Console(stderr=True, highlight=False, markup=False),
            )
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def start(self, key: str, description: str, total: int) -> None:
        """Add a stage with ``total`` steps; it becomes the one :meth:`say` annotates."""
        if self._progress is not None and self._current in self._tasks:
            self._progress.update(self._tasks[self._current], now="")
        self._current = key
        if self._progress is not None:
            self._tasks[key] = self._progress.add_task(description, total=max(1, total), now="")

    def advance(self, key: str) -> None:
        """One step of stage ``key`` done."""
        if self._progress is not None and key in self._tasks:
            self._progress.advance(self._tasks[key])

    def say(self, message: str) -> None:
        """Show what runs now beside the current stage's bar (printed when no stage has started)."""
        if self._progress is None:
            return
        if self._current in self._tasks:
            self._progress.update(self._tasks[self._current], now=message)
        else:
            self._progress.console.print(message, style="dim", soft_wrap=True)
