"""Writing and reading the ``semphase.*`` metadata of exported ONNX files (with the onnx package).

The contract itself (keys, their parsing and checks) is :mod:`semphase.model_format`, shared with the
runtime, which reads the same entries through onnxruntime alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import onnx

from semphase import __version__
from semphase.errors import InputError
from semphase.imageio import atomic_path
from semphase.model_format import (  # noqa: F401  (re-exported: the exporter's modules import them here)
    INPUT_NAME,
    METADATA_KEYS,
    OPTIONAL_KEYS,
    OUTPUT_NAME,
    RECOMMENDED_OVERLAP,
    RECOMMENDED_TILE,
    SIZE_MULTIPLE,
    VARIANTS,
    ModelSummary,
    Tiling,
    check,
    parse,
)
from semphase.model_package import resolve
from semphase.phases import ClassTable


def canonical_json(value: object) -> str:
    """JSON with sorted keys and no spaces: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def config_sha256(config: dict) -> str:
    """sha256 (hex) of the training config's canonical JSON."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def _test_summary(checkpoint: dict) -> dict | None:
    """The part of a checkpoint's ``test_metrics`` (scoring schema) that travels with the model."""
    metrics = checkpoint.get("test_metrics")
    if not isinstance(metrics, dict) or "summary" not in metrics:
        return None
    summary = {"summary": metrics["summary"]}
    per_class = metrics.get("per_class")
    if isinstance(per_class, dict):
        # The schema's per-class scores only; the scorer's extras (pixel counts, confusions) stay in the run.
        summary["per_class"] = {k: per_class[k] for k in ("iou", "dice", "bf1") if k in per_class}
    if isinstance(metrics.get("per_image"), list):
        summary["images"] = len(metrics["per_image"])
    return json.loads(canonical_json(summary))


def build_metadata(
    config: dict,
    checkpoint: dict,
    *,
    variant: str,
    checkpoint_sha256: str,
    tile_size: int = RECOMMENDED_TILE,
    overlap: int = RECOMMENDED_OVERLAP,
) -> dict[str, str]:
    """The ``semphase.*`` entries for one exported variant.

    Parameters
    ----------
    config : the training config stored in the checkpoint (``classes``, ``normalization``, ``in_channels``).
    checkpoint : the whole checkpoint dict (its ``test_metrics`` become ``semphase.metrics``).
    variant : ``"fp32"``, ``"fp16"`` or ``"int8"``.
    checkpoint_sha256 : hex digest of the checkpoint file.
    tile_size, overlap : recommended sliding-window tile and overlap in pixels.

    Returns
    -------
    dict mapping each key of :data:`METADATA_KEYS` to a JSON string.

    Raises
    ------
    ValueError
        for an unknown variant, a config without class table or normalization, or a bad tile/overlap
        (:class:`~semphase.model_format.Tiling`'s OptionError, a ValueError).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    tiling = Tiling(int(tile_size), int(overlap))
    table = ClassTable.from_dict(config["classes"])
    if table.num_classes != int(config["num_classes"]):
        raise ValueError(
            f"class table has {table.num_classes} classes but num_classes is {config['num_classes']}"
        )
    norm = config["normalization"]
    channels = int(config.get("in_channels", 1))
    network_input = {
        "channels": channels,
        "scale": float(norm["scale"]),
        "mean": [float(v) for v in norm["mean"]],
        "std": [float(v) for v in norm["std"]],
        "size_multiple": tiling.multiple,
    }
    if len(network_input["mean"]) != channels or len(network_input["std"]) != channels:
        raise ValueError(f"normalization needs {channels} mean/std value(s), got {norm}")
    source = {
        "checkpoint_sha256": checkpoint_sha256,
        "config_sha256": config_sha256(config),
        "semphase_version": __version__,
    }
    if isinstance(config.get("init_from"), dict):  # fine-tuned (train --init): what it started from
        source["init_from"] = config["init_from"]
    prior = config.get("prior_correction_result")
    if isinstance(prior, dict) and prior.get("applied"):  # train --prior-correction moved the output bias
        source["prior_correction"] = {k: prior[k] for k in ("label_shares", "estimated_shares", "bias")}
    values = {
        "semphase.classes": table.names,
        "semphase.colors": [list(c) for c in table.colors],
        "semphase.input": network_input,
        "semphase.variant": variant,
        "semphase.tile": {"size": tiling.tile, "overlap": tiling.overlap},
        "semphase.source": source,
        "semphase.metrics": _test_summary(checkpoint),
    }
    return {key: json.dumps(values[key], allow_nan=False) for key in METADATA_KEYS}


def reference_metadata(reference) -> dict[str, str]:
    """The ``semphase.reference`` entry for a :class:`semphase.runtime.selfcheck.Reference`."""
    return {"semphase.reference": json.dumps(reference.to_metadata(), allow_nan=False)}


def write_metadata(model: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Set ``metadata`` on ``model`` in place, replacing earlier ``semphase.*`` entries."""
    keep = [(p.key, p.value) for p in model.metadata_props if not p.key.startswith("semphase.")]
    del model.metadata_props[:]
    for key, value in keep:
        model.metadata_props.add(key=key, value=value)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> int:
    """Write an ONNX model atomically (temporary ``.NAME.*.part`` beside ``path``, then rename).

    Returns
    -------
    int: the file size in bytes.

    Raises
    ------
    InputError
        when the folder is not writable.
    """
    with atomic_path(path) as tmp:
        try:
            onnx.save_model(model, os.fspath(tmp))
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        except OSError as exc:
            raise InputError(f"cannot write model ({exc.strerror or exc})", path) from None
    return Path(path).stat().st_size


