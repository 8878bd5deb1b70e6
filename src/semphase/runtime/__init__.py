"""semphase.runtime: segment micrographs of any size with an exported model, on onnxruntime alone.

The public API (torch-free)::

    from semphase.runtime import load_model, segment_file, segment_array, SegmentOptions

- :func:`load_model` opens a semphase ONNX file and checks it on this CPU (its self-check);
- :func:`segment_file` segments one micrograph file and writes its mask, overlay and phase table;
- :func:`segment_array` segments a uint8 image in memory and returns its labels;
- :class:`SegmentOptions` holds tiling, blending, data bar, normalization and extra outputs;
- :func:`segment_many` segments a batch (files, folders, globs, or an :class:`Inbox` to watch) into an
  output folder with an executor (:class:`InProcess`, or Dask's); the engine under ``segment``,
  ``segment --cluster``, ``watch`` and ``serve``;
- :func:`expand_inputs` turns files, folders and globs into the micrographs to segment;
- :class:`Watcher` is the watch-folder service behind ``semphase watch``.

Names are imported on first use, so ``import semphase.runtime.tiling`` stays as light as the module.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "load_model": "semphase.runtime.model",
    "SegmentationModel": "semphase.runtime.model",
    "segment_file": "semphase.runtime.segment",
    "SegmentOptions": "semphase.runtime.segment",
    "segment_array": "semphase.runtime.sliding",
    "expand_inputs": "semphase.runtime.inputs",
    "segment_many": "semphase.runtime.run",
    "InProcess": "semphase.runtime.run",
    "Inbox": "semphase.runtime.run",
    "Watcher": "semphase.runtime.watch",
}

__all__ = [
    "InProcess",
    "Inbox",
    "SegmentOptions",
    "SegmentationModel",
    "Watcher",
    "expand_inputs",
    "load_model",
    "segment_array",
    "segment_file",
    "segment_many",
]

if TYPE_CHECKING:
    from semphase.runtime.inputs import expand_inputs
    from semphase.runtime.model import SegmentationModel, load_model
    from semphase.runtime.run import Inbox, InProcess, segment_many
    from semphase.runtime.segment import SegmentOptions, segment_file
    from semphase.runtime.sliding import segment_array
    from semphase.runtime.watch import Watcher


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'semphase.runtime' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
