"""The service behind ``semphase serve``, without any web framework: model, queue, uploads, counters.

A request's micrograph is written into a private temporary folder (created 0700 at start, one subfolder
per request, named by the service, never by the client), segmented by the runtime exactly as
``semphase segment`` does (the batch engine's in-process executor, :class:`semphase.runtime.run.InProcess`:
same tiling, data bar, pixel size, outputs), read back as bytes and deleted
before the answer leaves. Inference runs on ``workers`` threads sharing one onnxruntime session (its
``run`` is thread-safe) with ``cores / workers`` threads each; at most ``workers + queue`` requests are
admitted at a time, and one more is refused at once (:class:`Busy`, HTTP 503 with Retry-After) instead of
waiting in memory.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from semphase.errors import InputError, display_path

#: Image types accepted, by their first bytes (the client's file name is never trusted, only shown).
MAGIC = (
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
    (b"II+\x00", ".tif"),  # BigTIFF
    (b"MM\x00+", ".tif"),
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"BM", ".bmp"),
    (b"\xff\xd8\xff", ".jpg"),
)


class Busy(Exception):
    """Every inference slot and queue place is taken: come back in ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"busy: {retry_after} s")
        self.retry_after = retry_after


class TooLarge(InputError):
    """An upload over the size limit (HTTP 413)."""


class NotAnImage(InputError):
    """An upload that is no image type semphase reads (HTTP 400)."""


def sniff_suffix(head: bytes) -> str | None:
    """The image type from the first bytes: ``.tif``, ``.png``, ``.bmp``, ``.jpg``, or None."""
    return next((suffix for magic, suffix in MAGIC if head.startswith(magic)), None)


@dataclass
class Metrics:
    """What ``/metrics`` reports since the service started."""

    started: float = field(default_factory=time.time)
    requests: int = 0
    segmented: int = 0
    failed: int = 0
    refused_busy: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict:
        with self.lock:
            return {
                "uptime_s": round(time.time() - self.started, 1),
                "requests": self.requests,
                "segmented": self.segmented,
                "failed": self.failed,
                "refused_busy": self.refused_busy,
                "in_flight": self.in_flight,
                "megapixels_segmented": round(self.megapixels, 3),
                "mean_latency_s": round(self.seconds / self.segmented, 4) if self.segmented else None,
            }


class Service:
    """The model, the inference threads and the admission limit.

    Parameters
    ----------
    model : a loaded :class:`semphase.runtime.model.SegmentationModel`.
    options : the default :class:`semphase.runtime.segment.SegmentOptions` (per-request databar, pixel
        size and uncertainty replace theirs).
    workers : inference threads; queue : requests that may wait for one; max_upload_bytes : upload limit.
    """

    def __init__(self, model, options, workers: int = 1, queue: int = 4, max_upload_bytes: int = 256 << 20):
        if workers < 1 or queue < 0:
            raise ValueError("workers must be >= 1 and queue >= 0")
        from semphase.runtime.run import InProcess

        self.model = model
        self.executor = InProcess(model)
        self.options = options
        self.workers = workers
        self.queue = queue
        self.max_upload_bytes = max_upload_bytes
        self.metrics = Metrics()
        self._slots = threading.BoundedSemaphore(workers + queue)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="semphase-infer")
        self.tmp = Path(tempfile.mkdtemp(prefix="semphase-serve-"))
        os.chmod(self.tmp, 0o700)

    # ------------------------------------------------------------------------------------ admission

    def admit(self) -> None:
        """Take a place (inference or queue) or raise :class:`Busy` at once."""
        with self.metrics.lock:
            self.metrics.requests += 1
        if not self._slots.acquire(blocking=False):
            with self.metrics.lock:
                self.metrics.refused_busy += 1
            raise Busy(self.retry_after())
        with self.metrics.lock:
            self.metrics.in_flight += 1

    def release(self) -> None:
        with self.metrics.lock:
            self.metrics.in_flight -= 1
        self._slots.release()

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the mean latency times the requests ahead, at least 1."""
        with self.metrics.lock:
            mean = self.metrics.seconds / self.metrics.segmented if self.metrics.segmented else 2.0
        return max(1, int(round(mean * (self.queue + self.workers) / self.workers)))

    # --------------------------------------------------------------------------------------- uploads

    def new_request_folder(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="r-", dir=self.tmp))

    def discard(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ----------------------------------------------------------------------------------- segmenting

    def segment(self, upload: Path, name: str, options) -> dict:
        """Segment ``upload`` (already in a request folder) with ``options``; runs on an inference thread.

        Returns the phase table document (``X.json``'s content without local paths) plus the PNG bytes of
        the mask, the overlay and an 8-bit preview of the input, base64-encoded.

        Raises
        ------
        InputError
            with the reason ``semphase segment`` gives, naming the client's file name.
        """
        t0 = time.perf_counter()
        out = upload.parent / "out"
        try:
            try:  # a batch of one, without a ledger: the batch engine's in-process executor
                result = self.executor.segment(upload, out, options, stem="upload")
            except InputError as exc:  # the same reason, naming the client's file instead of ours
                raise type(exc)(exc.reason, name) from None
            document = _public(result, name)
            outputs = result["outputs"]
            document["mask_png"] = _b64(outputs["mask"])
            document["overlay_png"] = _b64(outputs["overlay"])
            if "uncertainty" in outputs:
                document["uncertainty_png"] = _b64(outputs["uncertainty"])
            document["image_png"] = _preview(upload)
        except BaseException:
            with self.metrics.lock:
                self.metrics.failed += 1
            raise
        seconds = time.perf_counter() - t0
        document["seconds"]["service"] = round(seconds, 4)
        with self.metrics.lock:
            self.metrics.segmented += 1
            self.metrics.seconds += seconds
            self.metrics.megapixels += result["width"] * result["height"] / 1e6
        return document

    def submit(self, upload: Path, name: str, options):
        """Run :meth:`segment` on an inference thread; returns a concurrent.futures.Future."""
        return self._pool.submit(self.segment, upload, name, options)

    def use_model(self, model) -> None:
        """Serve ``model`` from now on (a fine-tuned or rolled-back version); requests in flight finish
        on the model they started with."""
        from semphase.runtime.run import InProcess

        executor = InProcess(model)
        with self.metrics.lock:
            self.model, self.executor = model, executor

    def run(self, fn, *args):
        """Run ``fn(*args)`` on an inference thread (the label view's predictions share the model's
        threads and admission limit with /segment); returns a concurrent.futures.Future."""
        return self._pool.submit(fn, *args)


def _b64(path: str | os.PathLike) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _preview(upload: Path, max_side: int = 2048) -> str:
    """The micrograph as an 8-bit PNG (browsers show no TIFF), at most ``max_side`` on its long side."""
    import cv2

    from semphase.imageio import encode_image, read_gray, to_uint8

    image = to_uint8(read_gray(upload))
    scale = max_side / max(image.shape)
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return base64.b64encode(encode_image(image, ".png")).decode("ascii")


def _public(result: dict, name: str) -> dict:
    """``X.json`` as a client may see it: its file name instead of the service's paths."""
    document = {k: v for k, v in result.items() if k not in ("outputs",)}
    document["input"] = display_path(name)
    model = dict(document.get("model") or {})
    model["path"] = Path(str(model.get("path", ""))).name
    document["model"] = model
    return document


def client_name(filename: str | None) -> str:
    """The client's file name, for messages only: its last path component, printable, at most 200 chars."""
    base = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1] or "upload"
    return display_path(base)[:200]