def read_onnx_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a model file, or a one-line InputError when it is missing, not a file or empty."""
    p = Path(path)
    if not p.is_file():
        raise InputError("no such model file" if not p.exists() else "not a file", p)
    if p.stat().st_size == 0:
        raise InputError("empty file (0 bytes)", p)
    return p.read_bytes()


def parse_onnx(data: bytes, path: str | os.PathLike, member: str | None = None) -> onnx.ModelProto:
    """An ONNX model from its bytes (semphase's files keep their weights inside), or a one-line
    InputError naming ``path`` (and ``member``, the file inside a package) when it is not ONNX."""
    what = f"{member} in the package is not" if member else "not"
    try:
        model = onnx.load_model_from_string(data)
    except Exception:  # protobuf raises DecodeError, onnx raises its own types; all mean "not ONNX"
        raise InputError(f"{what} an ONNX model (cannot parse)", path) from None
    if not model.graph.node and not model.graph.input:
        raise InputError(f"{what} an ONNX model (no graph)", path)
    return model


def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file (weights included), raising a one-line InputError for anything else."""
    return parse_onnx(read_onnx_bytes(path), path)


def default_opset(model: onnx.ModelProto) -> int:
    """The opset the model imports for the default (``ai.onnx``) domain; 0 when it names none."""
    return int(next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0))


def read_metadata(model: onnx.ModelProto, path: str | os.PathLike | None = None) -> dict[str, object]:
    """The parsed and checked ``semphase.*`` entries of a model (every key of :data:`METADATA_KEYS`).

    Raises
    ------
    InputError
        naming ``path`` when the model is not a semphase model (keys missing), a value is not JSON, or the
        values break the contract (:func:`semphase.model_format.check`).
    """
    values = parse({p.key: p.value for p in model.metadata_props}, path, require_all=True)
    check(values, path)
    return values


def _signature(values) -> list[tuple[str, str, list[int | str]]]:
    out = []
    for v in values:
        tensor = v.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in tensor.shape.dim]
        out.append((v.name, onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, dims))
    return out


def summarize_model(path: str | os.PathLike) -> ModelSummary:
    """Read a semphase ONNX file's metadata, opset and signature.

    Raises
    ------
    InputError
        for a missing, empty or non-ONNX file, or an ONNX model that semphase did not export.
    """
    p = Path(path)
    source = resolve(p) if p.is_file() else None
    if source is not None and source.data is not None:  # a bioimage.io package: its ONNX weights
        model = parse_onnx(source.data, p, source.member)
    else:
        model = load_onnx(p)
    metadata = read_metadata(model, p)
    opset = default_opset(model)
    initializer_names = {t.name for t in model.graph.initializer}
    return ModelSummary(
        path=p,
        size_bytes=source.size_bytes if source is not None else p.stat().st_size,
        metadata=metadata,
        opset=int(opset),
        producer=f"{model.producer_name} {model.producer_version}".strip() or "unknown",
        inputs=_signature(i for i in model.graph.input if i.name not in initializer_names),
        outputs=_signature(model.graph.output),
    )
