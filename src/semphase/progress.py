"""How long-running library calls report: one small protocol for progress and events, and the silent default.

Library code never prints. ``run_export``, ``run_benchmark``, ``run_evaluation``, ``score_folders``,
``segment_file``, the batch engine (:func:`semphase.runtime.run.segment_many`) and the watcher take a
``progress`` object with the methods below; the CLI passes one that draws rich progress bars on stderr
and prints events (:class:`semphase.cli.common.RichProgress`), tests and library callers pass nothing and
get :data:`SILENT`, or their own object (subclass :class:`Silent` to implement only what you need).

- ``start(key, description, total)``: a stage of ``total`` steps begins (``total`` None: unknown);
  starting a key again restarts it.
- ``advance(key, steps=1)``: steps of stage ``key`` are done.
- ``say(message)``: what runs now (a status beside the current bar; gone when it changes).
- ``log(message)``: a line to keep (training's set-up summary and one line per epoch).
- ``finish(key)``: stage ``key`` is over (its bar goes away: one file's tiles in a batch).
- ``event(event)``: something happened to one input that its caller may show, log or act on: an
  :class:`Event` (a file done or failed, a watcher's inbox events).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Event:
    """Something that happened to one input (or to the run), for the operator, a log or a follower.

    ``kind``: ``done``, ``failed``, ``skipped`` (done by an earlier run) for every batch; a watcher adds
    start, waiting (not decodable yet, retried), changed (modified while being segmented, redone),
    vanished, moved, move-failed, cleaned, inbox-unreachable, inbox-back, left (``--once`` gave up on a
    file still being written), stop; ``quantified`` and ``quantify-failed`` come from
    :class:`semphase.quantify.follow.SampleFollower`. ``file`` names the input (inbox-relative for a
    watcher, as given for a batch), ``message`` says the rest in one line, ``result`` is a done file's
    phase table (``X.json``'s content).
    """

    kind: str
    file: str | None = None
    message: str = ""
    result: Mapping[str, Any] | None = None


class Progress(Protocol):
    def start(self, key: str, description: str, total: int | None) -> None: ...

    def advance(self, key: str, steps: int = 1) -> None: ...

    def say(self, message: str) -> None: ...

    def log(self, message: str) -> None: ...

    def finish(self, key: str) -> None: ...

    def event(self, event: Event) -> None: ...


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

    def finish(self, key: str) -> None:
        pass

    def event(self, event: Event) -> None:
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
