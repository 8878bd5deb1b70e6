"""The shifted synthetic domain and simulated scribbles, which the few-label benchmark stands on."""

from __future__ import annotations

import numpy as np
import pytest

from semphase.cli.main import main
from semphase.data.check import check_dataset
from semphase.data.synth import synth_micrograph
from semphase.data.synth.domains import SHIFTED, domain_named
from semphase.data.synth.render import prepare
from semphase.data.synth.scribbles import scribble_labels
from semphase.phases import IGNORE

C = 5


def test_shifted_domain_is_deterministic_and_not_the_default():
    a = synth_micrograph(200, 256, 3, 800, "shifted")
    b = synth_micrograph(200, 256, 3, 800, "shifted")
    default = synth_micrograph(200, 256, 3, 800)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], default[1]) and not np.array_equal(a[0], default[0])
    with pytest.raises(ValueError, match="unknown domain 'lab'"):
        domain_named("lab")


def test_shifted_rendering_in_row_bands_equals_the_whole_frame():
    # The edge halo and the charging streaks are computed per band; they must not show the band seams.
    micrograph = prepare(256, 200, 5, 700, SHIFTED)
    assert micrograph.look.edge_halo > 0 and micrograph.look.streak > 0
    whole = micrograph.render(0, 256)
    parts = [micrograph.render(y, y + 64) for y in range(0, 256, 64)]
    assert np.array_equal(whole[0], np.vstack([p[0] for p in parts]))
    assert np.array_equal(whole[1], np.vstack([p[1] for p in parts]))


def test_shifted_domain_reorders_the_grey_levels_of_the_phases():
    image, labels = synth_micrograph(512, 512, 1, 700, "shifted")
    means = [float(image[labels == c].mean()) for c in range(C)]
    assert means[4] < means[3]  # Dilution darker than Reprecipitate, unlike the study's look
    default_image, default_labels = synth_micrograph(512, 512, 1, 700)
    default = [float(default_image[default_labels == c].mean()) for c in range(C)]
    assert default[4] > default[3]


@pytest.mark.parametrize("fraction", [0.001, 0.005, 0.02])
def test_scribbles_lie_on_their_phase_share_the_budget_and_are_reproducible(fraction):
    _, truth = synth_micrograph(384, 512, 2, 700)
    strokes = scribble_labels(truth, fraction, seed=4, num_classes=C)
    labelled = strokes != IGNORE
    assert np.array_equal(strokes[labelled], truth[labelled])  # never a wrong label
    # each phase may pass its share by one brush dot at most
    assert 0.5 * fraction * truth.size <= labelled.sum() <= fraction * truth.size + C * 5 * 5
    assert set(np.unique(strokes[labelled])) == set(np.unique(truth))  # every phase present is painted
    assert np.array_equal(strokes, scribble_labels(truth, fraction, seed=4, num_classes=C))
    assert not np.array_equal(strokes, scribble_labels(truth, fraction, seed=5, num_classes=C))


def test_dense_scribbles_are_the_truth_and_bad_arguments_raise():
    truth = np.zeros((8, 8), np.uint8)
    assert np.array_equal(scribble_labels(truth, 1.0, 0, C), truth)
    for fraction, brush in ((0, 5), (1.5, 5), (0.1, 4)):
        with pytest.raises(ValueError):
            scribble_labels(truth, fraction, 0, C, brush)


def test_synth_cli_writes_a_sparse_shifted_dataset(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["synth", str(tmp_path / "ds"), "--groups", "2", "--size", "128", "--domain", "shifted",
              "--scribbles", "2", "--no-variants"])  # fmt: skip
    assert info.value.code == 0
    assert "strokes over 2% of the pixels" in " ".join(capsys.readouterr().out.split())
    report = check_dataset(tmp_path / "ds")
    assert report.ok and report.n_images == 2 and report.sparse and 0.01 < report.labelled_fraction < 0.03
    with pytest.raises(SystemExit) as info:
        main(["synth", str(tmp_path / "x"), "--groups", "1", "--scribbles", "0"])
    assert info.value.code == 2 and "--scribbles" in capsys.readouterr().err


def test_corrective_scribbles_spend_their_share_where_the_prediction_is_wrong():
    _, truth = synth_micrograph(384, 512, 2, 700)
    prediction = truth.copy()
    prediction[:, :128] = 0  # a model that calls the left quarter Matrix
    wrong = prediction != truth
    strokes = scribble_labels(truth, 0.02, seed=1, num_classes=C, prediction=prediction, corrective_share=0.5)
    labelled = strokes != IGNORE
    assert np.array_equal(strokes[labelled], truth[labelled])
    on_errors = np.count_nonzero(labelled & wrong) / np.count_nonzero(labelled)
    assert on_errors >= 0.45 > wrong.mean()  # half the budget corrects errors, far above their share
    plain = scribble_labels(truth, 0.02, seed=1, num_classes=C)
    assert np.count_nonzero((plain != IGNORE) & wrong) / np.count_nonzero(plain != IGNORE) < 0.45
