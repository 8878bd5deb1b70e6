"""Shared bits for the commands: consoles and small option helpers."""

from __future__ import annotations

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def progress_bar():
    """A transient rich progress bar on stderr: description, bar, done/total, elapsed time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,  # a log file or a pipe gets no bar (nor its blank lines)
    )


def say_self_check(verdict) -> None:
    """One dim line with a model's self-check verdict (yellow when it had to fall back or could not run)."""
    from rich.markup import escape

    style = "dim" if verdict.status == "passed" else "yellow"
    console.print(f"[{style}]{escape(verdict.line())}[/]", soft_wrap=True)
