"""`semphase watch`: segment every micrograph that lands in a folder, unattended, for weeks.

A thin wrapper over :class:`semphase.runtime.watch.Watcher`: options, the log file, the live status line,
and signals (SIGINT/SIGTERM finish the current file, then exit 0; a second Ctrl-C aborts at once).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

import typer

from semphase.cli.common import console, say_error, say_self_check, styled
from semphase.cli.options import (
    TTA,
    Backend,
    Batch,
    Databar,
    Format,
    MaxMegapixels,
    Normalize,
    Overlap,
    PixelSize,
    Probs,
    Provider,
    Streams,
    Threads,
    Tile,
    Uncertainty,
    Verify,
    Window,
    load_checked_model,
    model_settings,
    segmentation_settings,
)
from semphase.errors import display_path
from semphase.progress import Silent

LOG_FORMAT = "%(asctime)s %(message)s"

# Event kinds that matter to someone reading the console of an unattended watcher.
_STYLE = {
    "done": "green",
    "failed": "bold red",
    "move-failed": "red",
    "inbox-unreachable": "yellow",
    "left": "yellow",
    "waiting": "dim",
    "changed": "dim",
    "vanished": "dim",
}


class _Reporter(Silent):
    """The watcher's :class:`~semphase.progress.Progress`: its events become log lines, console lines and
    the live status line."""

    def __init__(self, inbox: Path, log_file: Path | None, quiet: bool, live: bool) -> None:
        self.inbox = inbox
        self.quiet = quiet
        self.live = None
        self.watcher = None
        self.last = ""
        self.logger = logging.getLogger("semphase.watch")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self._handler: logging.Handler | None = None
        if log_file is not None:
            try:
                log_file.parent.mkdir(parents=True, exist_ok=True)
                self._handler = logging.FileHandler(
                    log_file, mode="a", encoding="utf-8", errors="backslashreplace"
                )
            except OSError as exc:
                from semphase.errors import InputError

                raise InputError(f"cannot open the log file ({exc.strerror or exc})", log_file) from None
            self._handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y-%m-%dT%H:%M:%S%z"))
            self.logger.addHandler(self._handler)
        if live:
            from rich.live import Live

            self.live = Live(self, console=console, refresh_per_second=2, transient=True)

    def event(self, event) -> None:
        text = f"{event.kind:<8} {display_path(event.file or '-')} {event.message}".rstrip()
        self.logger.info(text)
        if event.kind in ("done", "failed"):
            self.last = event.file or ""
        if self.quiet:
            return
        (self.live.console if self.live else console).print(
            text, style=_STYLE.get(event.kind), soft_wrap=True
        )

    def __rich__(self):
        if self.watcher is None:
            return styled("")
        s = self.watcher.stats
        line = styled(
            ("watching", "bold"),
            f" {self.inbox} | queued {s.queued} | ",
            (f"done {s.done}", "green"),
            " | ",
            (f"failed {s.failed}", "red"),
            f" | {s.images_per_minute:.1f} images/min | {s.megapixels_per_second:.2f} MP/s | ",
            (self.last, "dim"),
        )
        line.no_wrap, line.overflow = True, "ellipsis"  # one line, whatever the terminal's width
        return line

    def fatal(self, exc: BaseException) -> None:
        """Log why the watcher stops on its own (the console line comes from semphase.cli.main)."""
        if isinstance(exc, KeyboardInterrupt):
            self.logger.info("abort    - interrupted twice; the current file is done again at the next start")
        else:
            from semphase.errors import one_line

            self.logger.info(f"error    - {one_line(exc, 10_000)}")

    def close(self) -> None:
        if self._handler is not None:
            self.logger.removeHandler(self._handler)
            self._handler.close()


def _install_signal_handlers(watcher) -> dict:
    """SIGINT/SIGTERM ask the watcher to stop after the current file; a second SIGINT aborts."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}

    def stop(signum, _frame):
        watcher.request_stop()
        if signum == signal.SIGINT:  # a second Ctrl-C means "now": partial outputs are cleaned up
            signal.signal(signal.SIGINT, signal.default_int_handler)

    names = ["SIGINT", "SIGTERM"] + (["SIGBREAK"] if sys.platform == "win32" else [])
    for name in names:
        signum = getattr(signal, name)
        previous[signum] = signal.signal(signum, stop)
    return previous


