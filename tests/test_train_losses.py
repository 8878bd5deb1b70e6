"""Class weights and the 0.6 CE + 0.4 Dice loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semphase.train.losses import HybridLoss, class_weights, pixel_frequencies


def test_pixel_frequencies_count_labelled_pixels_only():
    a = np.array([[0, 0, 1, 255]], np.uint8)
    b = np.array([[2, 2, 2, 0]], np.uint8)
    np.testing.assert_allclose(pixel_frequencies([a, b], 4), [3 / 7, 1 / 7, 3 / 7, 0])


def test_class_weights_follow_the_power_law_with_mean_one():
    freq = np.array([0.5, 0.02, 0.3, 0.18])
    w = class_weights(freq, power=0.5, clip=100)
    raw = freq**-0.5
    np.testing.assert_allclose(w, raw / raw.mean(), rtol=1e-6)
    assert w.mean() == pytest.approx(1.0)
    # inverse frequency: weight ratio equals the inverse frequency ratio
    w1 = class_weights(freq, power=1.0, clip=100)
    assert w1[1] / w1[0] == pytest.approx(25.0)


def test_power_zero_gives_uniform_weights():
    np.testing.assert_array_equal(class_weights(np.array([0.9, 0.001, 0.099]), power=0.0), [1, 1, 1])


def test_weights_are_clipped_and_absent_classes_get_one():
    freq = np.array([0.4995, 0.0005, 0.5, 0.0])
    w = class_weights(freq, power=1.0, clip=5.0)
    # before clipping: 1/f normalized over the three present classes -> (~0.0067, ~2.99, ~0.0067) * ...
    raw = 1 / freq[:3]
    expected = np.clip(raw / raw.mean(), 0.2, 5.0)
    np.testing.assert_allclose(w[:3], expected, rtol=1e-6)
    assert w[0] == pytest.approx(0.2) and w[2] == pytest.approx(0.2)
    assert w[3] == 1.0
    with pytest.raises(ValueError):
        class_weights(freq, clip=0.5)


def test_hybrid_loss_ignores_label_255_in_both_terms():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :4] = 255
    loss_fn = HybridLoss(np.array([1.0, 2.0, 0.5], np.float32))
    loss = loss_fn(logits, target)
    loss.backward()
    assert torch.isfinite(loss)
    assert logits.grad[:, :, :4].abs().max() == 0  # ignored pixels get no gradient
    changed = logits.detach().clone()
    changed[:, :, :4] = 100.0
    assert loss_fn(changed, target).item() == pytest.approx(loss.item(), rel=1e-6)


def test_hybrid_loss_is_the_weighted_sum_and_small_for_perfect_logits():
    target = torch.tensor([[[0, 1], [2, 1]]])
    perfect = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50
    loss_fn = HybridLoss(np.ones(3, np.float32))
    assert loss_fn(perfect, target).item() < 1e-3
    wrong = torch.roll(perfect, 1, dims=1)
    ce = torch.nn.functional.cross_entropy(wrong, target)
    assert loss_fn(wrong, target).item() == pytest.approx(0.6 * ce.item() + 0.4 * 1.0, rel=1e-3)


def test_all_ignored_batch_gives_zero_loss_with_a_graph():
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = HybridLoss(np.ones(3, np.float32))(logits, torch.full((1, 4, 4), 255))
    loss.backward()
    assert loss.item() == 0.0
