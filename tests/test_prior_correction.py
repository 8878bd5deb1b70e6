"""The label-prior correction after training on strokes (``train --prior-correction``).

Strokes over-sample rare phases; the correction estimates the micrographs' own class shares by EM and
folds ``log(shares / label shares)`` into the output layer's bias, nothing else.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from semphase.cli.main import main
from semphase.data.synth import to_raw_ids
from semphase.imageio import read_gray, write_image
from semphase.phases import IGNORE
from semphase.train.checkpoint import read_checkpoint, save_checkpoint
from semphase.train.prior import correct_prior, correction_bias, estimate_prior
from test_train_fixtures import make_dataset
from test_train_run import FAST
from test_train_run import run_cli as run

HEAD_BIAS = "head.bias"  # the scratch U-Net's output convolution


def _gaussian_posteriors(n: int, true_shares, trained_prior, seed: int = 0):
    """Pixels of 3 classes (1-D features, unit Gaussians at 0, 2 and 4) drawn with ``true_shares``, and
    their exact posteriors under ``trained_prior``; returns (classes, posteriors (3, n))."""
    rng = np.random.default_rng(seed)
    classes = rng.choice(3, size=n, p=true_shares)
    x = rng.normal(2.0 * classes, 1.0)
    likelihood = np.exp(-0.5 * (x[None] - np.array([0.0, 2.0, 4.0])[:, None]) ** 2)
    joint = likelihood * np.asarray(trained_prior)[:, None]
    return classes, joint / joint.sum(axis=0, keepdims=True)


def test_em_finds_the_class_shares_the_labels_misstated_and_the_bias_restores_them():
    truth = np.array([0.70, 0.05, 0.25])  # the micrographs
    labels = np.array([0.30, 0.40, 0.30])  # the strokes: the rare class over-sampled 8x
    classes, posteriors = _gaussian_posteriors(200_000, truth, labels)
    shares, iterations = estimate_prior(posteriors, labels)
    assert np.abs(shares - truth).max() < 0.01 and iterations > 1
    assert np.abs(posteriors.mean(axis=1) - truth).max() > 0.05  # the plain mean is not the answer

    logits = np.log(posteriors)
    before = logits.argmax(axis=0)
    after = (logits + correction_bias(shares, labels)[:, None]).argmax(axis=0)
    assert (before == 1).mean() > 2 * truth[1]  # uncorrected: the rare class painted everywhere
    assert abs((after == 1).mean() - truth[1]) < abs((before == 1).mean() - truth[1]) / 3
    assert (after == classes).mean() > (before == classes).mean() + 0.05
    assert correction_bias(shares, labels).mean() == pytest.approx(0, abs=1e-6)


def test_em_leaves_posteriors_learnt_with_the_right_prior_as_they_are():
    truth = np.array([0.5, 0.2, 0.3])
    _, posteriors = _gaussian_posteriors(100_000, truth, truth, seed=1)
    shares, _ = estimate_prior(posteriors, truth)
    assert np.abs(correction_bias(shares, truth)).max() < 0.05


def _sparse_copy(dense, out, keep_per_class: dict[int, int]):
    """``dense`` (zenodo layout) with, in each mask, only ``keep_per_class[c]`` random pixels of class c
    labelled: strokes that over-sample the rare classes."""
    shutil.copytree(dense, out)
    rng = np.random.default_rng(0)
    for path in sorted((out / "AugmentedMasks").glob("*.bmp")):
        raw = read_gray(path)
        ids = raw.astype(np.int16) - 1  # raw ids 1..5
        sparse = np.full(ids.shape, IGNORE, np.uint8)
        for c, k in keep_per_class.items():
            where = np.flatnonzero(ids.ravel() == c)
            chosen = rng.choice(where, size=min(k, where.size), replace=False)
            sparse.ravel()[chosen] = c
        write_image(path, to_raw_ids(sparse))
    return out


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """A dense dataset, its sparse copy and a barely trained scratch checkpoint to start from."""
    root = tmp_path_factory.mktemp("prior")
    dense = make_dataset(root / "dense", groups=3)
    sparse = _sparse_copy(dense, root / "sparse", {c: 40 for c in range(5)})
    with pytest.raises(SystemExit) as info:
        main(["train", str(dense), "--out", str(root / "base"), "--arch", "unet-scratch",
              "--encoder-weights", "none", "--epochs", "1", *FAST])  # fmt: skip
    assert info.value.code == 0
    return dense, sparse, root / "base" / "best.pt"


def test_a_run_on_strokes_moves_only_the_output_bias_and_records_it(start, tmp_path, capsys):
    _, sparse, checkpoint = start
    out = tmp_path / "tuned"
    code, text, err = run([sparse, "--out", out, "--init", checkpoint, "--epochs", "1", *FAST], capsys)
    assert code == 0, err
    record = json.loads((out / "config.json").read_text())["prior_correction_result"]
    assert record["applied"] and record["mode"] == "auto" and record["labelled_share"] < 0.1
    assert sum(record["estimated_shares"]) == pytest.approx(1.0) and record["pixels"] > 0
    best, last = read_checkpoint(out / "best.pt"), read_checkpoint(out / "last.pt")  # last.pt: uncorrected
    assert (
        best["config"]["prior_correction_result"] == record
        and "prior_correction_result" not in last["config"]
    )
    for key, value in best["state_dict"].items():
        if key == HEAD_BIAS:
            shift = (value - last["state_dict"][key]).numpy()
            np.testing.assert_allclose(shift, record["bias"], atol=1e-6)
            assert np.abs(shift).max() > 0
        else:
            assert torch.equal(value, last["state_dict"][key]), key
    assert "prior correction (" in text and "-> of the micrographs" in text

    # --resume with nothing left to train keeps best.pt as it is: the correction is not made twice
    code, text, err = run([sparse, "--out", out, "--resume", "--threads", "1"], capsys)
    assert code == 0, err
    again = read_checkpoint(out / "best.pt")
    assert torch.equal(again["state_dict"][HEAD_BIAS], best["state_dict"][HEAD_BIAS])
    assert "corrected already" in text

    # ... and a resumed run that trains on corrects its new best epoch afresh
    code, text, err = run([sparse, "--out", out, "--resume", "--epochs", "2", "--threads", "1"], capsys)
    assert code == 0, err
    best, last = read_checkpoint(out / "best.pt"), read_checkpoint(out / "last.pt")
    assert best["epoch"] == last["epoch"] == 2
    record = best["config"]["prior_correction_result"]
    assert record["applied"] and "reason" not in record
    shift = (best["state_dict"][HEAD_BIAS] - last["state_dict"][HEAD_BIAS]).numpy()
    np.testing.assert_allclose(shift, record["bias"], atol=1e-6)


def test_dense_labels_and_off_leave_the_network_as_trained(start, tmp_path, capsys):
    dense, sparse, checkpoint = start
    for data, extra, reason in (
        (dense, [], "100 % of the training pixels are labelled"),
        (sparse, ["--prior-correction", "off"], "--prior-correction off"),
    ):
        out = tmp_path / data.name
        code, text, err = run(
            [data, "--out", out, "--init", checkpoint, "--epochs", "1", *extra, *FAST], capsys
        )
        assert code == 0, err
        record = json.loads((out / "config.json").read_text())["prior_correction_result"]
        assert not record["applied"] and reason in record["reason"] and reason in text
        best, last = read_checkpoint(out / "best.pt"), read_checkpoint(out / "last.pt")
        assert torch.equal(best["state_dict"][HEAD_BIAS], last["state_dict"][HEAD_BIAS])


def test_a_class_without_labels_has_no_prior_to_correct(start, tmp_path):
    _, _, checkpoint = start
    state = read_checkpoint(checkpoint)
    config = {**state["config"], "train_pixel_fractions": [0.5, 0.0, 0.2, 0.2, 0.1]}
    path = tmp_path / "best.pt"
    from semphase.train.models import build_model

    model = build_model(config)
    model.load_state_dict(state["state_dict"])
    save_checkpoint(path, model, config, epoch=1)
    image = np.zeros((64, 64), np.uint8)
    record = correct_prior(path, [image], "on", 0.01, "cpu")
    assert not record["applied"] and "no labelled pixel of Carbide" in record["reason"]
    assert torch.equal(read_checkpoint(path)["state_dict"][HEAD_BIAS], state["state_dict"][HEAD_BIAS])


def test_prior_correction_option_is_checked_in_one_line(start, tmp_path, capsys):
    _, sparse, checkpoint = start
    code, _, err = run(
        [sparse, "--out", tmp_path / "x", "--init", checkpoint, "--prior-correction", "maybe", *FAST], capsys
    )
    assert code == 2 and "--prior-correction: auto, on or off" in err and "Traceback" not in err


def test_exported_files_say_their_prior_was_corrected():
    from semphase.export.metadata import build_metadata
    from semphase.phases import DEFAULT_TABLE

    config = {
        "classes": DEFAULT_TABLE.to_dict(),
        "num_classes": 5,
        "normalization": {"scale": 1 / 255, "mean": [0.5], "std": [0.2]},
        "prior_correction_result": {"applied": True, "label_shares": [0.2] * 5, "bias": [0.0] * 5,
                                    "estimated_shares": [0.5, 0.01, 0.29, 0.1, 0.1], "pixels": 9},
    }  # fmt: skip
    source = json.loads(build_metadata(config, {}, variant="fp32", checkpoint_sha256="0")["semphase.source"])
    assert (
        source["prior_correction"]["estimated_shares"][1] == 0.01
        and "pixels" not in source["prior_correction"]
    )
    config["prior_correction_result"] = {"applied": False, "reason": "--prior-correction off"}
    source = json.loads(build_metadata(config, {}, variant="fp32", checkpoint_sha256="0")["semphase.source"])
    assert "prior_correction" not in source


def test_stroke_scores_weighed_by_the_class_shares_rank_models_as_dense_labels_do():
    from semphase.metrics import iou_dice
    from semphase.serve.finetune import share_weighted

    # micrographs: 98 % A, 2 % B; strokes: 50 / 50. Model "rare" paints B on 10 % of A, model "prior" on
    # 1 % of A but misses 20 % of B. Dense truth (per 10 000 px) decides for "prior".
    def counts(a_as_b: float, b_missed: float, a: float, b: float) -> np.ndarray:
        return np.array([[a * (1 - a_as_b), a * a_as_b, 0], [b * b_missed, b * (1 - b_missed), 0]])

    def miou(c):
        return float(np.nanmean(iou_dice(c)[0]))

    dense = {"rare": counts(0.10, 0.0, 9800, 200), "prior": counts(0.01, 0.2, 9800, 200)}
    strokes = {"rare": counts(0.10, 0.0, 500, 500), "prior": counts(0.01, 0.2, 500, 500)}
    assert miou(dense["prior"]) > miou(dense["rare"]) and miou(strokes["prior"]) < miou(strokes["rare"])
    weighted = {k: share_weighted(v, [0.98, 0.02]) for k, v in strokes.items()}
    assert miou(weighted["prior"]) > miou(weighted["rare"])
    np.testing.assert_allclose(weighted["prior"], dense["prior"] / 10, rtol=1e-9)  # 1 000 labelled pixels
    np.testing.assert_array_equal(share_weighted(np.zeros((2, 3)), [0.5, 0.5]), np.zeros((2, 3)))
