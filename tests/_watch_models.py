"""A tiny semphase ONNX model for the watch tests: one 3x3 convolution giving 5 logits per pixel.

Built with onnx.helper (no torch) and carrying the metadata keys of docs/architecture.md, so
``semphase.runtime.model.load_model`` reads it like an exported model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLASSES = ["Matrix", "Carbide", "Void", "Reprecipitate", "Dilution"]
COLORS = [[40, 40, 40], [230, 60, 60], [60, 120, 230], [240, 200, 60], [80, 200, 120]]


def build_tiny_model(path: Path, seed: int = 0) -> Path:
    """Write the model to ``path``: input ``image`` N x 1 x H x W float32, output ``logits`` N x 5 x H x W."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1, (5, 1, 3, 3)).astype(np.float32)
    bias = np.linspace(-1, 1, 5).astype(np.float32)
    conv = helper.make_node("Conv", ["image", "w", "b"], ["logits"], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    graph = helper.make_graph(
        [conv],
        "semphase_tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5, "H", "W"])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    metadata = {
        "semphase.classes": CLASSES,
        "semphase.colors": COLORS,
        "semphase.input": {
            "channels": 1,
            "scale": 1 / 255,
            "mean": [0.5],
            "std": [0.25],
            "size_multiple": 32,
        },
        "semphase.variant": "fp32",
        "semphase.tile": {"size": 128, "overlap": 16},
        "semphase.source": {
            "checkpoint_sha256": "0" * 64,
            "config_sha256": "0" * 64,
            "semphase_version": "test",
        },
        "semphase.metrics": {},
    }
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path
