"""Synthetic Ni-WC SEM micrographs with exact truth labels (numpy + OpenCV + tifffile, no torch).

What the generator draws follows the Zenodo Ni-WC dataset (doi:10.5281/zenodo.17315241): a dark, noisy
Ni matrix (class 0); large bright rounded WC particles cut by the frame (class 2, "Void"); a serrated,
mottled reprecipitate band around them (class 3); bright blocky and dendritic precipitates (class 4,
"Dilution"); rare faint carbide specks (class 1). Image and labels come from the same geometry: the
labels are the unblurred truth, the image is what an SEM makes of it (probe blur, shot and read noise,
scan-line jitter, brightness gradient, polishing scratches).

Three entry points:

- :func:`synth_micrograph`: one image and its labels in memory;
- :func:`write_dataset`: a folder in the Zenodo layout (``AugmentedImages/``, ``AugmentedMasks/``);
- :func:`write_large`: one large TIFF (optionally with data bar and FEI pixel-size metadata) and its
  truth PNG, rendered band by band in bounded memory.

Everything is deterministic: the same arguments give the same bytes.
"""

from semphase.data.synth.augment import GEOMETRIC, VARIANTS, augment
from semphase.data.synth.domains import DOMAINS
from semphase.data.synth.generate import (
    IMAGES_DIR,
    MAGNIFICATIONS,
    MASKS_DIR,
    CropSpec,
    crop_specs,
    synth_micrograph,
    to_raw_ids,
    write_dataset,
)
from semphase.data.synth.large import write_large
from semphase.data.synth.scribbles import scribble_labels

__all__ = [
    "DOMAINS",
    "GEOMETRIC",
    "IMAGES_DIR",
    "MAGNIFICATIONS",
    "MASKS_DIR",
    "VARIANTS",
    "CropSpec",
    "augment",
    "crop_specs",
    "scribble_labels",
    "synth_micrograph",
    "to_raw_ids",
    "write_dataset",
    "write_large",
]
