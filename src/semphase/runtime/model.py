"""Loading an exported semphase ONNX model, from its own metadata and nothing else.

The file carries the class names and colours, the input normalization, the recommended tiling and the
variant (see docs/architecture.md); :func:`load_model` checks all of it and refuses, in one line naming
the file, anything that is not a usable semphase model. The network then runs on onnxruntime or, with
``backend="openvino"`` or ``"auto"``, on OpenVINO (:mod:`semphase.runtime.backends`); the self-check
runs on the backend that will be used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from semphase import machine, model_format, model_package
from semphase.errors import InputError, one_line
from semphase.runtime import backends, selfcheck
from semphase.runtime.session import create_session

#: What ``--provider`` accepts, mapped to onnxruntime's execution provider names.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "dml": "DmlExecutionProvider",
    "directml": "DmlExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
#: Order in which ``auto`` picks among the installed providers.
AUTO_ORDER = ("cuda", "dml", "openvino", "cpu")
#: Streams on a CPU with at least this many threads for the model (``streams=None``): two calls at once,
#: each on half the threads. On a 2-core Xeon (AMX) and the INT8 demo model, two single-threaded calls at
#: once ran 88 ms per 512 px tile against 105-114 ms for one call on both threads (onnxruntime), 28 against
#: 30-33 ms (OpenVINO); a lone call takes longer (173 ms on one thread), so it pays from two tiles on.
CPU_STREAMS = 2


def available_providers() -> list[str]:
    """onnxruntime's execution providers in this installation (e.g. ``["CPUExecutionProvider"]``)."""
    return list(ort.get_available_providers())


def choose_providers(provider: str = "auto") -> list[str]:
    """onnxruntime provider list for ``provider`` (auto, cpu, cuda, dml/directml, openvino).

    The CPU provider is always appended as the fallback for operators another provider lacks.

    Raises
    ------
    InputError
        for an unknown name, or a provider this onnxruntime installation does not have.
    """
    name = (provider or "auto").lower()
    installed = available_providers()
    if name == "auto":
        picked = next(PROVIDERS[n] for n in AUTO_ORDER if PROVIDERS[n] in installed or n == "cpu")
    elif name in PROVIDERS:
        picked = PROVIDERS[name]
        if picked not in installed:
            raise InputError(
                f"execution provider {name!r} ({picked}) is not installed; available: {', '.join(installed)}"
            )
    else:
        raise InputError(f"unknown provider {provider!r}; use auto, cpu, cuda, dml or openvino")
    return [picked] + (["CPUExecutionProvider"] if picked != "CPUExecutionProvider" else [])


