"""How large an image semphase decodes whole: one limit for every reader, checked before decoding.

A 74-byte PNG may declare 100000 x 100000 pixels; decoding it would ask for 10 GB (or abort the whole batch
inside OpenCV). Every reader in :mod:`semphase.imageio` checks the size a file declares against this limit
first and refuses the file, naming it, when it is larger. Raise the limit with :func:`set_max_megapixels`
(the CLI's ``--max-megapixels``) or the ``SEMPHASE_MAX_MEGAPIXELS`` environment variable for genuine
montages. No numpy, no OpenCV: the CLI reads the default for its help text without loading them.
"""

from __future__ import annotations

import math
import os

from semphase.errors import InputError, OptionError

#: Largest image decoded whole by default, in megapixels (width x height / 1e6): 2**30 pixels, a 32768 x
#: 32768 montage (OpenCV's own default).
DEFAULT_MAX_MEGAPIXELS = 2**30 / 1e6
MAX_MEGAPIXELS_ENV = "SEMPHASE_MAX_MEGAPIXELS"
#: How a refused image's message says to raise the limit, unless whoever set it names its own way.
LIBRARY_SETTING = "set_max_megapixels()"
_limit: dict[str, float | None] = {"megapixels": None}
_raised_with: dict[str, str] = {"setting": LIBRARY_SETTING}


def _positive_megapixels(value: object, argument: str | None = None) -> float:
    """``value`` as a number of megapixels; OptionError naming ``argument``, or the environment variable."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = math.nan
    if not (number > 0 and math.isfinite(number)):
        reason = f"must be a positive number of megapixels, got {value!r}"
        if argument is None:
            raise OptionError(f"{MAX_MEGAPIXELS_ENV} {reason}")
        raise OptionError(reason, argument=argument)
    return number


def max_megapixels() -> float:
    """The size limit in megapixels: as set, else ``SEMPHASE_MAX_MEGAPIXELS``, else 1073.74 (2**30 pixels)."""
    if _limit["megapixels"] is not None:
        return _limit["megapixels"]
    text = os.environ.get(MAX_MEGAPIXELS_ENV)
    return DEFAULT_MAX_MEGAPIXELS if not text else _positive_megapixels(text)


def set_max_megapixels(megapixels: float | None, setting: str = LIBRARY_SETTING) -> None:
    """Set this process's size limit (``None``: back to the environment or the default).

    Parameters
    ----------
    megapixels : the limit, > 0; OptionError naming ``max_megapixels`` otherwise.
    setting : how a refused image's message tells the user to raise the limit: a front end names its own
        (the CLI passes ``--max-megapixels``); by default this function.
    """
    if megapixels is not None:
        megapixels = _positive_megapixels(megapixels, "max_megapixels")
    _limit["megapixels"] = megapixels
    _raised_with["setting"] = setting


class ImageTooLarge(InputError):
    """An image declaring more pixels than the limit (an InputError: exit code 2; HTTP 413 in serve)."""


def check_declared_size(width: int, height: int, path: str | os.PathLike) -> None:
    """Refuse an image whose declared size exceeds :func:`max_megapixels`, naming the file."""
    limit = max_megapixels()
    if width * height > limit * 1e6:
        raise ImageTooLarge(
            f"image declares {width} x {height} pixels ({width * height / 1e6:,.0f} MP), more than the "
            f"{limit:g} MP limit for one image; if it is genuine, raise it with {_raised_with['setting']} "
            f"(or {MAX_MEGAPIXELS_ENV})",
            path,
        )
