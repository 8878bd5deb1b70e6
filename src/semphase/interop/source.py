"""What both package formats start from: the FP32 model, a held-out test tile, its prediction, a cover.

A semphase ONNX file carries everything a package needs: class names and colours, the training
normalization, the recommended tiling, the checkpoint's test metrics and (since self-check references)
a few held-out micrograph tiles. So packaging needs no checkpoint, dataset or torch, only the file, and
an ``export_report.json`` beside it adds the held-out FP32 parity numbers to the documentation.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semphase import model_format
from semphase.errors import GateFailed, InputError

#: Cited in every package: the study whose recipe semphase implements, and the dataset it trained on.
DATASET_DOI = "10.5281/zenodo.17315241"
DATASET_CITATION = (
    "Safdar, M. (2025). Scanning Electron Microscopy (SEM) Dataset of Additively Manufactured Ni-WC Metal "
    "Matrix Composites for Semantic Segmentation (Version 1). Zenodo."
)
#: The study has no DOI of its own; its entry points at the dataset it was trained and tested on.
STUDY_CITATION = (
    "SEM Microstructure Phase Segmentation using Deep Learning: a multi-class U-Net with a ResNet34 "
    "encoder, weighted cross-entropy + Dice loss, frozen then unfrozen encoder; the study semphase "
    "implements (the DOI is that of its dataset)."
)


@dataclass
class ModelToPackage:
    """The FP32 ONNX file and what it says about itself.

    Attributes
    ----------
    path : the .onnx file; data : its bytes.
    contract : classes, colours, normalization, tiling (:class:`semphase.model_format.Contract`).
    metadata : every ``semphase.*`` entry, decoded.
    opset : the default-domain opset the graph imports.
    report : ``export_report.json`` from the same folder when it belongs to this model, else None.
    """

    path: Path
    data: bytes = field(repr=False)
    contract: model_format.Contract
    metadata: dict
    opset: int
    report: dict | None = None

    @property
    def metrics(self) -> dict:
        return self.metadata.get("semphase.metrics") or {}

    @functools.cached_property
    def session(self):
        """One onnxruntime session on :attr:`data`, opened on first use (the test tensors, the cover and
        the CZANN check all run the model)."""
        from semphase.runtime.session import create_session

        return create_session(self.data, threads=None)

    def logits(self, tiles_u8: np.ndarray) -> np.ndarray:
        """The model's float32 logits (N, C, H, W) for uint8 (N, H, W) tiles, as the runtime computes them."""
        x = model_format.normalize(tiles_u8, self.contract.normalization)
        (out,) = self.session.run(None, {self.session.get_inputs()[0].name: x})
        return np.asarray(out, np.float32)


def load_fp32(path: str | os.PathLike) -> ModelToPackage:
    """Read an exported FP32 semphase ONNX file for packaging.

    Raises
    ------
    InputError
        naming the file: missing, not ONNX, not a semphase model, or not the FP32 variant (packages carry
        FP32 weights: every consumer runs them, and they are the reference the other variants are held to).
    """
    from semphase.export.metadata import default_opset, parse_onnx, read_metadata, read_onnx_bytes
    from semphase.model_package import is_package

    p = Path(path)
    if is_package(p):  # a bioimage.io package or a CZANN: both are zips
        raise InputError("already a package; give 'semphase package' the model.onnx it was made from", p)
    data = read_onnx_bytes(p)  # read once: parsed here, packaged byte for byte
    model = parse_onnx(data, p)
    metadata = read_metadata(model, p)
    contract = model_format.check(metadata, p)
    if contract.variant != "fp32":
        raise InputError(
            f"a {contract.variant.upper()} model; packages carry the FP32 model.onnx (every tool runs FP32, "
            "and it is what FP16 and INT8 are validated against)",
            p,
        )
    return ModelToPackage(
        path=p,
        data=data,
        contract=contract,
        metadata=metadata,
        opset=default_opset(model),
        report=_matching_report(p, metadata),
    )


def _matching_report(path: Path, metadata: dict) -> dict | None:
    """``export_report.json`` beside ``path`` if it was written for the same checkpoint, else None."""
    candidate = path.parent / "export_report.json"
    try:
        report = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ours = (metadata.get("semphase.source") or {}).get("checkpoint_sha256")
    theirs = (report.get("checkpoint") or {}).get("sha256") if isinstance(report, dict) else None
    return report if ours and theirs == ours else None


