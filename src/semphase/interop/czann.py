"""A ZEISS CZANN file (ZEN, arivis) from an exported semphase model, through ``czmodel``.

CZANN's contract differs from semphase's: one NHWC float32 input in ``[0, 1]`` of a fixed size, and an
NHWC float32 output in ``[0, 1]`` (one probability per class). So the graph packed here is the FP32 model
wrapped in a few ONNX nodes, without touching its weights:

    input (1, T, T, 1) in [0, 1] -> Transpose to NCHW -> * (255 * scale / std) - mean / std
        -> the semphase network -> Softmax over classes -> Transpose to NHWC -> output (1, T, T, C)

where ``T`` is the recommended tile size. ``x * 255`` is the 8-bit pixel ZEN scaled to ``[0, 1]``, so the
network sees what semphase feeds it. The metadata says multi-class semantic segmentation, the class names,
the input and output shapes, the minimum tile overlap (the recommended overlap) and, when stated, the pixel
size. ``czmodel`` checks the shapes against the graph and writes the zip; :func:`verify` unpacks it again
with ``czmodel`` and runs the unpacked graph with onnxruntime on a held-out tile.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from semphase.interop.source import ModelToPackage, failed, softmax

INPUT_NAME = "input"
OUTPUT_NAME = "output"


def wrap(model: ModelToPackage):
    """The CZANN graph (an ``onnx.ModelProto``): NHWC ``[0, 1]`` in, NHWC probabilities out, fixed size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    c = model.contract
    norm = c.normalization
    tile, classes = c.tile_size, len(c.classes)
    graph_model = onnx.load_model_from_string(model.data)
    graph = graph_model.graph
    initializers = {t.name for t in graph.initializer}
    (net_in,) = [i for i in graph.input if i.name not in initializers]
    net_out = graph.output[0]
    gain = np.float32(255.0 * float(norm["scale"]) / float(norm["std"][0]))
    offset = np.float32(float(norm["mean"][0]) / float(norm["std"][0]))
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(gain, np.float32), "czann_gain"),
            numpy_helper.from_array(np.array(offset, np.float32), "czann_offset"),
        ]
    )
    before = [
        helper.make_node("Transpose", [INPUT_NAME], ["czann_nchw"], perm=[0, 3, 1, 2], name="czann_to_nchw"),
        helper.make_node("Mul", ["czann_nchw", "czann_gain"], ["czann_scaled"], name="czann_scale"),
        helper.make_node("Sub", ["czann_scaled", "czann_offset"], [net_in.name], name="czann_normalize"),
    ]
    after = [
        helper.make_node("Softmax", [net_out.name], ["czann_probabilities"], axis=1, name="czann_softmax"),
        helper.make_node(
            "Transpose", ["czann_probabilities"], [OUTPUT_NAME], perm=[0, 2, 3, 1], name="czann_to_nhwc"
        ),
    ]
    nodes = before + list(graph.node) + after
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, tile, tile, 1]))
    del graph.output[:]
    output = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, tile, tile, classes])
    graph.output.append(output)
    onnx.checker.check_model(graph_model)
    return graph_model


def metadata(model: ModelToPackage, name: str, pixel_size_um: float | None):
    """czmodel's ModelMetadata for the wrapped graph."""
    from czmodel.core.model_metadata import ModelMetadata, ModelType

    c = model.contract
    tile = c.tile_size
    scaling = None
    if pixel_size_um:
        metres = float(pixel_size_um) * 1e-6
        scaling = (metres, metres)
    return ModelMetadata(
        model_type=ModelType.MULTI_CLASS_SEMANTIC_SEGMENTATION,
        input_shape=[tile, tile, 1],
        output_shape=[tile, tile, len(c.classes)],
        classes=list(c.classes),
        model_name=name,
        # CZANN wants an even overlap for each spatial dimension (twice a border)
        min_overlap=[c.overlap + c.overlap % 2] * 2,
        scaling=scaling,
    )


def write_czann(
    model: ModelToPackage, out_dir: Path, stem: str, name: str, pixel_size_um: float | None
) -> Path:
    """Write ``out_dir/<stem>.czann`` atomically through czmodel's ONNX converter."""
    import onnx
    from czmodel.core.util.onnx_export import DefaultOnnxConverter

    final = out_dir / f"{stem}.czann"
    with tempfile.TemporaryDirectory(prefix=".semphase-czann-", dir=out_dir) as tmp:
        wrapped = Path(tmp) / "model.onnx"
        onnx.save_model(wrap(model), str(wrapped))
        part = Path(tmp) / final.name
        DefaultOnnxConverter().convert(str(wrapped), metadata(model, name, pixel_size_um), str(part))
        part.replace(final)
    return final


def verify(path: Path, model: ModelToPackage, tile_u8: np.ndarray) -> dict:
    """Read the CZANN back with czmodel and run its graph on ``tile_u8`` (reflect-padded to the fixed
    size) against the semphase model on the same input.

    Returns ``{"metadata", "agreement_pct", "max_abs_probability_diff"}``; raises GateFailed when the
    metadata or the phases differ.
    """
    from czmodel.core.util._extract_model import extract_czann_model

    from semphase.runtime.session import create_session

    c = model.contract
    tile = c.tile_size
    with tempfile.TemporaryDirectory(prefix=".semphase-czann-check-") as tmp:
        meta, graph_path = extract_czann_model(str(path), Path(tmp))
        session = create_session(Path(graph_path))
        h, w = tile_u8.shape
        padded = np.pad(tile_u8, ((0, max(0, tile - h)), (0, max(0, tile - w))), mode="reflect")[:tile, :tile]
        x = (padded.astype(np.float32) / np.float32(255.0))[None, :, :, None]
        (probabilities,) = session.run(None, {session.get_inputs()[0].name: x})
    expected = model.logits(padded[None])
    reference = softmax(expected)[0].transpose(1, 2, 0)
    agreement = float((probabilities[0].argmax(-1) == reference.argmax(-1)).mean() * 100.0)
    diff = float(np.abs(probabilities[0] - reference).max())
    summary = {
        "type": meta.model_type.value,
        "classes": list(meta.classes or []),
        "input_shape": list(meta.input_shape),
        "output_shape": list(meta.output_shape),
        "min_overlap": list(meta.min_overlap or []),
        "scaling_m": list(meta.scaling) if meta.scaling else None,
        "model_name": meta.model_name,
    }
    result = {"metadata": summary, "agreement_pct": agreement, "max_abs_probability_diff": diff}
    problems = []
    if summary["classes"] != list(c.classes):
        problems.append(f"classes {summary['classes']} instead of {c.classes}")
    if summary["type"] != "MultiClassSemanticSegmentation":
        problems.append(f"model type {summary['type']}")
    if agreement < 99.99:
        problems.append(f"only {agreement:.3f} % of pixels get the semphase model's phase")
    if not diff <= 1e-3:  # the same phases are not enough: ZEN shows (and thresholds) the probabilities
        problems.append(f"probabilities differ from the semphase model's by up to {diff:.4f}")
    if problems:
        raise failed(f"{path.name} read back with czmodel: " + "; ".join(problems), result)
    return result
