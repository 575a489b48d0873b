"""Training methods for MMSDNet's cardiac task: the common :class:`Method` and MMSDNet itself.

Every method trains from the same :class:`SampleSet` batches (with their per-sample flags saying
which masks may be used) and predicts class probabilities for LGE slices, so one runner trains,
validates and tests them all on the same splits. A method may produce several results: MMSDNet
gives "MMSDNet-single" (the LGE anatomy alone) and "MMSDNet-multi" (the fused anatomy).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from crossmodal.nets.mmsdnet import MaskDiscriminator, MMSDNet, MMSDNetConfig
from crossmodal.training.cardiac_data import Augmentation, SampleSet
from crossmodal.training.distributed import bare
from crossmodal.training.losses import (
    dice_loss,
    discriminator_adversarial,
    generator_adversarial,
    kl_divergence,
    one_hot,
)
from crossmodal.training.trainer import NetworkTraining


@dataclass(frozen=True)
class LossWeights:
    """The paper's weights: L = 0.1 KL + 10 Dice + 1 adversarial + 10 reconstruction + 1 z-reconstruction."""

    kl: float = 0.1
    dice: float = 10.0
    adversarial: float = 1.0
    reconstruction: float = 10.0
    z_reconstruction: float = 1.0


class Method(NetworkTraining, ABC):
    """A Table-1 method: its network and Adam, augmentation; subclasses say how to train and predict."""

    outputs: tuple[str, ...]

    def __init__(self, network: nn.Module, learning_rate: float, device: torch.device) -> None:
        super().__init__(network, learning_rate, device)
        self.augment = Augmentation()

    @abstractmethod
    def train_step(self, batch: SampleSet, generator: torch.Generator) -> dict[str, float]:
        """One optimisation step; returns the loss terms."""

    @abstractmethod
    def usable(self, samples: SampleSet) -> torch.Tensor:
        """Which samples this method can learn from (boolean per sample)."""

    @abstractmethod
    def predict(self, cine: torch.Tensor, lge: torch.Tensor, paired: torch.Tensor) -> dict[str, torch.Tensor]:
        """Probabilities (slices, classes, H, W) for each of ``outputs``; ``paired`` flags slices with a cine."""

    def _augmented(self, *pairs: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        """Augment (image, mask) pairs with one shared draw per sample; flat list on the device."""
        return [t.to(self.device) for pair in self.augment(*pairs, generator=generator) for t in pair]


class MMSDNetMethod(Method):
    """MMSDNet with its mask discriminator, trained semi-supervised from paired slices."""

    name = "MMSDNet"
    outputs = ("MMSDNet-single", "MMSDNet-multi")

    def __init__(self, config: MMSDNetConfig, device: torch.device, learning_rate: float = 1e-4, weights: LossWeights = LossWeights()) -> None:
        super().__init__(MMSDNet(config), learning_rate, device)
        self.config, self.weights = config, weights
        self.discriminator = MaskDiscriminator(config.classes).to(device)
        self.discriminator_optimiser = torch.optim.Adam(self.discriminator.parameters(), lr=learning_rate)

    def usable(self, samples: SampleSet) -> torch.Tensor:
        return samples.has_cine

    def parts(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {**super().parts(), "discriminator": bare(self.discriminator), "discriminator_optimiser": self.discriminator_optimiser}

    def train_step(self, batch: SampleSet, generator: torch.Generator) -> dict[str, float]:
        net, w, classes = self.network, self.weights, self.config.classes
        net.train()
        cine, cine_mask, lge, lge_mask = self._augmented((batch.cine, batch.cine_mask), (batch.lge, batch.lge_mask), generator=generator)
        labelled = batch.has_lge_mask.to(self.device)
        out = net(cine, lge)

        terms = {
            "kl": kl_divergence(out["mean1"], out["log_variance1"]) + kl_divergence(out["mean2"], out["log_variance2"]),
            "reconstruction": F.l1_loss(out["reconstruction1"], cine) + F.l1_loss(out["reconstruction2"], lge),
            "z_reconstruction": self._z_reconstruction(out),
            "dice": sum(dice_loss(out[f"logits_{k}"], cine_mask) for k in ("anatomy1", "warped2", "fused1"))
            + sum(dice_loss(out[f"logits_{k}"][labelled], lge_mask[labelled]) for k in ("anatomy2", "warped1", "fused2")),
        }
        fake = [torch.softmax(out[f"logits_{k}"], dim=1) for k in ("anatomy2", "fused2")]
        # One critic pass over both fakes (it has no batch statistics, so this equals two passes;
        # DDP wants one forward per backward). The mean over both equals the mean of the two means.
        terms["adversarial"] = 2 * generator_adversarial(self.discriminator(torch.cat(fake)))
        total = sum(getattr(w, k) * v for k, v in terms.items())
        self._apply(total, self.optimiser)

        real = one_hot(torch.cat([cine_mask, lge_mask[labelled]]), classes)
        scores = self.discriminator(torch.cat([real, *fake]).detach())
        d_loss = discriminator_adversarial(scores[: len(real)], scores[len(real) :])
        self._apply(d_loss, self.discriminator_optimiser)
        return {"loss": total.item(), "discriminator": d_loss.item(), **{k: v.item() for k, v in terms.items()}}

    def _z_reconstruction(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Decode a z drawn from the prior and encode it again: it should come back (L1)."""
        loss = 0.0
        for index in (0, 1):
            anatomy = out[f"anatomy{index + 1}"]
            z = torch.randn(len(anatomy), self.config.z_dim, device=anatomy.device)
            loss = loss + F.l1_loss(self.module.reencode_z(index, anatomy, z), z)
        return loss

    @torch.no_grad()
    def predict(self, cine: torch.Tensor, lge: torch.Tensor, paired: torch.Tensor) -> dict[str, torch.Tensor]:
        self.network.eval()
        single = torch.softmax(self.module(None, lge.to(self.device))["logits_anatomy2"], dim=1).cpu()
        multi = single.clone()
        if paired.any():
            out = self.module(cine[paired].to(self.device), lge[paired].to(self.device))
            multi[paired] = torch.softmax(out["logits_fused2"], dim=1).cpu()
        return {"MMSDNet-single": single, "MMSDNet-multi": multi}
