"""Keep each sample's statistics current while fields arrive (``semphase watch --quantify``).

:class:`SampleFollower` wraps the :class:`~semphase.progress.Progress` a watcher reports to: every event
is passed on, and after each ``done`` field its sample is quantified again into
``OUT/quantify/<sample>/``. Only that sample's fields are read (its subfolder of OUT; fields at the top of
OUT form a sample named after OUT), so the cost per new field is one sample's, however long the watcher
runs. A sample that cannot be quantified is reported (``quantify-failed``) and watching goes on; each
success is reported as ``quantified``.
"""

from __future__ import annotations

from pathlib import Path

from semphase.errors import InputError
from semphase.progress import Event, Progress


class SampleFollower:
    """A :class:`~semphase.progress.Progress` that forwards to ``inner`` and re-quantifies samples.

    Raises
    ------
    InputError
        at construction when scipy (the ``quantify`` extra) is missing: said when the watcher starts, not
        on the first field hours later.
    """

    def __init__(self, out_dir: str | Path, inner: Progress) -> None:
        try:
            import scipy.stats  # noqa: F401
        except ImportError:
            raise InputError("--quantify needs scipy: pip install 'semphase[quantify]'") from None
        self.out = Path(out_dir)
        self.inner = inner

    def start(self, key: str, description: str, total: int | None) -> None:
        self.inner.start(key, description, total)

    def advance(self, key: str, steps: int = 1) -> None:
        self.inner.advance(key, steps)

    def say(self, message: str) -> None:
        self.inner.say(message)

    def log(self, message: str) -> None:
        self.inner.log(message)

    def finish(self, key: str) -> None:
        self.inner.finish(key)

    def event(self, event: Event) -> None:
        self.inner.event(event)
        if event.kind == "done" and event.file:
            self.inner.event(self.quantify_sample(event.file))

    def quantify_sample(self, field: str) -> Event:
        """Quantify the sample of ``field`` (an output-relative, ``/``-separated input path) again; the
        event says how it went."""
        from semphase.quantify.run import quantify

        folder = Path(*field.split("/")[:-1])
        if folder == Path("."):
            sample, specs = self.out.name, sorted(self.out.glob("*.json"))
        else:
            sample, specs = folder.as_posix(), [self.out / folder]
        target = self.out / "quantify" / sample
        try:
            document = quantify(specs, target)
        except InputError as exc:
            return Event("quantify-failed", sample, str(exc))
        fields = sum(len(s["fields"]) for s in document["samples"].values())
        return Event("quantified", sample, f"{fields} field(s); {target / 'samples.csv'}")
