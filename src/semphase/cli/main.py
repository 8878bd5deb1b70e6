"""The ``semphase`` command.

Each command lives in its own module with a ``register(app)`` function; heavy libraries (torch, onnx)
are imported inside the commands that need them, so inference commands never import torch.
"""

from __future__ import annotations

import contextlib
import os
import sys

import typer

from semphase import __version__
from semphase.cli import (
    benchmark,
    data,
    evaluate,
    export,
    package,
    quantify,
    score,
    segment,
    serve,
    suggest,
    synth,
    train,
    watch,
)
from semphase.cli.common import say_error
from semphase.cli.options import said_with_flags
from semphase.errors import GateFailed, InputError, OptionError, describe_os_error, one_line

app = typer.Typer(
    name="semphase",
    help="Phase segmentation of SEM micrographs: synthesize, check, train, export, package, segment, "
    "watch, serve, benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"semphase {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """semphase: train, export and run phase segmentation of SEM micrographs."""


for _module in (
    synth,
    data,
    score,
    train,
    evaluate,
    export,
    package,
    segment,
    suggest,
    watch,
    serve,
    quantify,
    benchmark,
):
    _module.register(app)


def _fail(message: str, code: int) -> None:
    say_error(message)
    sys.exit(code)


def _usage_reason(exc: Exception) -> str:
    reason = exc.format_message() if callable(getattr(exc, "format_message", None)) else str(exc)
    return " ".join(str(reason).split())


def _usage_line(exc: Exception) -> str:
    """A usage error as one line: the reason, then where the help is (click prints four lines)."""
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command_path", None) or "semphase"
    return f"{_usage_reason(exc)} (see '{command} --help')"


def _command_path(argv: list[str] | None) -> str:
    """``semphase segment`` or ``semphase data check``: the command the arguments name."""
    import typer.main

    command, words = typer.main.get_command(app), ["semphase"]
    for arg in sys.argv[1:] if argv is None else argv:
        sub = getattr(command, "commands", {}).get(arg)
        if sub is None:
            break
        command = sub
        words.append(arg)
    return " ".join(words)


def _is_usage_error(exc: Exception) -> bool:
    return callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager, ``kill``): unwinds like Ctrl-C, so partial outputs are removed."""


_signals = {"terminated": False}


def _raise_terminated(signum, frame) -> None:
    _signals["terminated"] = True
    raise Terminated()


def _stop_on_sigterm():
    """Turn SIGTERM into :class:`Terminated` while a command runs (``watch`` installs its own meanwhile);
    returns a function that restores the previous handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return lambda: None
    _signals["terminated"] = False
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    return lambda: signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn every expected failure into one line and an exit code.

    Bad input -> 2, failed validation gate -> 1, Ctrl-C or SIGTERM -> 2 (after the command removed its
    partial outputs), anything unexpected -> one line and 1 (``SEMPHASE_DEBUG=1`` shows the traceback).
    """
    for stream in (sys.stdout, sys.stderr):
        # a file name with undecodable bytes must never turn printing it into a crash
        with contextlib.suppress(AttributeError, ValueError, OSError):
            stream.reconfigure(errors="backslashreplace")
    restore = _stop_on_sigterm()
    try:
        _run(argv)
    finally:
        restore()


def _run(argv: list[str] | None) -> None:
    try:
        rv = app(args=argv, prog_name="semphase", standalone_mode=False)
        if rv == 130:  # typer turns Ctrl-C (and so SIGTERM) into a silent exit code 130
            raise KeyboardInterrupt
    except OptionError as exc:  # found before any file was touched: the same form as click's usage errors
        _fail(f"{said_with_flags(exc)} (see '{_command_path(argv)} --help')", exc.exit_code)
    except InputError as exc:
        _fail(str(exc), exc.exit_code)
    except GateFailed as exc:
        _fail(str(exc), exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        if _signals["terminated"]:
            _fail("stopped (SIGTERM); finished outputs were kept, partial ones removed", 2)
        _fail("interrupted (Ctrl-C); finished outputs were kept, partial ones removed", 2)
    except OSError as exc:
        if os.environ.get("SEMPHASE_DEBUG"):
            raise
        _fail(describe_os_error(exc), 2)
    except MemoryError:
        _fail("out of memory; try a smaller --batch or --tile", 2)
    except Exception as exc:
        if _is_usage_error(exc):  # click's (or typer's vendored click's) usage errors
            if not _usage_reason(exc):  # no arguments at all: the help was printed instead
                sys.exit(2)
            _fail(_usage_line(exc), 2)
        # a bug: still one line, unless debugging
        if os.environ.get("SEMPHASE_DEBUG"):
            raise
        what = f"{exc.__class__.__name__}: {one_line(exc, 1000)}"
        _fail(f"internal error: {what} (SEMPHASE_DEBUG=1 shows details)", 1)
    sys.exit(rv if isinstance(rv, int) else 0)
