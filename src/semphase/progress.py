"""How long-running library calls report progress: one small protocol, and the silent default.

Library code never prints. ``run_export``, ``run_benchmark``, ``run_evaluation``, ``score_folders`` and
``segment_file`` take a ``progress`` object with three methods; the CLI passes one that draws rich progress
bars on stderr (:class:`semphase.cli.common.RichProgress`), tests and library callers pass nothing and
get :data:`SILENT`, or their own object.

- ``start(key, description, total)``: a stage of ``total`` steps begins (``total`` None: unknown);
  starting a key again restarts it.
- ``advance(key, steps=1)``: steps of stage ``key`` are done.
- ``say(message)``: what runs now (a status beside the current bar; gone when it changes).
- ``log(message)``: a line to keep (training's set-up summary and one line per epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

T = TypeVar("T")


class Progress(Protocol):
    def start(self, key: str, description: str, total: int | None) -> None: ...

    def advance(self, key: str, steps: int = 1) -> None: ...

    def say(self, message: str) -> None: ...

    def log(self, message: str) -> None: ...


class Silent:
    """Progress that goes nowhere."""

    def start(self, key: str, description: str, total: int | None) -> None:
        pass

    def advance(self, key: str, steps: int = 1) -> None:
        pass

    def say(self, message: str) -> None:
        pass

    def log(self, message: str) -> None:
        pass


SILENT = Silent()


def tracked(items: Iterable[T], progress: Progress, key: str, description: str) -> Iterator[T]:
    """Yield ``items``, one step of stage ``key`` each."""
    items = list(items)
    progress.start(key, description, len(items))
    for item in items:
        yield item
        progress.advance(key)


def count_callback(progress: Progress, key: str, description: str) -> Callable[[int, int], None]:
    """An ``on(done, total)`` callback (the sliding window's) that drives stage ``key`` of ``progress``."""
    state = {"done": None}

    def on(done: int, total: int) -> None:
        if state["done"] is None:
            progress.start(key, description, total)
            state["done"] = 0
        progress.advance(key, done - state["done"])
        state["done"] = done

    return on
