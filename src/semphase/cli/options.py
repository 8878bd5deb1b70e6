"""The options `segment` and `watch` share, declared once, and the one builder of their settings.

Both commands segment micrographs the same way, so they take the same options with the same help; each
command's signature names them with these types (``tile: Tile = None``). :func:`segmentation_settings`
turns the values into a checked :class:`~semphase.runtime.segment.SegmentOptions` before any file is
touched, and :func:`load_checked_model` loads the model and resolves the tiling against it, once.

The library names the arguments it refuses (``tile must be a positive multiple of 32``); here they become
the flags a CLI user typed (:func:`flag`, :func:`said_with_flags`: ``--tile must be ...``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from semphase.errors import OptionError
from semphase.limits import DEFAULT_MAX_MEGAPIXELS, MAX_MEGAPIXELS_ENV
from semphase.model_format import SIZE_MULTIPLE

if TYPE_CHECKING:
    from semphase.runtime.model import SegmentationModel
    from semphase.runtime.segment import SegmentOptions

Tile = Annotated[
    int | None,
    typer.Option(
        "--tile",
        help=f"Tile size in pixels, a multiple of {SIZE_MULTIPLE} (default: the model's).",
        show_default=False,
    ),
]
Overlap = Annotated[
    int | None,
    typer.Option(
        "--overlap",
        help="Minimum overlap of neighbouring tiles in pixels (default: the model's).",
        show_default=False,
    ),
]
Batch = Annotated[int, typer.Option("--batch", min=1, help="Tiles per inference call.")]
Window = Annotated[
    str, typer.Option("--window", help="Blend window for overlapping tiles: gaussian or cosine.")
]
Threads = Annotated[
    int | None,
    typer.Option(
        "--threads", min=1, help="CPU threads for the network (default: one per core).", show_default=False
    ),
]
Streams = Annotated[
    int | None,
    typer.Option(
        "--streams",
        min=1,
        help="Network calls at once, each on threads / N threads (default: 2 on a CPU with two or more "
        "cores, else 1). More finish a large micrograph sooner; 1 is quicker for a single tile.",
        show_default=False,
    ),
]
Provider = Annotated[
    str,
    typer.Option(
        "--provider",
        help="Execution provider: auto, cpu, cuda, dml or openvino (auto picks the first installed of cuda, "
        "dml, openvino, cpu).",
    ),
]
Databar = Annotated[
    str,
    typer.Option(
        "--databar",
        help="SEM data bar at the bottom: auto (vendor metadata, else detected), none, or its height in "
        "rows. Its rows are 255 (no data) in the mask and left out of every statistic.",
    ),
]
PixelSize = Annotated[
    float | None,
    typer.Option(
        "--pixel-size-um",
        help="Pixel size in micrometres for phase areas (default: from the file's metadata).",
        show_default=False,
    ),
]
Normalize = Annotated[
    str,
    typer.Option(
        "--normalize",
        help="16-bit to 8-bit: linear (value/257, the same phases as an 8-bit save) or percentile "
        "(contrast stretch for dim acquisitions).",
    ),
]
Uncertainty = Annotated[
    bool,
    typer.Option(
        "--uncertainty",
        help="Also write X_uncertainty.png (normalized entropy) and the fraction of uncertain pixels.",
    ),
]
Probs = Annotated[
    bool,
    typer.Option(
        "--probs",
        help="Also write class probabilities: X_probs.tif (float16, one page per class), or with OME-TIFF "
        "output X_probs.ome.tif (one channel per class, value/255).",
    ),
]
Format = Annotated[
    str,
    typer.Option(
        "--format",
        help="Image outputs as png, or ome-tiff: tiled, compressed, pyramidal X_mask.ome.tif / "
        "X_overlay.ome.tif with the pixel size and class names, which QuPath, napari and Fiji open at any "
        "zoom. auto: ome-tiff for micrographs over 8192 x 8192 pixels, data bar not counted (montages), "
        "png up to that.",
    ),
]
TTA = Annotated[bool, typer.Option("--tta", help="Average the four flips of every tile (4x slower).")]
Backend = Annotated[
    str,
    typer.Option(
        "--backend",
        envvar="SEMPHASE_BACKEND",
        help="What runs the network: auto (the faster of onnxruntime and OpenVINO on this PC among those "
        "that pass the model's self-check; measured once per model and PC), onnxruntime, or openvino "
        "(pip install 'semphase[openvino]'; CPU only; onnxruntime is used instead if OpenVINO fails the "
        "self-check). The choice goes into every X.json.",
    ),
]
Verify = Annotated[
    bool,
    typer.Option(
        "--verify/--no-verify",
        help="Run the model's self-check once at start (its labels on reference tiles stored at export, well "
        "under a second); a model that gives other phases on this CPU is refused (exit 2) after trying the "
        "precise INT8 kernels. The verdict goes into every X.json (and watch's log).",
    ),
]
MaxMegapixels = Annotated[
    float | None,
    typer.Option(
        "--max-megapixels",
        help=f"Refuse images that declare more pixels than this, before decoding them (a corrupt or "
        f"malicious header can claim 100000 x 100000). Default {DEFAULT_MAX_MEGAPIXELS:g} (32768 x 32768), "
        f"or {MAX_MEGAPIXELS_ENV} when set.",
        show_default=False,
    ),
]


def flag(argument: str) -> str:
    """The CLI's flag for a library argument or option field: ``max_megapixels`` -> ``--max-megapixels``."""
    return "--" + argument.replace("_", "-")