def _restore_signal_handlers(previous: dict) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def register(app: typer.Typer) -> None:
    """Add the ``watch`` command to ``app``."""

    @app.command("watch")
    def watch(
        ctx: typer.Context,
        inbox: Path = typer.Argument(
            ...,
            help="Folder the microscope saves micrographs into (local or a network share).",
            show_default=False,
        ),
        model: Path = typer.Option(
            ...,
            "--model",
            "-m",
            help="Exported semphase ONNX model, or a .bioimageio.zip made from one by 'semphase package'.",
            show_default=False,
        ),
        out: Path = typer.Option(
            ...,
            "--out",
            "-o",
            help="Output folder: masks, overlays, phase tables, watch-journal.jsonl, "
            "failed/. One watcher per output folder.",
            show_default=False,
        ),
        recursive: bool = typer.Option(
            False, "--recursive", "-r", help="Watch subfolders too (mirrored in --out)."
        ),
        pattern: list[str] | None = typer.Option(
            None,
            "--pattern",
            help="File-name glob to pick up, case-insensitive; repeatable. Default: every "
            "image type semphase reads (tif, tiff, png, bmp, jpg, jpeg).",
            show_default=False,
        ),
        settle: float = typer.Option(
            2.0,
            "--settle",
            min=0.0,
            help="Seconds a file's size and modification time must stay unchanged before it is read.",
        ),
        fail_after: float = typer.Option(
            30.0,
            "--fail-after",
            min=0.0,
            help="Seconds an undecodable file must stay unchanged before it is "
            "recorded as failed (until then it is treated as still arriving).",
        ),
        poll: float = typer.Option(1.0, "--poll", min=0.01, help="Seconds between scans of the inbox."),
        once: bool = typer.Option(
            False,
            "--once",
            help="Handle what is in the inbox now (waiting for it to settle, at most about "
            "--settle + --fail-after seconds) and exit: 0 if nothing failed, 2 if any file failed.",
        ),
        move_done: Path | None = typer.Option(
            None,
            "--move-done",
            help="Move each original here (subfolders mirrored) after its outputs and "
            "done line are written. Default: originals are never touched.",
            show_default=False,
        ),
        log: Path | None = typer.Option(
            None, "--log", help="Append a plain-text line per event to this file.", show_default=False
        ),
        quantify: bool = typer.Option(
            False,
            "--quantify",
            help="Keep OUT/quantify/<sample>/ current (semphase quantify: mean +- 95 % CI per phase, "
            "particles): a sample (a subfolder) is quantified again after each new field of it. Needs scipy.",
        ),
        quiet: bool = typer.Option(
            False,
            "--quiet",
            "-q",
            help="No status line and no event lines on the console (errors and --log still).",
        ),
        tile: Tile = None,
        overlap: Overlap = None,
        batch: Batch = 2,
        window: Window = "gaussian",
        threads: Threads = None,
        streams: Streams = None,
        provider: Provider = "auto",
        backend: Backend = "auto",
        databar: Databar = "auto",
        pixel_size_um: PixelSize = None,
        normalize: Normalize = "linear",
        uncertainty: Uncertainty = False,
        probs: Probs = False,
        format: Format = "auto",  # noqa: A002 - the option is --format
        tta: TTA = False,
        verify: Verify = True,
        max_megapixels: MaxMegapixels = None,
    ) -> None:
        """Segment every micrograph that lands in INBOX as soon as it is complete, for as long as it runs."""
        from semphase.runtime.ledger import FAILED_DIR, WATCH_JOURNAL
        from semphase.runtime.watch import Watcher

        if quantify:
            from semphase.quantify.follow import SampleFollower  # checks scipy now, not hours later

        # every option is checked here, once: a bad one must never become a failed/ note per inbox file
        options = segmentation_settings(ctx.params)  # the options above, checked once
        live = not quiet and console.is_terminal and not once
        reporter = _Reporter(inbox, log, quiet, live)
        try:
            watcher = Watcher(
                inbox,
                out,
                recursive=recursive,
                patterns=pattern or None,
                settle=settle,
                fail_after=fail_after,
                move_done=move_done,
                progress=reporter if not quantify else SampleFollower(out, reporter),
            )
            reporter.watcher = watcher
            with watcher:  # the lock comes first: a refused start never loads the model
                loaded = load_checked_model(model, options, **model_settings(ctx.params))
                watcher.use(loaded, options)
                if loaded.self_check is not None:
                    reporter.logger.info(f"model    - {loaded.self_check.line()}")
                    if not quiet:
                        say_self_check(loaded.self_check)
                previous = _install_signal_handlers(watcher)
                try:
                    if reporter.live is not None:
                        with reporter.live:
                            stats = watcher.run(poll=poll, once=once)
                    else:
                        stats = watcher.run(poll=poll, once=once)
                finally:
                    _restore_signal_handlers(previous)
        except BaseException as exc:
            reporter.fatal(exc)
            raise
        finally:
            reporter.close()
        if not quiet:
            console.print(
                f"{stats.done} done, {stats.failed} failed in this run; journal: {out / WATCH_JOURNAL}",
                soft_wrap=True,
            )
        if once and stats.failed:
            say_error(f"{stats.failed} file(s) failed; reasons in {out / FAILED_DIR}")
            raise typer.Exit(2)
