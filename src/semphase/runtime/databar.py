"""Finding the SEM data bar: the band of text and scale bar that instruments append below the image.

Those rows are not sample; they are labelled 255 (no data) and left out of every statistic. The vendor
metadata is the reliable source (FEI/Thermo state the image height without the bar); when it is absent,
:func:`detect_databar` looks for the bar's signature: a band at the very bottom, spanning the full width,
whose rows are mostly flat (neighbouring pixels equal: the bar's uniform background and solid text),
directly below rows of real, noisy image. Shot noise makes equal neighbours rare in a genuine micrograph
row, so the test separates the two cleanly.
"""

from __future__ import annotations

import numpy as np

#: A data-bar row: at least this fraction of its pixels equal their left neighbour.
FLAT_FRACTION = 0.5
#: ... or at least this fraction of its pixels have the exact value that fills the bar's last row.
BACKGROUND_FRACTION = 0.25
#: Bars are short: the detector never claims more than this fraction of the image height.
MAX_BAR_FRACTION = 1 / 3
#: Fewer flat rows than this at the bottom are not a bar (a saturated last scan line, say).
MIN_BAR_ROWS = 4


def _row_is_flat(row: np.ndarray, background: int) -> bool:
    # Neighbouring pixels of a noisy micrograph row are rarely equal; on a bar they mostly are (flat
    # background, solid strokes). Rows of small anti-aliased text have many edges, but still show a
    # large share of the bar's exact background value, which a noisy image row never has.
    if np.count_nonzero(row[1:] == row[:-1]) >= FLAT_FRACTION * max(row.size - 1, 1):
        return True
    return np.count_nonzero(row == background) >= BACKGROUND_FRACTION * row.size


def detect_databar(image: np.ndarray) -> int:
    """Height in rows of a data bar at the bottom of a micrograph, 0 when there is none.

    Parameters
    ----------
    image : ndarray of uint8 or uint16, shape (H, W).

    Returns
    -------
    int, the number of bottom rows that belong to the bar (``0 <= rows <= H // 3``).

    Notes
    -----
    A bar is a run of flat rows (:data:`FLAT_FRACTION` of the pixels equal to their left neighbour, or
    :data:`BACKGROUND_FRACTION` of them equal to the most common value of the last row) that starts at
    the last row,
    is at least :data:`MIN_BAR_ROWS` rows high and ends below a row that is not flat. When the flat run
    reaches the detection limit (a third of the height), the picture is not a micrograph with a bar
    (a blank frame, say) and 0 is returned.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {image.shape}")
    height = image.shape[0]
    limit = int(height * MAX_BAR_FRACTION)
    last = image[height - 1]
    values, counts = np.unique(last, return_counts=True)
    background = int(values[counts.argmax()])
    rows = 0
    while rows < limit and _row_is_flat(image[height - 1 - rows], background):
        rows += 1
    if rows < MIN_BAR_ROWS or rows >= limit:
        return 0
    return rows


def resolve_databar(
    setting: str | int | None, image: np.ndarray, metadata_height: int | None
) -> tuple[int, str]:
    """Rows to exclude at the bottom and where that number came from.

    Parameters
    ----------
    setting : ``"auto"`` (metadata, else detection), ``"none"`` (0), or a row count (int or digits).
    image : the micrograph, shape (H, W).
    metadata_height : image height without the bar as the vendor metadata states it, or None.

    Returns
    -------
    (rows, source) with source one of ``"metadata"``, ``"detected"``, ``"option"``, ``"none"``.

    Raises
    ------
    ValueError
        for an unknown setting or a row count that leaves no image.
    """
    height = image.shape[0]
    text = "auto" if setting is None else str(setting).strip().lower()
    if text == "none":
        return 0, "none"
    if text == "auto":
        if metadata_height is not None and 0 < metadata_height < height:
            return height - metadata_height, "metadata"
        rows = detect_databar(image)
        return rows, ("detected" if rows else "none")
    try:
        rows = int(text)
    except ValueError:
        raise ValueError(f"--databar must be auto, none or a number of rows, got {setting!r}") from None
    if not 0 <= rows < height:
        raise ValueError(f"a data bar of {rows} rows leaves no image rows (the image has {height})")
    return rows, ("option" if rows else "none")
