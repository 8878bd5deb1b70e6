"""Shared bits for the commands: consoles and small option helpers.

The consoles read no markup: file names, class names and messages are printed exactly as they are (a
path like ``o/[bold]x`` or a class named ``[/]`` is text, never a style or a crash). Styles are applied
explicitly with :func:`styled`.
"""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

console = Console(highlight=False, markup=False)
err_console = Console(stderr=True, highlight=False, markup=False)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Text from plain strings and ``(text, style)`` pairs; nothing in it is read as markup."""
    return Text.assemble(*parts)


def say_error(message: str, target: Console | None = None, label: str = "error:") -> None:
    """``error: <message>`` on stderr (or ``target``), one line however wide the terminal."""
    (target or err_console).print(styled((label, "bold red"), " ", message), soft_wrap=True)


def progress_bar():
    """A transient rich progress bar on stderr: description, bar, done/total, elapsed time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,  # a log file or a pipe gets no bar (nor its blank lines)
    )


def say_self_check(verdict) -> None:
    """One dim line with a model's self-check verdict (yellow when it had to fall back or could not run)."""
    console.print(verdict.line(), style=self_check_style(verdict), soft_wrap=True)


def self_check_style(verdict) -> str:
    """``dim`` for a plain pass, ``yellow`` for anything that deserves a look."""
    return "dim" if verdict.status == "passed" else "yellow"
