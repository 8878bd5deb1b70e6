"""Pretrained encoder weights: offline ImageNet fails fast, local torchvision/smp files load."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from semphase.errors import InputError
from semphase.train import encoder_weights as ew
from semphase.train.models import build_model


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point the HuggingFace and torch hub caches at empty folders."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)
    return constants


def unet():
    return build_model({"arch": "unet-resnet34", "in_channels": 1, "num_classes": 5})


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://127.0.0.1:9",  # connection refused at once
        "https://10.255.255.1",  # non-routable: times out (or a sandbox accepts and never answers)
        "https://hub.invalid",  # name does not resolve
    ],
)
def test_imagenet_without_cache_or_network_fails_within_seconds(empty_caches, monkeypatch, endpoint):
    monkeypatch.setattr(empty_caches, "ENDPOINT", endpoint)
    start = time.perf_counter()
    with pytest.raises(InputError) as info:
        ew.load_encoder_weights(unet(), "imagenet")
    elapsed = time.perf_counter() - start
    message = str(info.value)
    # The product promises to fail fast offline. 15 s is 5x the probe's 3 s timeout; what this catches is
    # waiting for the hub client's own 10 s timeout per retry or the OS's TCP timeout (a minute or more).
    assert elapsed < 15, elapsed
    assert "not cached and cannot be downloaded" in message
    assert "--encoder-weights none" in message and "--encoder-weights PATH" in message
    assert "\n" not in message


def test_hf_offline_mode_fails_without_probing(empty_caches, monkeypatch):
    monkeypatch.setattr(empty_caches, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(ew, "_probe", lambda endpoint: pytest.fail("probed although offline"))
    with pytest.raises(InputError, match="HF_HUB_OFFLINE"):
        ew.imagenet_weights_file()


def test_cached_torchvision_imagenet_file_is_used_offline(empty_caches, tmp_path):
    import torchvision

    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), folder / "resnet34-b627a593.pth")
    assert ew.imagenet_weights_file() == folder / "resnet34-b627a593.pth"


def test_cli_train_offline_exits_2_fast_with_the_way_out(tmp_path):
    from test_train_fixtures import make_dataset

    data = make_dataset(tmp_path / "ds", groups=3)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch"),
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # fmt: skip
    env.pop("HF_HUB_OFFLINE", None)
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "semphase", "train", str(data), "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--encoder-weights none" in lines[0], out.stderr
    # 90 s: starting Python and importing torch take ~5 s here; a hang would reach subprocess's 120 s
    assert time.perf_counter() - start < 90
    assert not (tmp_path / "run" / "config.json").exists()


def test_torchvision_state_dict_loads_with_conv1_summed_over_rgb(tmp_path):
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet34(weights=None)
    path = tmp_path / "resnet34.pth"
    torch.save(reference.state_dict(), path)
    model = unet()
    assert ew.load_encoder_weights(model, str(path)) == str(path)
    torch.testing.assert_close(model.encoder.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))
    torch.testing.assert_close(model.encoder.layer3[2].conv2.weight, reference.layer3[2].conv2.weight)
    # summing conv1 over RGB == feeding the gray image replicated to three channels
    gray = torch.rand(1, 1, 32, 32)
    torch.testing.assert_close(model.encoder.conv1(gray), reference.conv1(gray.repeat(1, 3, 1, 1)))


def test_smp_style_state_dicts_load(tmp_path):
    torch.manual_seed(1)
    source = unet()
    full = tmp_path / "unet.pt"
    torch.save(source.state_dict(), full)  # "encoder."-prefixed, with decoder keys
    bare = tmp_path / "encoder.pt"
    torch.save(source.encoder.state_dict(), bare)
    for path in (full, bare):
        model = unet()
        ew.load_encoder_weights(model, str(path))
        torch.testing.assert_close(
            model.encoder.layer4[0].conv1.weight, source.encoder.layer4[0].conv1.weight
        )
        torch.testing.assert_close(model.encoder.conv1.weight, source.encoder.conv1.weight)


def test_wrong_or_unreadable_weight_files_name_the_file(tmp_path):
    import torchvision

    resnet18 = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet18)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 100)
    no_resnet = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, no_resnet)
    for path in (resnet18, garbage, no_resnet, tmp_path / "missing.pth"):
        with pytest.raises(InputError) as info:
            ew.load_encoder_weights(unet(), str(path))
        assert path.name in str(info.value)
