"""Models that verify themselves where they run.

``semphase export`` stores a small reference inside every file's metadata (``semphase.reference``): a few
uint8 tiles from the held-out split, the FP32 model's labels for them, and the agreement the variant must
reach. When the runtime loads a model it runs the variant on those tiles once per process and compares:

- agreement >= required: the model is used (verdict ``passed``);
- otherwise it opens the model again with onnxruntime's precise x64 INT8 kernels
  (``session.x64quantprecision=1``: on x86 CPUs without VNNI the default U8S8 kernels use VPMADDUBSW,
  whose 16-bit intermediate sums can saturate) and checks again (``passed-precise``: that session is
  used from then on);
- if that fails too the model is refused with one line naming the CPU, the agreement reached and what
  to use instead (``failed``).

Files exported before the reference existed load as before (``no-reference``); ``--no-verify`` skips the
check (``skipped``). The verdict, with the CPU and its instruction sets, goes into every result.
"""

from __future__ import annotations

import base64
import time
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

from semphase.errors import InputError
from semphase.machine import cpu_summary, isa_text

REFERENCE_KEY = "semphase.reference"
REFERENCE_FORMAT = 1
#: The session option that selects onnxruntime's precise U8S8 kernels on x86 CPUs without VNNI.
PRECISE_KERNELS = {"session.x64quantprecision": "1"}
#: The self-check requires the lower of the export gate and what the file reached at export minus this
#: many percentage points: kernels that compute the same integer sums (VNNI, AMX, AVX2 precise) agree with
#: each other to a few pixels, while a saturating kernel loses several percent (92-96 % measured).
EXPORT_MARGIN_PP = 0.5


def _pack(array: np.ndarray) -> dict:
    data = np.ascontiguousarray(array, dtype=np.uint8)
    return {
        "shape": list(data.shape),
        "dtype": "uint8",
        "zlib_base64": base64.b64encode(zlib.compress(data.tobytes(), 9)).decode("ascii"),
    }


def _unpack(value: dict) -> np.ndarray:
    shape = tuple(int(n) for n in value["shape"])
    if value.get("dtype") != "uint8" or len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"expected uint8 (K, H, W), got {value.get('dtype')} {list(shape)}")
    raw = zlib.decompress(base64.b64decode(value["zlib_base64"], validate=True))
    return np.frombuffer(raw, dtype=np.uint8).reshape(shape)


@dataclass
class Reference:
    """What a model must reproduce where it runs.

    Attributes
    ----------
    tiles : uint8 (K, H, W) micrograph tiles (H, W multiples of the model's size multiple).
    labels : uint8 (K, H, W) the FP32 model's classes for them.
    required_pct : the agreement (percent of pixels) a run must reach.
    export_pct : what this file reached on the exporting machine.
    exported_on : ``{"cpu", "instruction_sets"}`` of that machine.
    """

    tiles: np.ndarray
    labels: np.ndarray
    required_pct: float
    export_pct: float | None = None
    exported_on: dict = field(default_factory=dict)

    def to_metadata(self) -> dict:
        """The JSON value stored under ``semphase.reference``."""
        return {
            "format": REFERENCE_FORMAT,
            "tiles": _pack(self.tiles),
            "labels": _pack(self.labels),
            "labels_from": "fp32",
            "required_agreement_pct": float(self.required_pct),
            "export_agreement_pct": None if self.export_pct is None else float(self.export_pct),
            "exported_on": self.exported_on,
        }

    @classmethod
    def from_metadata(cls, value: object, path=None) -> Reference:
        """Decode ``semphase.reference``; InputError naming ``path`` when it is malformed."""
        try:
            if not isinstance(value, dict) or int(value.get("format", 0)) != REFERENCE_FORMAT:
                raise ValueError(
                    f"unknown format {value.get('format') if isinstance(value, dict) else value!r}"
                )
            tiles, labels = _unpack(value["tiles"]), _unpack(value["labels"])
            if tiles.shape != labels.shape:
                raise ValueError(f"tiles {tiles.shape} and labels {labels.shape} differ")
            required = float(value["required_agreement_pct"])
            if not 0.0 <= required <= 100.0:
                raise ValueError(f"required agreement {required} is not a percentage")
            export = value.get("export_agreement_pct")
            return cls(
                tiles,
                labels,
                required,
                None if export is None else float(export),
                value.get("exported_on") or {},
            )
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise InputError(f"unusable {REFERENCE_KEY} metadata ({exc})", path) from None


def required_agreement(gate_pct: float, export_pct: float) -> float:
    """The agreement a run must reach: the export gate, or what the file reached minus a margin if lower."""
    return max(0.0, min(float(gate_pct), float(export_pct) - EXPORT_MARGIN_PP))


def label_tiles(logits_of, tiles: np.ndarray, batch: int = 2) -> np.ndarray:
    """Argmax labels uint8 (K, H, W) of ``tiles`` through ``logits_of(uint8 (N, H, W)) -> (N, C, H, W)``."""
    out = np.empty(tiles.shape, np.uint8)
    for start in range(0, len(tiles), batch):
        out[start : start + batch] = np.asarray(logits_of(tiles[start : start + batch])).argmax(1)
    return out