@dataclass
class SegmentationModel:
    """An onnxruntime session plus what the file says about it.

    Attributes
    ----------
    path : the .onnx file.
    classes : class names in id order; colors : one (r, g, b) per class.
    input : ``{"channels", "scale", "mean", "std", "size_multiple"}``: the network sees
        ``(pixel * scale - mean) / std`` for 8-bit pixels.
    variant : ``"fp32"``, ``"fp16"`` or ``"int8"``.
    tile_size, overlap : the recommended sliding-window tiling in pixels.
    sha256 : hash of the ONNX graph (the file's, or the weights' inside a package).
    source, metrics : the ``semphase.source`` and ``semphase.metrics`` records.
    providers : the execution providers the session runs on; threads : intra-op threads of each stream
        (None = onnxruntime's default, one per core); streams : calls of the network meant to run at once
        (:func:`plan_streams`), each on its own thread: the sliding window keeps that many busy.
    session_options : extra onnxruntime session config entries it was opened with (e.g. the precise INT8
        kernels its self-check chose); self_check : the verdict (:class:`~semphase.runtime.selfcheck.Verdict`)
        or None when nobody asked.
    backend : what runs the network (:mod:`semphase.runtime.backends`; default: ``session``);
        backend_choice : why that one (``auto``'s measurement, a fall-back), recorded in every result.
    """

    path: Path
    session: ort.InferenceSession = field(repr=False)
    classes: list[str]
    colors: list[tuple[int, int, int]]
    input: dict
    variant: str
    tile_size: int
    overlap: int
    sha256: str
    source: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    providers: list[str] = field(default_factory=list)
    threads: int | None = None
    streams: int = 1
    session_options: dict[str, str] = field(default_factory=dict)
    self_check: selfcheck.Verdict | None = None
    #: the raw ``semphase.reference`` metadata value (None for files exported before it existed)
    reference: object = field(default=None, repr=False)
    backend: object = field(default=None, repr=False)
    backend_choice: str = "requested"

    def __post_init__(self) -> None:
        if self.backend is None:
            self.backend = backends.OnnxRuntimeBackend(self.session)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def size_multiple(self) -> int:
        return int(self.input["size_multiple"])

    def normalize(self, batch_u8: np.ndarray) -> np.ndarray:
        """uint8 (N, H, W) -> float32 (N, 1, H, W) as the network expects (:func:`model_format.normalize`)."""
        return model_format.normalize(batch_u8, self.input)

    def logits(self, batch_u8: np.ndarray) -> np.ndarray:
        """Run the network on 8-bit tiles.

        Parameters
        ----------
        batch_u8 : uint8, shape (N, H, W); H and W multiples of ``size_multiple``.

        Returns
        -------
        float32, shape (N, C, H, W).
        """
        if batch_u8.ndim != 3 or batch_u8.dtype != np.uint8:
            raise ValueError(f"expected uint8 (N, H, W) tiles, got {batch_u8.dtype} {batch_u8.shape}")
        m = self.size_multiple
        if batch_u8.shape[1] % m or batch_u8.shape[2] % m:
            raise ValueError(f"tile sides must be multiples of {m}, got {batch_u8.shape[1:]}")
        return self.backend.run(self.normalize(batch_u8))

    def describe(self) -> dict:
        """The model as recorded in every result: file, variant, hash, providers, tiling."""
        return {
            "path": str(self.path),
            "variant": self.variant,
            "sha256": self.sha256,
            "providers": list(self.providers),
            "threads": self.threads,
            "streams": self.streams,
            "classes": list(self.classes),
            "recommended_tile": {"size": self.tile_size, "overlap": self.overlap},
            "session_options": dict(self.session_options),
            "backend": {
                "name": self.backend.name,
                "version": self.backend.version,
                "precision": self.backend.precision,
                "choice": self.backend_choice,
            },
            "self_check": None if self.self_check is None else self.self_check.as_dict(),
        }


def _metadata(session: ort.InferenceSession, path: Path) -> dict:
    return model_format.parse(dict(session.get_modelmeta().custom_metadata_map or {}), path)


def _check_signature(session: ort.InferenceSession, num_classes: int, path: Path) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) < 1:
        raise InputError(f"expected one input and one output, got {len(inputs)} and {len(outputs)}", path)
    shape_in, shape_out = inputs[0].shape, outputs[0].shape
    if len(shape_in) != 4 or (isinstance(shape_in[1], int) and shape_in[1] != 1):
        raise InputError(f"input must be N x 1 x H x W, got {shape_in}", path)
    if inputs[0].type != "tensor(float)":
        raise InputError(f"input must be float32, got {inputs[0].type}", path)
    if len(shape_out) != 4 or (isinstance(shape_out[1], int) and shape_out[1] != num_classes):
        raise InputError(f"output must be N x {num_classes} x H x W, got {shape_out}", path)


#: onnxruntime's tensor type names -> numpy dtype names, for :func:`summarize_file`.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
}


def summarize_file(path: str | os.PathLike) -> model_format.ModelSummary:
    """A semphase model file's metadata and signature through onnxruntime (the base install's ``info``).

    Raises
    ------
    InputError
        naming the file: missing, empty, not ONNX, or not a semphase model.
    """
    p = _check_file(Path(path))
    source = model_package.resolve(p)
    try:
        session = create_session(source.session_source)
    except Exception as exc:  # onnxruntime raises its own types for corrupt or foreign files
        raise InputError(f"cannot load as an ONNX model ({one_line(exc, 200)})", p) from None
    metadata = _metadata(session, p)
    info = session.get_modelmeta()

    def signature(values) -> list[tuple[str, str, list[int | str]]]:
        return [
            (v.name, _ORT_TYPES.get(v.type, v.type), [d if d is not None else "?" for d in v.shape])
            for v in values
        ]

    return model_format.ModelSummary(
        path=p,
        size_bytes=source.size_bytes,
        metadata=metadata,
        opset=None,
        producer=info.producer_name or "unknown",  # onnxruntime reports no producer version
        inputs=signature(session.get_inputs()),
        outputs=signature(session.get_outputs()),
    )


