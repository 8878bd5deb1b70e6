"""Peak resident memory (RSS) of a child process that segments one micrograph.

Linux's ``ru_maxrss`` (``os.wait4``, ``RUSAGE_CHILDREN``, even the child's own ``RUSAGE_SELF``) is not the
child's peak alone: at ``exec`` the kernel folds the high-water mark of the address space being replaced -
the parent's, copied by fork or shared by vfork - into the new process's ``maxrss``. A child started by a
benchmark process that holds 600 MB (torch, sessions) would report at least 600 MB. So the child reports
its own peak (:func:`own_peak_rss_mb`: ``VmHWM`` of ``/proc/self/status``, which starts afresh at exec),
and :func:`run_child` keeps the rusage value only as a fallback for children that cannot say.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


@dataclass
class ChildRun:
    """Outcome of one child process.

    Attributes
    ----------
    returncode : the child's exit status (negative: killed by that signal, POSIX).
    stdout, stderr : its output, decoded as UTF-8 (errors replaced).
    rusage_peak_mb : peak resident set size from the child's rusage in MiB (on Linux an upper bound that
        includes the parent's size at spawn time, see the module docstring), None where not reported.
    wall_s : seconds from start to exit, as the parent saw them (includes interpreter start-up).
    """

    returncode: int
    stdout: str
    stderr: str
    rusage_peak_mb: float | None
    wall_s: float


def maxrss_to_mb(ru_maxrss: int, platform: str = sys.platform) -> float:
    """Convert ``ru_maxrss`` to MiB: Linux reports kibibytes, macOS bytes."""
    divisor = 1024.0**2 if platform == "darwin" else 1024.0
    return float(ru_maxrss) / divisor


def _windows_peak_mb(handle: int) -> float | None:
    """Peak working set of a Windows process (open or finished but not yet closed) in MiB."""
    try:
        import ctypes
        from ctypes import wintypes

        class _Counters(ctypes.Structure):
            _fields_ = [
                ("cb", wintypes.DWORD),
                ("PageFaultCount", wintypes.DWORD),
                ("PeakWorkingSetSize", ctypes.c_size_t),
                ("WorkingSetSize", ctypes.c_size_t),
                ("QuotaPeakPagedPoolUsage", ctypes.c_size_t),
                ("QuotaPagedPoolUsage", ctypes.c_size_t),
                ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t),
                ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
                ("PagefileUsage", ctypes.c_size_t),
                ("PeakPagefileUsage", ctypes.c_size_t),
            ]

        counters = _Counters()
        counters.cb = ctypes.sizeof(_Counters)
        ok = ctypes.windll.psapi.GetProcessMemoryInfo(handle, ctypes.byref(counters), counters.cb)  # type: ignore[attr-defined]
        return counters.PeakWorkingSetSize / 1024.0**2 if ok else None
    except (AttributeError, OSError, ValueError, TypeError):
        return None


def own_peak_rss_mb() -> tuple[float | None, str]:
    """This process's own peak RSS in MiB and how it was read.

    Returns
    -------
    (MiB or None, source): ``"VmHWM"`` (Linux, the address space's high-water mark since exec),
    ``"ru_maxrss"`` (macOS and other POSIX), ``"PeakWorkingSetSize"`` (Windows), or ``"unknown"``.
    """
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0, "VmHWM"
    except (OSError, ValueError, IndexError):
        pass
    if sys.platform == "win32":
        try:
            import ctypes

            handle = ctypes.windll.kernel32.GetCurrentProcess()  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            return None, "unknown"
        peak = _windows_peak_mb(handle)
        return peak, "PeakWorkingSetSize" if peak is not None else "unknown"
    try:
        import resource

        return maxrss_to_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss), "ru_maxrss"
    except (ImportError, OSError):
        return None, "unknown"


def run_child(
    argv: list[str], env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None
) -> ChildRun:
    """Run ``argv`` to completion and return its exit status, output and peak RSS.

    Output goes to temporary files rather than pipes, so a chatty child can never block on a full pipe
    while the parent waits for it. Ctrl-C in the parent kills the child before re-raising.

    Parameters
    ----------
    argv : the command, e.g. ``[sys.executable, "-m", "semphase.benchmarks.child", ...]``.
    env : environment for the child (None: the parent's).
    cwd : working directory for the child.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=env, cwd=cwd)
        peak: float | None = None
        try:
            if hasattr(os, "wait4"):
                # Reap the child ourselves to get *its* rusage (RUSAGE_CHILDREN would be the maximum over
                # every child this process ever had); tell Popen it is done so it never waits again.
                _, status, usage = os.wait4(process.pid, 0)
                process.returncode = os.waitstatus_to_exitcode(status)
                peak = maxrss_to_mb(usage.ru_maxrss)
            else:
                process.wait()
                # Popen keeps the process handle open until it is collected.
                peak = _windows_peak_mb(int(process._handle))  # type: ignore[attr-defined]
        except BaseException:
            process.kill()
            process.wait()
            raise
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")
    return ChildRun(int(process.returncode), stdout, stderr, peak, wall)
