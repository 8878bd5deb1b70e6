"""What machine a benchmark ran on: CPU, cores, memory, INT8-relevant instruction sets, OS, library versions.

Linux is read from ``/proc/cpuinfo`` and ``/proc/meminfo``; macOS from ``sysctl``; Windows and anything
else from the :mod:`platform` module (and numpy's own CPU feature detection for AVX-512 VNNI). What cannot
be found out is recorded as ``None`` ("unknown"), never guessed as absent.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys

#: CPU flags (Linux /proc/cpuinfo spelling) that decide how fast INT8 (and BF16) kernels can be.
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")

#: numpy's ``__cpu_features__`` names for the flags it detects itself (any OS).
_NUMPY_FEATURES = {"avx2": "AVX2", "avx512f": "AVX512F", "avx512_vnni": "AVX512VNNI"}


def parse_cpuinfo(text: str) -> dict:
    """Read the CPU model, core counts and flags out of Linux ``/proc/cpuinfo`` text.

    Parameters
    ----------
    text : the file's contents (x86 ``model name``/``flags``, or ARM ``Processor``/``Features`` style).

    Returns
    -------
    dict with ``cpu`` (str or None), ``logical_cpus`` (int or None: number of ``processor`` entries),
    ``physical_cores`` (int or None: distinct (physical id, core id) pairs), ``flags`` (set of str).
    """
    model = None
    processors = 0
    cores: set[tuple[str, str]] = set()
    flags: set[str] = set()
    physical_id = "0"
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            processors += 1
            physical_id = "0"
        elif key in ("model name", "cpu model", "hardware") and model is None and value:
            model = value
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            cores.add((physical_id, value))
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return {
        "cpu": model,
        "logical_cpus": processors or None,
        "physical_cores": len(cores) or None,
        "flags": flags,
    }


def parse_meminfo(text: str) -> int | None:
    """Total memory in bytes from Linux ``/proc/meminfo`` text (its ``MemTotal`` line), or None."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                unit = parts[2].lower() if len(parts) > 2 else "kb"
                return int(parts[1]) * (1024 if unit == "kb" else 1)
    return None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def _sysctl(name: str) -> str | None:
    try:
        done = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def _windows_memory() -> int | None:
    try:
        import ctypes

        class _Status(ctypes.Structure):
            _fields_ = [
                ("dwLength", ctypes.c_ulong),
                ("dwMemoryLoad", ctypes.c_ulong),
                ("ullTotalPhys", ctypes.c_ulonglong),
                ("ullAvailPhys", ctypes.c_ulonglong),
                ("ullTotalPageFile", ctypes.c_ulonglong),
                ("ullAvailPageFile", ctypes.c_ulonglong),
                ("ullTotalVirtual", ctypes.c_ulonglong),
                ("ullAvailVirtual", ctypes.c_ulonglong),
                ("ullAvailExtendedVirtual", ctypes.c_ulonglong),
            ]

        status = _Status()
        status.dwLength = ctypes.sizeof(_Status)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
            return int(status.ullTotalPhys)
    except (AttributeError, OSError, ValueError):
        pass
    return None


def count_processor_records(data: bytes) -> int:
    """Records in a ``GetLogicalProcessorInformationEx`` buffer: each starts with two little-endian DWORDs,
    its relationship and its size in bytes; asked for ``RelationProcessorCore``, one record per physical
    core (hyper-threads of a core share it)."""
    count = offset = 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset + 4 : offset + 8], "little")
        if size < 8 or offset + size > len(data):
            break
        count += 1
        offset += size
    return count


def _windows_physical_cores() -> int | None:
    """Physical cores from Windows' ``GetLogicalProcessorInformationEx`` (None if it cannot say)."""
    try:
        import ctypes

        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        relation_processor_core = 0
        length = ctypes.c_ulong(0)
        kernel32.GetLogicalProcessorInformationEx(relation_processor_core, None, ctypes.byref(length))
        if not length.value:
            return None
        buffer = ctypes.create_string_buffer(length.value)
        if not kernel32.GetLogicalProcessorInformationEx(
            relation_processor_core, buffer, ctypes.byref(length)
        ):
            return None
        return count_processor_records(buffer.raw[: length.value]) or None
    except (AttributeError, OSError, ValueError):
        return None


def numpy_cpu_features() -> dict[str, bool]:
    """numpy's runtime CPU feature detection (works on every OS); empty when this numpy hides it."""
    for module in ("numpy._core._multiarray_umath", "numpy.core._multiarray_umath"):
        try:
            features = __import__(module, fromlist=["__cpu_features__"]).__cpu_features__
        except (ImportError, AttributeError):
            continue
        return {str(k): bool(v) for k, v in features.items()}
    return {}


def instruction_sets(flags: set[str] | None, numpy_features: dict[str, bool]) -> dict[str, bool | None]:
    """True/False per :data:`INT8_FLAGS` entry; None where neither numpy nor the OS flags can tell.

    numpy's answer wins where it has one: like onnxruntime, it asks CPUID and the OS's register support in
    this process, which is what picks the INT8 kernels (under an emulator such as QEMU user mode the OS's
    flag list describes the host instead). The OS flags answer the rest (AMX, AVX-VNNI).

    Parameters
    ----------
    flags : the OS's CPU flag list (Linux), or None when the OS does not publish one.
    numpy_features : from :func:`numpy_cpu_features`.
    """
    out: dict[str, bool | None] = {}
    for flag in INT8_FLAGS:
        if _NUMPY_FEATURES.get(flag) in numpy_features:
            out[flag] = numpy_features[_NUMPY_FEATURES[flag]]
        elif flags:
            out[flag] = flag in flags
        else:
            out[flag] = None
    return out


