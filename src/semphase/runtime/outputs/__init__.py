"""What a segmentation leaves behind besides the mask (the code lives in the modules of this package).

The names below are re-exported so that ``from semphase.runtime.outputs import X`` keeps working.
"""

from semphase.runtime.outputs.overlay import (
    SUMMARY_NAME,
    OverlayPainter,
    count_labels,
    phase_table,
    summary_rows,
    write_summary,
)

__all__ = ["SUMMARY_NAME", "OverlayPainter", "count_labels", "phase_table", "summary_rows", "write_summary"]
