"""Dual-stream 3-D residual FCN for unpaired CT and MR (Valindria et al., WACV 2018).

The backbone is the residual FCN the paper builds on (DLTK's): an initial 3^3 convolution, then per
scale a few pre-activation residual units (the first one strides), then FCN "upscore" units from
coarse to fine that add a class-wise projection of each scale's features to the upsampled scores.
The variants differ only in which parts each modality ("stream") has to itself:

=========== ==================================================================
Individual  everything per stream (each stream trained on its own modality)
Joint       nothing per stream (one network sees both modalities)
V1          encoders per stream, one shared decoder
V2          only the first scale (stem + scale 0) per stream
V3          one shared encoder, decoders per stream
V4          encoders per stream except their last scale, decoders per stream
=========== ==================================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from crossmodal.nets.blocks import check_input

VARIANTS = ("Individual", "Joint", "V1", "V2", "V3", "V4")
DESIGN = 2
"""The network's generation, which stored results record: 2 keeps a shared layer's batch-norm statistics per
stream; 1 kept one average for both (its models still load and run as they did)."""


@dataclass(frozen=True)
class ResidualFCNConfig:
    """The paper's backbone: filters (16, 64, 128, 256, 512), strides (1, 2, 2, 2, 1), 3 units per scale."""

    classes: int = 5
    variant: str = "V4"
    filters: tuple[int, ...] = (16, 64, 128, 256, 512)
    strides: tuple[int, ...] = (1, 2, 2, 2, 1)
    units_per_scale: int = 3
    streams: tuple[str, ...] = ("MR", "CT")

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown dual-stream variant {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        if len(self.filters) != len(self.strides):
            raise ValueError(f"filters {self.filters} and strides {self.strides} must have one entry per scale")

    @property
    def downsampling(self) -> int:
        """Input sizes must be multiples of this."""
        factor = 1
        for s in self.strides:
            factor *= s
        return factor

    def as_dict(self) -> dict:
        return {**asdict(self), "filters": list(self.filters), "strides": list(self.strides), "streams": list(self.streams)}


class StreamBatchNorm3d(nn.BatchNorm3d):
    """Batch norm of a layer the streams share: one learned scale and shift, running statistics per stream.

    Training batches hold one modality each (the paper's alternating batches), so training normalises
    every batch with its own modality's statistics, and inference must too. A single running average
    over alternating MR and CT batches is neither modality's: it normalised held-out CT with half-MR
    statistics, and a V4 whose training-mode CT Dice was fine predicted almost nothing on CT. The
    owning network sets :attr:`stream` before each forward pass.
    """

    def __init__(self, channels: int, streams: int) -> None:
        super().__init__(channels, track_running_stats=False)  # the base class's single running average: not kept
        self.stream = 0
        self.register_buffer("stream_mean", torch.zeros(streams, channels))
        self.register_buffer("stream_var", torch.ones(streams, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.stream_mean[self.stream], self.stream_var[self.stream], self.weight, self.bias,
                            self.training, self.momentum, self.eps)  # updates this stream's rows in place

    def _load_from_state_dict(self, state: dict, prefix: str, *args, **kwargs) -> None:
        """A model saved with one running average for all streams (bundles before this fix) loads as it
        ran: every stream gets that average."""
        if prefix + "running_mean" in state:
            for name, old in (("stream_mean", "running_mean"), ("stream_var", "running_var")):
                state[prefix + name] = state.pop(prefix + old).expand_as(getattr(self, name)).clone()
            state.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state, prefix, *args, **kwargs)


def batch_norm(channels: int, streams: int) -> nn.BatchNorm3d:
    """Batch norm for a part that ``streams`` streams share (1: a stream's own part)."""
    return nn.BatchNorm3d(channels) if streams == 1 else StreamBatchNorm3d(channels, streams)


class ResidualUnit(nn.Module):
    """Pre-activation unit: BN, leaky ReLU (0.01), conv; BN, leaky ReLU, 3^3 conv; plus the shortcut.

    A striding unit's first convolution has a kernel twice the stride (the paper's and DLTK's choice:
    no input voxel is skipped); its shortcut max-pools with that stride. Channels grow by
    zero-padding the shortcut and shrink by a 1^3 convolution. ``streams``: how many streams share it.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, streams: int = 1) -> None:
        super().__init__()
        self.stride, self.in_channels, self.out_channels = stride, in_channels, out_channels
        kernel, padding = (2 * stride, stride // 2) if stride > 1 else (3, 1)
        self.bn1 = batch_norm(in_channels, streams)
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=padding)
        self.bn2 = batch_norm(out_channels, streams)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.shrink = nn.Conv3d(in_channels, out_channels, 1) if in_channels > out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv1(F.leaky_relu(self.bn1(x), 0.01))
        residual = self.conv2(F.leaky_relu(self.bn2(residual), 0.01))
        shortcut = F.max_pool3d(x, self.stride) if self.stride > 1 else x
        if self.shrink is not None:
            shortcut = self.shrink(shortcut)
        elif self.out_channels > self.in_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, 0, 0, self.out_channels - self.in_channels))
        return residual + shortcut


def bilinear_kernel(stride: int) -> torch.Tensor:
    """Trilinear interpolation weights for a transposed convolution upsampling by ``stride``."""
    size = 2 * stride - stride % 2
    centre = (size - 1) / 2 if size % 2 else stride - 0.5
    profile = 1 - torch.abs(torch.arange(size, dtype=torch.float32) - centre) / stride
    return profile[:, None, None] * profile[None, :, None] * profile[None, None, :]


class Upscore(nn.Module):
    """FCN upscore: 1^3 conv of coarse features to classes, fixed trilinear upsampling, plus 1^3 conv + BN of the skip."""

    def __init__(self, coarse_channels: int, skip_channels: int, classes: int, stride: int, streams: int = 1) -> None:
        super().__init__()
        self.stride, self.classes = stride, classes
        self.project = nn.Conv3d(coarse_channels, classes, 1)
        self.skip = nn.Sequential(nn.Conv3d(skip_channels, classes, 1), batch_norm(classes, streams))
        if stride > 1:
            weight = torch.zeros(classes, classes, *bilinear_kernel(stride).shape)
            for c in range(classes):
                weight[c, c] = bilinear_kernel(stride)
            self.register_buffer("upsample_weight", weight)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.project(coarse)
        if self.stride > 1:
            padding = (2 * self.stride - self.stride % 2 - self.stride + 1) // 2
            x = F.conv_transpose3d(x, self.upsample_weight, stride=self.stride, padding=padding)
            x = x[..., : skip.shape[-3], : skip.shape[-2], : skip.shape[-1]]
        return x + self.skip(skip)


def residual_scale(config: ResidualFCNConfig, index: int, streams: int = 1) -> nn.Sequential:
    """The residual units of one scale; the first takes the previous scale's channels and strides."""
    f, stride = config.filters, config.strides[index]
    previous = f[max(index - 1, 0)]
    return nn.Sequential(*(ResidualUnit(previous if u == 0 else f[index], f[index], stride if u == 0 else 1, streams)
                           for u in range(config.units_per_scale)))


class Decoder(nn.Module):
    """Upscore units from the coarsest scale to the finest, then the class scores (logits)."""

    def __init__(self, config: ResidualFCNConfig, streams: int = 1) -> None:
        super().__init__()
        f, s, c = config.filters, config.strides, config.classes
        self.upscores = nn.ModuleList(Upscore(f[i + 1] if i == len(f) - 2 else c, f[i], c, s[i + 1], streams) for i in reversed(range(len(f) - 1)))
        self.last = nn.Conv3d(c, c, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for upscore, skip in zip(self.upscores, reversed(features[:-1])):
            x = upscore(x, skip)
        return self.last(x)


SEPARATE_SCALES = {"Individual": lambda n: n, "Joint": lambda n: 0, "V1": lambda n: n, "V2": lambda n: 1, "V3": lambda n: 0, "V4": lambda n: n - 1}
"""Per variant: how many of the n encoder scales, from the finest, each stream has to itself."""
SEPARATE_DECODERS = {"Individual": True, "Joint": False, "V1": False, "V2": False, "V3": True, "V4": True}


class DualStreamFCN(nn.Module):
    """``forward(image, stream)``: stream 0 (MR) or 1 (CT) by default; see the module docstring for sharing.

    Every part (stem, each scale, decoder) is a list of one shared module or one module per stream; a
    shared part keeps its batch-norm statistics per stream (:class:`StreamBatchNorm3d`).
    """

    def __init__(self, config: ResidualFCNConfig = ResidualFCNConfig()) -> None:
        super().__init__()
        self.config = config
        scales = len(config.filters)
        separate = SEPARATE_SCALES[config.variant](scales)
        streams = len(config.streams)

        def per_stream(make, alone: bool) -> nn.ModuleList:
            """``make(sharing streams)`` once per stream, or once for all."""
            return nn.ModuleList(make(1) for _ in range(streams)) if alone else nn.ModuleList([make(streams)])

        self.stem = per_stream(lambda _: nn.Conv3d(1, config.filters[0], 3, padding=1), separate > 0)
        self.scales = nn.ModuleList(per_stream(lambda n, i=i: residual_scale(config, i, n), i < separate) for i in range(scales))
        self.decoder = per_stream(lambda n: Decoder(config, n), SEPARATE_DECODERS[config.variant])
        self.shared_norms = [m for m in self.modules() if isinstance(m, StreamBatchNorm3d)]  # a plain list: not submodules twice

    def forward(self, image: torch.Tensor, stream: int) -> torch.Tensor:
        check_input(image, 1, self.config.downsampling, self.config.streams[stream], spatial_dims=3)
        for norm in self.shared_norms:
            norm.stream = stream

        def pick(parts: nn.ModuleList) -> nn.Module:
            return parts[stream if len(parts) > 1 else 0]

        x = pick(self.stem)(image)
        features = []
        for scale in self.scales:
            x = pick(scale)(x)
            features.append(x)
        return pick(self.decoder)(features)
