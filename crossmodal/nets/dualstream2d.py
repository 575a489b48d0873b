"""Two-stream 2-D segmentation network with a shared latent scale (variant V4 of the dual-stream paper).

Each modality has its own encoder and decoder; only the deepest scale (the latent representation)
is shared, so the streams learn modality-specific low-level features but one anatomical code. Used
here as the "DualStream" baseline of MMSDNet's Table 1 (cine and LGE as the two streams).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from crossmodal.nets.blocks import UNetDecoder, UNetEncoder, check_input, double_conv


class DualStreamUNet(nn.Module):
    """``forward(image, stream)``: stream 0 or 1 picks the modality's encoder and decoder."""

    def __init__(self, classes: int, filters: int = 64, depth: int = 4, streams: int = 2) -> None:
        super().__init__()
        self.depth = depth
        self.encoders = nn.ModuleList(UNetEncoder(1, filters, depth - 1) for _ in range(streams))
        widths = [filters * 2**level for level in range(depth + 1)]
        self.shared = double_conv(widths[-2], widths[-1])
        self.decoders = nn.ModuleList(UNetDecoder(widths) for _ in range(streams))
        self.heads = nn.ModuleList(nn.Conv2d(filters, classes, 1) for _ in range(streams))

    def forward(self, image: torch.Tensor, stream: int) -> torch.Tensor:
        check_input(image, 1, 2**self.depth, f"stream {stream}")
        features = self.encoders[stream](image)
        features.append(self.shared(F.max_pool2d(features[-1], 2)))
        return self.heads[stream](self.decoders[stream](features))
