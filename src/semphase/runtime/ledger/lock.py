"""One writer (a watcher or a batch run) per output folder: an OS-level lock on ``DIR/.semphase-watch.lock``.

The operating system releases the lock when the holding process ends, however it ends (kill -9, power
loss, a crash), so a dead watcher never blocks the next one; the file itself stays and only says who
held it last. POSIX uses ``fcntl.flock``; Windows uses ``msvcrt.locking`` on a byte far past the text, so
the holder's PID and host stay readable while the lock is held.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from datetime import datetime
from pathlib import Path

from semphase.errors import InputError

LOCK_NAME = ".semphase-watch.lock"

# msvcrt locks a byte range; Windows forbids reading a locked range, so the lock sits past the text.
_WINDOWS_LOCK_OFFSET = 1 << 20


class FolderLocked(InputError):
    """Another live watcher holds the output folder; the message names its PID and host."""


class OutputFolderLock:
    """Exclusive, non-blocking lock on an output folder for the lifetime of one watcher.

    Parameters
    ----------
    out_dir : path
        The output folder (created when missing).

    Raises
    ------
    FolderLocked
        On :meth:`acquire` when another process holds the lock.
    InputError
        When the lock file cannot be created.
    """

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.path = Path(out_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> OutputFolderLock:
        """Take the lock and write this process's PID, host and start time into the file."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise InputError(f"cannot create the lock file ({exc.strerror or exc})", self.path) from None
        try:
            locked = _try_lock(fd)
        except OSError as exc:  # e.g. a network file system without lock support
            os.close(fd)
            raise InputError(f"cannot lock ({exc.strerror or exc})", self.path) from None
        if not locked:
            os.close(fd)
            raise FolderLocked(
                f"already watched by {self.holder()}; one watcher per output folder "
                "(stop it, or choose another output folder)",
                self.path.parent,
            )
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(info) + "\n").encode())
            os.fsync(fd)
        except OSError as exc:  # a full disk, a share gone read-only: say which file, hold nothing
            _unlock(fd)
            os.close(fd)
            raise InputError(f"cannot write the lock file ({exc.strerror or exc})", self.path) from None
        self._fd = fd
        return self

    def holder(self) -> str:
        """``PID n on host h since t`` as written by the holder, or a neutral phrase if unreadable."""
        try:
            info = json.loads(self.path.read_text(encoding="utf-8"))
            return f"PID {info['pid']} on host {info['host']} since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another watcher (PID/host not yet written)"

    def release(self) -> None:
        """Unlock and close. The file stays: deleting it could split two watchers onto two inodes."""
        if self._fd is None:
            return
        _unlock(self._fd)
        os.close(self._fd)
        self._fd = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def __enter__(self) -> OutputFolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
