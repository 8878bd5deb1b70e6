"""The one way semphase opens an onnxruntime session: runtime, export checks and benchmarks alike.

Torch-free. Whatever opens a model gets the same settings, so export validates (and benchmarks measure)
sessions configured like the ones that segment: ``threads`` intra-op threads with one inter-op thread,
every graph optimization (onnxruntime's default), onnxruntime's own warnings silenced (they would bury
the one line that matters), plus any session configuration entries.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import onnxruntime as ort

#: Session configuration entry that stops idle worker threads from busy-waiting: for sessions that
#: alternate with torch on a small machine (spinning threads would steal the CPU from it).
NO_SPINNING = {"session.intra_op.allow_spinning": "0"}


def create_session(
    model: str | os.PathLike | bytes,
    *,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    threads: int | None = None,
    config: Mapping[str, str] | None = None,
) -> ort.InferenceSession:
    """An onnxruntime session for a model file or a serialized graph still in memory.

    Parameters
    ----------
    model : path of an .onnx file, or its bytes.
    providers : execution providers in order of preference.
    threads : intra-op threads (None: onnxruntime's choice, one per core).
    config : session configuration entries (e.g. :data:`NO_SPINNING`, ``session.x64quantprecision``).

    Raises whatever onnxruntime raises for a file it cannot load; callers name the file.
    """
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, sess_options=options, providers=list(providers))
