"""Does a model variant give the same phases as its reference? The gates of ``export`` and ``benchmark``.

A reduced-precision variant (FP16, INT8) is judged against the FP32 model on held-out pixels by four
numbers, each of which catches a change in either direction:

- **argmax agreement**: the share of pixels whose class is the same (percent);
- **|delta mIoU|**: the change of the held-out mIoU (mean over images) against the truth masks;
- **largest |delta IoU| of any class**: per-class IoU from the summed confusion matrix, so a variant
  that trades one phase for another fails even when the mean happens to rise;
- **largest phase-fraction change**: the change of any phase's share of the predicted pixels, in
  percentage points: what a metallographer reads off the result.

The FP32 ONNX file itself is judged by its agreement with the PyTorch checkpoint. Torch-free: the
inputs are scoring results (:meth:`semphase.metrics.Scorer.result`) and agreement percentages.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: Variants judged against FP32, and FP32's own reference.
REDUCED_VARIANTS = ("fp16", "int8")


@dataclass(frozen=True)
class Gates:
    """Thresholds a variant must meet (each check passes at its threshold exactly).

    Attributes
    ----------
    min_fp32_agreement : argmax agreement of FP32 ONNX with PyTorch, percent of held-out pixels.
    min_fp16_agreement, min_int8_agreement : argmax agreement of FP16 / INT8 with FP32 ONNX, percent.
    max_delta_miou : largest allowed ``|mIoU(variant) - mIoU(FP32)|`` on the held-out images.
    max_delta_class_iou : largest allowed ``|IoU_c(variant) - IoU_c(FP32)|`` of any class c.
    max_fraction_change_pp : largest allowed change of any phase fraction, percentage points.
    """

    min_fp32_agreement: float = 99.99
    min_fp16_agreement: float = 99.9
    min_int8_agreement: float = 99.5
    max_delta_miou: float = 0.01
    max_delta_class_iou: float = 0.02
    max_fraction_change_pp: float = 0.5

    def __post_init__(self) -> None:
        for name in ("min_fp32_agreement", "min_fp16_agreement", "min_int8_agreement"):
            if not 0.0 <= getattr(self, name) <= 100.0:
                raise ValueError(f"{name.replace('_', '-')} must be a percentage in 0..100")
        for name in ("max_delta_miou", "max_delta_class_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name.replace('_', '-')} must be in 0..1")
        if not 0.0 <= self.max_fraction_change_pp <= 100.0:
            raise ValueError("max-fraction-change must be in 0..100 percentage points")

    def min_agreement(self, variant: str) -> float:
        """The agreement threshold of ``variant`` (FP32 against PyTorch, the others against FP32)."""
        return {
            "fp32": self.min_fp32_agreement,
            "fp16": self.min_fp16_agreement,
            "int8": self.min_int8_agreement,
        }[variant]

    def as_dict(self) -> dict:
        return asdict(self)


def phase_fractions(result: dict) -> list[float | None]:
    """Each class's share of the predicted (scored) pixels of a scoring result, in percent."""
    pixels = result["per_class"]["pred_pixels"]
    total = sum(pixels)
    return [100.0 * n / total if total else None for n in pixels]


def _largest_change(candidate: list, reference: list, names: list[str]) -> tuple[float | None, str | None]:
    """(signed change of largest magnitude, class name) over classes where both values exist."""
    best: tuple[float | None, str | None] = (None, None)
    for a, b, name in zip(candidate, reference, names, strict=True):
        if a is None or b is None:
            continue
        change = float(a) - float(b)
        if best[0] is None or abs(change) > abs(best[0]):
            best = (change, name)
    return best


