"""Ensembles a bundle loads as one network: each returns logits whose softmax is the mean of its members'
class probabilities, so that everything downstream reads an ensemble as it reads a single network.

:class:`LGEEnsemble`: MMSDNet beside a plain 2-D U-Net on the LGE (the cardiac bundle). :class:`DualStreamEnsemble`:
dual-stream FCNs of one recipe trained from different seeds (the abdominal bundle).
"""

from __future__ import annotations

import torch
from torch import nn

from crossmodal.nets.blocks import UNet
from crossmodal.nets.mmsdnet import MMSDNet, MMSDNetConfig
from crossmodal.nets.residual_fcn import DualStreamFCN, ResidualFCNConfig
from crossmodal.nets.tps import ThinPlateSpline

AVERAGED = ("anatomy2", "fused2")
"""MMSDNet's anatomies on the LGE whose segmentations the U-Net joins (``logits_<key>``)."""


def log_mean_probabilities(probabilities: list[torch.Tensor]) -> torch.Tensor:
    """The log of the mean of class ``probabilities``: logits whose softmax gives that mean back."""
    mean = torch.stack(probabilities).mean(dim=0)
    return mean.clamp_min(torch.finfo(mean.dtype).tiny).log()


class LGEEnsemble(nn.Module):
    """MMSDNet beside a plain 2-D U-Net on the LGE: the product's cardiac network when its bundle carries one.

    Measured on MS-CMRSeg (Table 1's ``MMSDNet+UNet`` row and the bundle's validation), a U-Net trained on the
    LGE masks alone segments the myocardium better than MMSDNet's segmentor, while MMSDNet's fused anatomy
    brings what the cine adds; averaging the two networks' probabilities keeps both. The U-Net reads only the
    LGE, so it joins each LGE result that MMSDNet segments from the LGE's own anatomy, alone or fused with the
    aligned cine; the cine's results and the cine warped onto the LGE stay MMSDNet's own, and so does the
    alignment. Fused against LGE-only then still measures what the cine adds (the same U-Net is in both).

    ``forward(cine, lge)`` returns MMSDNet's outputs, with ``logits_anatomy2`` and ``logits_fused2``
    replaced by the log of the mean of MMSDNet's and the U-Net's class probabilities (a softmax of them
    gives that mean back), so that everything downstream reads an ensemble as it reads MMSDNet."""

    def __init__(self, mmsdnet: MMSDNet, lge_unet: UNet) -> None:
        super().__init__()
        if lge_unet.head.out_channels != mmsdnet.config.classes:
            raise ValueError(f"the LGE U-Net predicts {lge_unet.head.out_channels} classes, MMSDNet {mmsdnet.config.classes}")
        self.mmsdnet, self.lge_unet = mmsdnet, lge_unet

    @property
    def config(self) -> MMSDNetConfig:
        return self.mmsdnet.config

    @property
    def tps(self) -> ThinPlateSpline:
        return self.mmsdnet.tps

    def forward(self, cine: torch.Tensor | None, lge: torch.Tensor | None) -> dict[str, torch.Tensor]:
        out = self.mmsdnet(cine, lge)
        if lge is not None:
            unet = torch.softmax(self.lge_unet(lge, self.config.modalities[1]), dim=1)
            for key in AVERAGED:
                if f"logits_{key}" in out:
                    out[f"logits_{key}"] = log_mean_probabilities([torch.softmax(out[f"logits_{key}"], dim=1), unet])
        return out


class DualStreamEnsemble(nn.Module):
    """Dual-stream FCNs of one configuration, trained from different seeds: ``forward(image, stream)`` averages
    their class probabilities. Few training volumes make one training's errors a matter of its draw (on the
    bundle's validation volumes two seeds of one recipe differed by 0.12 Dice on one spleen); an organ that one
    member misses or over-grows the other outvotes, at one network's cost per member."""

    def __init__(self, members: list[DualStreamFCN]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs two members or more, not {len(members)}")
        if any(m.config != members[0].config for m in members):
            raise ValueError("ensemble members must share one dual-stream configuration")
        self.members = nn.ModuleList(members)

    @property
    def config(self) -> ResidualFCNConfig:
        return self.members[0].config

    def forward(self, image: torch.Tensor, stream: int) -> torch.Tensor:
        return log_mean_probabilities([torch.softmax(member(image, stream), dim=1) for member in self.members])
