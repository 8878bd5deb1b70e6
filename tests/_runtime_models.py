"""Small exported semphase models for the runtime tests (no tests here).

:func:`export_scratch_model` exports an untrained, seeded scratch U-Net through the project's own export
code, so the runtime is exercised on a real U-Net graph (pooling, transposed convolutions, skips, a
receptive field far wider than one tile border) with real metadata. Building it needs torch; the runtime
tests then run it with onnxruntime alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from test_export_support import make_checkpoint


def export_scratch_model(folder: Path, tile: int = 128, overlap: int = 32, variant: str = "fp32") -> Path:
    """Write ``folder/model.onnx``: a scratch U-Net (base width 8), 5 Ni-WC classes, float32 I/O."""
    import torch

    from semphase.export.metadata import build_metadata, save_model, write_metadata
    from semphase.export.onnx_export import export_fp32
    from semphase.imageio import file_sha256
    from semphase.train.checkpoint import load_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    checkpoint = folder / "best.pt"
    config = make_checkpoint(checkpoint)
    network, _, _ = load_checkpoint(checkpoint)
    graph = export_fp32(network, in_channels=1, num_classes=5, simplify=False)
    stored = torch.load(checkpoint, weights_only=True)
    metadata = build_metadata(
        config,
        stored,
        variant=variant,
        checkpoint_sha256=file_sha256(checkpoint),
        tile_size=tile,
        overlap=overlap,
    )
    write_metadata(graph.model, metadata)
    path = folder / "model.onnx"
    save_model(graph.model, path)
    return path


def micrograph(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A synthetic Ni-WC-like micrograph (uint8) from the project's generator."""
    from semphase.data.synth.render import prepare

    scene = prepare(height, width, seed, 700)
    pixels = np.empty((height, width), np.uint8)
    for y0, y1 in scene.bands():
        pixels[y0:y1], _ = scene.render(y0, y1)
    return pixels


#: Gray levels the blur classifier maps to classes 0..4 (Matrix, Carbide, Void, Reprecipitate, Dilution).
CENTRES = (60, 95, 215, 130, 170)


def build_blur_classifier(path: Path, tile: int = 128, overlap: int = 32, blur: int = 9) -> Path:
    """Write a semphase ONNX model with a known, bounded receptive field (no torch needed).

    Two ``blur x blur`` box filters with zero padding (receptive field ``2 * blur - 1`` pixels), then each
    class's logit is minus the squared distance of the blurred, normalized pixel to that class's centre
    (:data:`CENTRES`). Tiles see zero padding at their borders, exactly like a U-Net does, so a tiled run
    disagrees with a whole-image run near tile borders unless the blending hides them.
    """
    import json

    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scale, mean, std = 1 / 255, 0.449, 0.226
    centres = ((np.asarray(CENTRES, np.float32) * scale - mean) / std).reshape(1, -1, 1, 1)
    box = np.full((1, 1, blur, blur), 1.0 / blur**2, np.float32)
    pad = blur // 2
    nodes = [
        helper.make_node("Conv", ["image", "box"], ["b1"], pads=[pad] * 4, kernel_shape=[blur, blur]),
        helper.make_node("Conv", ["b1", "box"], ["b2"], pads=[pad] * 4, kernel_shape=[blur, blur]),
        helper.make_node("Sub", ["b2", "centres"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["d2"]),
        helper.make_node("Mul", ["d2", "gain"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "semphase_blur_classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5, "H", "W"])],
        [
            numpy_helper.from_array(box, "box"),
            numpy_helper.from_array(centres.astype(np.float32), "centres"),
            numpy_helper.from_array(np.asarray(-8.0, np.float32), "gain"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    metadata = {
        "semphase.classes": ["Matrix", "Carbide", "Void", "Reprecipitate", "Dilution"],
        "semphase.colors": [[52, 101, 164], [239, 41, 41], [252, 233, 79], [78, 154, 6], [173, 127, 168]],
        "semphase.input": {"channels": 1, "scale": scale, "mean": [mean], "std": [std], "size_multiple": 32},
        "semphase.variant": "fp32",
        "semphase.tile": {"size": tile, "overlap": overlap},
        "semphase.source": {
            "checkpoint_sha256": "0" * 64,
            "config_sha256": "0" * 64,
            "semphase_version": "test",
        },
        "semphase.metrics": {},
    }
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def with_class_names(path: Path, names: list[str]) -> Path:
    """Rewrite the class names stored in a semphase ONNX file (in place); returns ``path``."""
    import json

    import onnx

    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == "semphase.classes":
            prop.value = json.dumps(names)
    onnx.save(model, str(path))
    return path


_REF_TILE = 64


def reference_tiles() -> np.ndarray:
    image = micrograph(_REF_TILE * 2, _REF_TILE * 2, seed=3)
    return np.stack([image[:_REF_TILE, :_REF_TILE], image[_REF_TILE:, _REF_TILE:]])


def _true_labels(path: Path, tiles: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = ((tiles[:, None] / 255.0 - 0.449) / 0.226).astype(np.float32)
    return session.run(None, {"image": x})[0].argmax(1).astype(np.uint8)


def model_with_reference(
    folder: Path, name: str, *, corrupt: float = 0.0, variant: str = "int8", reference=True
) -> Path:
    """The blur classifier as a self-checking model: a reference of two tiles and its own labels for them,
    with a share ``corrupt`` of the labels changed (a CPU that "computes differently"); ``reference=False``
    gives a file from before references existed."""
    import onnx

    from semphase.runtime import selfcheck

    base = build_blur_classifier(folder / f"base-{name}", tile=_REF_TILE, overlap=16)
    tiles = reference_tiles()
    labels = _true_labels(base, tiles)
    if corrupt:
        flat = labels.reshape(-1)
        changed = np.random.default_rng(0).permutation(flat.size)[: int(corrupt * flat.size)]
        flat[changed] = (flat[changed] + 1) % 5
    model = onnx.load(str(base))
    props = {p.key: p.value for p in model.metadata_props}
    props["semphase.variant"] = json.dumps(variant)
    if reference:
        stored = selfcheck.Reference(
            tiles, labels, required_pct=99.5, export_pct=100.0, exported_on={"cpu": "x"}
        )
        props["semphase.reference"] = json.dumps(stored.to_metadata())
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    path = folder / f"{name}.onnx"
    onnx.save(model, str(path))
    return path
