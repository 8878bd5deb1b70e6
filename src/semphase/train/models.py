"""The two networks of the study behind one factory.

``unet-resnet34`` is segmentation_models_pytorch's U-Net with a ResNet34 encoder (the study's final model);
``unet-scratch`` is the small from-scratch U-Net the study used as its baseline. Both map a
``(N, in_channels, H, W)`` float32 batch to ``(N, num_classes, H, W)`` logits for H, W multiples of 32.
Pretrained encoder weights are not loaded here (see :mod:`semphase.train.encoder_weights`), so a model can
always be rebuilt from a checkpoint's config without network access.
"""

from __future__ import annotations

import torch
from torch import nn

from semphase import model_format

#: Architectures ``build_model`` knows, in the order the CLI lists them.
ARCHITECTURES = ("unet-resnet34", "unet-scratch")

#: Every architecture's input must be a multiple of this (ResNet34 downsamples 5 times).
SIZE_MULTIPLE = model_format.SIZE_MULTIPLE


def build_model(config: dict) -> nn.Module:
    """Build the network a training config describes (random or untrained weights).

    Parameters
    ----------
    config : dict
        Needs ``"arch"`` (one of :data:`ARCHITECTURES`) and ``"num_classes"``; ``"in_channels"`` defaults
        to 1. ``"scratch_base"`` (default 32) sets the width of the scratch U-Net's first level.

    Returns
    -------
    torch.nn.Module mapping float32 ``(N, in_channels, H, W)`` to logits ``(N, num_classes, H, W)``.

    Raises
    ------
    ValueError
        For an unknown architecture (the message lists the choices) or a bad class/channel count.
    """
    arch = config.get("arch")
    in_channels = int(config.get("in_channels", 1))
    num_classes = int(config.get("num_classes", 0))
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {config.get('num_classes')!r}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    if arch == "unet-resnet34":
        import segmentation_models_pytorch as smp

        return smp.Unet("resnet34", encoder_weights=None, in_channels=in_channels, classes=num_classes)
    if arch == "unet-scratch":
        return ScratchUNet(in_channels, num_classes, base=int(config.get("scratch_base", 32)))
    raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHITECTURES)}")


def encoder_of(model: nn.Module) -> nn.Module | None:
    """The pretrained-capable encoder of ``model``, or None for the scratch U-Net (nothing to freeze)."""
    encoder = getattr(model, "encoder", None)
    return encoder if isinstance(encoder, nn.Module) else None


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    """(3x3 conv -> BatchNorm -> ReLU) twice; bias-free convs since BatchNorm follows."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ScratchUNet(nn.Module):
    """Minimal U-Net trained from scratch: 4 down-sampling levels, widths base x (1, 2, 4, 8, 16).

    Parameters
    ----------
    in_channels, num_classes : int
    base : int
        Channels of the first level (32 as in the study's baseline).
    """

    def __init__(self, in_channels: int, num_classes: int, base: int = 32) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(5)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_conv_block(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for deep, skip in zip(widths[:0:-1], widths[-2::-1], strict=True):
            self.up.append(nn.ConvTranspose2d(deep, skip, 2, stride=2))
            self.merge.append(_conv_block(2 * skip, skip))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W)`` -> logits ``(N, num_classes, H, W)``; H, W multiples of 16."""
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            x = merge(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)
