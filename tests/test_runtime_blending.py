"""The blended logits themselves, against independent computations (not only their argmax).

Positive rescaling of the blend leaves the argmax alone, so label tests cannot see a wrong normalization.
Here the sliding window's logits are compared with (1) the exact logits of a pixel-wise model, which any
correctly normalized weighted mean must reproduce, and (2) a brute-force full-image accumulator over the
same tile grid for a model whose tiles see different context; and flip averaging is checked on a model
that is not flip-invariant.
"""

from __future__ import annotations

import numpy as np
import pytest

from semphase.runtime.sliding import iter_bands, segment_array
from semphase.runtime.tiling import blend_window, plan_tiles

CLASSES = ["a", "b", "c"]


class PixelModel:
    """Logits that depend on each pixel alone: (x/255) * slope_c + offset_c."""

    tile_size, overlap, size_multiple, classes = 64, 16, 32, CLASSES
    slopes = np.array([3.0, -2.0, 0.5], np.float32)
    offsets = np.array([-1.0, 1.0, 0.25], np.float32)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        x = batch.astype(np.float32)[:, None] / 255.0
        return x * self.slopes[None, :, None, None] + self.offsets[None, :, None, None]


class ContextModel(PixelModel):
    """Logits that depend on where a pixel sits in its tile (so overlapping tiles disagree) and which are
    not symmetric under flips: the pixel-wise logits plus a ramp across the tile, different per class."""

    def logits(self, batch: np.ndarray) -> np.ndarray:
        base = super().logits(batch)
        n, h, w = batch.shape
        ramp_x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, None, None, :]
        ramp_y = np.linspace(0.0, 1.0, h, dtype=np.float32)[None, None, :, None]
        gains = np.array([1.5, -1.0, 0.5], np.float32)[None, :, None, None]
        return base + gains * ramp_x + 0.7 * gains[:, ::-1] * ramp_y * ramp_x


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _blended(model, image, **kwargs) -> np.ndarray:
    out = np.empty((len(CLASSES), *image.shape), np.float32)
    for band in iter_bands(model, image, batch=3, logits=True, **kwargs):
        out[:, band.y0 : band.y1] = band.logits
    return out


def _brute_force(model, image, tile, overlap, window, tta=False) -> np.ndarray:
    """Every tile of the plan run alone, weighted by its blend window, summed into full-image arrays."""
    h, w = image.shape
    plan = plan_tiles(h, w, tile, overlap, model.size_multiple)
    padded = np.pad(image, ((0, plan.rows.padded - h), (0, plan.cols.padded - w)), mode="reflect")
    sums = np.zeros((len(CLASSES), plan.rows.padded, plan.cols.padded), np.float64)
    weights = np.zeros((plan.rows.padded, plan.cols.padded), np.float64)
    for y, th in zip(plan.rows.starts, plan.rows.sizes, strict=True):
        for x, tw in zip(plan.cols.starts, plan.cols.sizes, strict=True):
            crop = padded[y : y + th, x : x + tw]
            if tta:
                logits = np.mean(
                    [
                        np.flip(
                            model.logits(np.ascontiguousarray(np.flip(crop, axes))[None])[0],
                            tuple(a + 1 for a in axes),
                        )
                        for axes in ((), (1,), (0,), (0, 1))
                    ],
                    axis=0,
                )
            else:
                logits = model.logits(crop[None])[0]
            window_2d = blend_window(th, tw, window)
            sums[:, y : y + th, x : x + tw] += logits * window_2d
            weights[y : y + th, x : x + tw] += window_2d
    return (sums / weights)[:, :h, :w]


@pytest.mark.parametrize("window", ["gaussian", "cosine"])
@pytest.mark.parametrize("shape", [(150, 211), (64, 64), (40, 300)])
def test_a_pixelwise_model_is_reproduced_exactly_through_the_blend(window, shape):
    model = PixelModel()
    image = _image(*shape)
    expected = model.logits(image[None])[0]
    got = _blended(model, image, window=window)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("window", ["gaussian", "cosine"])
def test_blended_logits_equal_a_brute_force_accumulator(window):
    model = ContextModel()
    image = _image(170, 230, seed=1)
    expected = _brute_force(model, image, 64, 16, window)
    got = _blended(model, image, window=window)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # The window matters for this model: the other window gives other logits.
    other = _brute_force(model, image, 64, 16, "cosine" if window == "gaussian" else "gaussian")
    assert np.abs(other - expected).max() > 1e-2


def test_flip_averaging_is_the_mean_of_the_four_flips():
    model = ContextModel()
    image = _image(128, 160, seed=2)
    expected = _brute_force(model, image, 64, 16, "gaussian", tta=True)
    got = _blended(model, image, tta=True)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    plain = _blended(model, image, tta=False)
    assert np.abs(plain - got).max() > 0.1  # this model is not flip-invariant: TTA changes its logits
    labels_tta = segment_array(model, image, tta=True)
    assert np.array_equal(labels_tta, expected.argmax(0).astype(np.uint8))


def test_a_resolved_tiling_is_the_one_segment_array_uses_and_cannot_be_given_twice():
    from semphase.model_format import Tiling

    model, image = ContextModel(), _image(150, 170, seed=5)
    tiling = Tiling.resolve(model, 96, 8)
    by_tiling = segment_array(model, image, tiling=tiling)
    assert np.array_equal(by_tiling, segment_array(model, image, tile=96, overlap=8))
    assert not np.array_equal(by_tiling, segment_array(model, image))  # the model's own 64/16 differs
    for given in ({"tile": 96}, {"overlap": 8}):
        with pytest.raises(TypeError, match="^give either a resolved tiling or tile and overlap, not both$"):
            next(iter_bands(model, image, tiling=tiling, **given))
