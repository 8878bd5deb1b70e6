"""Grouped splits: no crop group on two sides, deterministic, fractions respected; split files."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from semphase.cli.main import main
from semphase.data.layout import group_key, open_dataset
from semphase.data.split import find_leaks, load_split, make_split, save_split, spread_over_groups
from semphase.errors import InputError

AUGS = (
    "ElasticTransform",
    "GridDistortion",
    "HorizontalFlip",
    "VerticalFlip",
    "RandomRotate90",
    "brightness_1",
    "brightness_2",
    "contrast_1",
    "contrast_3",
)


def zenodo_names(n_crops: int = 45) -> list[str]:
    """Names shaped like the Ni-WC set: n_crops base crops x 9 variants."""
    crops = [(mag, 32 * i, 16 * i) for i, mag in enumerate([600, 700, 800, 1000] * 12)][:n_crops]
    return [f"sem{mag}_x{x}_y{y}_{aug}.bmp" for mag, x, y in crops for aug in AUGS]


def _sides(split: dict[str, list[str]], regex: str | None = None) -> dict[str, set[str]]:
    where: dict[str, set[str]] = {}
    for side, names in split.items():
        for name in names:
            where.setdefault(group_key(name, regex), set()).add(side)
    return where


@pytest.mark.parametrize("seed", range(6))
def test_zenodo_split_keeps_groups_whole_and_approximates_fractions(seed):
    names = zenodo_names()
    split = make_split(names, seed=seed)
    assert sorted(sum(split.values(), [])) == sorted(names)
    assert all(len(sides) == 1 for sides in _sides(split).values())
    assert all(split[s] == sorted(split[s]) for s in split)
    sizes = {s: len(v) for s, v in split.items()}
    # 405 images in groups of 9: each side within one group of its target (283.5 / 60.75 / 60.75).
    for side, fraction in zip(("train", "val", "test"), (0.70, 0.15, 0.15), strict=True):
        assert abs(sizes[side] - fraction * 405) <= 9, sizes
    assert find_leaks(split) == []


def test_split_is_deterministic_and_seed_dependent():
    names = zenodo_names()
    assert make_split(names, seed=3) == make_split(list(reversed(names)), seed=3)
    assert make_split(names, seed=3) != make_split(names, seed=4)


@pytest.mark.parametrize("n_groups", [3, 4, 7, 20])
def test_every_split_non_empty_with_uneven_groups(n_groups):
    rng = np.random.default_rng(n_groups)
    names = [f"g{g}_t{i}.png" for g in range(n_groups) for i in range(int(rng.integers(1, 30)))]
    split = make_split(names, group_regex=r"^(g\d+)_", fractions=(0.8, 0.1, 0.1))
    assert all(split[s] for s in split)
    assert all(len(sides) == 1 for sides in _sides(split, r"^(g\d+)_").values())


def test_fractions_respected_for_singleton_groups():
    split = make_split([f"img{i:03d}.tif" for i in range(200)], fractions=(0.5, 0.3, 0.2), seed=1)
    assert {s: len(v) for s, v in split.items()} == {"train": 100, "val": 60, "test": 40}


def test_regex_override_groups_what_the_default_would_not():
    names = [f"specimen{s}_field{f}.png" for s in range(6) for f in range(5)]
    by_stem = make_split(names, seed=0)
    assert find_leaks(by_stem, r"^(specimen\d+)_")  # stems alone scatter fields of one specimen
    by_specimen = make_split(names, seed=0, group_regex=r"^(specimen\d+)_")
    assert find_leaks(by_specimen, r"^(specimen\d+)_") == []
    with pytest.raises(InputError, match="does not match"):
        make_split([*names, "stray.png"], group_regex=r"^(specimen\d+)_")


def test_too_few_groups_and_bad_fractions_raise():
    with pytest.raises(InputError, match="at least 3 groups"):
        make_split([f"sem700_x0_y0_{a}.bmp" for a in AUGS] + [f"sem700_x0_y9_{a}.bmp" for a in AUGS])
    with pytest.raises(ValueError, match="sum to 1"):
        make_split(zenodo_names(), fractions=(0.7, 0.2, 0.2))
    with pytest.raises(ValueError, match="train > 0"):
        make_split(zenodo_names(), fractions=(0.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="train > 0"):
        make_split(zenodo_names(), fractions=(1.1, -0.05, -0.05))


def test_find_leaks_reports_shared_groups_and_duplicate_names():
    split = {
        "train": ["sem700_x0_y0_HorizontalFlip.bmp", "a.png", "a.png"],
        "val": ["sem700_x0_y0_VerticalFlip.bmp"],
        "test": ["b.png"],
    }
    assert find_leaks(split) == ["a.png", "sem700_x0_y0"]


def test_save_load_round_trip_records_how_it_was_made(tmp_path):
    split = make_split(zenodo_names(6), seed=5)
    path = tmp_path / "out" / "split.json"
    save_split(split, path, seed=5, group_regex=None, fractions=(0.7, 0.15, 0.15))
    assert load_split(path) == split
    document = json.loads(path.read_text())
    assert document["seed"] == 5 and document["group_regex"] is None
    assert sum(document["groups"].values()) == 6
    assert list(tmp_path.joinpath("out").iterdir()) == [path]  # no temporary file left behind


def test_spread_over_groups_covers_groups_before_repeating_one():
    names = zenodo_names()
    six = spread_over_groups(names, 6)
    assert len({group_key(n) for n in six}) == 6 and six == spread_over_groups(list(reversed(names)), 6)
    assert len({n.split("_", 3)[3] for n in six}) > 1  # different variants, not always the first
    fifty = spread_over_groups(names, 50)
    assert len(set(fifty)) == 50 and len({group_key(n) for n in fifty}) == 45
    assert sorted(spread_over_groups(names[:18], 100)) == sorted(names[:18])


def _write_split(path: Path, **lists) -> Path:
    path.write_text(json.dumps(lists))
    return path


def test_load_split_rejects_leaky_and_invalid_files(tmp_path):
    leaky = _write_split(
        tmp_path / "leaky.json",
        train=["sem700_x0_y0_HorizontalFlip.bmp"],
        val=["sem700_x0_y0_VerticalFlip.bmp"],
        test=["sem800_x0_y0_VerticalFlip.bmp"],
    )
    with pytest.raises(InputError, match=r"leaky\.json: leaky split: sem700_x0_y0"):
        load_split(leaky)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InputError, match="broken.json: not a JSON split file"):
        load_split(tmp_path / "broken.json")
    with pytest.raises(InputError, match="lacks test"):
        load_split(_write_split(tmp_path / "short.json", train=["a.png"], val=["b.png"]))
    with pytest.raises(InputError, match="must be a list"):
        load_split(_write_split(tmp_path / "bad.json", train="a.png", val=[], test=[]))
    with pytest.raises(InputError, match="cannot read split"):
        load_split(tmp_path / "missing.json")


def _tiny_generic(root: Path, n: int = 6) -> None:
    for i in range(n):
        for folder, value in (("images", 10 * i), ("masks", 1)):
            (root / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / folder / f"im{i}.png"), np.full((4, 4), value, np.uint8))


def test_load_split_rejects_names_not_in_the_dataset(tmp_path):
    _tiny_generic(tmp_path / "ds")
    dataset = open_dataset(tmp_path / "ds")
    good = _write_split(
        tmp_path / "good.json", train=["im0.png", "im1.png"], val=["im2.png"], test=["im3.png"]
    )
    assert load_split(good, dataset)["val"] == ["im2.png"]
    bad = _write_split(tmp_path / "bad.json", train=["im0.png"], val=["im9.png"], test=["im3.png"])
    with pytest.raises(InputError, match="'val' names 'im9.png'"):
        load_split(bad, dataset)


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


def test_cli_split_writes_a_loadable_split(tmp_path, capsys):
    _tiny_generic(tmp_path / "ds", n=10)
    out = tmp_path / "split.json"
    assert _run(["data", "split", str(tmp_path / "ds"), "--out", str(out), "--seed", "2"]) == 0
    split = load_split(out, open_dataset(tmp_path / "ds"))
    assert {s: len(v) for s, v in split.items()} == {"train": 7, "val": 2, "test": 1}
    assert "No leaks" in capsys.readouterr().out


def test_cli_split_bad_input_exits_2(tmp_path, capsys):
    _tiny_generic(tmp_path / "ds")
    out = str(tmp_path / "s.json")
    assert _run(["data", "split", str(tmp_path / "nothing"), "--out", out]) == 2
    assert _run(["data", "split", str(tmp_path / "ds"), "--out", out, "--fractions", "0.9,0.9"]) == 2
    assert _run(["data", "split", str(tmp_path / "ds"), "--out", out, "--group-regex", "^x"]) == 2
    assert not (tmp_path / "s.json").exists()
    assert "error:" in capsys.readouterr().err
