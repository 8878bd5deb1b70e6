"""``semphase serve``: the model as a lab network service (FastAPI on uvicorn; the ``serve`` extra)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from semphase.cli.common import console, say_self_check, styled
from semphase.cli.options import Backend, Streams
from semphase.errors import InputError, OptionError

SERVE_HELP = (
    "Serve the model on the network: POST a micrograph to /segment and get its phase table, mask and "
    "overlay (the same runtime as `semphase segment`); a page at / to drop micrographs on; OpenAPI docs "
    "at /docs; /model, /health, /metrics. Binds to 127.0.0.1 unless --host says otherwise, and any other "
    "address needs --token-file. Needs the serve extra (pip install 'semphase\\[serve]'). Ctrl-C stops it."
)
LOOPBACK_NAMES = ("localhost",)


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace removed): at least 16 characters, no spaces."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InputError(f"cannot read the token file ({exc.strerror or exc})", path) from None
    except UnicodeDecodeError:
        raise InputError("the token file is not text", path) from None
    if len(token) < 16 or any(ch.isspace() for ch in token):
        raise InputError(
            'a token must be one word of at least 16 characters (e.g. python -c "import secrets; '
            'print(secrets.token_urlsafe(32))")',
            path,
        )
    return token


def serve_command(
    model: Path = typer.Argument(..., help="Exported semphase model (.onnx or .bioimageio.zip)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; 0.0.0.0 = every network."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Micrographs segmented at the same time (each with cores / N threads)."
    ),
    queue: int = typer.Option(
        4, "--queue", min=0, help="Requests that may wait for a worker; more get 503 with Retry-After."
    ),
    max_megapixels: float = typer.Option(
        100.0, "--max-megapixels", help="Largest image accepted (width x height / 1e6); larger: 413."
    ),
    max_upload_mb: float = typer.Option(
        256.0, "--max-upload-mb", help="Largest upload accepted in MiB; larger: 413."
    ),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        help="File holding the access token: every request then needs 'Authorization: Bearer TOKEN' "
        "(required with a --host other than localhost).",
    ),
    provider: str = typer.Option(
        "auto", "--provider", help="Execution provider: auto, cpu, cuda, dml, openvino."
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="CPU threads per worker (default: cores / --workers)."
    ),
    streams: Streams = None,
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Run the model's self-check at start."),
    backend: Backend = "auto",
    project: Path | None = typer.Option(
        None,
        "--project",
        help="Labelling project folder (created when missing; the dataset layout `semphase train` reads: "
        "images/, masks/): the page at /label then shows its micrographs with the model's phases to "
        "correct with a brush. One server per project.",
    ),
    checkpoint: Path | None = typer.Option(
        None,
        "--checkpoint",
        help="With --project: the checkpoint MODEL was exported from; the page can then fine-tune it on the "
        "project's labels (needs the train extra on this PC), export, check and serve the new model.",
    ),
    train_args: str = typer.Option(
        "",
        "--train-args",
        help="With --checkpoint: extra options for the fine-tuning's `semphase train`, e.g. '--epochs 20'.",
    ),
) -> None:
    """Load the model once (with its self-check), then answer HTTP requests until stopped."""
    if not _is_loopback(host) and token_file is None:
        raise OptionError(
            f"--host {host} makes the service reachable from the network: give --token-file too "
            "(clients then send 'Authorization: Bearer TOKEN')"
        )
    if max_megapixels <= 0 or max_upload_mb <= 0:
        raise OptionError("--max-megapixels and --max-upload-mb must be > 0")
    try:
        import uvicorn

        from semphase.serve.app import create_app
        from semphase.serve.service import Service
    except ImportError as exc:
        raise InputError(f"serve needs the serve extra: pip install 'semphase[serve]' ({exc})") from None
    from semphase.cli.options import MAX_MEGAPIXELS_FLAG, check_backend
    from semphase.limits import set_max_megapixels
    from semphase.machine import share_cores
    from semphase.runtime.model import load_model
    from semphase.runtime.segment import SegmentOptions

    token = read_token(token_file) if token_file is not None else None
    set_max_megapixels(max_megapixels, MAX_MEGAPIXELS_FLAG)
    per_worker = threads or share_cores(workers)
    check_backend(backend)
    if checkpoint is not None and project is None:
        raise OptionError("--checkpoint is for fine-tuning from the label view: give --project DIR too")
    # how the network runs: the same for the model served at start and every fine-tuned one after it
    settings = {"provider": provider, "threads": per_worker, "backend": backend, "streams": streams}
    loaded = load_model(model, verify=verify, **settings)
    if checkpoint is not None:
        check_checkpoint(checkpoint, loaded)
    if loaded.self_check is not None:
        say_self_check(loaded.self_check)
    service = Service(
        loaded,
        SegmentOptions(format="png"),
        workers=workers,
        queue=queue,
        max_upload_bytes=int(max_upload_mb * 2**20),
    )
    labelling = finetuner = None
    if project is not None:
        from semphase.runtime.suggest import model_table
        from semphase.serve.labelling import Labelling
        from semphase.serve.project import Project

        try:
            labelling = Labelling(Project(project, model_table(loaded)), service)
            from semphase.serve.finetune import FineTuner

            def load(path: Path):  # a fine-tuned or rolled-back model, always self-checked
                return load_model(path, verify=True, **settings)

            finetuner = FineTuner(labelling, Path(model), checkpoint, load, train_args)
        except BaseException:
            service.close()
            if labelling is not None:
                labelling.project.close()
            raise
    app = create_app(service, token, labelling, finetuner)
    try:
        sock = _listen(host, port)
    except BaseException:
        service.close()
        raise
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    console.print(
        styled(
            ("serving ", "green"),
            f"{Path(model).name} ({loaded.variant.upper()}) on http://{shown}:{port}/ "
            f"({workers} worker(s) x {per_worker} thread(s), queue {queue}"
            + (", token required" if token else "")
            + (f", labelling {project} at /label" if project is not None else "")
            + "); Ctrl-C stops",
        ),
        soft_wrap=True,
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        service.close()
        if labelling is not None:
            labelling.project.close()


def check_checkpoint(checkpoint: Path, model) -> None:
    """Refuse a checkpoint that is not the one ``model`` was exported from (its recorded sha256)."""
    from semphase.imageio import file_sha256

    if not checkpoint.is_file():
        raise InputError("no such checkpoint file", checkpoint)
    recorded = (model.source or {}).get("checkpoint_sha256")
    if recorded and file_sha256(checkpoint) != recorded:
        raise InputError(
            f"not the checkpoint {Path(model.path).name} was exported from (its sha256 differs from the "
            "one recorded in the model)",
            checkpoint,
        )


def _listen(host: str, port: int):
    """A listening socket on ``host:port``, or one line saying why not (in use, not this machine's)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise InputError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}; another service there?)"
        ) from None
    sock.set_inheritable(True)
    return sock


def register(app: typer.Typer) -> None:
    app.command("serve", help=SERVE_HELP, short_help="Serve the model over HTTP, with a drag-and-drop page.")(
        serve_command
    )