def agreement_pct(labels: np.ndarray, reference: np.ndarray) -> float:
    """Percent of pixels where two label arrays of one shape agree."""
    return 100.0 * float(np.count_nonzero(labels == reference)) / max(reference.size, 1)


@dataclass
class Verdict:
    """The outcome of a model's self-check on this machine (recorded in every result).

    ``status`` is ``passed``, ``passed-precise`` (only with onnxruntime's precise kernels), ``failed``,
    ``no-reference`` (the file carries none) or ``skipped``. ``attempts`` lists each session tried:
    ``{"session_options": {...}, "agreement_pct": float}``.
    """

    status: str
    cpu: str | None
    instruction_sets: dict
    required_pct: float | None = None
    agreement_pct: float | None = None
    export_pct: float | None = None
    pixels: int = 0
    seconds: float = 0.0
    session_options: dict = field(default_factory=dict)
    attempts: list = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """False only when the check ran and failed with every session it tried."""
        return self.status != "failed"

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        """One line for the console and ``semphase info --verify``."""
        where = f"{self.cpu or 'unknown CPU'} ({isa_text(self.instruction_sets)})"
        if self.status == "no-reference":
            return f"self-check: not possible, the file carries no reference (an older export); on {where}"
        if self.status == "skipped":
            return "self-check: skipped (--no-verify)"
        options = ", ".join(f"{k}={v}" for k, v in self.session_options.items()) or "default session options"
        text = (
            f"{self.agreement_pct:.2f} % of {self.pixels} reference pixels agree with FP32 "
            f"({self.required_pct:.2f} % required) with {options}, {self.seconds:.2f} s, on {where}"
        )
        return f"self-check {self.status}: {text}"


def _unverified(status: str) -> Verdict:
    cpu = cpu_summary()
    return Verdict(status=status, cpu=cpu["cpu"], instruction_sets=dict(cpu["instruction_sets"]))


def skipped() -> Verdict:
    """The verdict of a run with ``--no-verify``."""
    return _unverified("skipped")


def check(model, reference: Reference | None, reopen, fallback: bool = True) -> tuple[Verdict, object]:
    """Run the self-check of a loaded model.

    Parameters
    ----------
    model : an object with ``logits(uint8 (N, H, W)) -> float32 (N, C, H, W)`` and ``session_options``
        (the extra session config entries it was opened with).
    reference : the file's reference, or None (``no-reference``).
    reopen : ``reopen(config: dict) -> model``: the same file opened with extra session config entries.
    fallback : try :data:`PRECISE_KERNELS` when the first check fails.

    Returns
    -------
    (verdict, the model to use): the model itself, or the precise-kernel one when only that passed.
    A failed verdict is returned, not raised (see :func:`refusal`).
    """
    if reference is None:
        return _unverified("no-reference"), model
    start = time.perf_counter()
    opened = dict(getattr(model, "session_options", {}))
    precise = {**opened, **PRECISE_KERNELS}
    current, attempts = model, []
    while True:
        agreement = agreement_pct(label_tiles(current.logits, reference.tiles), reference.labels)
        options = dict(getattr(current, "session_options", {}))
        attempts.append({"session_options": options, "agreement_pct": agreement})
        passed = agreement >= reference.required_pct
        # one fall-back at most, and none when the model already runs with the precise kernels
        if passed or len(attempts) == 2 or not fallback or precise == opened:
            break
        current = reopen(precise)
    cpu = cpu_summary()
    verdict = Verdict(
        status=("passed" if len(attempts) == 1 else "passed-precise") if passed else "failed",
        cpu=cpu["cpu"],
        instruction_sets=dict(cpu["instruction_sets"]),
        required_pct=reference.required_pct,
        agreement_pct=agreement,
        export_pct=reference.export_pct,
        pixels=int(reference.labels.size),
        session_options=options,
        attempts=attempts,
        seconds=time.perf_counter() - start,
    )
    return verdict, current if passed else model


def refusal(verdict: Verdict, variant: str) -> str:
    """The one-line reason a model is refused (the caller names the file)."""
    first, *others = verdict.attempts
    reached = f"{first['agreement_pct']:.2f} %" + "".join(
        f" ({a['agreement_pct']:.2f} % with the precise INT8 kernels)" for a in others
    )
    instead = (
        "use model.onnx (FP32) or model.fp16.onnx on this PC"
        if variant == "int8"
        else "re-export the model with this semphase version and check its export report"
    )
    return (
        f"{variant.upper()} model fails its self-check on this CPU ({verdict.cpu or 'unknown CPU'}; "
        f"{isa_text(verdict.instruction_sets)}): {reached} of its reference pixels agree with FP32, "
        f"{verdict.required_pct:.2f} % required; {instead} (--no-verify runs it anyway)"
    )
