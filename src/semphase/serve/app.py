"""The FastAPI app of ``semphase serve``.

Endpoints (OpenAPI docs at ``/docs``):

- ``POST /segment`` (multipart ``file``; query ``databar``, ``pixel_size_um``, ``uncertainty``, ``format``
  = ``json`` | ``mask`` | ``overlay``): the phase table as JSON with the mask, overlay and a preview of the
  input inline (base64 PNG), or the mask or overlay PNG itself;
- ``GET /model``: classes, colours, variant, tiling, self-check verdict;
- ``GET /health``: ``{"status": "ok"}`` (no token needed: a container's health check);
- ``GET /metrics``: requests, failures, refusals, megapixels segmented, mean latency;
- ``GET /``: the page to drop micrographs on;
- with ``--project DIR`` (:mod:`semphase.serve.labelling`): ``GET /label`` (the label view), ``GET /project``
  (classes, colours, micrographs with their labelled pixels and suggest's ranks), ``POST /project/images``
  (add a micrograph), ``GET /project/images/{name}`` (size, zoom levels, version, history),
  ``POST .../predict`` (the model's phases and uncertainty, once per model), ``GET .../tiles/{layer}/{level}/
  {col}/{row}.png``, ``POST .../strokes`` (save strokes made on version ``base``: merged when another page
  saved since), ``PUT .../labels`` (a whole label image, checked), ``GET .../labels.png``,
  ``POST .../restore``.

Errors are one line in ``{"detail": ...}``: 400 for an upload that is not an image, 413 for an upload
or image over the limits, 422 for a micrograph ``semphase segment`` would refuse (same reason), 401 for a
missing or wrong token, 503 with ``Retry-After`` when the queue is full; for the project 404 for a name
that is no micrograph of it, 409 for a whole label image made on an older version, 422 for labels of the
wrong size or values that are no class. Never a traceback.
"""

import asyncio
import base64
import contextlib
import hmac
import logging
from importlib import resources
from pathlib import Path

from fastapi import Body, FastAPI, File, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, Response

from semphase.errors import InputError, OptionError, one_line
from semphase.limits import ImageTooLarge
from semphase.serve.service import Busy, NotAnImage, Service, TooLarge, client_name, sniff_suffix

#: Paths anyone may fetch without the token: the page (it asks for the token), its health, the docs.
OPEN_PATHS = ("/", "/label", "/health", "/docs", "/openapi.json", "/favicon.ico")
#: Largest JSON body of strokes accepted (a long labelling session is well under 1 MiB).
MAX_STROKES_BYTES = 16 << 20
CHUNK = 1 << 20


def create_app(service: Service, token: str | None = None, labelling=None, finetuner=None):
    """The app around ``service``; with ``token``, every other path needs ``Authorization: Bearer``;
    with ``labelling`` (a :class:`semphase.serve.labelling.Labelling`), the project's label view, and
    with ``finetuner`` (a :class:`semphase.serve.finetune.FineTuner`) its fine-tuning jobs."""

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        if finetuner is not None:
            finetuner.close()  # a running job's child process
        service.close()  # the inference threads, and the private folder of uploads
        if labelling is not None:
            labelling.project.close()

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
            return _busy(service, exc)
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

    if labelling is not None:
        _project_routes(app, service, labelling, expected is not None)
        if finetuner is not None:
            _finetune_routes(app, finetuner)
    else:

        @app.get("/label", include_in_schema=False)
        @app.get("/project")
        async def no_project() -> JSONResponse:
            reason = "this server has no labelling project (start it with semphase serve MODEL --project DIR)"
            return JSONResponse({"detail": reason}, status_code=404)

    return app


