"""The FastAPI app of ``semphase serve``.

Endpoints (OpenAPI docs at ``/docs``):

- ``POST /segment`` (multipart ``file``; query ``databar``, ``pixel_size_um``, ``uncertainty``, ``format``
  = ``json`` | ``mask`` | ``overlay``): the phase table as JSON with the mask, overlay and a preview of the
  input inline (base64 PNG), or the mask or overlay PNG itself;
- ``GET /model``: classes, colours, variant, tiling, self-check verdict;
- ``GET /health``: ``{"status": "ok"}`` (no token needed: a container's health check);
- ``GET /metrics``: requests, failures, refusals, megapixels segmented, mean latency;
- ``GET /``: the page to drop micrographs on.

Errors are one line in ``{"detail": ...}``: 400 for an upload that is not an image, 413 for an upload
or image over the limits, 422 for a micrograph ``semphase segment`` would refuse (same reason), 401 for a
missing or wrong token, 503 with ``Retry-After`` when the queue is full. Never a traceback.
"""

import asyncio
import base64
import contextlib
import hmac
import logging
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from semphase.errors import InputError, OptionError, one_line
from semphase.limits import ImageTooLarge
from semphase.serve.service import Busy, NotAnImage, Service, TooLarge, client_name, sniff_suffix

#: Paths anyone may fetch without the token: the page (it asks for the token), its health, the docs.
OPEN_PATHS = ("/", "/health", "/docs", "/openapi.json", "/favicon.ico")
CHUNK = 1 << 20


def create_app(service: Service, token: str | None = None):
    """The app around ``service``; with ``token``, every other path needs ``Authorization: Bearer``."""

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        service.close()  # the inference threads, and the private folder of uploads

    app = FastAPI(
        title="semphase",
        description="Phase segmentation of SEM micrographs (the same runtime as `semphase segment`).",
        version=_version(),
        lifespan=lifespan,
    )
    expected = token.encode() if token else None

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # a bug, not bad input: one line for the client and the log, never a traceback
        line = f"internal error: {exc.__class__.__name__}: {one_line(exc, 300)}"
        logging.getLogger("semphase.serve").error("%s %s: %s", request.method, request.url.path, line)
        return JSONResponse({"detail": line}, status_code=500)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if expected is not None and request.url.path not in OPEN_PATHS:
            header = request.headers.get("authorization", "")
            given = header[7:].strip().encode() if header.lower().startswith("bearer ") else b""
            if not hmac.compare_digest(given, expected):
                return JSONResponse(
                    {"detail": "missing or wrong token (Authorization: Bearer TOKEN)"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        html = resources.files("semphase.serve").joinpath("page.html").read_text(encoding="utf-8")
        return HTMLResponse(html.replace("{{TOKEN_REQUIRED}}", "true" if expected else "false"))

    @app.get("/health")
    async def health() -> dict:
        """Liveness: the model is loaded and the service answers."""
        return {"status": "ok", "in_flight": service.metrics.as_dict()["in_flight"]}

    @app.get("/metrics")
    async def metrics() -> dict:
        """Counters since start: requests, segmented, failed, refused (busy), megapixels, mean latency."""
        return {**service.metrics.as_dict(), "workers": service.workers, "queue": service.queue}

    @app.get("/model")
    async def model() -> dict:
        """The model: classes, colours, variant, recommended tiling, self-check verdict on this machine."""
        m = service.model
        return {
            "file": Path(m.path).name,
            "sha256": m.sha256,
            "variant": m.variant,
            "classes": list(m.classes),
            "colors": [list(c) for c in m.colors],
            "tile": {"size": m.tile_size, "overlap": m.overlap},
            "providers": list(m.providers),
            "self_check": None if m.self_check is None else m.self_check.as_dict(),
        }

    @app.post("/segment")
    async def segment(
        request: Request,
        file: UploadFile = File(..., description="A micrograph: TIFF, PNG, BMP or JPEG."),
        databar: str = Query("auto", description="auto, none, or the data bar's height in rows"),
        pixel_size_um: float | None = Query(None, gt=0, description="overrides the file's pixel size"),
        uncertainty: bool = Query(False, description="also the uncertainty map and uncertain fraction"),
        format: str = Query("json", pattern="^(json|mask|overlay)$", description="json, mask or overlay"),  # noqa: A002
    ):
        """Segment one micrograph with the service's model, as `semphase segment` would."""
        name = client_name(file.filename)
        try:
            options = _options(service, databar, pixel_size_um, uncertainty)
        except OptionError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        try:
            service.admit()
        except Busy as exc:
            return JSONResponse(
                {"detail": f"busy: {service.workers} segmenting and {service.queue} waiting; retry later"},
                status_code=503,
                headers={"Retry-After": str(exc.retry_after)},
            )
        folder = service.new_request_folder()
        try:
            upload = await _receive(file, folder, name, service.max_upload_bytes)
            future = service.submit(upload, name, options)
            document = await asyncio.wrap_future(future)
        except (TooLarge, ImageTooLarge) as exc:
            return JSONResponse({"detail": str(exc)}, status_code=413)
        except NotAnImage as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        except InputError as exc:  # what `semphase segment` refuses, with the same one-line reason
            return JSONResponse({"detail": str(exc)}, status_code=422)
        except MemoryError:
            return JSONResponse({"detail": f"{name}: out of memory; try a smaller image"}, status_code=507)
        finally:
            service.discard(folder)
            service.release()
        if format == "mask":
            return Response(base64.b64decode(document["mask_png"]), media_type="image/png")
        if format == "overlay":
            return Response(base64.b64decode(document["overlay_png"]), media_type="image/png")
        return document

    return app


async def _receive(file, folder: Path, name: str, limit: int) -> Path:
    """Stream the upload into ``folder`` under a name of the service's (the type sniffed from its first
    bytes), refusing it past ``limit`` bytes."""
    head = await file.read(16)
    suffix = sniff_suffix(head)
    if suffix is None:
        raise NotAnImage("not an image semphase reads (TIFF, PNG, BMP or JPEG)", name)
    path = folder / f"upload{suffix}"
    size = len(head)
    with open(path, "wb") as fh:
        fh.write(head)
        while chunk := await file.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"upload larger than the service's limit of {limit / 2**20:g} MiB", name)
            fh.write(chunk)
    if size == len(head):  # nothing after the first 16 bytes: a type's magic, no image
        raise NotAnImage("not an image semphase reads (truncated: a few bytes only)", name)
    return path


def _options(service: Service, databar: str, pixel_size_um: float | None, uncertainty: bool):
    from dataclasses import replace

    return replace(
        service.options, databar=databar, pixel_size_um=pixel_size_um, uncertainty=uncertainty, format="png"
    )


def _version() -> str:
    from semphase import __version__

    return __version__