def _version(module: str) -> str | None:
    try:
        return getattr(__import__(module), "__version__", None)
    except ImportError:
        return None


def _probe_os() -> dict:
    """CPU model, core counts, memory and CPU flags as the OS publishes them (None where it does not)."""
    cpu = None
    logical = None
    physical = None
    memory = None
    flags: set[str] | None = None
    system = platform.system()
    if system == "Linux":
        text = _read("/proc/cpuinfo")
        if text:
            parsed = parse_cpuinfo(text)
            cpu, physical, flags = parsed["cpu"], parsed["physical_cores"], parsed["flags"] or None
            logical = parsed["logical_cpus"]
        meminfo = _read("/proc/meminfo")
        memory = parse_meminfo(meminfo) if meminfo else None
    elif system == "Darwin":
        cpu = _sysctl("machdep.cpu.brand_string")
        cores = _sysctl("hw.physicalcpu")
        physical = int(cores) if cores and cores.isdigit() else None
        size = _sysctl("hw.memsize")
        memory = int(size) if size and size.isdigit() else None
        features = " ".join(
            filter(None, (_sysctl("machdep.cpu.features"), _sysctl("machdep.cpu.leaf7_features")))
        )
        flags = {f.lower().replace("avx512vnni", "avx512_vnni") for f in features.split()} or None
    elif system == "Windows":
        memory = _windows_memory()
        physical = _windows_physical_cores()
    cpu = cpu or platform.processor() or platform.machine() or None
    return {"cpu": cpu, "logical_cpus": logical, "physical_cores": physical, "memory": memory, "flags": flags}


@functools.lru_cache(maxsize=1)
def cpu_summary() -> dict:
    """This CPU's model name and INT8-relevant instruction sets, cheaply (cached for the process).

    Returns
    -------
    ``{"cpu": str or None, "instruction_sets": {flag: bool or None}}`` (see :func:`instruction_sets`):
    what a model's self-check and every result record about the machine that made it.
    """
    probe = _probe_os()
    return {"cpu": probe["cpu"], "instruction_sets": instruction_sets(probe["flags"], numpy_cpu_features())}


@functools.lru_cache(maxsize=1)
def physical_cores() -> int:
    """This machine's physical cores where the OS says (hyper-threads not counted), else its logical
    CPUs, at least 1: what onnxruntime gives one thread each when nobody says otherwise."""
    return max(1, _probe_os()["physical_cores"] or os.cpu_count() or 1)


def share_cores(parts: int, cores: int | None = None) -> int:
    """Threads for each of ``parts`` processes (serve's workers, a host's cluster workers) sharing this
    machine's physical cores (``cores`` to override): parts x threads = cores, at least one thread each.
    Hyper-threads are not counted, as for segment's own default: two threads on one core compete for its
    vector units."""
    return max(1, (cores or physical_cores()) // max(1, parts))


def isa_text(instruction_sets: dict[str, bool | None]) -> str:
    """``"avx2, avx512_vnni"``: the instruction sets present, or ``"unknown instruction sets"``."""
    present = [flag for flag, on in instruction_sets.items() if on]
    if present:
        return ", ".join(present)
    return "no AVX2" if any(on is False for on in instruction_sets.values()) else "unknown instruction sets"


def machine_info(threads: int | None = None, provider: str | None = None) -> dict:
    """Describe this machine and the software stack.

    Parameters
    ----------
    threads : CPU threads the benchmark used (recorded as given).
    provider : execution provider asked for (recorded as given).

    Returns
    -------
    JSON-serializable dict: ``cpu``, ``logical_cpus``, ``physical_cores``, ``memory_gb``,
    ``instruction_sets`` (:data:`INT8_FLAGS` -> bool or None), ``os``, ``python``, ``versions`` (onnxruntime,
    numpy, semphase; torch only when it is already imported), ``available_providers``, ``threads``,
    ``provider``, ``load_average`` (1, 5, 15 minutes, where the OS reports it: other work on the machine
    slows every number down).
    """
    import numpy

    import semphase

    probe = _probe_os()
    cpu, physical, memory, flags = probe["cpu"], probe["physical_cores"], probe["memory"], probe["flags"]
    logical = os.cpu_count() or probe["logical_cpus"]
    versions = {
        "onnxruntime": _version("onnxruntime"),
        "numpy": numpy.__version__,
        "semphase": semphase.__version__,
    }
    if "torch" in sys.modules:  # only reported, never imported here: inference stays torch-free
        versions["torch"] = getattr(sys.modules["torch"], "__version__", None)
    try:
        import onnxruntime

        available = list(onnxruntime.get_available_providers())
    except ImportError:
        available = []
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # Windows
        load = None
    return {
        "cpu": cpu,
        "logical_cpus": logical,
        "physical_cores": physical,
        "memory_gb": None if memory is None else round(memory / 1024**3, 1),
        "instruction_sets": instruction_sets(flags, numpy_cpu_features()),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "available_providers": available,
        "threads": threads,
        "provider": provider,
        "load_average": load,
    }
