"""The self-check reference an export stores in every file (see :mod:`semphase.runtime.selfcheck`).

A few held-out tiles are chosen where the truth mask is most varied (most phases, most boundary pixels:
where a kernel that computes differently changes labels first), labelled by the FP32 graph, and each
variant is run on them here to record what it reached. The runtime later requires the same agreement,
less a small margin, on whatever CPU it runs on.
"""

from __future__ import annotations

import numpy as np

from semphase.export.imagesets import LabelledImage, normalize
from semphase.export.metadata import INPUT_NAME, OUTPUT_NAME, SIZE_MULTIPLE
from semphase.machine import cpu_summary
from semphase.runtime.selfcheck import Reference, agreement_pct, label_tiles, required_agreement

#: Reference tiles per file and their largest side: 2 x 256 x 256 pixels take about 0.1 s in INT8 on a
#: 2-core CPU and add about 0.1 MB to the file.
REFERENCE_TILES = 2
REFERENCE_SIDE = 256


def _variety(labels: np.ndarray) -> float:
    """How much a truth crop can reveal: phases present, then the share of pixels on a boundary."""
    valid = labels != 255
    phases = len(np.unique(labels[valid]))
    edges = np.count_nonzero(labels[:, 1:] != labels[:, :-1]) + np.count_nonzero(labels[1:] != labels[:-1])
    return phases + edges / max(labels.size, 1)


def choose_tiles(heldout: list[LabelledImage], side: int, count: int = REFERENCE_TILES) -> np.ndarray:
    """uint8 (K, side', side') crops from different held-out images, the most varied truth first.

    ``side'`` is ``side`` rounded down to a multiple of 32 and to the smallest usable image. Raises
    ValueError when no held-out image is at least 32 x 32.
    """
    usable = [s for s in heldout if min(s.image.shape) >= SIZE_MULTIPLE]
    if not usable:
        raise ValueError("no held-out image of at least 32 x 32 pixels for the self-check reference")
    side = min(side, *(min(s.image.shape) for s in usable))
    side -= side % SIZE_MULTIPLE
    candidates = []
    for index, sample in enumerate(usable):
        h, w = sample.image.shape
        for y in sorted({0, (h - side) // 2, h - side}):
            for x in sorted({0, (w - side) // 2, w - side}):
                crop = sample.labels[y : y + side, x : x + side]
                candidates.append((_variety(crop), index, y, x))
    candidates.sort(key=lambda c: (-c[0], c[1], c[2], c[3]))
    chosen, used = [], set()
    for _, index, y, x in candidates:
        if index not in used:
            chosen.append(usable[index].image[y : y + side, x : x + side])
            used.add(index)
        if len(chosen) == count:
            break
    return np.ascontiguousarray(np.stack(chosen), dtype=np.uint8)


def session_logits(session, normalization: dict):
    """``logits(uint8 (N, H, W)) -> float32 (N, C, H, W)`` through an onnxruntime session."""

    def logits(batch_u8: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: normalize(batch_u8, normalization)})[0]

    return logits


def build_references(
    tiles: np.ndarray,
    sessions: dict[str, object],
    normalization: dict,
    gate_pct: dict[str, float],
) -> dict[str, Reference]:
    """One :class:`Reference` per variant: FP32 labels of ``tiles`` and what each variant reached here.

    Parameters
    ----------
    tiles : uint8 (K, H, W) from :func:`choose_tiles`.
    sessions : variant name -> its onnxruntime session; ``"fp32"`` gives the labels every variant must
        reproduce.
    normalization : ``{"scale", "mean", "std"}``.
    gate_pct : variant -> the export gate's agreement threshold (percent).
    """
    labels = label_tiles(session_logits(sessions["fp32"], normalization), tiles)
    exported_on = cpu_summary()
    references = {}
    for name, session in sessions.items():
        reached = agreement_pct(label_tiles(session_logits(session, normalization), tiles), labels)
        references[name] = Reference(
            tiles=tiles,
            labels=labels,
            required_pct=required_agreement(gate_pct[name], reached),
            export_pct=reached,
            exported_on=dict(exported_on),
        )
    return references
