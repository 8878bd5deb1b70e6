"""The one exception type that reaches users.

Every problem caused by the user's input (a missing, empty, corrupt or unexpected file, a wrong shape,
an unwritable folder) is raised as :class:`InputError` with a one-line message that names the file. The
CLI prints that line and exits with code 2; library callers catch it like any other exception.
"""

from __future__ import annotations

import os


class InputError(Exception):
    """Bad input or an unusable output location; the message is one line and names the file."""

    exit_code = 2

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        if path is not None:
            message = f"{os.fspath(path)}: {message}"
        super().__init__(" ".join(str(message).split()))
        self.path = None if path is None else os.fspath(path)


class OptionError(InputError):
    """An option value no run could use (``--tile 100``): found once, before any file is touched.

    The CLI prints it in the same one-line form as click's usage errors: ``error: <reason> (see
    'semphase CMD --help')``, exit code 2.
    """


class GateFailed(Exception):
    """A validation gate (e.g. export parity) failed: results are kept, the exit code is 1."""

    exit_code = 1


def describe_os_error(exc: OSError) -> str:
    """One line for an OSError: ``path: reason``."""
    reason = exc.strerror or exc.__class__.__name__
    name = exc.filename if exc.filename is not None else ""
    return f"{name}: {reason}" if name else reason
