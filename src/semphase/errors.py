"""The exception types that reach users, and how anything is said in one line.

Every problem caused by the user's input (a missing, empty, corrupt or unexpected file, a wrong shape,
an unwritable folder) is raised as :class:`InputError` with a one-line reason and the file it concerns.
The CLI prints ``path: reason`` and exits with code 2; library callers catch it like any other exception
and read :attr:`InputError.path` and :attr:`InputError.reason` separately.
"""

from __future__ import annotations

import os


def display_path(path: str | bytes | os.PathLike) -> str:
    """A file name as it can be printed and written to a text file, whatever bytes it holds.

    Bytes that are not valid UTF-8 (Linux file names from old Windows shares or acquisition PCs) become
    ``\\xNN``; control characters (a newline, an ANSI escape) become ``\\xNN`` too, so a name never breaks
    a one-line message or styles a terminal. Valid names are returned unchanged.
    """
    name = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    if name.isprintable():
        return name
    readable = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in readable)


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line of at most ``limit`` characters (its type when it has none)."""
    text = " ".join(str(exc).split()) or exc.__class__.__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InputError(Exception):
    """Bad input or an unusable output location: a one-line ``reason`` about the file at ``path``."""

    exit_code = 2

    def __init__(self, reason: str, path: str | bytes | os.PathLike | None = None) -> None:
        #: What is wrong, one line, without the file name.
        self.reason = " ".join(str(reason).split())
        #: The file or folder concerned (as given, undecodable bytes and all), or None.
        self.path = None if path is None else os.fsdecode(path)
        super().__init__(self.reason if path is None else f"{display_path(path)}: {self.reason}")

    def said_of(self, path: str | os.PathLike) -> str:
        """The reason alone when this error is about ``path`` (a caller that names it already), else all of
        the message (it names another file)."""
        same = self.path is not None and os.path.abspath(self.path) == os.path.abspath(os.fsdecode(path))
        return self.reason if same else str(self)


class OptionError(InputError, ValueError):
    """A setting no run could use (``tile=100`` for a model whose sides are multiples of 32): found once,
    before any file is touched. A ValueError too, as any bad argument value is in Python.

    The library says which argument it is about: ``OptionError("must be >= 1, got 0", argument="batch")``
    reads ``batch must be >= 1, got 0``, and a front end calls that argument by its own name with
    :meth:`naming`. The CLI says its flag instead (``--batch must be >= 1, got 0``) in the same one-line form
    as click's usage errors: ``error: <reason> (see 'semphase CMD --help')``, exit code 2. Without
    ``argument`` the reason is the whole message, printed as it is.
    """

    def __init__(
        self, reason: str, path: str | bytes | os.PathLike | None = None, *, argument: str | None = None
    ) -> None:
        #: The argument (or option field) the reason is about, e.g. ``"tile"``; None when it names none.
        self.argument = argument
        self._requirement = " ".join(str(reason).split())
        super().__init__(reason if argument is None else f"{argument} {self._requirement}", path)

    def naming(self, name: str) -> str:
        """The message with the argument called ``name`` (the CLI's ``--tile`` for ``tile``); the message
        as it is when it names no argument."""
        if self.argument is None:
            return str(self)
        message = f"{name} {self._requirement}"
        return message if self.path is None else f"{display_path(self.path)}: {message}"


class GateFailed(Exception):
    """A validation gate (e.g. export parity) failed: results are kept, the exit code is 1."""

    exit_code = 1


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: ``path: reason``."""
    reason = exc.strerror or exc.__class__.__name__
    name = exc.filename if exc.filename is not None else ""
    return f"{display_path(name)}: {reason}" if name else reason