def changes_against(candidate: dict, reference: dict, agreement_pct: float | None) -> dict:
    """The four numbers the gates judge, for one variant against its reference.

    Parameters
    ----------
    candidate, reference : scoring results of the same images (``Scorer.result()``).
    agreement_pct : argmax agreement of the two label images, percent of pixels.

    Returns
    -------
    ``{"agreement_pct", "delta_miou", "max_delta_class_iou", "max_delta_class_iou_class",
    "max_fraction_change_pp", "max_fraction_change_class"}``; changes are signed (candidate minus
    reference), the largest by magnitude; None where a value is undefined.
    """
    names = list(reference["classes"])
    miou_c, miou_r = candidate["summary"]["miou"]["mean"], reference["summary"]["miou"]["mean"]
    iou_change, iou_class = _largest_change(
        candidate["per_class"]["iou"], reference["per_class"]["iou"], names
    )
    frac_change, frac_class = _largest_change(phase_fractions(candidate), phase_fractions(reference), names)
    return {
        "agreement_pct": agreement_pct,
        "delta_miou": None if miou_c is None or miou_r is None else float(miou_c) - float(miou_r),
        "max_delta_class_iou": iou_change,
        "max_delta_class_iou_class": iou_class,
        "max_fraction_change_pp": frac_change,
        "max_fraction_change_class": frac_class,
    }


#: Slack of every comparison, far below any reported digit: 0.81 - 0.80 is 0.010000000000000009 in binary
#: floating point, and a change shown as 0.0100 must pass a limit of 0.01.
_SLACK = 1e-12


def _check(name: str, variant: str, value, threshold: float, at_least: bool, text: str) -> dict:
    if value is None:
        passed, shown = False, f"{text} unknown"
    elif at_least:
        passed = value >= threshold - _SLACK
        shown = f"{text} {value:.4f}% {'>=' if passed else '<'} {threshold:g}%"
    else:
        passed = abs(value) <= threshold + _SLACK
        shown = f"{text} {value:+.4f} ({'|.| <=' if passed else '|.| >'} {threshold:g})"
    return {
        "name": f"{variant}_{name}",
        "variant": variant,
        "value": value,
        "threshold": threshold,
        "passed": bool(passed),
        "text": f"{variant.upper()} {shown}",
    }


def variant_checks(variant: str, changes: dict, gates: Gates) -> list[dict]:
    """The gate checks of one reduced-precision variant from :func:`changes_against`'s numbers.

    Returns
    -------
    list of ``{"name", "variant", "value", "threshold", "passed", "text"}``: agreement, delta mIoU,
    largest class IoU change, largest phase-fraction change. A missing value fails its check.
    """
    iou_class = changes.get("max_delta_class_iou_class")
    frac_class = changes.get("max_fraction_change_class")
    return [
        _check(
            "agreement_vs_fp32_pct",
            variant,
            changes.get("agreement_pct"),
            gates.min_agreement(variant),
            True,
            "argmax agreement with FP32",
        ),
        _check("delta_miou", variant, changes.get("delta_miou"), gates.max_delta_miou, False, "mIoU change"),
        _check(
            "max_delta_class_iou",
            variant,
            changes.get("max_delta_class_iou"),
            gates.max_delta_class_iou,
            False,
            f"largest class IoU change{f' ({iou_class})' if iou_class else ''}",
        ),
        _check(
            "max_fraction_change_pp",
            variant,
            changes.get("max_fraction_change_pp"),
            gates.max_fraction_change_pp,
            False,
            f"largest phase-fraction change, pp{f' ({frac_class})' if frac_class else ''}",
        ),
    ]


def fp32_check(agreement_pct: float | None, gates: Gates) -> dict:
    """The FP32 file's one check: argmax agreement with the PyTorch checkpoint."""
    return _check(
        "argmax_agreement_pct",
        "fp32",
        agreement_pct,
        gates.min_fp32_agreement,
        True,
        "argmax agreement with PyTorch",
    )


def failures(checks: list[dict]) -> list[str]:
    """The texts of the checks that failed, in order."""
    return [c["text"] for c in checks if not c["passed"]]
