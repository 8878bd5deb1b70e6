"""Sample-level quantification from segmentations, as metallographers report it (``semphase quantify``).

A metallographer images 10-50 fields of a specimen and reports each phase's volume fraction as the mean
of the per-field area fractions with its 95 % confidence interval and relative accuracy (ASTM E562,
E1245), plus measurements of the features (particles) of the phases that matter. This package makes that
answer from the masks ``segment`` and ``watch`` write: :mod:`.stats` (the sample statistics),
:mod:`.features` (particles, N_A, N_L and the mean free path), :mod:`.fields` (finding the fields and
grouping them into samples), :mod:`.run` (:func:`quantify`: everything, written as CSV and JSON).
"""

from semphase.quantify.run import QuantifyOptions, quantify

__all__ = ["QuantifyOptions", "quantify"]
