"""PyTorch network -> checked, simplified FP32 ONNX graph with dynamic batch, height and width.

Exporter choice (measured with torch 2.14.1, smp 0.6.0 U-Net/ResNet34, onnxruntime 1.32): torch's
default dynamo exporter needs the ``onnxscript`` package, which semphase does not install; with it, it
works too but takes ~7 s and leaves shape arithmetic (Div/Reshape) in the graph. The TorchScript exporter
(``dynamo=False``) exports in ~1.5 s, folds BatchNorm into the convolutions, and after onnxsim leaves
Conv/Relu/Add/Concat/Resize/MaxPool plus the small Shape->Gather->Concat chains that feed the decoder's
Resize its target size, so the nearest-neighbour upsampling follows any input size. Both were checked
against torch at 64x64, 96x128 (batch 2) and 512x512 (max |diff| < 4e-3, argmax identical).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
import torch
from torch import nn

from semphase import __version__
from semphase.errors import one_line
from semphase.export.metadata import INPUT_NAME, OUTPUT_NAME, SIZE_MULTIPLE

#: Opset 17 is fully covered by onnxruntime 1.32's CPU kernels and by its QDQ quantization tooling.
DEFAULT_OPSET = 17
#: Opsets the TorchScript exporter and the quantizer both handle for this network.
SUPPORTED_OPSETS = range(13, 21)
#: (N, H, W) of the graph-check inputs: two batch sizes and non-square sizes exercise the dynamic axes.
CHECK_SHAPES = ((1, 64, 64), (2, 96, 128))


@dataclass
class ExportedGraph:
    """The FP32 graph and how it was made."""

    model: onnx.ModelProto
    exporter: str
    opset: int
    simplified: bool
    #: Human-readable remarks (e.g. why simplification was skipped); shown on the console and in the report.
    notes: list[str] = field(default_factory=list)
    #: Largest |ONNX - torch| logit difference over :data:`CHECK_SHAPES` (random inputs).
    check_max_abs_diff: float = 0.0


def _torchscript_export(network: nn.Module, in_channels: int, opset: int) -> onnx.ModelProto:
    sample = torch.zeros(1, in_channels, 2 * SIZE_MULTIPLE, 2 * SIZE_MULTIPLE)
    buffer = io.BytesIO()
    dynamic = {0: "N", 2: "H", 3: "W"}
    with warnings.catch_warnings():
        # The deprecation notice of the TorchScript exporter and tracer warnings about shape-dependent
        # Python ints are expected here; the graph check below is what proves the export right.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (sample,),
            buffer,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: dynamic, OUTPUT_NAME: dynamic},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return onnx.load_model_from_string(buffer.getvalue())


def _simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto | None, str | None]:
    """onnxsim's simplification, or (None, reason) when it fails."""
    try:
        import onnxsim
    except ImportError:
        return None, "onnxsim is not installed"
    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as exc:  # onnxsim raises many types; the unsimplified graph is still valid
        return None, f"onnxsim failed: {exc.__class__.__name__}: {one_line(exc, 200)}"
    if not ok:
        return None, "onnxsim could not verify the simplified graph"
    return simplified, None


def _check_graph(model: onnx.ModelProto, num_classes: int) -> None:
    """onnx.checker, strict shape inference, and symbolic N/H/W on input and output."""
    onnx.checker.check_model(model, full_check=False)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    for value, channels in ((inferred.graph.input[0], None), (inferred.graph.output[0], num_classes)):
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 4 or any(not dims[i].dim_param for i in (0, 2, 3)):
            raise RuntimeError(f"ONNX {value.name} is not N x C x H x W with dynamic N, H, W: {dims}")
        if channels is not None and dims[1].dim_value != channels:
            raise RuntimeError(f"ONNX {value.name} has {dims[1].dim_value} channels, expected {channels}")


def _compare_with_torch(network: nn.Module, model: onnx.ModelProto, in_channels: int) -> float:
    """Run both on random inputs of :data:`CHECK_SHAPES`; return the largest |logit difference|."""
    from semphase.runtime.session import create_session

    session = create_session(model.SerializeToString())
    rng = np.random.default_rng(0)
    worst = 0.0
    for n, h, w in CHECK_SHAPES:
        x = rng.standard_normal((n, in_channels, h, w), dtype=np.float32)
        with torch.inference_mode():
            expected = network(torch.from_numpy(x)).numpy()
        got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        if got.shape != expected.shape:
            raise RuntimeError(f"ONNX output shape {got.shape} != torch {expected.shape} for input {x.shape}")
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def export_fp32(
    network: nn.Module,
    *,
    in_channels: int,
    num_classes: int,
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
) -> ExportedGraph:
    """Export a segmentation network to a checked FP32 ONNX graph.

    Parameters
    ----------
    network : torch module mapping float32 ``(N, in_channels, H, W)`` to logits ``(N, num_classes, H, W)``
        for H, W multiples of 32; put in eval mode here.
    in_channels, num_classes : channel counts of input and output.
    opset : ONNX opset (default :data:`DEFAULT_OPSET`).
    simplify : run onnxsim; when it fails the unsimplified graph is kept and the reason is in ``notes``.

    Returns
    -------
    ExportedGraph with input ``image`` float32 ``N x in_channels x H x W`` and output ``logits`` float32
    ``N x num_classes x H x W`` (N, H, W symbolic).

    Raises
    ------
    ValueError
        for an opset outside :data:`SUPPORTED_OPSETS`.
    RuntimeError
        when the exported graph fails the checks (a bug, not bad input).
    """
    if opset not in SUPPORTED_OPSETS:
        raise ValueError(
            f"opset must be in {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}, got {opset}"
        )
    network = network.eval().cpu()
    model = _torchscript_export(network, in_channels, opset)
    _check_graph(model, num_classes)
    notes: list[str] = []
    simplified = False
    if simplify:
        candidate, reason = _simplify(model)
        if candidate is not None:
            try:
                _check_graph(candidate, num_classes)
                model, simplified = candidate, True
            except (RuntimeError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
                reason = f"simplified graph failed the checks ({one_line(exc, 200)})"
        if reason:
            notes.append(f"kept the unsimplified graph: {reason}")
    # onnxsim may leave its own verdicts in metadata_props; the file's metadata is semphase's alone.
    del model.metadata_props[:]
    model.producer_name, model.producer_version = "semphase", __version__
    diff = _compare_with_torch(network, model, in_channels)
    return ExportedGraph(model, "torch.onnx TorchScript (dynamo=False)", opset, simplified, notes, diff)
