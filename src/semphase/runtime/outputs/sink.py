"""Where finalized bands go: label them, count phases, paint the overlay, stream every output file.

:class:`OutputSink` does the per-band work; :class:`BackgroundSink` runs it on a second thread so that
labelling, painting and deflate-compressing one band overlap with the model computing the next (zlib,
numpy and onnxruntime all release the GIL). The queue between them holds one band (the writer is faster
than the model, so a deeper queue only held more memory: a band of a 65536-pixel-wide montage is 30 MB
of labels and as much of micrograph), so the pipeline adds two bands of memory, not an image.
"""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

import numpy as np

from semphase.phases import IGNORE
from semphase.rowwriters import PngRowWriter, TiffPlaneWriter
from semphase.runtime.outputs.overlay import OverlayPainter
from semphase.runtime.outputs.tables import count_labels
from semphase.runtime.sliding import Band, normalized_entropy, softmax

#: A pixel counts as uncertain when the normalized entropy of its class probabilities exceeds this.
UNCERTAIN_ENTROPY = 0.5


#: Output file formats: PNG (and a float16 TIFF for probabilities), or pyramidal OME-TIFF for montages.
FORMATS = ("png", "ome-tiff")
#: Tile size of the OME-TIFF outputs.
OME_TILE = 256


class OutputSink:
    """Streams one micrograph's outputs band by band.

    Parameters
    ----------
    targets : final paths by kind: ``mask``, ``overlay`` and optionally ``uncertainty``, ``probs``.
    width, height : the micrograph's size (the outputs have it).
    classes, colors : the model's class names and colours.
    alpha : overlay colour weight.
    source_name : recorded in the probability TIFF's description.
    fmt : ``"png"``: palette/gray PNGs and a float16 TIFF of probabilities; ``"ome-tiff"``: tiled,
        compressed, pyramidal OME-TIFFs (mask with the class names and colours, RGB overlay, entropy and
        probabilities as uint8, value / 255) that QuPath, napari and Fiji open at any zoom.
    pixel_size_um : recorded as the OME-TIFFs' physical pixel size.
    """

    def __init__(
        self,
        targets: dict[str, Path],
        width: int,
        height: int,
        classes,
        colors,
        alpha: float,
        source_name,
        fmt: str = "png",
        pixel_size_um: float | None = None,
    ):
        if fmt not in FORMATS:
            raise ValueError(f"output format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.width, self.height = int(width), int(height)
        self.fmt = fmt
        self.num_classes = len(classes)
        self.counts = np.zeros(self.num_classes, np.int64)
        self.uncertain = 0
        self.writers: dict = {}
        try:
            self.painter = OverlayPainter(classes, colors, width, height, alpha)
            if fmt == "png":
                self._png_writers(targets, classes, source_name)
            else:
                self._ome_writers(targets, classes, colors, pixel_size_um)
        except BaseException:
            self.abort()
            raise

    def _png_writers(self, targets, classes, source_name) -> None:
        width, height = self.width, self.height
        self.writers["mask"] = PngRowWriter(targets["mask"], width, height, 1, label_image=True)
        palette = self.painter.palette
        self.writers["overlay"] = PngRowWriter(targets["overlay"], width, height, 1, palette=palette)
        if "uncertainty" in targets:
            self.writers["uncertainty"] = PngRowWriter(targets["uncertainty"], width, height, 1)
        if "probs" in targets:
            description = json.dumps({"classes": list(classes), "source": source_name})
            self.writers["probs"] = TiffPlaneWriter(
                targets["probs"], width, height, self.num_classes, np.float16, description
            )

    def _ome_writers(self, targets, classes, colors, pixel_size_um) -> None:
        from semphase.runtime.outputs.ome import OmeTiffWriter

        size = (self.width, self.height)
        # 256-pixel tiles: each writer holds one tile row of every pyramid level, so 512 would double that
        # (about 270 MB for a 65536-pixel-wide mask and overlay); viewers read both sizes alike.
        common = {"pixel_size_um": pixel_size_um, "tile": OME_TILE}
        self.writers["mask"] = OmeTiffWriter(
            targets["mask"], *size, kind="labels", classes=list(classes), colors=list(colors), **common
        )
        self.writers["overlay"] = OmeTiffWriter(
            targets["overlay"], *size, kind="rgb", palette=self.painter.palette, **common
        )
        if "uncertainty" in targets:
            self.writers["uncertainty"] = OmeTiffWriter(targets["uncertainty"], *size, kind="gray", **common)
        if "probs" in targets:
            self.writers["probs"] = OmeTiffWriter(
                targets["probs"],
                *size,
                kind="channels",
                channels=self.num_classes,
                channel_names=list(classes),
                **common,
            )

    @property
    def wants_logits(self) -> bool:
        """Whether :meth:`band` needs the blended logits (for probabilities), not just the labels."""
        return "uncertainty" in self.writers or "probs" in self.writers

    def band(self, y0: int, labels: np.ndarray, gray: np.ndarray, logits: np.ndarray | None = None) -> None:
        """Write finalized rows from image row ``y0``: uint8 labels (n, W), the micrograph's uint8 rows
        (n, W) and, when :attr:`wants_logits`, float32 blended logits (C, n, W)."""
        self.counts += count_labels(labels, self.num_classes)
        self._labels(labels, gray, y0)
        if self.wants_logits:
            probs = softmax(logits)
            if "uncertainty" in self.writers:
                entropy = normalized_entropy(probs)
                self.uncertain += int(np.count_nonzero(entropy > UNCERTAIN_ENTROPY))
                self._write("uncertainty", np.clip(entropy * 255 + 0.5, 0, 255).astype(np.uint8))
            if "probs" in self.writers:
                if self.fmt == "png":
                    self.writers["probs"].write(probs.astype(np.float16))
                else:
                    self._write("probs", np.clip(probs * 255 + 0.5, 0, 255).astype(np.uint8))

    def excluded(self, y0: int, gray: np.ndarray) -> None:
        """Write the rows of no data (the data bar) from image row ``y0``; ``gray`` is the micrograph's."""
        rows = gray.shape[0]
        self._labels(np.full((rows, self.width), IGNORE, np.uint8), gray, y0)
        if "uncertainty" in self.writers:
            self._write("uncertainty", np.zeros((rows, self.width), np.uint8))
        if "probs" in self.writers:
            dtype = np.float16 if self.fmt == "png" else np.uint8
            self._write("probs", np.zeros((self.num_classes, rows, self.width), dtype))

    def _write(self, kind: str, band: np.ndarray) -> None:
        """Hand a band to its writer; OME-TIFF writers take it without a copy (every band's arrays are new
        and never changed after they are written)."""
        if self.fmt == "png":
            self.writers[kind].write(band)
        else:
            self.writers[kind].write(band, owned=True)

    def _labels(self, labels: np.ndarray, gray: np.ndarray, y0: int) -> None:
        self._write("mask", labels)
        painted = self.painter.paint(gray, labels, y0)
        self._write("overlay", painted)  # palette indices: both writers know the palette

    def commit(self) -> None:
        """Rename every finished file into place (the mask last)."""
        try:
            for kind in sorted(self.writers, key=lambda k: k == "mask"):
                self.writers[kind].commit()
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove every temporary file; finished files of earlier runs stay as they were."""
        for writer in self.writers.values():
            writer.abort()


class BackgroundSink:
    """Feeds an :class:`OutputSink` from a worker thread.

    The first error in the worker is re-raised in the caller's thread at the next :meth:`band` or at
    :meth:`finish`; after it the worker only drains the queue, so the caller never blocks on it.
    """

    _DONE = object()

    def __init__(self, sink: OutputSink, depth: int = 1) -> None:
        self.sink = sink
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="semphase-output", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is self._DONE:
                return
            if self._error is not None:
                continue
            try:
                item()
            except BaseException as exc:  # handed to the caller's thread
                self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def band(self, band: Band) -> None:
        """Queue the writing of ``band`` (its arrays are new for every band, so they are not copied)."""
        self._raise()
        labels, gray = band.labels(), band.gray
        logits = band.logits if self.sink.wants_logits else None
        self._queue.put(lambda: self.sink.band(band.y0, labels, gray, logits))

    def excluded(self, y0: int, gray: np.ndarray) -> None:
        self._raise()
        self._queue.put(lambda: self.sink.excluded(y0, gray))

    def finish(self) -> None:
        """Wait for every band to be written; raise the worker's error, if any."""
        self._queue.put(self._DONE)
        self._thread.join()
        self._raise()

    def stop(self) -> None:
        """Stop the worker without waiting for pending bands (after an error in the caller)."""
        self._error = self._error or RuntimeError("stopped")
        self._queue.put(self._DONE)
        self._thread.join()