def said_with_flags(exc: OptionError) -> str:
    """An option error's message with its argument called by its flag (``--tile``, not ``tile``)."""
    return exc.naming(flag(exc.argument)) if exc.argument is not None else str(exc)


@contextlib.contextmanager
def flags_for_arguments() -> Iterator[None]:
    """Re-raise the library's OptionError with the flag in its message, for the lines and logs that show it
    before the error reaches :func:`semphase.cli.main.main`."""
    try:
        yield
    except OptionError as exc:
        if exc.argument is None:
            raise
        raise OptionError(said_with_flags(exc)) from None


#: How the CLI's messages say to raise the image-size limit.
MAX_MEGAPIXELS_FLAG = flag("max_megapixels")


def apply_max_megapixels(value: float | None) -> None:
    """Set the image-size limit for this command (None: the environment's or the default), once; images
    refused for their size then name ``--max-megapixels``."""
    from semphase.limits import max_megapixels, set_max_megapixels

    with flags_for_arguments():
        set_max_megapixels(value, MAX_MEGAPIXELS_FLAG)
        max_megapixels()  # a bad SEMPHASE_MAX_MEGAPIXELS fails here, once, not on every file


#: The options above that become :class:`~semphase.runtime.segment.SegmentOptions` fields.
SETTINGS = (
    "tile",
    "overlap",
    "batch",
    "window",
    "databar",
    "pixel_size_um",
    "normalize",
    "uncertainty",
    "probs",
    "tta",
    "format",
)


def segmentation_settings(params: Mapping[str, Any]) -> SegmentOptions:
    """The checked settings of a `segment` or `watch` run from the command's parameters (``ctx.params``);
    a bad value raises OptionError, before any file is touched."""
    from semphase.runtime.segment import SegmentOptions

    apply_max_megapixels(params.get("max_megapixels"))
    with flags_for_arguments():
        return SegmentOptions(**{name: params[name] for name in SETTINGS})


#: The parameters of `segment` and `watch` that say how the network runs (:func:`load_checked_model`'s).
MODEL_SETTINGS = ("provider", "threads", "verify", "backend", "streams")


def model_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`load_checked_model`'s keywords from a command's parameters (``ctx.params``)."""
    return {name: params[name] for name in MODEL_SETTINGS}


def load_checked_model(
    path: Path,
    options: SegmentOptions,
    *,
    provider: str,
    threads: int | None,
    verify: bool,
    backend: str = "onnxruntime",
    streams: int | None = None,
) -> SegmentationModel:
    """Load (and self-check, on ``backend``) the model, then resolve the tiling against it: one error,
    before any file."""
    from semphase.runtime.model import load_model

    check_backend(backend)
    model = load_model(
        path, provider=provider, threads=threads, verify=verify, backend=backend, streams=streams
    )
    with flags_for_arguments():
        options.tiling_for(model)
    return model


def check_backend(backend: str) -> None:
    """``--backend`` is one of :data:`semphase.runtime.backends.BACKENDS` (an option error otherwise)."""
    from semphase.errors import OptionError
    from semphase.runtime.backends import BACKENDS

    if backend not in BACKENDS:
        raise OptionError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
