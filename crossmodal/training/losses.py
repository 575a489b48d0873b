"""Loss terms of MMSDNet (and the Dice loss every segmentation baseline shares)."""

from __future__ import annotations

import torch
from monai.losses import DiceLoss
from torch.nn import functional as F

_dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)


def dice_loss(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Soft Dice over the foreground classes of a batch (MONAI); 0 for an empty batch."""
    if len(logits) == 0:
        return logits.sum() * 0
    return _dice(logits, classes[:, None])


def dice_cross_entropy(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """Soft Dice plus voxel-wise cross-entropy (nnU-Net's loss): the Dice term weighs small organs as much as
    large ones, the cross-entropy grades every voxel, background included, which Dice over the organs never
    asks to be background."""
    return dice_loss(logits, classes) + F.cross_entropy(logits, classes)


def kl_divergence(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, var) || N(0, I)), summed over z and averaged over the batch."""
    return (-0.5 * (1 + log_variance - mean.pow(2) - log_variance.exp()).sum(dim=1)).mean()


def generator_adversarial(scores_fake: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN: the generator wants its masks scored as real (1)."""
    return (scores_fake - 1).pow(2).mean()


def discriminator_adversarial(scores_real: torch.Tensor, scores_fake: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN: real masks to 1, generated masks to 0."""
    return 0.5 * ((scores_real - 1).pow(2).mean() + scores_fake.pow(2).mean())


def one_hot(classes: torch.Tensor, count: int) -> torch.Tensor:
    """(batch, H, W) class indices -> (batch, count, H, W) float one-hot masks."""
    return F.one_hot(classes, count).permute(0, 3, 1, 2).float()
