"""FP32 ONNX graph -> FP16 weights and compute, keeping float32 ``image`` input and ``logits`` output.

Uses onnxruntime's own converter (``onnxruntime.transformers.float16``), which ships with onnxruntime, so
no extra package is needed. With ``keep_io_types=True`` it inserts a Cast after the input and before the
output; callers feed and read float32 exactly as with the FP32 file.

On the CPU execution provider onnxruntime runs every convolution in float32 on the upcast weights, so
FP16 is at best as fast as FP32 there and gives FP32's phases with FP16-rounded weights; the file is half
the size, and FP16 pays off on GPU providers (CUDA, DirectML). Measurements: benchmarks/RESULTS.md,
"FP16 on the CPU".
"""

from __future__ import annotations

import warnings

import onnx


def convert_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert a checked FP32 graph to FP16 with float32 graph input and output.

    Parameters
    ----------
    model : FP32 ONNX model (not modified).

    Returns
    -------
    onnx.ModelProto: FP16 weights and activations; the graph's ``image`` input and ``logits`` output stay
    float32; nodes topologically sorted and checked with ``onnx.checker``. ``metadata_props`` are not
    copied (callers write the variant's own).
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    source = onnx.ModelProto()
    source.CopyFrom(model)
    del source.metadata_props[:]
    with warnings.catch_warnings():
        # The converter warns about values clamped to the FP16 range; parity validation measures the effect.
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(source, keep_io_types=True)
    # The converter appends its input Casts at the end of the node list; ONNX requires topological order.
    wrapper = OnnxModel(converted)
    wrapper.topological_sort()
    converted = wrapper.model
    onnx.checker.check_model(converted)
    return converted
