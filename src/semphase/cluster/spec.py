"""What ``--cluster`` names: a LocalCluster on this PC, or the address of a running Dask scheduler."""

from __future__ import annotations

import re
from dataclasses import dataclass

from semphase.errors import OptionError
from semphase.machine import share_cores

#: Address schemes of a Dask scheduler semphase connects to.
SCHEMES = ("tcp", "tls")


@dataclass(frozen=True)
class ClusterSpec:
    """``local`` with ``workers`` processes, or ``address`` of an existing scheduler."""

    text: str
    workers: int | None = None
    address: str | None = None

    @property
    def is_local(self) -> bool:
        return self.address is None


def default_local_workers(cores: int | None = None) -> int:
    """Worker processes for a bare ``local``: one per two cores (at least one), so that each worker's
    onnxruntime gets two threads: one process per core pays the model's memory per core for little more
    throughput on small machines. Physical cores, as everywhere (:func:`semphase.machine.share_cores`)."""
    return share_cores(2, cores)


def parse_cluster(text: str) -> ClusterSpec:
    """``local``, ``local:N`` or ``tcp://HOST:PORT`` (``tls://`` too).

    Raises
    ------
    OptionError
        for anything else, before any file is touched.
    """
    value = (text or "").strip()
    if value == "local":
        return ClusterSpec(value, workers=default_local_workers())
    match = re.fullmatch(r"local:(\d+)", value)
    if match:
        workers = int(match.group(1))
        if not 1 <= workers <= 256:
            raise OptionError(f"--cluster local:N needs 1 <= N <= 256, got {workers}")
        return ClusterSpec(value, workers=workers)
    match = re.fullmatch(r"(\w+)://([^/\s:]+|\[[0-9a-fA-F:]+\]):(\d+)", value)
    if match and match.group(1) in SCHEMES and 0 < int(match.group(3)) < 65536:
        return ClusterSpec(value, address=value)
    raise OptionError(
        f"--cluster {text!r}: use local, local:N (N worker processes on this PC) or the scheduler's "
        "address, tcp://HOST:PORT"
    )


def threads_per_worker(workers_on_host: int, cores: int | None = None) -> int:
    """onnxruntime threads for each of ``workers_on_host`` worker processes sharing a machine's physical
    cores: workers x threads = cores (at least one thread each)."""
    return share_cores(workers_on_host, cores)
