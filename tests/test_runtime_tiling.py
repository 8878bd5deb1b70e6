"""Tile placement, padding and blend windows (pure numpy), and seam-free blending on a model with a known
receptive field."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from _runtime_models import build_blur_classifier, micrograph
from semphase.runtime.model import load_model
from semphase.runtime.sliding import iter_bands, segment_array
from semphase.runtime.tiling import blend_window, pad_reflect, plan_axis, plan_tiles, round_up


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "starts", "sizes"),
    [
        (512, 512, 64, (0,), (512,)),  # exactly one tile
        (513, 512, 64, (0, 257), (512, 256)),  # one pixel more: half a tile (the least it may be) at the end
        (960, 512, 64, (0, 448), (512, 512)),  # two full tiles, overlap exactly 64
        (1000, 512, 64, (0, 448, 744), (512, 512, 256)),
        (1300, 512, 64, (0, 448, 884), (512, 512, 416)),  # the last tile just wide enough for 64 px
        (4096, 512, 32, (0, 480, 960, 1440, 1920, 2400, 2880, 3360, 3840), (512,) * 8 + (256,)),
        (8192, 512, 32, tuple(range(0, 7681, 480)), (512,) * 17),  # 17 full tiles fit exactly
    ],
)
def test_axis_plan_covers_the_axis_with_at_least_the_overlap(length, tile, overlap, starts, sizes):
    plan = plan_axis(length, tile, overlap)
    assert plan.starts == starts and plan.sizes == sizes and plan.window == tile
    assert plan.starts[0] == 0 and plan.starts[-1] + plan.sizes[-1] == length
    ends = np.add(plan.starts, plan.sizes)
    assert (ends[:-1] - np.asarray(plan.starts[1:]) >= overlap).all()  # neighbours share >= overlap px
    assert all(size % 32 == 0 for size in plan.sizes)


def test_the_narrow_last_tile_saves_work_over_full_tiles():
    # A 4096-pixel side: 8 full tiles and a half one, not 9 full ones.
    assert plan_axis(4096, 512, 32).covered == 8 * 512 + 256


@pytest.mark.parametrize(
    ("length", "window"), [(1, 32), (31, 32), (32, 32), (33, 64), (200, 224), (512, 512)]
)
def test_an_axis_shorter_than_a_tile_gets_one_window_rounded_to_the_size_multiple(length, window):
    plan = plan_axis(length, 512, 64)
    assert plan.starts == (0,) and plan.window == window and plan.padded == max(length, window)


def test_plan_rejects_bad_tiles_and_overlaps():
    with pytest.raises(ValueError, match="multiple of 32"):
        plan_axis(100, 100, 10)
    with pytest.raises(ValueError, match="overlap"):
        plan_axis(1000, 256, 256)
    with pytest.raises(ValueError, match="length"):
        plan_axis(0, 256, 0)


def test_finalized_rows_advance_with_the_next_tile_row():
    plan = plan_tiles(1000, 300, 512, 64)
    assert plan.rows.starts == (0, 448, 744) and plan.cols.starts == (0,)
    assert [plan.finalized_before(i) for i in range(3)] == [448, 744, 1000]
    assert plan.count == 3 and plan.tile_shape == (512, 320)
    assert plan.work_pixels == (512 + 512 + 256) * 320


def test_round_up():
    assert [round_up(v, 32) for v in (1, 32, 33, 64, 65)] == [32, 32, 64, 64, 96]


def test_reflect_padding_mirrors_without_repeating_the_edge():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    padded = pad_reflect(image, 5, 6)
    assert padded.shape == (5, 6)
    assert (padded[:3, :4] == image).all()
    assert padded[3].tolist()[:4] == image[1].tolist() and padded[4].tolist()[:4] == image[0].tolist()
    assert padded[0, 4:].tolist() == [2, 1]
    assert pad_reflect(image, 3, 4) is image


def test_reflect_padding_of_tiny_images_repeats_the_mirror():
    image = np.array([[5, 9]], np.uint8)
    assert pad_reflect(image, 3, 7).shape == (3, 7)
    single = pad_reflect(np.array([[7]], np.uint8), 32, 32)
    assert single.shape == (32, 32) and (single == 7).all()


@pytest.mark.parametrize("kind", ["gaussian", "cosine"])
def test_blend_windows_peak_in_the_centre_and_stay_positive(kind):
    w = blend_window(128, 96, kind)
    assert w.shape == (128, 96) and w.dtype == np.float32
    assert w.min() > 0 and w.max() == pytest.approx(1.0, abs=1e-3)
    assert w[64, 48] > w[10, 48] > w[0, 48]
    assert np.allclose(w, w[::-1, ::-1], atol=1e-6)  # symmetric
    assert not w.flags.writeable


def test_unknown_window_is_refused():
    with pytest.raises(ValueError, match="window"):
        blend_window(64, 64, "triangle")


@pytest.fixture(scope="module")
def blur_model(tmp_path_factory):
    return load_model(build_blur_classifier(tmp_path_factory.mktemp("m") / "blur.onnx"), threads=1)


def test_tiled_run_agrees_with_a_whole_image_pass_and_the_blending_is_what_makes_it(blur_model):
    # 576 x 704 is a multiple of 32: the whole-image pass needs no padding, so only seams can differ.
    image = micrograph(576, 704, seed=3)
    whole = segment_array(blur_model, image, tile=704, overlap=0)
    tiled = segment_array(blur_model, image, tile=128, overlap=32, window="gaussian", batch=3)
    cosine = segment_array(blur_model, image, tile=128, overlap=32, window="cosine")
    seams = segment_array(blur_model, image, tile=128, overlap=0, window="constant")
    assert (tiled == whole).mean() >= 0.995
    assert (cosine == whole).mean() >= 0.995
    # Without overlap and blending the tile borders show: the check above can fail.
    assert (seams == whole).mean() < 0.98


def test_bands_cover_every_row_once_in_order_and_report_progress(blur_model):
    image = micrograph(300, 200, seed=1)
    calls = []
    bands = list(
        iter_bands(
            blur_model, image, tile=64, overlap=16, logits=True, progress=lambda d, t: calls.append((d, t))
        )
    )
    assert bands[0].y0 == 0 and bands[-1].y1 == 300
    assert all(a.y1 == b.y0 for a, b in zip(bands, bands[1:], strict=False))
    assert all(b.logits.shape == (5, b.y1 - b.y0, 200) for b in bands)
    total = plan_tiles(300, 200, 64, 16).count
    assert calls[-1] == (total, total) and [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.parametrize("shape", [(1, 1), (17, 45), (100, 33), (31, 300), (129, 130)])
def test_small_and_odd_images_are_padded_and_segmented(blur_model, shape):
    image = micrograph(*shape, seed=2) if min(shape) > 8 else np.full(shape, 200, np.uint8)
    labels = segment_array(blur_model, image, tile=64, overlap=16)
    assert labels.shape == shape and labels.dtype == np.uint8 and labels.max() < 5


def test_flip_averaging_keeps_a_symmetric_model_unchanged(blur_model):
    image = micrograph(160, 192, seed=4)
    plain = segment_array(blur_model, image, tile=64, overlap=16)
    tta = segment_array(blur_model, image, tile=64, overlap=16, tta=True)
    assert (plain == tta).mean() > 0.999  # box filters commute with flips


def test_bad_tiling_options_are_refused(blur_model):
    image = np.zeros((64, 64), np.uint8)
    with pytest.raises(ValueError, match="multiple of 32"):
        segment_array(blur_model, image, tile=50)
    with pytest.raises(ValueError, match="overlap"):
        segment_array(blur_model, image, tile=64, overlap=64)
    with pytest.raises(ValueError, match="uint8"):
        segment_array(blur_model, image.astype(np.float32))


class _Recording:
    """A tile model that logs its calls (thread, first tile's top-left pixel) and can fail on call N."""

    def __init__(self, inner, fail_on: int | None = None) -> None:
        self.inner, self.fail_on, self.calls = inner, fail_on, []
        self.classes, self.tile_size, self.overlap = inner.classes, inner.tile_size, inner.overlap
        self.size_multiple = inner.size_multiple

    def logits(self, batch):
        self.calls.append(threading.current_thread().name)
        if self.fail_on is not None and len(self.calls) == self.fail_on:
            raise RuntimeError("model failed")
        return self.inner.logits(batch)


def test_the_model_runs_one_batch_ahead_of_the_blending_and_stops_with_the_caller(blur_model):
    image = micrograph(300, 200, seed=1)
    model = _Recording(blur_model)
    ahead = []

    def progress(done, total):  # the main thread, after blending a batch: is the next one under way?
        batches = -(-done // 2)
        deadline = time.monotonic() + 5
        while len(model.calls) <= batches and done < total and time.monotonic() < deadline:
            time.sleep(0.001)
        ahead.append(len(model.calls) > batches or done == total)

    list(iter_bands(model, image, tile=64, overlap=16, batch=2, progress=progress))
    # without the look-ahead the next batch would start only after this callback: never ahead
    assert ahead and all(ahead)
    assert all(name.startswith("semphase-model") for name in model.calls)
    assert (
        segment_array(blur_model, image, tile=64, overlap=16, batch=2)
        == segment_array(blur_model, image, tile=64, overlap=16, batch=1)
    ).all()
    # a caller that stops early (Ctrl-C, a failed write) leaves no model thread behind
    bands = iter_bands(_Recording(blur_model), image, tile=64, overlap=16, batch=2)
    next(bands)
    bands.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("semphase-model")]
    # an error of the model is the caller's, and the thread is gone too
    with pytest.raises(RuntimeError, match="model failed"):
        segment_array(_Recording(blur_model, fail_on=3), image, tile=64, overlap=16, batch=2)
    assert not [t for t in threading.enumerate() if t.name.startswith("semphase-model")]


class _TwoStreams(_Recording):
    """A model with two streams whose first calls each wait (5 s at most) for a second call to be under way
    at the same time: a sliding window that runs one call at a time breaks the barrier."""

    streams = 2

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.sizes: list[int] = []
        self.barrier = threading.Barrier(2, timeout=5)

    def logits(self, batch):
        self.sizes.append(len(batch))
        if len(self.sizes) <= 4:
            self.barrier.wait()
        return super().logits(batch)


def test_a_model_with_two_streams_computes_the_parts_of_a_batch_at_once_with_the_same_labels(blur_model):
    image = micrograph(300, 200, seed=1)
    model = _TwoStreams(blur_model)
    labels = segment_array(model, image, tile=64, overlap=16, batch=2)
    assert set(model.sizes) == {1}  # every batch of two was cut into one tile per stream
    assert len(set(model.calls)) == 2 and all(name.startswith("semphase-model") for name in model.calls)
    assert (labels == segment_array(blur_model, image, tile=64, overlap=16, batch=2)).all()
    # more tiles per call than streams: the parts split the batch, in order
    wide = _TwoStreams(blur_model)
    assert (segment_array(wide, image, tile=64, overlap=16, batch=5) == labels).all()
    assert max(wide.sizes) == 2 and sum(wide.sizes) == plan_tiles(300, 200, 64, 16).count
    # an error in either stream is the caller's, and no model thread is left
    with pytest.raises(RuntimeError, match="model failed"):
        segment_array(_Recording(blur_model, fail_on=5), image, tile=64, overlap=16, batch=2)
    failing = _TwoStreams(blur_model)
    failing.fail_on = 6
    with pytest.raises(RuntimeError, match="model failed"):
        segment_array(failing, image, tile=64, overlap=16, batch=2)
    assert not [t for t in threading.enumerate() if t.name.startswith("semphase-model")]
