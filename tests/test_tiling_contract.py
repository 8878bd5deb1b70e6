"""Tiling and sliding-window behaviour that mutation testing (`make mutation`) found unchecked: repeated
reflect padding, the size multiple and overlap reaching both axes, the summed weight profile, float32
bands, the options segment_array passes on, option messages, and softmax/entropy on their own."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from semphase.errors import OptionError
from semphase.model_format import Tiling
from semphase.runtime.sliding import (
    iter_bands,
    normalized_entropy,
    segment_array,
    softmax,
)
from semphase.runtime.tiling import pad_reflect, plan_axis, plan_tiles, weight_profile, window_1d

SLOPES = np.array([3.0, -2.0, 0.5], np.float32)
OFFSETS = np.array([-1.0, 1.0, 0.25], np.float32)


class RecordingModel:
    """Pixel-wise logits (so any blend reproduces them) that records the batch of every call."""

    classes = ["a", "b", "c"]

    def __init__(self, tile_size: int = 64, overlap: int = 16, size_multiple: int = 32) -> None:
        self.tile_size, self.overlap, self.size_multiple = tile_size, overlap, size_multiple
        self.batches: list[tuple[int, ...]] = []

    def logits(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch.shape)
        x = batch.astype(np.float32)[:, None] / 255.0
        return x * SLOPES[None, :, None, None] + OFFSETS[None, :, None, None]


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


# --------------------------------------------------------------------------------------------- padding


def test_reflect_padding_is_opencvs_reflect_101_at_any_size():
    # The documented order (cv2.BORDER_REFLECT_101), also where the image is reflected repeatedly and
    # where a single row or column is repeated. Largest first: a mutant that overshoots then fails at once,
    # before a single column makes it pad rows forever.
    for h in range(5, 0, -1):
        for w in range(5, 0, -1):
            image = (np.arange(h * w, dtype=np.uint8).reshape(h, w) * 7) + 1
            for height, width in ((h, w + 1), (h + 1, w), (2 * h + 3, 3 * w + 2), (17, 13)):
                expected = cv2.copyMakeBorder(image, 0, height - h, 0, width - w, cv2.BORDER_REFLECT_101)
                padded = pad_reflect(image, height, width)
                assert padded.shape == (height, width), (h, w, height, width)
                np.testing.assert_array_equal(padded, expected, err_msg=str((h, w, height, width)))


@pytest.mark.parametrize(("height", "width"), [(2, 5), (5, 2)])
def test_padding_refuses_an_image_larger_along_either_axis(height, width):
    message = f"image 3x3 is larger than the padded size {height}x{width}"
    with pytest.raises(ValueError, match=re.escape(message)):
        pad_reflect(np.zeros((3, 3), np.uint8), height, width)


# ----------------------------------------------------------------------------------------------- plans


def test_a_tile_of_exactly_the_size_multiple_is_valid():
    plan = plan_axis(100, 32, 0, 32)
    assert plan.starts == (0, 32, 64, 68) and plan.sizes == (32, 32, 32, 32)


def test_the_overlap_message_gives_the_valid_range():
    with pytest.raises(ValueError, match=re.escape("overlap must be in 0..255 for tile 256, got 256")):
        plan_axis(1000, 256, 256)


def test_both_axes_get_the_overlap_and_the_size_multiple():
    plan = plan_tiles(100, 120, 48, 8, multiple=16)
    assert plan.rows == plan_axis(100, 48, 8, 16) and plan.cols == plan_axis(120, 48, 8, 16)
    assert plan.cols.starts == (0, 40, 72) and plan.cols.sizes == (48, 48, 48)


@pytest.mark.parametrize("kind", [None, "cosine", "constant"])
def test_weight_profile_is_the_sum_of_the_tile_windows(kind):
    plan = plan_axis(300, 128, 32)
    expected = np.zeros(plan.padded)
    for start, size in zip(plan.starts, plan.sizes, strict=True):
        expected[start : start + size] += window_1d(size, kind or "gaussian")
    got = weight_profile(plan) if kind is None else weight_profile(plan, kind)
    np.testing.assert_allclose(got, expected)
    assert got.min() > 0


# ------------------------------------------------------------------------------------- sliding window


def test_bands_hold_uint8_labels_their_gray_rows_and_float32_logits_when_asked():
    image = _image(150, 90)
    for band in iter_bands(RecordingModel(), image, window="cosine", logits=True):
        assert band.labels().dtype == np.uint8 and band.logits.dtype == np.float32
        assert band.logits.shape == (len(RecordingModel().classes), band.y1 - band.y0, 90)
        np.testing.assert_array_equal(band.gray, image[band.y0 : band.y1])
    band = next(iter_bands(RecordingModel(), image))
    with pytest.raises(ValueError, match="logits=True"):
        _ = band.logits


def test_a_batch_of_one_tile_is_valid_and_a_batch_of_none_is_not():
    model = RecordingModel()
    labels = segment_array(model, _image(100, 100), batch=1)
    assert labels.shape == (100, 100) and {b[0] for b in model.batches} == {1}
    with pytest.raises(ValueError, match="^batch must be >= 1, got 0$"):
        next(iter_bands(model, _image(100, 100), batch=0))


@pytest.mark.parametrize("image", [np.zeros((64, 64), np.float32), np.zeros((64, 64, 3), np.uint8)])
def test_only_a_two_dimensional_uint8_image_is_segmented(image):
    with pytest.raises(ValueError, match=re.escape("expected a uint8 (H, W) image")):
        next(iter_bands(RecordingModel(), image))


def test_a_model_with_another_size_multiple_is_tiled_by_it():
    model = RecordingModel(tile_size=48, overlap=8, size_multiple=16)
    image = _image(100, 70)
    labels = segment_array(model, image)
    assert {b[1:] for b in model.batches} <= {(48, 48), (48, 32), (32, 48), (32, 32)}
    expected = model.logits(image[None])[0].argmax(0)
    np.testing.assert_array_equal(labels, expected)


def test_logits_of_the_wrong_shape_are_refused_with_both_shapes():
    class Wrong(RecordingModel):
        def logits(self, batch):
            return super().logits(batch)[:, :, :-1]

    message = "model returned logits of shape (2, 3, 63, 64) for tiles (2, 64, 64)"
    with pytest.raises(ValueError, match=re.escape(message)):
        segment_array(Wrong(), _image(64, 128))


def test_segment_array_passes_on_batch_window_flips_and_progress():
    image = _image(100, 260)
    model = RecordingModel()
    calls: list[tuple[int, int]] = []
    segment_array(model, image, batch=3, progress=lambda done, total: calls.append((done, total)))
    total = plan_tiles(100, 260, 64, 16).count
    assert max(b[0] for b in model.batches) == 3 and len(model.batches) == len(calls)
    assert calls[-1] == (total, total)
    model.batches.clear()
    segment_array(model, image)  # no flips unless asked: one call per batch of (default) 2 tiles
    assert sum(b[0] for b in model.batches) == total
    model.batches.clear()
    segment_array(model, image, tta=True)
    assert sum(b[0] for b in model.batches) == 4 * total
    with pytest.raises(ValueError, match="window must be one of"):
        segment_array(model, image, window="triangle")


# --------------------------------------------------------------------------------------- tile options


def test_the_default_overlap_is_at_most_half_a_tile_in_whole_pixels():
    tiling = Tiling.resolve(RecordingModel(tile_size=64, overlap=48))
    assert (tiling.tile, tiling.overlap, tiling.multiple) == (64, 32, 32) and type(tiling.overlap) is int
    assert Tiling.resolve(RecordingModel(), 32) == Tiling(32, 16, 32)


@pytest.mark.parametrize(
    ("tile", "overlap", "argument", "message"),
    [
        (48, None, "tile", "tile must be a positive multiple of 32, got 48"),
        (16, None, "tile", "tile must be a positive multiple of 32, got 16"),
        (64, 64, "overlap", "overlap must be in 0..63 for tile 64, got 64"),
        (64, -1, "overlap", "overlap must be in 0..63 for tile 64, got -1"),
    ],
)
def test_tile_arguments_are_refused_with_the_valid_range(tile, overlap, argument, message):
    with pytest.raises(OptionError, match=f"^{re.escape(message)}$") as info:
        Tiling.resolve(RecordingModel(), tile, overlap)
    assert isinstance(info.value, ValueError) and info.value.argument == argument
    assert info.value.naming(f"--{argument}") == f"--{message}"


# ----------------------------------------------------------------------------- softmax and entropy


def test_softmax_normalizes_along_any_axis_and_survives_large_logits():
    logits = np.array([[1000.0, -1000.0], [999.0, -1001.0]], np.float32)  # (C, pixels)
    probs = softmax(logits.copy())
    e = 1.0 / (1.0 + np.exp(-1.0))
    np.testing.assert_allclose(probs, [[e, e], [1 - e, 1 - e]], rtol=1e-6)
    np.testing.assert_allclose(softmax(logits.T.copy(), axis=1), probs.T, rtol=1e-6)
    cube = np.random.default_rng(0).normal(size=(4, 3, 5)).astype(np.float32)
    for axis in (0, 1, 2):
        np.testing.assert_allclose(softmax(cube.copy(), axis=axis).sum(axis=axis), 1.0, rtol=1e-6)


def test_normalized_entropy_is_zero_when_certain_and_one_when_uniform():
    certain = np.zeros((3, 2, 2), np.float32)
    certain[1] = 1.0
    np.testing.assert_allclose(normalized_entropy(certain), 0.0, atol=1e-9)  # 0 log 0 is 0, not NaN
    for classes in (2, 4):
        uniform = np.full((classes, 2, 3), 1.0 / classes, np.float32)
        got = normalized_entropy(uniform)
        assert got.dtype == np.float32 and got.shape == (2, 3)
        np.testing.assert_allclose(got, 1.0, rtol=1e-6)
    probs = np.array([0.5, 0.25, 0.25], np.float32)
    expected = 1.5 * np.log(2) / np.log(3)
    np.testing.assert_allclose(normalized_entropy(probs[:, None]), [expected], rtol=1e-6)
    np.testing.assert_allclose(normalized_entropy(probs[None, None], axis=-1), [[expected]], rtol=1e-6)


def test_normalized_entropy_of_a_single_class_is_zero_of_the_pixel_shape():
    got = normalized_entropy(np.ones((1, 2, 3), np.float32))
    assert got.shape == (2, 3) and got.dtype == np.float32 and not got.any()
    assert normalized_entropy(np.ones((2, 3, 1), np.float32), axis=2).shape == (2, 3)


def test_the_blend_windows_follow_their_definitions():
    # Written from the definitions, not from window_1d: a Gaussian with sigma = size / 8 (MONAI's
    # sigma_scale 0.125) and a Hann window, each peak-normalized and floored at a small positive weight.
    from semphase.runtime.tiling import blend_window, window_1d

    size = 64
    x = np.arange(size, dtype=np.float64)
    gauss = np.exp(-0.5 * ((x - 31.5) / 8.0) ** 2)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * (x + 0.5) / size)
    for kind, expected in (("gaussian", gauss / gauss.max()), ("cosine", hann / hann.max())):
        got = window_1d(size, kind)
        assert np.allclose(got[got > 1e-3], expected[got > 1e-3], rtol=1e-12)
        assert got.min() > 0 and got.max() == 1.0
        assert np.array_equal(
            blend_window(size, 32, kind), np.outer(got, window_1d(32, kind)).astype(np.float32)
        )
    assert np.array_equal(window_1d(size, "constant"), np.ones(size))
