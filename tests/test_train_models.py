"""Models, checkpoints and whole-image prediction of semphase.train."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from semphase.errors import InputError
from semphase.train.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from semphase.train.inference import pad_to_multiple, predict_labels, predict_logits
from semphase.train.models import build_model

NORM = {"scale": 1 / 255, "mean": [0.449], "std": [0.226]}


def config_for(arch: str, num_classes: int = 5) -> dict:
    return {"arch": arch, "in_channels": 1, "num_classes": num_classes, "normalization": NORM}


@pytest.mark.parametrize("arch", ["unet-resnet34", "unet-scratch"])
def test_both_architectures_map_multiples_of_32_to_class_logits(arch):
    torch.manual_seed(0)
    model = build_model(config_for(arch, num_classes=4)).eval()
    with torch.inference_mode():
        out = model(torch.zeros(2, 1, 64, 96))
    assert out.shape == (2, 4, 64, 96)
    assert out.dtype == torch.float32


def test_unknown_architecture_lists_the_choices():
    with pytest.raises(ValueError, match="unet-resnet34, unet-scratch"):
        build_model(config_for("deeplab"))


def test_scratch_unet_is_the_small_baseline():
    model = build_model(config_for("unet-scratch"))
    params = sum(p.numel() for p in model.parameters())
    resnet = sum(p.numel() for p in build_model(config_for("unet-resnet34")).parameters())
    assert 1_000_000 < params < resnet


def test_checkpoint_round_trips_with_weights_only_and_rebuilds_identical_outputs(tmp_path):
    torch.manual_seed(1)
    model = build_model(config_for("unet-scratch")).eval()
    path = tmp_path / "best.pt"
    save_checkpoint(path, model, config_for("unet-scratch"), epoch=3, best_val_miou=0.5, rng={"seed": 1})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == CHECKPOINT_FORMAT and raw["epoch"] == 3
    assert not list(tmp_path.glob(".*.part"))  # the temporary file was renamed
    loaded, config, ckpt = load_checkpoint(path)
    assert not loaded.training
    assert config["arch"] == "unet-scratch" and ckpt["best_val_miou"] == 0.5
    image = (np.random.default_rng(0).random((50, 70)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(predict_logits(loaded, config, image), predict_logits(model, config, image))


def _bad_checkpoints(tmp_path):
    model = build_model(config_for("unet-scratch"))
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "garbage.pt").write_bytes(b"not a zip file at all" * 10)
    good = tmp_path / "good.pt"
    save_checkpoint(good, model, config_for("unet-scratch"))
    (tmp_path / "truncated.pt").write_bytes(good.read_bytes()[:5000])
    torch.save({"state_dict": model.state_dict()}, tmp_path / "foreign.pt")
    torch.save({"format": CHECKPOINT_FORMAT, "state_dict": {}}, tmp_path / "noconfig.pt")
    torch.save({"format": CHECKPOINT_FORMAT, "config": {}, "x": Fraction(1, 3)}, tmp_path / "pickled.pt")
    other = build_model(config_for("unet-scratch", num_classes=3))
    torch.save(
        {"format": CHECKPOINT_FORMAT, "state_dict": other.state_dict(), "config": config_for("unet-scratch")},
        tmp_path / "mismatch.pt",
    )
    return ["missing.pt", "empty.pt", "garbage.pt", "truncated.pt", "foreign.pt", "noconfig.pt",
            "pickled.pt", "mismatch.pt"]  # fmt: skip


def test_load_checkpoint_names_the_file_for_every_unusable_file(tmp_path):
    for name in _bad_checkpoints(tmp_path):
        with pytest.raises(InputError) as info:
            load_checkpoint(tmp_path / name)
        message = str(info.value)
        assert name in message and "\n" not in message, message


def test_predict_labels_pads_and_crops_back_any_size():
    torch.manual_seed(0)
    config = config_for("unet-scratch")
    model = build_model(config)
    for shape in [(33, 47), (64, 64), (5, 90)]:
        image = (np.random.default_rng(1).random(shape) * 255).astype(np.uint8)
        labels = predict_labels(model, config, image)
        assert labels.shape == shape and labels.dtype == np.uint8 and labels.max() < 5
        logits = predict_logits(model, config, image)
        assert logits.shape == (5, *shape) and logits.dtype == np.float32


def test_predict_logits_normalizes_as_the_config_records():
    class Probe(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x, -x], dim=1)

    image = np.full((32, 32), 51, np.uint8)
    config = {"normalization": {"scale": 1 / 255, "mean": [0.1], "std": [0.5]}}
    logits = predict_logits(Probe(), config, image)
    np.testing.assert_allclose(logits[0], (51 / 255 - 0.1) / 0.5, rtol=1e-6)


def test_reflect_padding_reaches_multiples_of_32():
    padded, size = pad_to_multiple(np.arange(33 * 40, dtype=np.uint8).reshape(33, 40))
    assert padded.shape == (64, 64) and size == (33, 40)
    assert padded[33, 0] == padded[31, 0]  # reflected, not zero
