"""The labelling side of ``semphase serve --project DIR``: what the label view calls (no web framework).

It joins a :class:`semphase.serve.project.Project` (files, versions, merges) to the service's model: the
model's prediction and uncertainty of each micrograph (segmented once per model with the same runtime as
``semphase segment --uncertainty``, kept in the project's state folder and made again when the micrograph
or the model changes), the tiles of every layer (:mod:`semphase.serve.tiles`), and saves whose ``accept``
strokes take the model's phases.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np

from semphase.errors import InputError
from semphase.imageio import read_gray, read_raw, to_uint8, write_text_atomic
from semphase.runtime.ledger.files import file_signature
from semphase.serve.project import Entry, Project, Saved
from semphase.serve.strokes import Stroke
from semphase.serve.tiles import LAYERS, PyramidCache, class_lut, encode_png, level_count, uncertainty_rgba


class NoPrediction(InputError):
    """The model has not segmented this micrograph yet (the page asks for it first)."""


class Labelling:
    """The project and the model's view of it.

    Parameters
    ----------
    project : the open project.
    service : the :class:`semphase.serve.service.Service` whose model predicts and whose inference threads
        run the predictions.
    cache_bytes : memory for tile pyramids (least recently used dropped beyond it).
    """

    def __init__(self, project: Project, service, cache_bytes: int = 1 << 30) -> None:
        self.project = project
        self.service = service
        self.cache = PyramidCache(cache_bytes)
        self._predicting: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @property
    def model(self):
        return self.service.model

    def _pred_paths(self, name: str, sha256: str | None = None) -> tuple[Path, Path, Path]:
        """The prediction files of ``name`` by the model with ``sha256`` (default: the one served now)."""
        folder = self.project.prediction_dir(sha256 or self.model.sha256)
        return folder / f"{name}.mask.png", folder / f"{name}.uncertainty.png", folder / f"{name}.json"

    # --------------------------------------------------------------------------------- predictions

    def prediction_ready(self, entry: Entry) -> bool:
        mask, unc, stamp = self._pred_paths(entry.name)
        try:
            recorded = json.loads(stamp.read_text(encoding="utf-8")).get("signature")
        except (OSError, ValueError, AttributeError):
            return False
        return mask.is_file() and unc.is_file() and recorded == list(file_signature(entry.path) or ())

    def predict(self, name: str) -> dict:
        """Segment ``name`` with the model (once per micrograph and model; a second call waits for the
        first) and return its phase table document. Runs on the calling thread."""
        entry = self.project.entry(name)
        with self._lock:
            waiting = self._predicting.get(name)
            if waiting is None:
                self._predicting[name] = threading.Event()
        if waiting is not None:
            waiting.wait()
            return self._document(entry)
        try:
            if not self.prediction_ready(entry):
                self._segment(entry)
            return self._document(entry)
        finally:
            with self._lock:
                self._predicting.pop(name).set()

    def _segment(self, entry: Entry) -> None:
        executor = self.service.executor  # one model for the whole prediction, even if another is swapped in
        sha256 = executor.model.sha256
        folder = self.project.prediction_dir(sha256)
        folder.mkdir(parents=True, exist_ok=True)
        signature = file_signature(entry.path)
        options = replace(self.service.options, uncertainty=True, format="png")
        scratch = Path(tempfile.mkdtemp(prefix=".predict-", dir=folder))
        try:
            result = executor.segment(entry.path, scratch, options, stem="p")
            mask, unc, stamp = self._pred_paths(entry.name, sha256)
            outputs = result["outputs"]
            shutil.move(outputs["uncertainty"], unc)
            shutil.move(outputs["mask"], mask)
            document = {k: v for k, v in result.items() if k != "outputs"}
            document["signature"] = list(signature or ())
            write_text_atomic(stamp, json.dumps(document))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.cache.drop(lambda key: key[1] == entry.name and key[0] in ("prediction", "uncertainty"))

    def _document(self, entry: Entry) -> dict:
        stamp = self._pred_paths(entry.name)[2]
        document = json.loads(stamp.read_text(encoding="utf-8"))
        return {
            "phases": document.get("phases"),
            "uncertainty": document.get("uncertainty"),
            "seconds": document.get("seconds"),
        }

    def prediction(self, name: str) -> np.ndarray:
        """The model's phases of ``name`` (uint8 class ids, 255 where none); NoPrediction before
        :meth:`predict`."""
        entry = self.project.entry(name)
        if not self.prediction_ready(entry):
            raise NoPrediction("the model has not segmented this micrograph yet", name)
        return read_raw(self._pred_paths(name)[0])

    # --------------------------------------------------------------------------------------- tiles

    def levels(self, entry: Entry) -> int:
        return level_count(entry.height, entry.width)

    def tile(self, name: str, layer: str, level: int, col: int, row: int) -> bytes | None:
        """PNG bytes of one tile (None outside the image); NoPrediction for the model's layers before
        :meth:`predict`."""
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}")
        entry = self.project.entry(name)
        signature = tuple(file_signature(entry.path) or ())
        if layer == "image":
            key = ("image", name, signature)
            pyramid = self.cache.get(key, lambda: to_uint8(read_gray(entry.path)), categorical=False)
        elif layer == "labels":
            version = self.project.current_version(name)
            key = ("labels", name, version, signature)
            pyramid = self.cache.get(
                key, lambda: self.project.version_labels(entry, version), categorical=True
            )
        else:
            if not self.prediction_ready(entry):
                raise NoPrediction("the model has not segmented this micrograph yet", name)
            key = (layer, name, self.model.sha256, signature)
            path = self._pred_paths(name)[0 if layer == "prediction" else 1]
            pyramid = self.cache.get(key, lambda: read_raw(path), categorical=layer == "prediction")
        pixels = pyramid.tile(level, col, row)
        if pixels is None:
            return None
        if layer in ("prediction", "labels"):
            pixels = class_lut(self.model.colors)[pixels]
        elif layer == "uncertainty":
            pixels = uncertainty_rgba(pixels)
        return encode_png(pixels)

    # --------------------------------------------------------------------------------------- saves

    def save(self, name: str, base: int, strokes: list[Stroke], client: str | None = None) -> Saved:
        """Save strokes made on version ``base`` (``accept`` strokes take the model's prediction)."""
        return self.project.save_strokes(
            name, base, strokes, prediction=lambda: self.prediction(name), client=client
        )

    def describe(self, name: str) -> dict:
        """What the page needs to open ``name``: size, levels, version, history, prediction state."""
        entry = self.project.entry(name)
        version = self.project.current_version(name)
        return {
            "name": name,
            "file": entry.path.name,
            "width": entry.width,
            "height": entry.height,
            "tile": 256,
            "levels": self.levels(entry),
            "version": version,
            "history": self.project.history(name),
            "prediction": self.prediction_ready(entry),
        }