def _check_file(p: Path) -> Path:
    if not p.exists():
        raise InputError("no such model file", p)
    if p.is_dir():
        raise InputError("is a folder; expected an .onnx model file or a .bioimageio.zip package", p)
    if p.stat().st_size == 0:
        raise InputError("empty model file (0 bytes)", p)
    return p


#: Self-check verdicts of this process: (file hash, providers, threads) -> (verdict, session options used).
_VERDICTS: dict[tuple, tuple[selfcheck.Verdict, dict[str, str]]] = {}


def _open(
    source: model_package.ModelSource,
    providers: list[str],
    threads: int | None,
    config: dict[str, str],
    streams: int = 1,
) -> SegmentationModel:
    """A session on ``source`` with ``config`` session entries, checked against its metadata (no
    self-check); the source (and its hash) is resolved once by the caller however often it is opened."""
    p = source.path
    try:
        session = create_session(source.session_source, providers=providers, threads=threads, config=config)
    except Exception as exc:  # onnxruntime raises its own types for corrupt or foreign files
        raise InputError(f"cannot load as an ONNX model ({one_line(exc, 200)})", p) from None
    meta = _metadata(session, p)
    contract = model_format.check(meta, p)
    _check_signature(session, len(contract.classes), p)
    model = SegmentationModel(
        path=p,
        session=session,
        classes=contract.classes,
        colors=contract.colors,
        input=contract.normalization,
        variant=contract.variant,
        tile_size=contract.tile_size,
        overlap=contract.overlap,
        sha256=source.sha256,
        source=meta.get("semphase.source") or {},
        metrics=meta.get("semphase.metrics") or {},
        providers=list(session.get_providers()),
        threads=threads,
        streams=streams,
        session_options=dict(config),
        reference=meta.get(selfcheck.REFERENCE_KEY),
    )
    return model


def _probe_output(model: SegmentationModel) -> None:
    """Run one small tile: a model that cannot run, or whose logits are not one per class and pixel (a
    strided or cropping graph), is refused now, naming the file, instead of failing inside a batch."""
    side = 2 * model.size_multiple
    try:
        out = model.logits(np.zeros((1, side, side), np.uint8))
    except Exception as exc:  # onnxruntime's own errors for graphs that load but cannot run
        reason = f"the model cannot run on a {side} x {side} tile ({one_line(exc, 200)})"
        raise InputError(reason, model.path) from None
    expected = (1, model.num_classes, side, side)
    if out.shape != expected:
        raise InputError(
            f"the model returns logits of shape {tuple(out.shape)} for a {side} x {side} tile; a semphase "
            f"model returns one logit per class and pixel, {expected}",
            model.path,
        )


