"""Where a model's network runs: onnxruntime (always installed) or OpenVINO (``pip install
'semphase[openvino]'``), both on the very same ONNX file.

A backend is an object with ``run(x: float32 (N, 1, H, W)) -> float32 (N, C, H, W)``, ``name`` and
``version``; :class:`semphase.runtime.model.SegmentationModel` calls it for every batch of tiles, so the
sliding window, the outputs and the self-check are the same whatever runs the network.

OpenVINO compiles for the CPU in its own default precision first: on CPUs with AVX-512 BF16 or AMX that
is bfloat16 for the float layers, about twice as fast as f32 there, and it changes a few pixels of a FP32
model's phases. So a FP32 or FP16 file that OpenVINO runs in a reduced precision must reach the FP16 gate
(:data:`REDUCED_PRECISION_PCT`, 99.9 % of the reference pixels) in its self-check, not just the file's own
requirement; if it does not, it is compiled again with ``INFERENCE_PRECISION_HINT=f32`` and checked again
(the way onnxruntime retries with its precise INT8 kernels), and if that fails too onnxruntime runs the
model. The precision OpenVINO used is recorded with the backend.

``backend="auto"`` (:func:`choose`) picks, among the backends installed and able to run this provider
(OpenVINO only for the CPU), the fastest one whose outputs pass the file's self-check on this machine:
each passing backend runs the model's tile once to warm up and three times timed, and the faster median
wins. The choice is cached per model (sha256), machine (CPU, instruction sets), versions, threads and
streams in ``choices.json`` under :func:`cache_dir`, so it is measured once, not at every start.

Both backends run a model's **streams** (:attr:`semphase.runtime.model.SegmentationModel.streams`): that
many calls at once, each on its share of the threads, instead of one call spread over all of them. An
onnxruntime session then has ``threads / streams`` intra-op threads and is called from several threads at
once (its ``run`` is thread-safe); OpenVINO compiles with ``NUM_STREAMS`` and gives each calling thread
its own infer request. :func:`timed` measures the same way: one call per stream at once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from semphase.errors import InputError, one_line

BACKENDS = ("auto", "onnxruntime", "openvino")
#: What the OpenVINO extra installs (for the one-line message when it is missing).
OPENVINO_EXTRA = "pip install 'semphase[openvino]'"
#: OpenVINO compile options (the precision hint is added for the f32 retry: see the module docstring).
OPENVINO_CONFIG = {"PERFORMANCE_HINT": "LATENCY"}
#: The self-check a FP32 or FP16 file run in a reduced precision (bf16) must pass: the FP16 gate of
#: ``semphase export`` (:class:`semphase.gates.GateThresholds`), the same rule as for reduced precision there.
REDUCED_PRECISION_PCT = 99.9
#: Part of every cached choice's key: a new way of choosing (another precision policy) measures again.
CHOICE_FORMAT = 2
#: timed runs per backend when ``auto`` measures (after one warm-up run)
TIMED_RUNS = 3


class OnnxRuntimeBackend:
    """An onnxruntime session (:func:`semphase.runtime.session.create_session`)."""

    name = "onnxruntime"
    precision = "as stored"  # onnxruntime computes each layer in the file's own type

    def __init__(self, session) -> None:
        import onnxruntime

        self.session = session
        self.version = onnxruntime.__version__
        self._input = session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {self._input: x})
        return np.asarray(out, dtype=np.float32)


class OpenVinoBackend:
    """The same ONNX graph compiled by OpenVINO for the CPU; thread-safe (one infer request per thread).

    Raises
    ------
    InputError
        when OpenVINO is not installed (naming the extra) or cannot compile the file.
    """

    name = "openvino"

    def __init__(
        self,
        source: str | os.PathLike | bytes,
        threads: int | None,
        path: Path,
        f32: bool = False,
        streams: int = 1,
    ) -> None:
        ov = import_openvino()
        self.version = ov.__version__.split("-")[0]
        config = dict(OPENVINO_CONFIG)
        if f32:
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if streams > 1:  # ``threads`` is then each stream's share, as for onnxruntime
            config.update(PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=int(streams))
            if threads is not None:
                config["INFERENCE_NUM_THREADS"] = int(threads) * int(streams)
        elif threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            core = ov.Core()
            graph = core.read_model(source if isinstance(source, bytes) else os.fspath(source))
            self.compiled = core.compile_model(graph, "CPU", config)
        except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses
            raise InputError(f"OpenVINO cannot compile the model ({one_line(exc, 200)})", path) from None
        #: the precision OpenVINO runs the float layers in (``f32``, ``bf16``, ``f16``)
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self._local = threading.local()

    def run(self, x: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer({0: x})
        return np.array(result[0], dtype=np.float32)  # a copy: the request reuses its output buffer


def import_openvino():
    """The ``openvino`` module, or an InputError saying how to install it."""
    try:
        import openvino
    except ImportError:
        raise InputError(f"the OpenVINO backend needs OpenVINO: {OPENVINO_EXTRA}") from None
    return openvino


def openvino_installed() -> bool:
    """True when ``import openvino`` would work (without importing it)."""
    from importlib.util import find_spec

    return find_spec("openvino") is not None


def openvino_version() -> str | None:
    """OpenVINO's version when installed (read from its distribution, without importing it)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openvino")
    except PackageNotFoundError:
        return None


