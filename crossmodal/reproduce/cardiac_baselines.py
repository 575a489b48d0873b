"""The learning baselines of MMSDNet's Table 1, used only by its reproduction: 2-D U-Nets trained on the
LGE alone (UNet-single) or on LGE and cine slices (UNet-both), a two-stream 2-D U-Net (the dual-stream
paper's V4, cine and LGE as its streams: "DualStream"), and, not in the paper, a U-Net that reads the LGE
beside its paired cine (UNet-paired).

Each is a :class:`~crossmodal.training.methods.Method`, so the reproduction trains, validates and tests
them exactly as it does MMSDNet, on the same splits.
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import nn
from torch.nn import functional as F

from crossmodal.nets.blocks import UNet, UNetDecoder, UNetEncoder, check_input, double_conv
from crossmodal.training.cardiac_data import SampleSet
from crossmodal.training.losses import dice_loss
from crossmodal.training.methods import Method


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


class _SupervisedUNet(Method):
    """A U-Net trained by Dice on LGE slices (and whatever :meth:`training_images` adds), predicting from :meth:`network_input`."""

    @abstractmethod
    def training_images(self, batch: SampleSet, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, masks) of the batch this method learns from."""

    def network_input(self, cine: torch.Tensor, lge: torch.Tensor, paired: torch.Tensor) -> torch.Tensor:
        return lge

    def train_step(self, batch: SampleSet, generator: torch.Generator) -> dict[str, float]:
        self.network.train()
        image, mask = self._augmented(self.training_images(batch, generator), generator=generator)
        loss = dice_loss(self.network(image), mask)
        self._apply(loss, self.optimiser)
        return {"loss": loss.item()}

    @torch.no_grad()
    def predict(self, cine: torch.Tensor, lge: torch.Tensor, paired: torch.Tensor) -> dict[str, torch.Tensor]:
        self.network.eval()
        return {self.name: torch.softmax(self.module(self.network_input(cine, lge, paired).to(self.device)), dim=1).cpu()}


class UNetMethod(_SupervisedUNet):
    """A U-Net of MMSDNet's anatomy-encoder shape; ``both`` also learns from cine slices (mixed batches)."""

    def __init__(self, classes: int, filters: int, depth: int, device: torch.device, *, both: bool, learning_rate: float = 1e-4) -> None:
        super().__init__(UNet(1, classes, filters, depth), learning_rate, device)
        self.both = both
        self.name = "UNet-both" if both else "UNet-single"
        self.outputs = (self.name,)

    def usable(self, samples: SampleSet) -> torch.Tensor:
        return samples.has_lge_mask | (samples.has_cine if self.both else torch.zeros_like(samples.has_cine))

    def training_images(self, batch: SampleSet, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        images, masks = [batch.lge[batch.has_lge_mask]], [batch.lge_mask[batch.has_lge_mask]]
        if self.both:
            images.append(batch.cine[batch.has_cine])
            masks.append(batch.cine_mask[batch.has_cine])
        return torch.cat(images), torch.cat(masks)


class PairedUNetMethod(_SupervisedUNet):
    """A U-Net reading each LGE slice beside its paired cine slice (two input channels): fusion at the input.

    Not in the paper. It is the simplest way to let a strong segmentor use the cine, so it is the bar any
    disentangle-align-fuse model has to clear. The pairing is the physical one (the nearest cine slice,
    resampled onto the LGE's grid), misaligned by whatever the two breath-holds left. The cine channel is
    zeros where a slice has no cine (LGE-only patients, unpaired slices), and is dropped at random in
    training so that the network learns to segment without it too.
    """

    name = "UNet-paired"
    outputs = (name,)
    cine_dropout = 0.25

    def __init__(self, classes: int, filters: int, depth: int, device: torch.device, learning_rate: float = 1e-4) -> None:
        super().__init__(UNet(2, classes, filters, depth), learning_rate, device)

    def usable(self, samples: SampleSet) -> torch.Tensor:
        return samples.has_lge_mask

    def network_input(self, cine: torch.Tensor, lge: torch.Tensor, paired: torch.Tensor) -> torch.Tensor:
        """(n, 2, H, W): the LGE, and the cine where ``paired`` (zeros elsewhere)."""
        return torch.cat([lge, cine * paired.view(-1, 1, 1, 1).to(cine.dtype)], dim=1)

    def training_images(self, batch: SampleSet, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        keep = batch.has_lge_mask
        with_cine = batch.has_cine[keep] & (torch.rand(int(keep.sum()), generator=generator) >= self.cine_dropout)
        return self.network_input(batch.cine[keep], batch.lge[keep], with_cine), batch.lge_mask[keep]


class DualStreamMethod(Method):
    """Two-stream U-Net (V4): cine through stream 0, LGE through stream 1, shared deepest scale."""

    name = "DualStream"
    outputs = ("DualStream",)

    def __init__(self, classes: int, filters: int, depth: int, device: torch.device, learning_rate: float = 1e-4) -> None:
        super().__init__(DualStreamUNet(classes, filters, depth), learning_rate, device)

    def usable(self, samples: SampleSet) -> torch.Tensor:
        return samples.has_lge_mask | samples.has_cine

    def train_step(self, batch: SampleSet, generator: torch.Generator) -> dict[str, float]:
        self.network.train()
        loss = torch.zeros((), device=self.device)
        for stream, (images, masks, keep) in enumerate(
            ((batch.cine, batch.cine_mask, batch.has_cine), (batch.lge, batch.lge_mask, batch.has_lge_mask))
        ):
            if keep.any():
                image, mask = self._augmented((images[keep], masks[keep]), generator=generator)
                loss = loss + dice_loss(self.network(image, stream), mask)
        self._apply(loss, self.optimiser)
        return {"loss": loss.item()}

    @torch.no_grad()
    def predict(self, cine: torch.Tensor, lge: torch.Tensor, paired: torch.Tensor) -> dict[str, torch.Tensor]:
        self.network.eval()
        return {self.name: torch.softmax(self.module(lge.to(self.device), 1), dim=1).cpu()}