def plan_streams(threads: int | None, streams: int | None, providers: list[str]) -> tuple[int | None, int]:
    """(intra-op threads of each stream, streams) for a model given ``threads`` in all and ``streams``.

    ``streams=None``: :data:`CPU_STREAMS` on the CPU when the model has at least that many threads (all
    physical cores when ``threads`` is None), else 1; one on a GPU (its own queue runs the calls). Each
    stream gets ``threads // streams`` threads; a single stream keeps ``threads`` as given (None: the
    library's default).
    """
    total = threads if threads is not None else machine.physical_cores()
    if streams is None:
        on_cpu = providers[0] == "CPUExecutionProvider"
        streams = CPU_STREAMS if on_cpu and total >= CPU_STREAMS else 1
    if streams == 1:
        return threads, 1
    return max(1, total // streams), streams


def load_model(
    path: str | os.PathLike,
    provider: str = "auto",
    threads: int | None = None,
    verify: bool = True,
    session_options: dict[str, str] | None = None,
    backend: str = "onnxruntime",
    streams: int | None = None,
) -> SegmentationModel:
    """Open an exported semphase ONNX model and run its self-check.

    Parameters
    ----------
    path : the .onnx file (model.onnx, model.fp16.onnx or model.int8.onnx from ``semphase export``), or a
        bioimage.io package from ``semphase package`` (its ONNX weights, :mod:`semphase.model_package`).
    provider : ``auto`` (CUDA, then DirectML, then OpenVINO, then CPU, among those installed), ``cpu``,
        ``cuda``, ``dml`` or ``openvino``.
    threads : CPU threads for the network in all (None: one per physical core), shared by its streams.
    verify : run the file's self-check (:mod:`semphase.runtime.selfcheck`) once per process: compare the
        model's classes on the reference tiles stored at export with the FP32 labels stored beside them,
        fall back to onnxruntime's precise INT8 kernels, refuse the model if both disagree. False records
        the verdict ``skipped``.
    session_options : extra onnxruntime session config entries (``{"key": "value"}``).
    backend : ``onnxruntime``; ``openvino`` (the openvino extra; CPU only): the file compiled by
        OpenVINO, self-checked there, and onnxruntime instead (said in ``backend_choice``) when it fails
        its self-check; ``auto``: the faster of the two on this machine among those that pass the
        self-check (measured once per model and machine, :mod:`semphase.runtime.backends`), onnxruntime
        when OpenVINO is not installed, another provider than the CPU was chosen, or ``verify`` is off.
    streams : calls of the network at once, each on ``threads / streams`` threads (:func:`plan_streams`;
        None: two on a CPU with two or more cores). More streams finish a micrograph of many tiles sooner;
        one is quicker for a lone tile (``serve --workers N`` gives each worker cores / N threads).

    Returns
    -------
    SegmentationModel whose ``self_check`` holds the verdict and whose session is the one that passed it.

    Raises
    ------
    InputError
        naming the file: missing, empty, not ONNX, not a semphase model, unusable metadata or signature,
        a provider that is not installed, or a failed self-check (with the CPU and the agreement reached);
        ``backend="openvino"`` without OpenVINO installed, or on another provider than the CPU.
    """
    p = _check_file(Path(path))
    if backend not in backends.BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use {', '.join(backends.BACKENDS)}", p)
    if threads is not None and threads < 1:
        raise InputError(f"threads must be >= 1, got {threads}", p)
    if streams is not None and streams < 1:
        raise InputError(f"streams must be >= 1, got {streams}", p)
    providers = choose_providers(provider)
    threads, streams = plan_streams(threads, streams, providers)
    config = dict(session_options or {})
    source = model_package.resolve(p)
    key = (source.sha256, tuple(providers), threads, streams, tuple(sorted(config.items())))
    cached = _VERDICTS.get(key) if verify else None
    # a verdict of this process already chose the session options: open the file with them, once
    model = _open(source, providers, threads, cached[1] if cached else config, streams)
    _probe_output(model)
    if not verify:
        model.self_check = selfcheck.skipped()
        if backend == "onnxruntime":
            return model
        return _choose_backend(model, source, backend, providers, threads, verify)
    if cached:
        verdict = cached[0]
    else:
        value = model.reference
        reference = None if value is None else selfcheck.Reference.from_metadata(value, p)
        reopen = lambda extra: _open(source, providers, threads, extra, streams)  # noqa: E731
        verdict, model = selfcheck.check(model, reference, reopen)
        _VERDICTS[key] = (verdict, dict(model.session_options))
    if not verdict.usable:
        raise InputError(selfcheck.refusal(verdict, model.variant), p)
    model.self_check = verdict
    if backend == "onnxruntime":
        return model
    return _choose_backend(model, source, backend, providers, threads, verify)


def _choose_backend(
    model: SegmentationModel, source, backend: str, providers: list[str], threads: int | None, verify: bool
) -> SegmentationModel:
    """``backend`` ``openvino`` or ``auto`` for a model that onnxruntime opened (and self-checked)."""
    p = model.path
    on_cpu = providers == ["CPUExecutionProvider"]
    if backend == "openvino":
        if not on_cpu:
            raise InputError("the OpenVINO backend runs on the CPU: use the cpu provider with it", p)
        backends.import_openvino()  # installed? (one line saying how otherwise)
    elif not on_cpu:
        model.backend_choice = f"auto: onnxruntime, the only backend for {providers[0]}"
        return model
    elif not backends.openvino_installed():
        model.backend_choice = f"auto: onnxruntime (OpenVINO is not installed: {backends.OPENVINO_EXTRA})"
        return model
    elif not verify or model.reference is None:
        why = "verify is off" if not verify else "the file carries no self-check reference"
        model.backend_choice = f"auto: onnxruntime (only a self-checked backend is chosen; {why})"
        return model
    cache = backends.ChoiceCache()
    key = backends.choice_key(model.sha256, threads, model.variant, model.streams)
    cached = cache.get(key) if backend == "auto" else None
    if cached is not None and cached["backend"] == "onnxruntime":
        model.backend_choice = f"auto: {cached['reason']} (measured {cached['measured']})"
        return model
    if verify:
        reference = None if model.reference is None else selfcheck.Reference.from_metadata(model.reference, p)
        ov_model, tried = _openvino_checked(model, reference, source, threads)
        if ov_model is None:
            version = backends.openvino_version() or "?"
            model.backend_choice = (
                f"{backend}: onnxruntime, since OpenVINO {version} fails the self-check here "
                f"({'; '.join(tried)} of the reference pixels)"
            )
            return model
    else:
        ov_model = _on_openvino(model, source, threads)
        ov_model.self_check = selfcheck.skipped()
    if backend == "openvino":
        ov_model.backend_choice = "requested"
        return ov_model
    if cached is not None:  # openvino, measured before on this machine
        ov_model.backend_choice = f"auto: {cached['reason']} (measured {cached['measured']})"
        return ov_model
    chosen, reason = _measure(model, ov_model)
    cache.put(key, {"backend": chosen.backend.name, "reason": reason, "measured": _today()})
    chosen.backend_choice = f"auto: {reason} (measured now)"
    return chosen


def _on_openvino(
    model: SegmentationModel, source, threads: int | None, f32: bool = False
) -> SegmentationModel:
    """The same model with OpenVINO running the network (metadata, classes and tiling unchanged); its
    ``session_options`` say the precision OpenVINO compiled it in (recorded by the self-check)."""
    from dataclasses import replace

    runner = backends.OpenVinoBackend(
        source.session_source, threads, model.path, f32=f32, streams=model.streams
    )
    options = {"openvino.inference_precision": runner.precision}
    return replace(model, backend=runner, session_options=options, self_check=None)


def _openvino_checked(
    model: SegmentationModel, reference: selfcheck.Reference | None, source, threads: int | None
) -> tuple[SegmentationModel | None, list[str]]:
    """OpenVINO in its default precision, else in f32, whichever passes the self-check first (None if
    neither does), and what each attempt reached. A FP32 or FP16 file run in a reduced precision must
    reach :data:`backends.REDUCED_PRECISION_PCT`."""
    from dataclasses import replace

    tried: list[str] = []
    candidate = _on_openvino(model, source, threads)
    while True:
        precision = candidate.backend.precision
        required = None if reference is None else reference.required_pct
        if required is not None and model.variant in ("fp32", "fp16") and precision != "f32":
            required = max(required, backends.REDUCED_PRECISION_PCT)
        checked = reference if reference is None else replace(reference, required_pct=required)
        verdict, _ = selfcheck.check(candidate, checked, None, fallback=False)
        if verdict.usable:
            candidate.self_check = verdict
            return candidate, tried
        tried.append(f"{verdict.agreement_pct:.2f} % in {precision}, {required:.2f} % required")
        if precision == "f32":
            return None, tried
        candidate = _on_openvino(model, source, threads, f32=True)


def _measure(ort_model: SegmentationModel, ov_model: SegmentationModel) -> tuple[SegmentationModel, str]:
    """The faster of the two on one of the model's tiles per stream, all streams at once (medians of
    :data:`backends.TIMED_RUNS`; per tile)."""
    side, streams = ort_model.tile_size, ort_model.streams
    tile = np.random.default_rng(0).integers(0, 256, (1, side, side), dtype=np.uint8)
    ort_s = backends.timed(ort_model.logits, tile, streams)
    ov_s = backends.timed(ov_model.logits, tile, streams)
    times = f"{side} px tile: onnxruntime {ort_s * 1000:.0f} ms, OpenVINO {ov_s * 1000:.0f} ms"
    if ov_s < ort_s:
        return ov_model, f"openvino, {ort_s / ov_s:.2f}x faster ({times})"
    return ort_model, f"onnxruntime, {ov_s / ort_s:.2f}x faster ({times})"


def _today() -> str:
    from datetime import date

    return date.today().isoformat()
