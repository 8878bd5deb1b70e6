"""Static INT8 quantization of the FP32 graph with onnxruntime.quantization (QDQ format).

Steps: ``quant_pre_process`` (shape inference and graph optimization) -> calibration on normalized tiles
-> ``quantize_static`` with per-channel weights. Calibration runs one tile at a time through the
quantizer's strided calibration (``CalibStridedMinMax``), which keeps memory to one tile's activations for
every calibration method (the histogram methods otherwise hold all tiles' activations at once).

**7-bit weights, so that every x86 CPU computes the same phases.** onnxruntime's u8 x s8 kernels on x86
CPUs without VNNI (AVX2 only: AMD Zen 2/3, Intel desktop chips before Ice Lake) multiply with VPMADDUBSW,
which adds two u8 x s8 products into a signed 16-bit sum that saturates at 32767 when both are large;
VNNI and AMX accumulate in 32 bits. With full 8-bit weights the same file therefore gives other phases on
an AVX2 PC than on the machine that validated it. ``reduce_range`` keeps weights in -64..63, where no pair
can saturate, at no cost in accuracy or speed on either kind of CPU; the alternatives that also fix AVX2
(the precise-kernel session option, u8 x u8, s8 x s8) cost most of INT8's speed. ``--int8-full-range``
restores 8-bit weights. Measurements: benchmarks/RESULTS.md, "INT8 on every x86 CPU".

Which layers stay in float is a setting: ``"first"`` names the convolution(s) that read the graph input
and ``"head"`` the convolution that writes the logits (the usual suspects); any other entry is an exact node
name. The defaults (MinMax calibration, QUInt8 activations, nothing in float) were chosen by measured
test-split mIoU and speed: no setting lost more than 0.0004 mIoU, MinMax calibrates fastest, and QUInt8
activations take onnxruntime's fast u8 x s8 kernels where QInt8 ran at FP32 speed (benchmarks/RESULTS.md,
"INT8 calibration settings").
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from semphase.export.metadata import INPUT_NAME, OUTPUT_NAME

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
ACTIVATION_TYPES = ("quint8", "qint8")
WEIGHT_TYPES = ("qint8", "quint8")


@dataclass(frozen=True)
class Int8Settings:
    """How the INT8 file is made.

    Attributes
    ----------
    method : calibration method, one of :data:`CALIBRATION_METHODS`.
    activations : activation type, ``"quint8"`` (asymmetric u8, onnxruntime's fast U8S8 kernels) or
        ``"qint8"``.
    weights : weight type, ``"qint8"`` (signed) or ``"quint8"``.
    reduce_range : quantize weights to 7 bits, so that x86 kernels without VNNI (VPMADDUBSW, whose 16-bit
        pair sums saturate) compute the same sums as VNNI/AMX ones.
    keep_float : layers left in float: ``"first"``, ``"head"`` or exact node names.
    per_channel : per-output-channel weight scales.
    percentile : the percentile of the ``"percentile"`` method.
    """

    method: str = "minmax"
    activations: str = "quint8"
    weights: str = "qint8"
    reduce_range: bool = True
    keep_float: tuple[str, ...] = ()
    per_channel: bool = True
    percentile: float = 99.999

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}")
        if self.activations not in ACTIVATION_TYPES:
            raise ValueError(f"activation type must be one of {', '.join(ACTIVATION_TYPES)}")
        if self.weights not in WEIGHT_TYPES:
            raise ValueError(f"weight type must be one of {', '.join(WEIGHT_TYPES)}")
        if not 90.0 <= self.percentile <= 100.0:
            raise ValueError(f"percentile must be in 90..100, got {self.percentile}")

    def as_dict(self) -> dict:
        return {**asdict(self), "keep_float": list(self.keep_float)}


#: The defaults of ``semphase export`` (chosen by measured held-out mIoU; see the module docstring).
DEFAULT_SETTINGS = Int8Settings()


@dataclass
class QuantizedGraph:
    """The INT8 model and what was done to make it."""

    model: onnx.ModelProto
    settings: Int8Settings
    #: Node names kept in float (resolved from ``settings.keep_float``).
    float_nodes: list[str] = field(default_factory=list)
    calibration_tiles: int = 0


def _conv_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]


def resolve_float_nodes(model: onnx.ModelProto, keep_float: Sequence[str]) -> list[str]:
    """Node names for ``keep_float`` entries (``"first"``, ``"head"`` or node names) in ``model``.

    Raises
    ------
    ValueError
        naming an entry that matches no node.
    """
    convs = _conv_nodes(model)
    names = {n.name for n in model.graph.node}
    producers = {out: n for n in model.graph.node for out in n.output}
    resolved: list[str] = []
    for entry in keep_float:
        if entry == "first":
            found = [n.name for n in convs if n.input and n.input[0] == INPUT_NAME]
        elif entry == "head":
            # Walk back from the logits through shape-preserving ops to the convolution that makes them.
            node = producers.get(OUTPUT_NAME)
            while node is not None and node.op_type not in ("Conv", "ConvTranspose"):
                node = producers.get(node.input[0]) if node.input else None
            found = [node.name] if node is not None else []
        elif entry in names:
            found = [entry]
        else:
            found = []
        if not found:
            raise ValueError(f"no node for float layer {entry!r} (use first, head or an exact node name)")
        resolved += [n for n in found if n not in resolved]
    return resolved


class TileReader:
    """onnxruntime CalibrationDataReader over normalized tiles, one tile per batch.

    Parameters
    ----------
    tiles : sequence of float32 arrays (1, C, H, W), normalized like the network input; sizes may differ
        (H, W multiples of 32).
    """

    def __init__(self, tiles: Sequence[np.ndarray]) -> None:
        self.tiles = list(tiles)
        self._start, self._end = 0, len(tiles)
        self._next = 0

    def __len__(self) -> int:
        return len(self.tiles)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._start, self._end = start_index, min(end_index, len(self.tiles))
        self._next = self._start

    def get_next(self) -> dict | None:
        if self._next >= self._end:
            return None
        tile = self.tiles[self._next]
        self._next += 1
        return {INPUT_NAME: np.ascontiguousarray(tile, dtype=np.float32)}


def prepare(model: onnx.ModelProto, work_dir: str | os.PathLike) -> Path:
    """Run ``quant_pre_process`` on ``model``; return the path of the prepared graph in ``work_dir``."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = Path(work_dir) / "fp32.onnx"
    prepared = Path(work_dir) / "fp32.prepared.onnx"
    plain = onnx.ModelProto()
    plain.CopyFrom(model)
    del plain.metadata_props[:]
    onnx.save_model(plain, os.fspath(source))
    # Symbolic shape inference (meant for transformers) fails on ConvTranspose with dynamic sizes; ONNX
    # shape inference gives the CNN everything the quantizer needs.
    quant_pre_process(os.fspath(source), os.fspath(prepared), skip_symbolic_shape=True)
    return prepared


def quantize(
    prepared: str | os.PathLike,
    tiles: Sequence[np.ndarray],
    settings: Int8Settings = DEFAULT_SETTINGS,
    cache_dir: str | os.PathLike | None = None,
) -> QuantizedGraph:
    """Quantize a prepared FP32 graph to INT8 (QDQ, QInt8 per-channel weights).

    Parameters
    ----------
    prepared : path from :func:`prepare`.
    tiles : float32 arrays (1, C, H, W), normalized calibration tiles; at least one.
    settings : calibration method, activation type, float layers.
    cache_dir : when given, calibration ranges are cached there per method, so trying other float
        layers or activation types with the same method skips the calibration runs.

    Returns
    -------
    QuantizedGraph; its model has no metadata yet.

    Raises
    ------
    ValueError
        for an empty tile set or a float layer that matches no node.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if len(tiles) == 0:
        raise ValueError("no calibration tiles")
    model = onnx.load_model(os.fspath(prepared))
    float_nodes = resolve_float_nodes(model, settings.keep_float)
    method = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[settings.method]
    extra = {"CalibStridedMinMax": 1}  # one tile per calibration pass, merged afterwards (bounded memory)
    if settings.method == "percentile":
        extra["CalibPercentile"] = settings.percentile
    types = {"quint8": QuantType.QUInt8, "qint8": QuantType.QInt8}
    with tempfile.TemporaryDirectory(prefix="semphase-int8-") as tmp:
        cache = None
        if cache_dir is not None:
            tag = settings.method + (f"-{settings.percentile:g}" if settings.method == "percentile" else "")
            cache = Path(cache_dir) / f"calibration-{tag}-{len(tiles)}.json"
        out = Path(tmp) / "int8.onnx"
        # The histogram calibrators print progress with print(); keep the command's console clean.
        with contextlib.redirect_stdout(io.StringIO()):
            quantize_static(
                os.fspath(prepared),
                os.fspath(out),
                calibration_data_reader=TileReader(tiles),
                quant_format=QuantFormat.QDQ,
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                activation_type=types[settings.activations],
                weight_type=types[settings.weights],
                nodes_to_exclude=float_nodes or None,
                calibrate_method=method,
                extra_options=extra,
                calibration_cache_path=cache,
            )
        quantized = onnx.load_model(os.fspath(out))
    del quantized.metadata_props[:]
    return QuantizedGraph(quantized, settings, float_nodes, len(tiles))
