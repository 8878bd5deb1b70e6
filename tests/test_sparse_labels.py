"""Sparse labels: colour and index label images, and unlabelled pixels that leak into nothing.

An unlabelled pixel (255, transparent, black or white) must never influence the loss, its gradient, a
metric, the training crops or the split. Each leak test here changes only what sits under unlabelled pixels
(the network's logits, the prediction, the micrograph) and demands identical results.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from semphase.data.check import check_dataset, field_table, report_to_dict
from semphase.data.labels import (
    colour_labels,
    labels_from_colours,
    read_labels,
    write_colour_labels,
)
from semphase.data.layout import group_key, labelled_pixels, load_pair, open_dataset
from semphase.data.split import SPLITS, make_split
from semphase.data.synth import to_raw_ids
from semphase.errors import InputError
from semphase.imageio import write_image
from semphase.metrics import score_image
from semphase.phases import DEFAULT_TABLE, IGNORE, ClassTable
from test_train_fixtures import tiny_scene

C = DEFAULT_TABLE.num_classes


def sparse(labels: np.ndarray, keep: float, seed: int = 0) -> np.ndarray:
    """``labels`` with all but a random ``keep`` share of the pixels unlabelled."""
    rng = np.random.default_rng(seed)
    out = labels.copy()
    out[rng.random(labels.shape) >= keep] = IGNORE
    return out


# ------------------------------------------------------------------------------------ label files


def test_colour_label_png_round_trips_with_transparent_unlabelled_pixels(tmp_path):
    labels = sparse(np.random.default_rng(1).integers(0, C, (40, 50)).astype(np.uint8), 0.3)
    write_colour_labels(tmp_path / "m.png", labels, DEFAULT_TABLE)
    rgba = cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED)
    assert rgba.shape == (40, 50, 4) and (rgba[labels == IGNORE, 3] == 0).all()
    np.testing.assert_array_equal(read_labels(tmp_path / "m.png", DEFAULT_TABLE), labels)


def test_rgb_strokes_on_black_or_white_read_as_sparse_labels(tmp_path):
    truth = np.full((6, 8), IGNORE, np.uint8)
    truth[1, 1:4], truth[4, 2:7] = 2, 3
    for background in ((0, 0, 0), (255, 255, 255)):
        rgb = np.zeros((6, 8, 3), np.uint8)
        rgb[:] = background
        rgb[truth != IGNORE] = DEFAULT_TABLE.color_lut()[truth[truth != IGNORE]]
        write_image(tmp_path / "s.png", rgb)
        np.testing.assert_array_equal(read_labels(tmp_path / "s.png", DEFAULT_TABLE), truth)


def test_half_transparent_stroke_edges_are_unlabelled_not_guessed():
    rgba = colour_labels(np.array([[0, 1, 2]], np.uint8), DEFAULT_TABLE)
    rgba[0, 1, 3] = 128  # the soft edge of a brush stroke, class colour at half opacity
    assert labels_from_colours(rgba, DEFAULT_TABLE, "x.png").tolist() == [[0, IGNORE, 2]]


def test_a_colour_that_is_no_class_is_one_line_naming_file_colour_and_place(tmp_path):
    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[2, 3] = (52, 101, 164)  # Matrix
    rgb[3, 4] = rgb[4, 5] = (60, 100, 160)  # an antialiased near-Matrix
    write_image(tmp_path / "bad.png", rgb)
    with pytest.raises(InputError) as info:
        read_labels(tmp_path / "bad.png", DEFAULT_TABLE)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "bad.png")) and "\n" not in message
    assert "(60, 100, 160) on 2 pixels (first at x=4, y=3)" in message and "Matrix (52, 101, 164)" in message


def test_classes_sharing_a_colour_cannot_read_colour_masks():
    table = ClassTable.from_dict(
        {"classes": [{"name": "A", "color": [1, 2, 3]}, {"name": "B", "color": [1, 2, 3]}]}
    )
    with pytest.raises(InputError, match="share the colour"):
        labels_from_colours(np.zeros((2, 2, 3), np.uint8), table, "m.png")


def test_index_mask_255_is_unlabelled_and_16_bit_colour_of_8_bit_values_reads(tmp_path):
    write_image(tmp_path / "i.png", np.array([[1, 255, 5]], np.uint8))
    assert read_labels(tmp_path / "i.png", DEFAULT_TABLE).tolist() == [[0, IGNORE, 4]]
    rgba16 = colour_labels(np.array([[3, IGNORE]], np.uint8), DEFAULT_TABLE).astype(np.uint16) * 257
    assert labels_from_colours(rgba16, DEFAULT_TABLE, "m.tif").tolist() == [[3, IGNORE]]


def _dataset(root, masks: dict[str, np.ndarray], size: int = 32):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for name, mask in masks.items():
        write_image(root / "images" / f"{name}.png", rng.integers(0, 255, mask.shape[:2]).astype(np.uint8))
        if mask.ndim == 3:
            write_image(root / "masks" / f"{name}.png", mask)
        else:
            write_image(root / "masks" / f"{name}.png", to_raw_ids(mask))
    return root


def test_data_check_reports_labelled_pixels_per_field_and_warns_of_unlabelled_classes(tmp_path):
    dense = np.zeros((32, 32), np.uint8)
    dense[:16] = 2
    strokes = np.full((32, 32), IGNORE, np.uint8)
    strokes[3, 3:10] = 0
    nothing = np.full((32, 32), IGNORE, np.uint8)
    root = _dataset(tmp_path, {"a": dense, "b": colour_labels(strokes, DEFAULT_TABLE), "c": nothing})
    report = check_dataset(root)
    assert report.ok and report.sparse
    assert (
        report.per_image_counts["b.png"].tolist() == [7, 0, 0, 0, 0]
        and report.per_image_pixels["b.png"] == 1024
    )
    assert report.pixel_counts.tolist() == [512 + 7, 0, 512, 0, 0]
    assert (report.ignored_pixels, report.unknown_pixels) == (1024 - 7 + 1024, 0)
    assert any("Carbide, Reprecipitate, Dilution" in w for w in report.warnings)
    assert any("1 fields have no labelled pixel (c.png)" in w for w in report.warnings)
    document = report_to_dict(report)
    assert document["sparse"] and document["unlabelled_pixels"] == 2041
    rows = field_table(report).rows
    assert [r[0] for r in rows] == ["c.png", "b.png", "a.png"] and rows[1][1] == "0.68%"


# ------------------------------------------------------------------------------------ the split


def test_split_leaves_out_unlabelled_fields_and_balances_labelled_pixels():
    names = [f"f{i}.png" for i in range(10)]
    labelled = {n: 100 for n in names}
    labelled["f0.png"] = 0
    labelled["f9.png"] = 0
    labelled["f1.png"] = 10_000  # one heavily labelled field outweighs the others
    split = make_split(names, (0.5, 0.25, 0.25), seed=0, labelled=labelled)
    used = [n for side in SPLITS for n in split[side]]
    assert "f0.png" not in used and "f9.png" not in used and len(used) == 8
    by_side = {side: sum(labelled[n] for n in split[side]) for side in SPLITS}
    assert split["train"] == ["f1.png"] or by_side["train"] >= by_side["val"]
    assert by_side["train"] == 10_000  # half the labelled pixels cannot be had closer


def test_split_does_not_depend_on_where_the_unlabelled_pixels_are(tmp_path):
    masks = {}
    rng = np.random.default_rng(3)
    for i in range(6):
        _, labels = tiny_scene(rng, 32)
        masks[f"m{i}"] = sparse(labels, 0.1 * (i + 1), seed=i)
    first = _dataset(tmp_path / "a", masks)
    moved = {k: np.roll(v, 7, axis=1) for k, v in masks.items()}  # same counts, other places
    second = _dataset(tmp_path / "b", moved)
    splits = []
    for root in (first, second):
        ds = open_dataset(root)
        splits.append(
            make_split(
                [s.name for s in ds.samples], seed=1, labelled=labelled_pixels(ds.samples, DEFAULT_TABLE)
            )
        )
    assert splits[0] == splits[1]


def test_zero_val_and_test_fractions_train_on_everything():
    names = [f"f{i}.png" for i in range(3)]
    assert make_split(names, (1.0, 0.0, 0.0)) == {"train": names, "val": [], "test": []}
    assert make_split(names[:1], (1.0, 0.0, 0.0))["train"] == names[:1]  # one field is enough


def test_regions_suggested_from_one_micrograph_share_its_group():
    assert group_key("run7/f01__y512_x0.png") == group_key("run7/f01__y0_x1024.png") == "run7/f01"
    assert group_key("sem700_x0_y0_base__y0_x0.png") == "sem700_x0_y0"


# ------------------------------------------------------------------------------------ metrics


def test_no_metric_sees_the_prediction_under_unlabelled_pixels():
    rng = np.random.default_rng(5)
    _, truth = tiny_scene(rng, 64)
    truth = sparse(truth, 0.2)
    pred = truth.copy()
    pred[truth == IGNORE] = rng.integers(0, C, int((truth == IGNORE).sum()))
    noisy = rng.random(truth.shape) < 0.1
    pred[noisy] = (pred[noisy] + 1) % C  # some real errors on labelled pixels too
    other = pred.copy()
    other[truth == IGNORE] = rng.integers(0, C, int((truth == IGNORE).sum()))  # only unlabelled ones move
    a, b = score_image(truth, pred, C), score_image(truth, other, C)
    for field_name in ("iou", "dice", "bf1", "confusion"):
        np.testing.assert_array_equal(getattr(a, field_name), getattr(b, field_name))
    assert a.miou == b.miou and a.mbf1 == b.mbf1 and 0 < a.miou < 1


# ------------------------------------------------------------------------------------ training side

torch = pytest.importorskip("torch")


def test_unlabelled_pixels_have_no_say_in_the_loss_or_its_gradient():
    from semphase.train.losses import HybridLoss

    rng = np.random.default_rng(2)
    target = np.stack([sparse(tiny_scene(rng, 32)[1], 0.05, seed=s) for s in range(2)])
    unlabelled = torch.from_numpy(target == IGNORE)
    loss_fn = HybridLoss(np.array([0.5, 3.0, 0.4, 1.0, 1.0], np.float32))
    y = torch.from_numpy(target).long()
    torch.manual_seed(0)
    logits = torch.randn(2, C, 32, 32, requires_grad=True)
    loss = loss_fn(logits, y)
    loss.backward()
    assert torch.all(logits.grad.permute(0, 2, 3, 1)[unlabelled] == 0)
    changed = logits.detach().clone()
    changed.permute(0, 2, 3, 1)[unlabelled] = torch.randn(int(unlabelled.sum()), C) * 10
    assert float(loss_fn(changed, y)) == pytest.approx(float(loss.detach()), abs=1e-6)


def _micrographs(n: int, share: float, size: int = 96):
    """Tiny scenes with simulated strokes over ``share`` of their pixels (1: dense)."""
    from semphase.data.synth.scribbles import scribble_labels
    from semphase.train.datasets import Micrograph

    rng = np.random.default_rng(4)
    out = []
    for i in range(n):
        image, labels = tiny_scene(rng, size)
        out.append(Micrograph(f"m{i}", image, scribble_labels(labels, share, i, C, brush=3)))
    return out


def test_labelled_sampler_tiles_hold_labels_rare_classes_get_their_share_and_ignore_the_pixels():
    from semphase.train.datasets import Micrograph, TileDataset, resolve_sampler

    shots = _micrographs(3, 0.01)
    assert resolve_sampler("auto", shots, C) == "labelled"
    tiles = TileDataset(shots, 32, 20, seed=7, sampler="labelled", num_classes=C)
    for i in range(len(tiles)):  # augmented tiles: labelled pixels survive the warps
        image, labels = tiles[i]
        assert image.shape == labels.shape == (32, 32) and np.any(labels < C), i

    # Crops follow the labels alone: other pixels under the unlabelled area give the same crops.
    other = [
        Micrograph(m.name, np.where(m.labels == IGNORE, 255 - m.image, m.image), m.labels) for m in shots
    ]
    again = TileDataset(other, 32, 20, seed=7, sampler="labelled", num_classes=C)
    for i in range(20):
        (ia, la), (ib, lb) = tiles.crop(np.random.default_rng(i)), again.crop(np.random.default_rng(i))
        np.testing.assert_array_equal(la, lb)
        np.testing.assert_array_equal(ia[la != IGNORE], ib[lb != IGNORE])

    # A rare phase: Carbide keeps 3 labelled pixels per micrograph, about 1 % of what is labelled.
    rare, big = 1, []
    for m in _micrographs(3, 0.01, size=256):
        labels = m.labels.copy()
        ys, xs = np.nonzero(labels == rare)
        labels[ys[3:], xs[3:]] = IGNORE
        big.append(Micrograph(m.name, m.image, labels))
    sampler = TileDataset(big, 32, 20, seed=7, sampler="labelled", num_classes=C)
    rng = np.random.default_rng(11)
    crops = [sampler.crop(rng)[1] for _ in range(400)]
    assert all(np.any(c < C) for c in crops)  # every crop holds its anchor
    # The balanced half of the anchors alone lands on the rare class in one crop of 2 C.
    assert sum(np.any(c == rare) for c in crops) >= 400 / (2 * C)


def test_validation_of_a_large_micrograph_scores_strokes_painted_off_centre():
    from semphase.train.datasets import MAX_VALIDATION_SIDE, Micrograph, validation_view

    side = MAX_VALIDATION_SIDE
    h, w = side + 700, side + 900
    image = np.random.default_rng(0).integers(0, 256, (h, w), dtype=np.uint8)
    labels = np.full((h, w), IGNORE, np.uint8)
    labels[h - 60 : h - 20, w - 90 : w - 30] = 2  # strokes near the bottom-right corner ...
    labels[h - 300 : h - 290, 40:80] = 0  # ... and near the bottom-left one
    crop_image, crop_labels = validation_view(Micrograph("big", image, labels))
    assert crop_labels.shape == crop_image.shape == (side, side)
    assert np.count_nonzero(crop_labels == 2) == 40 * 60  # the corner strokes are all in the crop
    ys, xs = np.nonzero(crop_labels == 2)
    top, left = h - 60 - ys.min(), w - 90 - xs.min()
    np.testing.assert_array_equal(crop_image, image[top : top + side, left : left + side])

    dense = np.zeros((h, w), np.uint8)  # densely labelled: the centred crop, as before
    crop_image, _ = validation_view(Micrograph("dense", image, dense))
    top, left = (h - side) // 2, (w - side) // 2
    np.testing.assert_array_equal(crop_image, image[top : top + side, left : left + side])
    small = Micrograph("small", image[:300, :200], labels[:300, :200])  # small: whole
    assert validation_view(small)[0] is small.image


def test_dense_training_keeps_the_studys_uniform_crops():
    from semphase.train.datasets import resolve_sampler

    assert resolve_sampler("auto", _micrographs(2, 1.0), C) == "uniform"


def test_a_wrong_colour_in_a_training_mask_is_exit_2_and_one_line(tmp_path, capsys):
    from semphase.cli.main import main

    labels = np.zeros((64, 64), np.uint8)
    rgb = DEFAULT_TABLE.color_lut()[labels]
    rgb[10, 20] = (1, 2, 3)
    root = _dataset(tmp_path / "ds", {"a": rgb, "b": colour_labels(labels, DEFAULT_TABLE)}, 64)
    with pytest.raises(SystemExit) as info:
        main(["train", str(root), "--out", str(tmp_path / "run"), "--fractions", "1,0,0", "--schedule",
              "cosine", "--arch", "unet-scratch", "--encoder-weights", "none", "--tile", "32"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert "a.png" in err and "(1, 2, 3) on 1 pixels (first at x=20, y=10)" in err


def test_load_pair_reads_colour_masks_of_a_dataset(tmp_path):
    labels = sparse(np.random.default_rng(0).integers(0, C, (32, 32)).astype(np.uint8), 0.5)
    root = _dataset(tmp_path, {"a": colour_labels(labels, DEFAULT_TABLE)})
    (sample,) = open_dataset(root).samples
    np.testing.assert_array_equal(load_pair(sample, DEFAULT_TABLE)[1], labels)
    json.dumps(report_to_dict(check_dataset(root)))  # the report stays JSON-serializable
