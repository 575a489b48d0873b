"""Training methods for MMSDNet's cardiac task: the common :class:`Method` and MMSDNet itself.

Every method trains from the same :class:`SampleSet` batches (with their per-sample flags saying
which masks may be used) and predicts class probabilities for LGE slices, so one runner trains,
validates and tests them all on the same splits. A method may produce several results: MMSDNet
gives "MMSDNet-single" (the LGE anatomy alone) and "MMSDNet-multi" (the fused anatomy).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from crossmodal.nets.mmsdnet import ANATOMY_KEYS, SPACE_OF, MaskDiscriminator, MMSDNet, MMSDNetConfig
from crossmodal.training.cardiac_data import Augmentation, SampleSet, balanced_batches, paired_or_lge_only_batches
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

    def batches(self, samples: SampleSet, batch_size: int) -> Callable[[torch.Generator], SampleSet]:
        """The batch drawer this method trains from (see :func:`balanced_batches`)."""
        return balanced_batches(samples, self.usable(samples), batch_size, self.name)

    @abstractmethod
    def predict(self, cine: torch.Tensor, lge: torch.Tensor, paired: torch.Tensor) -> dict[str, torch.Tensor]:
        """Probabilities (slices, classes, H, W) for each of ``outputs``; ``paired`` flags slices with a cine."""

    def _augmented(self, *pairs: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator) -> list[torch.Tensor]:
        """Augment (image, mask) pairs with one shared draw per sample; flat list on the device."""
        return [t.to(self.device) for pair in self.augment(*pairs, generator=generator) for t in pair]


class MMSDNetMethod(Method):
    """MMSDNet with its mask discriminator, trained semi-supervised as the authors wire it.

    A step sees paired slices (every term) or, from patients without a cine, LGE-labelled slices
    alone (the LGE's own Dice, reconstruction and adversarial terms): see :func:`paired_or_lge_only_batches`.
    """

    name = "MMSDNet"
    outputs = ("MMSDNet-single", "MMSDNet-multi")

    def __init__(self, config: MMSDNetConfig, device: torch.device, learning_rate: float = 1e-4, weights: LossWeights = LossWeights(),
                 bfloat16: bool = False) -> None:
        super().__init__(MMSDNet(config), learning_rate, device)
        self.config, self.weights, self.bfloat16 = config, weights, bfloat16
        self.discriminator = MaskDiscriminator(config.classes - 1).to(device)
        self.discriminator_optimiser = torch.optim.Adam(self.discriminator.parameters(), lr=learning_rate)

    def usable(self, samples: SampleSet) -> torch.Tensor:
        return samples.has_cine | samples.has_lge_mask

    def batches(self, samples: SampleSet, batch_size: int) -> Callable[[torch.Generator], SampleSet]:
        return paired_or_lge_only_batches(samples, batch_size, self.name)

    def parts(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        return {**super().parts(), "discriminator": bare(self.discriminator), "discriminator_optimiser": self.discriminator_optimiser}

    def train_step(self, batch: SampleSet, generator: torch.Generator) -> dict[str, float]:
        net, w = self.network, self.weights
        net.train()
        cine, cine_mask, lge, lge_mask = self._augmented((batch.cine, batch.cine_mask), (batch.lge, batch.lge_mask), generator=generator)
        labelled = batch.has_lge_mask.to(self.device)
        paired = bool(batch.has_cine.all())
        if not paired and batch.has_cine.any():
            raise ValueError(f"{self.name}: a batch must be all paired or all LGE-only (see paired_or_lge_only_batches)")
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bfloat16):  # losses below in float32
            out = {k: v.float() for k, v in net(cine if paired else None, lge, reconstructions=True).items()}
        masks = {"cine": cine_mask, "lge": lge_mask}
        count = len(out["rebuilt"]) // len(lge)  # each term below is the sum over the reconstructions, as in the authors' code
        terms = {
            "kl": count * kl_divergence(out["rebuilt_mean"], out["rebuilt_log_variance"]),
            # L1 on the authors' [-1, 1] image scale (ours is 0..1), so that weight 10 means what it meant there.
            "reconstruction": count * 2 * F.l1_loss(out["rebuilt"], out["rebuilt_target"]),
            "z_reconstruction": count * F.l1_loss(out["z_estimate"], out["z_prior"]),
            "dice": sum(dice_loss(out[f"logits_{a}"], masks[m]) if m == "cine" else dice_loss(out[f"logits_{a}"][labelled], masks[m][labelled])
                        for a, m in SPACE_OF.items() if a in out),  # the LGE targets only on LGE-labelled samples
        }
        predicted = [a for a in ANATOMY_KEYS if a in out]
        fake = torch.cat([torch.softmax(out[f"logits_{a}"], dim=1)[:, 1:] for a in predicted])
        terms["adversarial"] = len(predicted) * generator_adversarial(self.discriminator(fake))
        total = sum(getattr(w, k) * v for k, v in terms.items())
        self._apply(total, self.optimiser)

        real = soft_edges(one_hot(torch.cat([cine_mask] * paired + [lge_mask[labelled]]), self.config.classes)[:, 1:])
        scores = self.discriminator(torch.cat([real, fake.detach()]))
        d_loss = discriminator_adversarial(scores[: len(real)], scores[len(real) :])
        self._apply(d_loss, self.discriminator_optimiser)
        return {"loss": total.item(), "discriminator": d_loss.item(), **{k: v.item() for k, v in terms.items()}}

    @torch.no_grad()
    def predict(self, cine: torch.Tensor, lge: torch.Tensor, paired: torch.Tensor) -> dict[str, torch.Tensor]:
        self.network.eval()
        single = torch.softmax(self.module(None, lge.to(self.device))["logits_anatomy2"], dim=1).cpu()
        multi = single.clone()
        if paired.any():
            out = self.module(cine[paired].to(self.device), lge[paired].to(self.device))
            multi[paired] = torch.softmax(out["logits_fused2"], dim=1).cpu()
        return {"MMSDNet-single": single, "MMSDNet-multi": multi}


def soft_edges(masks: torch.Tensor) -> torch.Tensor:
    """One-hot masks with their edges blurred over a pixel, like the authors' bilinearly rotated real masks,
    so that the critic judges shape rather than telling hard masks from softmax ones."""
    return F.avg_pool2d(masks, 3, stride=1, padding=1, count_include_pad=False)
