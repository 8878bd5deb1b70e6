"""Grouped train/val/test splits: all variants of one crop go to the same side.

The Zenodo set holds 45 base crops in nine augmented variants each; the variants are near-duplicates, so a
split by image would put one crop on both sides and overstate test scores. Groups come from
:func:`semphase.data.layout.group_key`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from semphase.data.layout import Dataset, group_key
from semphase.errors import InputError
from semphase.imageio import write_text_atomic

SPLITS = ("train", "val", "test")
SPLIT_FORMAT = "semphase-split/1"
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)


def check_fractions(fractions: tuple[float, float, float]) -> tuple[float, float, float]:
    """Validate train/val/test fractions: three numbers >= 0 summing to 1 (within 1e-3), train > 0.

    A zero val or test fraction leaves that split empty (a fine-tuning run on a handful of fields may
    train on all of them). Returns the fractions rescaled to sum to exactly 1. Raises ValueError otherwise.
    """
    values = tuple(float(f) for f in fractions)
    if len(values) != 3 or any(not np.isfinite(f) or f < 0 for f in values) or values[0] <= 0:
        raise ValueError(
            f"need three fractions (train, val, test), train > 0 and val, test >= 0, got {fractions}"
        )
    total = sum(values)
    if abs(total - 1.0) > 1e-3:
        raise ValueError(f"fractions must sum to 1, got {fractions} (sum {total:g})")
    return values[0] / total, values[1] / total, values[2] / total


def groups_of(names: list[str], group_regex: str | None = None) -> dict[str, list[str]]:
    """Names grouped by :func:`group_key`; keys and members sorted."""
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        groups.setdefault(group_key(name, group_regex), []).append(name)
    return dict(sorted(groups.items()))


def make_split(
    names: list[str],
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    group_regex: str | None = None,
    labelled: dict[str, int] | None = None,
) -> dict[str, list[str]]:
    """Split sample names into train/val/test by whole groups.

    Groups are shuffled with ``seed``, ordered largest first (the shuffle breaks ties), and each goes to
    the split where it brings the split sizes closest to ``fractions`` of the total. When as many groups
    are left as splits with a positive fraction are still empty, those groups fill them, so no such split
    is empty; a split whose fraction is 0 stays empty.

    Parameters
    ----------
    names : sample names (duplicates are ignored).
    fractions : (train, val, test), >= 0 with train > 0, summing to 1.
    seed : the same names, fractions and seed always give the same split.
    group_regex : overrides the built-in grouping (see :func:`group_key`).
    labelled : labelled pixels per name (sparse labels). A group's size is then its labelled pixels
        rather than its image count, so the fractions are fractions of what can be learnt and scored, and
        names with no labelled pixel (or absent from the mapping) are left out of every split: they
        would train nothing and score nothing. Without it every image counts 1 (dense masks of one size
        give the same split either way).

    Returns
    -------
    ``{"train": [...], "val": [...], "test": [...]}``, each a sorted list of names.

    Raises
    ------
    InputError
        for fewer groups than splits to fill, or a group regex that does not match a name.
    ValueError
        for invalid fractions.
    """
    shares = np.array(check_fractions(fractions))
    unique = sorted(set(names))
    if labelled is not None:
        unique = [n for n in unique if labelled.get(n, 0) > 0]
    weight = {n: (float(labelled[n]) if labelled is not None else 1.0) for n in unique}
    groups = groups_of(unique, group_regex)
    sizes = {k: sum(weight[n] for n in members) for k, members in groups.items()}
    wanted = [k for k in range(3) if shares[k] > 0]
    if len(groups) < len(wanted):
        what = "labelled images" if labelled is not None else "images"
        raise InputError(
            f"a split into {'/'.join(SPLITS[k] for k in wanted)} needs at least {len(wanted)} groups of "
            f"images, found {len(groups)} ({len(unique)} {what}); variants of one crop must stay together"
        )
    targets = shares * sum(sizes.values())
    keys = list(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    shuffled = [keys[i] for i in order]
    shuffled.sort(key=lambda k: -sizes[k])  # stable: equal sizes keep the seeded order

    counts = np.zeros(3)
    assigned: list[list[str]] = [[], [], []]
    for remaining, key in zip(range(len(shuffled), 0, -1), shuffled, strict=True):
        size = sizes[key]
        empty = [k for k in wanted if not assigned[k]]
        if remaining <= len(empty):
            side = empty[0]
        else:
            # Reduction in total |count - target| when this group goes to each side; the largest wins,
            # ties to the side furthest below its target. Sides with a zero fraction never take a group.
            gain = np.abs(counts - targets) - np.abs(counts + size - targets)
            gain[shares == 0] = -np.inf
            side = int(np.lexsort((-(targets - counts), -gain))[0])
        assigned[side].extend(groups[key])
        counts[side] += size
    return {split: sorted(members) for split, members in zip(SPLITS, assigned, strict=True)}


def find_leaks(split: dict[str, list[str]], group_regex: str | None = None) -> list[str]:
    """Group keys found in more than one split, and names listed more than once.

    Returns
    -------
    Sorted list; empty for a clean split.
    """
    sides: dict[str, set[str]] = {}
    name_counts: Counter[str] = Counter()
    for split_name in SPLITS:
        for name in split.get(split_name, []):
            name_counts[name] += 1
            sides.setdefault(group_key(name, group_regex), set()).add(split_name)
    leaks = {key for key, where in sides.items() if len(where) > 1}
    leaks.update(name for name, n in name_counts.items() if n > 1)
    return sorted(leaks)


def spread_over_groups(names: list[str], n: int, group_regex: str | None = None) -> list[str]:
    """Pick ``n`` names spread over the groups, deterministically (e.g. samples for preview panels).

    Evenly spaced groups give one name each; when ``n`` exceeds the number of groups, further rounds take
    further members. Each group's members are rotated by the group's position so that the picks show
    different variants rather than the alphabetically first of each group.

    Returns
    -------
    At most ``n`` distinct names, in pick order.
    """
    groups = [g[i % len(g) :] + g[: i % len(g)] for i, g in enumerate(groups_of(names, group_regex).values())]
    chosen: list[str] = []
    depth = 0
    while len(chosen) < n and any(len(g) > depth for g in groups):
        deep = [g for g in groups if len(g) > depth]
        want = min(n - len(chosen), len(deep))
        picks = sorted({round(k * (len(deep) - 1) / max(want - 1, 1)) for k in range(want)})
        chosen.extend(deep[i][depth] for i in picks)
        depth += 1
    return chosen


def save_split(
    split: dict[str, list[str]],
    path: str | os.PathLike,
    *,
    seed: int | None = None,
    group_regex: str | None = None,
    fractions: tuple[float, float, float] | None = None,
) -> None:
    """Write a split as JSON, atomically.

    Besides the three lists the file records the format, how it was made (``seed``, ``group_regex``,
    ``fractions``) and the image and group counts per split; :func:`load_split` reads the regex back to
    check for leaks.
    """
    document = {
        "format": SPLIT_FORMAT,
        "seed": seed,
        "group_regex": group_regex,
        "fractions": None if fractions is None else list(fractions),
        "images": {s: len(split[s]) for s in SPLITS},
        "groups": {s: len(groups_of(split[s], group_regex)) for s in SPLITS},
    }
    document.update({s: sorted(split[s]) for s in SPLITS})
    write_text_atomic(path, json.dumps(document, indent=1) + "\n")


def load_split(path: str | os.PathLike, dataset: Dataset | None = None) -> dict[str, list[str]]:
    """Read a split written by :func:`save_split` (or any JSON with ``train``/``val``/``test`` lists).

    Parameters
    ----------
    path : the JSON file.
    dataset : when given, every name must be a paired sample of it.

    Returns
    -------
    ``{"train": [...], "val": [...], "test": [...]}`` as stored.

    Raises
    ------
    InputError
        naming ``path`` for an unreadable or invalid file, missing keys, names not in ``dataset``, or a
        group or name found in more than one place (a leak).
    """
    p = Path(path)
    try:
        document = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read split ({exc.strerror or exc})", p) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"not a JSON split file ({exc})", p) from None
    if not isinstance(document, dict):
        raise InputError("not a split file: expected a JSON object with train/val/test lists", p)
    missing = [s for s in SPLITS if s not in document]
    if missing:
        raise InputError(f"split file lacks {', '.join(missing)} (expected train, val, test lists)", p)
    split: dict[str, list[str]] = {}
    for s in SPLITS:
        names = document[s]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise InputError(f"'{s}' must be a list of image names", p)
        split[s] = names
    group_regex = document.get("group_regex")
    if group_regex is not None and not isinstance(group_regex, str):
        raise InputError("'group_regex' must be a string or null", p)
    if dataset is not None:
        known = dataset.by_name()
        for s in SPLITS:
            unknown = [n for n in split[s] if n not in known]
            if unknown:
                more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
                raise InputError(
                    f"'{s}' names {unknown[0]!r}{more}, not an image/mask pair of {dataset.root}", p
                )
    try:
        leaks = find_leaks(split, group_regex)
    except InputError as exc:
        raise InputError(f"cannot group names: {exc}", p) from None
    if leaks:
        more = f" and {len(leaks) - 3} more" if len(leaks) > 3 else ""
        raise InputError(f"leaky split: {', '.join(leaks[:3])}{more} in more than one place", p)
    return split