def _project_routes(app, service: Service, labelling, token_required: bool) -> None:
    """The label view's endpoints (see the module docstring)."""
    from semphase.serve.labelling import NoPrediction
    from semphase.serve.project import Conflict, NotFound
    from semphase.serve.strokes import StrokeError, parse_strokes
    from semphase.serve.tiles import LAYERS

    project = labelling.project

    def failure(exc: Exception) -> JSONResponse:
        if isinstance(exc, NotFound):
            return JSONResponse({"detail": str(exc)}, status_code=404)
        if isinstance(exc, Conflict | NoPrediction):
            return JSONResponse({"detail": str(exc)}, status_code=409)
        return JSONResponse({"detail": str(exc)}, status_code=422)  # Rejected, StrokeError, InputError

    known = (InputError, StrokeError)

    @app.get("/label", response_class=HTMLResponse, include_in_schema=False)
    async def label_page() -> HTMLResponse:
        html = resources.files("semphase.serve").joinpath("label.html").read_text(encoding="utf-8")
        return HTMLResponse(html.replace("{{TOKEN_REQUIRED}}", "true" if token_required else "false"))

    @app.get("/project")
    def project_listing() -> dict:
        """The project: the model's classes and colours, every micrograph with its labelled pixels."""
        m = service.model
        return {
            "model": {"file": Path(m.path).name, "sha256": m.sha256, "variant": m.variant},
            "classes": list(m.classes),
            "colors": [list(c) for c in m.colors],
            "images": project.listing(),
            "worklist": project.has_worklist(),
        }

    @app.post("/project/images")
    async def project_upload(
        file: UploadFile = File(..., description="A micrograph to label: TIFF, PNG, BMP or JPEG."),
    ):
        """Add a micrograph to the project (a new name is made from the file's; nothing is replaced)."""
        from semphase.imageio import read_raw

        name = client_name(file.filename)
        folder = service.new_request_folder()
        try:
            upload = await _receive(file, folder, name, service.max_upload_bytes)
            try:  # refuse what segment would refuse (truncated, corrupt), naming the client's file
                shape = (await asyncio.to_thread(read_raw, upload)).shape[:2]
            except InputError as exc:
                raise type(exc)(exc.reason, name) from None
            entry = await asyncio.to_thread(project.add, upload, name, upload.suffix, shape)
        except (TooLarge, ImageTooLarge) as exc:
            return JSONResponse({"detail": str(exc)}, status_code=413)
        except NotAnImage as exc:
            return JSONResponse({"detail": str(exc)}, status_code=400)
        except InputError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        finally:
            service.discard(folder)
        return {"name": entry.name, "width": entry.width, "height": entry.height}

    @app.get("/project/images/{name}")
    def project_image(name: str):
        """One micrograph: size, zoom levels, label version and history, whether it is predicted."""
        try:
            return labelling.describe(name)
        except known as exc:
            return failure(exc)

    @app.post("/project/images/{name}/predict")
    async def project_predict(name: str):
        """The model's phases and uncertainty of the micrograph (segmented once per model)."""
        try:
            project.entry(name)
            service.admit()
        except Busy as exc:
            return _busy(service, exc)
        except known as exc:
            return failure(exc)
        try:
            return await asyncio.wrap_future(service.run(labelling.predict, name))
        except known as exc:
            return failure(exc)
        except MemoryError:
            return JSONResponse({"detail": f"{name}: out of memory; try a smaller image"}, status_code=507)
        finally:
            service.release()

    @app.get("/project/images/{name}/tiles/{layer}/{level}/{col}/{row}.png")
    def project_tile(name: str, layer: str, level: int, col: int, row: int):
        """One 256 x 256 tile of a layer (image, prediction, uncertainty, labels) at a zoom level."""
        if layer not in LAYERS:
            return JSONResponse({"detail": f"unknown layer {layer!r}; layers: {', '.join(LAYERS)}"}, 404)
        try:
            data = labelling.tile(name, layer, level, col, row)
        except known as exc:
            return failure(exc)
        if data is None:
            return JSONResponse({"detail": "no such tile"}, status_code=404)
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.post("/project/images/{name}/strokes")
    async def project_strokes(request: Request, name: str):
        """Save strokes made on version ``base``: ``{"base": N, "strokes": [{"tool", "class", "radius",
        "points"}, ...]}``. Made on an older version, they are merged onto the newer labels."""
        if int(request.headers.get("content-length") or 0) > MAX_STROKES_BYTES:
            return JSONResponse({"detail": "too many strokes in one save; save more often"}, status_code=413)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"detail": "the body must be JSON: {base, strokes}"}, status_code=422)
        base = body.get("base") if isinstance(body, dict) else None
        if isinstance(base, bool) or not isinstance(base, int):
            return JSONResponse({"detail": "base must be the version the strokes were made on"}, 422)
        client = request.client.host if request.client else None
        try:
            strokes = parse_strokes(body.get("strokes"), len(service.model.classes))
            saved = await asyncio.to_thread(labelling.save, name, base, strokes, client)
        except known as exc:
            return failure(exc)
        return saved.as_dict()

    @app.put("/project/images/{name}/labels")
    async def project_put_labels(
        request: Request,
        name: str,
        base: int = Query(..., description="the version this label image replaces"),
        force: bool = Query(False, description="replace even when labels were saved since base"),
    ):
        """Replace the labels with a label image (PNG/TIFF, index or colour mask), checked."""
        data = b""
        async for chunk in request.stream():
            data += chunk
            if len(data) > service.max_upload_bytes:
                return JSONResponse({"detail": "label image larger than the upload limit"}, status_code=413)
        client = request.client.host if request.client else None
        try:
            saved = await asyncio.to_thread(project.put_labels, name, data, base, force, client)
        except known as exc:
            return failure(exc)
        return saved.as_dict()

    @app.get("/project/images/{name}/labels.png")
    def project_labels_png(name: str):
        """The current labels as the colour PNG that ``masks/`` holds."""
        try:
            return Response(project.mask_png(name), media_type="image/png")
        except known as exc:
            return failure(exc)

    @app.post("/project/images/{name}/restore")
    def project_restore(request: Request, name: str, version: int = Body(..., embed=True)):
        """Make an earlier version current again (as a new version)."""
        client = request.client.host if request.client else None
        try:
            return project.restore(name, version, client).as_dict()
        except known as exc:
            return failure(exc)


