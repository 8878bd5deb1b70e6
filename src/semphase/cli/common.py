"""Shared bits for the commands: consoles and small option helpers.

The consoles read no markup: file names, class names and messages are printed exactly as they are (a
path like ``o/[bold]x`` or a class named ``[/]`` is text, never a style or a crash). Styles are applied
explicitly with :func:`styled`.
"""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(highlight=False, markup=False)
err_console = Console(stderr=True, highlight=False, markup=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Text from plain strings and ``(text, style)`` pairs; nothing in it is read as markup."""
    return Text.assemble(*parts)


def say_error(message: str, target: Console | None = None, label: str = "error:") -> None:
    """``error: <message>`` on stderr (or ``target``), one line however wide the terminal."""
    (target or err_console).print(styled((label, "bold red"), " ", message), soft_wrap=True)


def rich_table(table) -> Table:
    """A library table (:class:`semphase.tables.Table`) as a ``rich.table.Table``."""
    out = Table(title=table.title, title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1))
    for header, justify in zip(table.headers, table.alignments(), strict=True):
        out.add_column(header, justify=justify, overflow="fold")
    for row in table.rows:
        out.add_row(*row)
    return out


def print_tables(tables, target: Console | None = None) -> None:
    """Lay out library tables (:class:`semphase.tables.Table`) with rich, each followed by its notes."""
    target = target or console
    for table in tables:
        target.print(rich_table(table))
        if table.note:
            target.print(table.note, style="dim", soft_wrap=True)
        for line in table.notes:
            target.print(line, soft_wrap=True)


def say_self_check(verdict) -> None:
    """One dim line with a model's self-check verdict (yellow when it had to fall back or could not run)."""
    console.print(verdict.line(), style=self_check_style(verdict), soft_wrap=True)


def self_check_style(verdict) -> str:
    """``dim`` for a plain pass, ``yellow`` for anything that deserves a look."""
    return "dim" if verdict.status == "passed" else "yellow"


class RichProgress:
    """The CLI's :class:`semphase.progress.Progress`: one rich bar per stage on stderr, with a dim column
    saying what runs now. Off a terminal (a log file, a pipe) it draws nothing and ``say`` lines are
    dropped too (they only annotate the bars).

    Use as a context manager. Starting a stage again replaces its bar (one bar per file's tiles).
    """

    def __init__(self, transient: bool = True, enabled: bool = True) -> None:
        self._bars = None
        self._tasks: dict[str, int] = {}
        self._current: str | None = None
        if enabled and err_console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bars = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[now]}", style="dim", markup=False),
                console=err_console,
                transient=transient,
            )

    @property
    def console(self) -> Console:
        """Where lines go while the bars are drawn (above them)."""
        return self._bars.console if self._bars is not None else err_console

    def __enter__(self) -> RichProgress:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.stop()

    def start(self, key: str, description: str, total: int | None) -> None:
        if self._bars is None:
            return
        if self._current in self._tasks:
            self._bars.update(self._tasks[self._current], now="")
        if key in self._tasks:
            self._bars.remove_task(self._tasks.pop(key))
        self._current = key
        self._tasks[key] = self._bars.add_task(description, total=total, now="")

    def advance(self, key: str, steps: int = 1) -> None:
        if self._bars is not None and key in self._tasks:
            self._bars.advance(self._tasks[key], steps)

    def finish(self, key: str) -> None:
        """Remove stage ``key``'s bar (a finished file's)."""
        if self._bars is not None and key in self._tasks:
            self._bars.remove_task(self._tasks.pop(key))

    def say(self, message: str) -> None:
        if self._bars is None:
            return
        if self._current in self._tasks:
            self._bars.update(self._tasks[self._current], now=message)
        else:  # nothing under way yet: a line of its own
            self._bars.console.print(message, style="dim", soft_wrap=True)

    def log(self, message: str) -> None:
        """A line to keep, on stdout (above the bars while they are drawn), terminal or not."""
        console.print(message, soft_wrap=True)