def test_tile(model: ModelToPackage, sample: str | os.PathLike | None = None) -> tuple[np.ndarray, str]:
    """A held-out uint8 (H, W) tile for the test tensors and the cover, and where it came from.

    Without ``sample``: the first self-check reference tile stored in the model at export (held-out
    images the network never trained on). With ``sample``: the centre of that micrograph, cropped to
    the recommended tile size (at most) and down to a multiple of the model's size multiple.

    Raises
    ------
    InputError
        when the model holds no reference tiles and no sample was given, or the sample is unreadable or
        smaller than two size multiples.
    """
    multiple = int(model.contract.normalization["size_multiple"])
    if sample is None:
        value = model.metadata.get("semphase.reference")
        if value is None:
            raise InputError(
                "the model holds no held-out reference tiles (exported before self-check references); "
                "give a held-out micrograph with --sample IMAGE",
                model.path,
            )
        from semphase.runtime.selfcheck import Reference

        tiles = Reference.from_metadata(value, model.path).tiles
        where = "the first held-out reference tile stored in the model at export"
        return np.ascontiguousarray(tiles[0]), where
    from semphase.imageio import read_gray, to_uint8

    image = to_uint8(read_gray(sample))
    side_h = min(image.shape[0], model.contract.tile_size) // multiple * multiple
    side_w = min(image.shape[1], model.contract.tile_size) // multiple * multiple
    if min(side_h, side_w) < 2 * multiple:
        raise InputError(f"a sample must be at least {2 * multiple} x {2 * multiple} pixels", sample)
    y0, x0 = (image.shape[0] - side_h) // 2, (image.shape[1] - side_w) // 2
    tile = np.ascontiguousarray(image[y0 : y0 + side_h, x0 : x0 + side_w])
    return tile, f"the central {side_w} x {side_h} pixels of {Path(sample).name}"


def failed(message: str, result: dict) -> GateFailed:
    """A package that did not validate: ``message`` for the user, ``result`` (what was checked) for the
    package report (``exc.result``)."""
    exc = GateFailed(message)
    exc.result = result  # type: ignore[attr-defined]
    return exc


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Class probabilities from logits, float32."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def cover_image(tile: np.ndarray, labels: np.ndarray, colors) -> np.ndarray:
    """RGB cover: the micrograph beside its overlay (2:1, as bioimage.io recommends for covers)."""
    from semphase.data.overlay import overlay

    gray = np.repeat(tile[:, :, None], 3, axis=2)
    return np.hstack([gray, overlay(tile, labels, colors)])


def held_out_metrics(model: ModelToPackage) -> list[str]:
    """Markdown lines with the test metrics stored in the model and the export report's held-out FP32
    parity (empty when neither is there)."""
    lines = []
    names = (("miou", "mIoU"), ("mdice", "mDice"), ("mbf1", "mBF1"))
    summary = (model.metrics or {}).get("summary") or {}
    if summary:
        images = model.metrics.get("images")
        scores = ", ".join(f"{label} {summary[key]['mean']:.4f}" for key, label in names if key in summary)
        lines.append(f"- Test split{f' ({images} images)' if images else ''} at training time: {scores}.")
    ious = ((model.metrics or {}).get("per_class") or {}).get("iou")
    if isinstance(ious, list) and len(ious) == len(model.contract.classes):
        pairs = zip(model.contract.classes, ious, strict=True)
        text = ", ".join(f"{name} {v:.3f}" for name, v in pairs if isinstance(v, (int, float)))
        lines.append(f"- Per-class IoU on the test split: {text}.")
    variants = (model.report or {}).get("variants") or {}
    fp32 = variants.get("fp32") or {}
    if fp32:
        held = (model.report or {}).get("heldout") or {}
        parts = [f"{label} {fp32[key]:.4f}" for key, label in names if isinstance(fp32.get(key), float)]
        agreement = fp32.get("argmax_agreement_pct")
        lines.append(
            f"- This ONNX file on {held.get('images', '?')} held-out images at export: {', '.join(parts)}"
            + (f"; {agreement:.3f} % of pixels agree with the PyTorch checkpoint" if agreement else "")
            + "."
        )
    return lines
