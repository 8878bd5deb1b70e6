"""What a segmentation leaves behind besides the mask.

- :mod:`~semphase.runtime.outputs.overlay`: the overlay, phase colours over the micrograph with a legend;
- :mod:`~semphase.runtime.outputs.tables`: the phase table of one micrograph and the run's summary.csv;
- :mod:`~semphase.runtime.outputs.sink`: where finalized bands go (labels, counts, overlay, probabilities);
- :mod:`~semphase.runtime.outputs.ome` (and :mod:`semphase.rowwriters`, below the runtime since the synthetic
  generator writes its truth PNGs with it): the file writers.

The names below are re-exported so that ``from semphase.runtime.outputs import X`` keeps working.
"""

from semphase.runtime.outputs.overlay import OverlayPainter
from semphase.runtime.outputs.tables import (
    SUMMARY_NAME,
    count_labels,
    phase_table,
    summary_rows,
    write_summary,
)

__all__ = ["SUMMARY_NAME", "OverlayPainter", "count_labels", "phase_table", "summary_rows", "write_summary"]
