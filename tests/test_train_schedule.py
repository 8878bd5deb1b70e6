"""Frozen encoder, gradual unfreezing and early stopping."""

from __future__ import annotations

import pytest
import torch

from semphase.train.models import build_model
from semphase.train.schedule import (
    RESNET_STAGES,
    EarlyStopping,
    apply_freeze_schedule,
    keep_frozen_batchnorm_in_eval,
    trainable_stage_count,
)


@pytest.fixture(scope="module")
def resnet_unet():
    return build_model({"arch": "unet-resnet34", "in_channels": 1, "num_classes": 5})


def _trainable(module: torch.nn.Module) -> bool:
    flags = {p.requires_grad for p in module.parameters()}
    assert len(flags) == 1, "a stage is partly frozen"
    return flags.pop()


def _stage_flags(model) -> list[bool]:
    return [_trainable(getattr(model.encoder, stage[0])) for stage in RESNET_STAGES]


def test_encoder_frozen_then_unfrozen_one_stage_per_epoch_deepest_first(resnet_unet):
    model = resnet_unet
    seen = []
    for epoch in range(8):
        names = apply_freeze_schedule(model, epoch, freeze_epochs=2)
        seen.append(_stage_flags(model))
        # the decoder and head always train
        assert _trainable(model.decoder) and _trainable(model.segmentation_head)
        assert len(names) == sum(seen[-1])
    assert seen[0] == seen[1] == [False] * 5  # frozen
    assert seen[2] == [True, False, False, False, False]  # layer4 first
    assert seen[3] == [True, True, False, False, False]  # then layer3
    assert seen[5] == [True, True, True, True, False]
    assert seen[6] == seen[7] == [True] * 5  # stem last, then everything
    assert _trainable(model.encoder.bn1) and _trainable(model.encoder.conv1)


def test_random_encoder_is_released_all_at_once(resnet_unet):
    apply_freeze_schedule(resnet_unet, 0, freeze_epochs=1, gradual=False)
    assert _stage_flags(resnet_unet) == [False] * 5
    apply_freeze_schedule(resnet_unet, 1, freeze_epochs=1, gradual=False)
    assert _stage_flags(resnet_unet) == [True] * 5
    assert trainable_stage_count(0, 0, gradual=False) == 5


def test_frozen_batchnorm_stays_in_eval_mode(resnet_unet):
    model = resnet_unet
    apply_freeze_schedule(model, 2, freeze_epochs=2)  # only layer4 trains
    model.train()
    keep_frozen_batchnorm_in_eval(model)
    assert model.encoder.layer4[0].bn1.training
    assert not model.encoder.layer3[0].bn1.training and not model.encoder.bn1.training
    assert model.decoder.training
    running = model.encoder.layer1[0].bn1.running_mean.clone()
    model(torch.randn(2, 1, 64, 64))
    assert torch.equal(running, model.encoder.layer1[0].bn1.running_mean)


def test_scratch_unet_has_nothing_to_freeze():
    model = build_model({"arch": "unet-scratch", "in_channels": 1, "num_classes": 3})
    assert apply_freeze_schedule(model, 0, freeze_epochs=4) is None
    assert all(p.requires_grad for p in model.parameters())


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    values = [0.50, 0.60, 0.59, 0.61, 0.61, 0.60, 0.55, 0.70]
    stopper = EarlyStopping(patience=3)
    stopped_at = None
    for epoch, value in enumerate(values, start=1):
        stopper.update(value, epoch)
        if stopper.should_stop:
            stopped_at = epoch
            break
    # best 0.61 at epoch 4; epochs 5, 6, 7 do not beat it -> stop after epoch 7 (never sees 0.70)
    assert stopped_at == 7
    assert stopper.best == 0.61 and stopper.best_epoch == 4


def test_early_stopping_state_round_trips_and_zero_patience_never_stops():
    stopper = EarlyStopping(patience=2)
    for epoch, value in enumerate([0.3, 0.2], start=1):
        stopper.update(value, epoch)
    copy = EarlyStopping(patience=2)
    copy.load_state_dict(stopper.state_dict())
    copy.update(0.1, 3)
    assert copy.should_stop and copy.best_epoch == 1
    never = EarlyStopping(patience=0)
    for epoch in range(20):
        never.update(0.0, epoch)
    assert not never.should_stop