def _finetune_routes(app, finetuner) -> None:
    """Fine-tuning from the label view (:mod:`semphase.serve.finetune`)."""
    from semphase.serve.finetune import JobRefused

    @app.get("/project/finetune")
    def finetune_status() -> dict:
        """Whether this server can fine-tune (and why not), the job (stage, epoch, loss, outcome), the
        model versions and which one is served."""
        return finetuner.status()

    def answer(call, *args):
        try:
            return call(*args)
        except JobRefused as exc:  # one running, nothing labelled, no torch or checkpoint, no version
            return JSONResponse({"detail": str(exc)}, status_code=409)
        except InputError as exc:  # a version whose file fails its self-check
            return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.post("/project/finetune")
    def finetune_start(holdout: bool = Body(True, embed=True)):
        """Start fine-tuning the served model on the project's labelled pixels (one job at a time);
        ``{"holdout": false}`` trains on every labelled micrograph (none held out to score it on)."""
        return answer(finetuner.start, holdout)

    @app.post("/project/finetune/cancel")
    def finetune_cancel():
        """Stop the running job; the served model does not change."""
        return answer(finetuner.cancel)

    @app.post("/project/models/{version}/serve")
    def serve_version(version: int):
        """Serve a model version again (rollback), after its self-check on this machine."""
        return answer(finetuner.serve_version, version)


def _busy(service: Service, exc: Busy) -> JSONResponse:
    """503 with Retry-After: every inference slot and queue place is taken."""
    return JSONResponse(
        {"detail": f"busy: {service.workers} segmenting and {service.queue} waiting; retry later"},
        status_code=503,
        headers={"Retry-After": str(exc.retry_after)},
    )


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
