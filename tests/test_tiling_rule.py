"""The tiling rule in one place (:class:`semphase.model_format.Tiling`), and library errors that name
arguments where the CLI names flags.

Before, the rule (tile a multiple of the model's 32, overlap in 0..tile-1, the default overlap at most half
a tile) was written in the metadata check, the tile planner, the sliding window, the exporter's metadata
and its options, and a run resolved it three times; library messages named ``--tile`` to a caller who had
passed ``tile=``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from _runtime_models import build_blur_classifier, micrograph
from semphase.cli.options import flag, said_with_flags
from semphase.errors import InputError, OptionError
from semphase.imageio import write_image
from semphase.limits import MAX_MEGAPIXELS_ENV, max_megapixels, set_max_megapixels
from semphase.model_format import RECOMMENDED_OVERLAP, RECOMMENDED_TILE, SIZE_MULTIPLE, Tiling, check, parse
from semphase.phases import DEFAULT_TABLE
from semphase.runtime.model import load_model
from semphase.runtime.segment import SegmentOptions, segment_file
from semphase.runtime.sliding import iter_bands, segment_array
from semphase.runtime.suggest import SuggestOptions


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(build_blur_classifier(tmp_path_factory.mktemp("m") / "blur.onnx", tile=64, overlap=16))


def _metadata(tile: dict, multiple: int = 32) -> dict:
    return {
        "semphase.classes": json.dumps(["a", "b"]),
        "semphase.colors": json.dumps([[0, 0, 0], [255, 255, 255]]),
        "semphase.input": json.dumps(
            {"channels": 1, "scale": 1 / 255, "mean": [0.5], "std": [0.25], "size_multiple": multiple}
        ),
        "semphase.variant": json.dumps("fp32"),
        "semphase.tile": json.dumps(tile),
    }


# ------------------------------------------------------------------------------------------ the rule


def test_the_default_tiling_is_the_recommendation_export_writes():
    assert Tiling() == Tiling(RECOMMENDED_TILE, RECOMMENDED_OVERLAP, SIZE_MULTIPLE)
    from semphase.export.metadata import build_metadata

    config = {
        "classes": DEFAULT_TABLE.to_dict(),
        "num_classes": DEFAULT_TABLE.num_classes,
        "normalization": {"scale": 1 / 255, "mean": [0.5], "std": [0.25]},
    }
    written = build_metadata(config, {}, variant="fp32", checkpoint_sha256="0" * 64)
    assert json.loads(written["semphase.tile"]) == {"size": Tiling().tile, "overlap": Tiling().overlap}
    assert json.loads(written["semphase.input"])["size_multiple"] == Tiling().multiple
    with pytest.raises(OptionError, match=re.escape("tile must be a positive multiple of 32, got 500")):
        build_metadata(config, {}, variant="fp32", checkpoint_sha256="0" * 64, tile_size=500)


def test_a_model_files_recommended_tiling_is_checked_by_the_same_rule_and_its_own_multiple():
    assert check(parse(_metadata({"size": 48, "overlap": 8}, multiple=16))).tile_size == 48
    for tile, reason in (
        ({"size": 500, "overlap": 32}, "tile must be a positive multiple of 32, got 500"),
        ({"size": 64, "overlap": 64}, "overlap must be in 0..63 for tile 64, got 64"),
    ):
        with pytest.raises(InputError) as info:
            check(parse(_metadata(tile)), "m.onnx")
        assert (
            str(info.value) == f"m.onnx: unusable semphase metadata: bad recommended tiling {tile} ({reason})"
        )


def test_export_options_are_checked_by_the_same_rule():
    from semphase.export.pipeline import ExportOptions

    ExportOptions(tile=64, overlap=63).validate()
    for tile, overlap, message in (
        (100, 32, "tile must be a positive multiple of 32, got 100"),
        (64, 64, "overlap must be in 0..63 for tile 64, got 64"),
    ):
        with pytest.raises(OptionError, match=f"^{re.escape(message)}$"):
            ExportOptions(tile=tile, overlap=overlap).validate()


def test_segment_file_resolves_the_tiling_once_and_the_window_takes_it_as_resolved(
    tmp_path, model, monkeypatch
):
    resolved = []
    original = Tiling.resolve.__func__

    def counting(cls, *args, **kwargs):
        resolved.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Tiling, "resolve", classmethod(counting))
    write_image(tmp_path / "m.png", micrograph(100, 90, seed=1))
    result = segment_file(model, tmp_path / "m.png", tmp_path / "out", SegmentOptions(tile=32))
    assert len(resolved) == 1
    # the model's overlap (16) is capped at half the 32-pixel tile, and that is what ran and was recorded
    assert (result["tiling"]["tile"], result["tiling"]["overlap"]) == (32, 16)


def test_a_resolved_tiling_gives_the_labels_of_the_same_tile_and_overlap(model):
    image = micrograph(150, 170, seed=2)
    expected = segment_array(model, image, tile=96, overlap=40)  # not the model's 64 and 16
    assert (expected != segment_array(model, image)).any()
    np.testing.assert_array_equal(segment_array(model, image, tiling=Tiling(96, 40, 32)), expected)
    with pytest.raises(TypeError, match="not both"):
        next(iter_bands(model, image, tile=96, tiling=Tiling(96, 40, 32)))


# ---------------------------------------------------------------- library errors name the argument


@pytest.mark.parametrize(
    ("settings", "argument", "reason"),
    [
        ({"tile": 0}, "tile", "must be positive, got 0"),
        ({"overlap": -1}, "overlap", "must be >= 0, got -1"),
        ({"batch": 0}, "batch", "must be >= 1, got 0"),
        ({"window": "x"}, "window", "must be one of gaussian, cosine, constant, got 'x'"),
        ({"format": "gif"}, "format", "must be auto, png or ome-tiff, got 'gif'"),
        ({"normalize": "log"}, "normalize", "must be linear or percentile, got 'log'"),
        ({"pixel_size_um": -1.0}, "pixel_size_um", "must be a positive number, got -1.0"),
        ({"databar": "half"}, "databar", "must be auto, none or a number of rows, got 'half'"),
    ],
)
def test_segment_options_name_the_field_and_the_cli_says_its_flag(settings, argument, reason):
    with pytest.raises(OptionError) as info:
        SegmentOptions(**settings)
    assert str(info.value) == f"{argument} {reason}" and info.value.argument == argument
    assert said_with_flags(info.value) == f"{flag(argument)} {reason}"


@pytest.mark.parametrize(
    ("make", "argument", "reason"),
    [
        (lambda: _export_options(threads=0), "threads", "must be >= 1, got 0"),
        (lambda: _export_options(calib_images=0), "calib_images", "must be >= 1, got 0"),
        (lambda: _export_options(opset=3), "opset", "must be in 13..20, got 3"),
        (lambda: SuggestOptions(n=0), "n", "must be >= 1, got 0"),
        (lambda: SuggestOptions(region=100), "region", "must be a positive multiple of 32, got 100"),
        (lambda: SuggestOptions(per_image=0), "per_image", "must be >= 1"),
        (lambda: SuggestOptions(score="luck"), "score", "must be one of "),
        (lambda: SuggestOptions(rare_weight=-1), "rare_weight", "must be >= 0"),
        (lambda: SuggestOptions(max_entropy=2), "max_entropy", "must be in 0..1"),
        (lambda: SuggestOptions(batch=0), "batch", "must be >= 1"),
        (lambda: SuggestOptions(normalize="log"), "normalize", "must be linear or percentile"),
    ],
)
def test_export_and_suggest_options_name_the_field(make, argument, reason):
    with pytest.raises(OptionError) as info:
        make()
    assert str(info.value).startswith(f"{argument} {reason}") and info.value.argument == argument
    assert said_with_flags(info.value).startswith(f"{flag(argument)} {reason}")


def _export_options(**settings):
    from semphase.export.pipeline import ExportOptions

    ExportOptions(**settings).validate()


def test_a_tile_the_model_cannot_take_names_the_argument_it_was_passed_as(model):
    with pytest.raises(ValueError, match="^tile must be a positive multiple of 32, got 50$"):
        segment_array(model, np.zeros((64, 64), np.uint8), tile=50)
    with pytest.raises(OptionError, match="^overlap must be in 0..63 for tile 64, got 64$"):
        SegmentOptions(overlap=64).tiling_for(model)


def test_the_size_limit_names_its_argument_or_its_variable(monkeypatch):
    try:
        with pytest.raises(OptionError, match="^max_megapixels must be a positive number of megapixels"):
            set_max_megapixels(0)
        set_max_megapixels(None)
        monkeypatch.setenv(MAX_MEGAPIXELS_ENV, "lots")
        with pytest.raises(OptionError) as info:
            max_megapixels()
        assert info.value.argument is None and str(info.value).startswith(f"{MAX_MEGAPIXELS_ENV} must be")
        assert said_with_flags(info.value) == str(info.value)  # a variable is not a flag
    finally:
        set_max_megapixels(None)


def test_flags_are_the_arguments_spelled_as_options():
    assert [flag(a) for a in ("tile", "max_megapixels", "pixel_size_um")] == [
        "--tile",
        "--max-megapixels",
        "--pixel-size-um",
    ]
    error = OptionError("must be >= 1, got 0", "x.png", argument="batch")
    assert (
        str(error) == "x.png: batch must be >= 1, got 0"
        and error.naming("--batch") == "x.png: --batch must be >= 1, got 0"
    )
