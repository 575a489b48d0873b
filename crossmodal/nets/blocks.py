"""Building blocks shared by the 2-D networks: the U-Net every anatomy encoder and U-Net baseline uses."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn_relu(in_channels: int, out_channels: int, *, stride: int = 1, leaky: bool = False) -> nn.Sequential:
    """3x3 convolution, batch norm, (leaky) ReLU: the unit every network here is made of."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True) if leaky else nn.ReLU(inplace=True),
    )


def double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(in_channels, out_channels), conv_bn_relu(out_channels, out_channels))


class UNetEncoder(nn.Module):
    """The contracting half: ``depth`` max-pool downsamplings, filters doubling per level."""

    def __init__(self, in_channels: int, filters: int, depth: int = 4) -> None:
        super().__init__()
        widths = [filters * 2**level for level in range(depth + 1)]
        self.widths = widths
        self.levels = nn.ModuleList(
            double_conv(in_channels if level == 0 else widths[level - 1], width) for level, width in enumerate(widths)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps of every level, finest first."""
        features = []
        for level, block in enumerate(self.levels):
            x = block(x if level == 0 else F.max_pool2d(x, 2))
            features.append(x)
        return features


class UNetDecoder(nn.Module):
    """The expanding half: nearest-neighbour upsampling, concatenation with the skip, two convolutions."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            double_conv(widths[level + 1] + widths[level], widths[level]) for level in reversed(range(len(widths) - 1))
        )

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.levels, reversed(features[:-1])):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], dim=1))
        return x


class UNet(nn.Module):
    """2-D U-Net (4 downsamplings, max-pool down, nearest up, batch norm) ending in a 1x1 convolution.

    Input height and width must be divisible by ``2**depth``.
    """

    def __init__(self, in_channels: int, out_channels: int, filters: int = 64, depth: int = 4) -> None:
        super().__init__()
        self.in_channels, self.depth = in_channels, depth
        self.encoder = UNetEncoder(in_channels, filters, depth)
        self.decoder = UNetDecoder(self.encoder.widths)
        self.head = nn.Conv2d(filters, out_channels, 1)

    def forward(self, x: torch.Tensor, name: str = "input") -> torch.Tensor:
        return self.head(self.features(x, name))

    def features(self, x: torch.Tensor, name: str = "input") -> torch.Tensor:
        """The last decoder level's maps (``filters`` channels at input resolution), which the 1x1 head reads."""
        check_input(x, self.in_channels, 2**self.depth, name)
        return self.decoder(self.encoder(x))


def check_input(x: torch.Tensor, channels: int, multiple: int, name: str = "input", spatial_dims: int = 2) -> None:
    """Refuse a batch the network cannot take, with a message that says what was expected."""
    axes = ("depth", "height", "width")[-spatial_dims:]
    if x.ndim != 2 + spatial_dims or x.shape[1] != channels:
        raise ValueError(f"{name}: expected a (batch, {channels}, {', '.join(axes)}) tensor, got shape {tuple(x.shape)}")
    if any(size % multiple for size in x.shape[2:]):
        raise ValueError(f"{name}: {', '.join(axes)} must be multiples of {multiple}, got {tuple(x.shape[2:])}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
