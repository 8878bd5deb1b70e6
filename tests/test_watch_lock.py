"""One watcher per output folder: a live holder refuses others by name; a dead one blocks nobody."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from semphase.errors import InputError
from semphase.runtime.ledger.lock import LOCK_NAME, FolderLocked, OutputFolderLock

HOLDER = """
import sys, time
from semphase.errors import InputError
from semphase.runtime.ledger.lock import OutputFolderLock
lock = OutputFolderLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_lock_held_by_another_process_refuses_then_frees_when_that_process_is_killed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLocked) as info:
            OutputFolderLock(tmp_path).acquire()
        message = str(info.value)
        assert f"PID {holder.pid} on host" in message and str(tmp_path) in message
        assert "\n" not in message
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
    # the dead holder's file is still there, naming it, but the OS released its lock
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid
    deadline = time.monotonic() + 5
    with OutputFolderLock(tmp_path) as lock:
        assert lock.held and time.monotonic() < deadline
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_release_lets_the_next_watcher_in_and_keeps_the_file(tmp_path):
    first = OutputFolderLock(tmp_path).acquire()
    first.release()
    assert not first.held and (tmp_path / LOCK_NAME).exists()
    with OutputFolderLock(tmp_path) as second:
        assert second.held


def test_unusable_lock_location_is_one_line_input_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError) as info:
        OutputFolderLock(blocker / "out").acquire()
    assert "lock" in str(info.value) and "\n" not in str(info.value)


def test_a_full_disk_while_writing_the_lock_names_the_lock_file_and_holds_nothing(tmp_path, monkeypatch):
    import errno

    import semphase.runtime.ledger.lock as watch_lock

    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(watch_lock.os, "write", full)
    with pytest.raises(InputError) as info:
        OutputFolderLock(tmp_path).acquire()
    assert str(info.value) == f"{tmp_path / LOCK_NAME}: cannot write the lock file (No space left on device)"
    monkeypatch.setattr(watch_lock.os, "write", real_write)
    lock = OutputFolderLock(tmp_path).acquire()  # nothing was left locked
    assert lock.held
    lock.release()
