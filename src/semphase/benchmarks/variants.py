"""Finding and loading the models a benchmark compares: the exported ONNX variants and a PyTorch checkpoint.

A variant that fails to load is kept as an entry with ``status="failed"`` and its reason, so the report
can say why it is missing while the others are measured.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from semphase.errors import InputError

#: Exported file of each ONNX variant inside MODEL_DIR (as ``semphase export`` writes them).
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


@dataclass
class Variant:
    """One model under test.

    Attributes
    ----------
    name : ``"fp32"``, ``"fp16"``, ``"int8"`` or ``"pytorch"``.
    path : the model file.
    model : the loaded model (runtime ``SegmentationModel`` or
        :class:`~semphase.train.inference.CheckpointModel`), None if it failed.
    status : ``"ok"`` or ``"failed"``; reason : why it failed.
    """

    name: str
    path: Path
    model: object | None = None
    status: str = "ok"
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.model is not None

    def fail(self, reason: str) -> None:
        """Mark failed (the first reason wins) and drop the model."""
        if self.status == "ok":
            self.status, self.reason = "failed", reason
        self.model = None

    def describe(self) -> dict:
        """The report's entry for this variant."""
        try:
            size_mb = self.path.stat().st_size / 1024**2
        except OSError:
            size_mb = None
        model = self.model
        return {
            "variant": self.name,
            "file": self.path.name,
            "path": str(self.path),
            "size_mb": size_mb,
            "status": self.status,
            "reason": self.reason,
            "providers": list(getattr(model, "providers", []) or []) if model is not None else [],
            "backend": _backend(model),
            "tile": getattr(model, "tile_size", None),
            "overlap": getattr(model, "overlap", None),
            "classes": list(getattr(model, "classes", []) or []) if model is not None else None,
        }


def _backend(model) -> dict | None:
    """The backend a loaded ONNX variant runs on and why (None for the checkpoint or a failed load)."""
    runner = getattr(model, "backend", None)
    if runner is None or not hasattr(runner, "version"):
        return None
    return {"name": runner.name, "version": runner.version, "choice": getattr(model, "backend_choice", "")}


def find_variants(model_dir: str | os.PathLike) -> dict[str, Path]:
    """The exported variant files present in ``model_dir``, in the order FP32, FP16, INT8.

    ``model_dir`` may also be one model file: a bioimage.io package from ``semphase package`` (its FP32
    weights) or a single ``.onnx`` file (named by its variant when it has an exported file's name).

    Raises
    ------
    InputError
        when ``model_dir`` is neither such a file nor a folder holding any of :data:`VARIANT_FILES`.
    """
    from semphase.model_package import is_package

    folder = Path(model_dir)
    if not folder.exists():
        raise InputError("no such folder", folder)
    if is_package(folder):
        return {"fp32": folder}
    if folder.is_file() and folder.suffix.lower() == ".onnx":
        name = next((n for n, f in VARIANT_FILES.items() if f == folder.name), "fp32")
        return {name: folder}
    if not folder.is_dir():
        raise InputError(
            "not a folder; expected the folder 'semphase export' wrote, an .onnx file or a .bioimageio.zip",
            folder,
        )
    found = {name: folder / file for name, file in VARIANT_FILES.items() if (folder / file).exists()}
    if not found:
        expected = ", ".join(VARIANT_FILES.values())
        raise InputError(f"holds none of the exported models ({expected})", folder)
    return found


def load_onnx_variant(
    name: str, path: Path, provider: str, threads: int, backend: str = "onnxruntime"
) -> Variant:
    """Load one ONNX file through the runtime; any failure becomes a failed :class:`Variant`."""
    from semphase.benchmarks.accuracy import short_reason
    from semphase.runtime.model import load_model

    variant = Variant(name, path)
    try:
        variant.model = load_model(path, provider=provider, threads=threads, backend=backend)
    except InputError as exc:
        variant.fail(exc.said_of(path))
    except Exception as exc:  # onnxruntime's own errors: reported, the other variants still run
        variant.fail(f"{exc.__class__.__name__}: {short_reason(exc)}")
    return variant


def load_checkpoint_variant(path: Path, threads: int, tile: int | None, overlap: int | None) -> Variant:
    """Load the PyTorch checkpoint (imports torch); a missing torch or a bad file gives a failed variant."""
    from semphase.benchmarks.accuracy import short_reason

    variant = Variant("pytorch", path)
    try:
        from semphase.train.inference import load_checkpoint_model

        variant.model = load_checkpoint_model(path, threads=threads, tile=tile, overlap=overlap)
    except ImportError as exc:
        variant.fail(f"PyTorch is not installed (pip install 'semphase[train]'): {short_reason(exc)}")
    except InputError as exc:
        variant.fail(exc.said_of(path))
    except Exception as exc:  # e.g. a config the model builder rejects
        variant.fail(f"{exc.__class__.__name__}: {short_reason(exc)}")
    return variant