def cache_dir() -> Path:
    """Where measured choices are kept: ``$SEMPHASE_CACHE_DIR``, else ``%LOCALAPPDATA%\\semphase`` on
    Windows, ``$XDG_CACHE_HOME/semphase`` or ``~/.cache/semphase`` elsewhere."""
    if os.environ.get("SEMPHASE_CACHE_DIR"):
        return Path(os.environ["SEMPHASE_CACHE_DIR"])
    if sys.platform == "win32" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "semphase"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "semphase"


@contextlib.contextmanager
def at_once(run: Callable[[np.ndarray], np.ndarray], streams: int) -> Iterator[Callable[[np.ndarray], None]]:
    """``once(x)``: ``streams`` calls of ``run(x)`` at once, one per thread, as the sliding window runs a
    model's streams (just ``run(x)`` for one stream); the threads live as long as the ``with`` block."""
    if streams < 2:
        yield run
        return
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=streams, thread_name_prefix="semphase-time"
    ) as pool:

        def once(x: np.ndarray) -> None:
            for future in [pool.submit(run, x) for _ in range(streams)]:
                future.result()

        yield once


def timed(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, streams: int = 1) -> float:
    """Median seconds of :data:`TIMED_RUNS` rounds of ``run(x)`` after one warm-up round, divided by
    ``streams``: a round is ``streams`` calls at once (:func:`at_once`)."""
    with at_once(run, streams) as once:
        once(x)
        seconds = []
        for _ in range(TIMED_RUNS):
            start = time.perf_counter()
            once(x)
            seconds.append(time.perf_counter() - start)
    return float(np.median(seconds)) / max(streams, 1)


class ChoiceCache:
    """``choices.json``: the backend ``auto`` chose, per model, machine, versions and threads."""

    def __init__(self, folder: Path | None = None) -> None:
        self.path = (folder or cache_dir()) / "choices.json"

    def _read(self) -> dict:
        try:
            value = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return value if isinstance(value, dict) else {}

    def get(self, key: str) -> dict | None:
        entry = self._read().get(key)
        return entry if isinstance(entry, dict) and entry.get("backend") in BACKENDS[1:] else None

    def put(self, key: str, entry: dict) -> None:
        """Record ``entry``; a cache that cannot be written (read-only home) is left alone: the choice is
        measured again next time, nothing else changes."""
        from semphase.imageio import write_text_atomic

        document = self._read()
        document[key] = entry
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.path, json.dumps(document, indent=1, sort_keys=True) + "\n")
        except (OSError, InputError):
            pass


def choice_key(sha256: str, threads: int | None, variant: str, streams: int = 1) -> str:
    """What a measured choice depends on: the model, the CPU and its instruction sets, both backends'
    versions, the threads and streams."""
    import onnxruntime

    from semphase.machine import cpu_summary

    cpu = cpu_summary()
    isa = ",".join(sorted(k for k, v in cpu["instruction_sets"].items() if v))
    parts = [f"v{CHOICE_FORMAT}", sha256, variant, cpu["cpu"], isa, onnxruntime.__version__]
    parts.append(openvino_version() or "-")
    return "|".join([*parts, str(threads)] + ([f"streams={streams}"] if streams > 1 else []))
