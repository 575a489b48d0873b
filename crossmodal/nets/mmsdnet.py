"""MMSDNet: multi-modal spatial disentanglement (Chartsias et al., "Disentangle, align and fuse").

Each modality's image is split into a *spatial anatomy factor* (8 binary channels at input
resolution) and a *modality factor* (an 8-d vector, a VAE). A spatial transformer with a thin-plate
spline aligns one modality's anatomy onto the other's; the pixel-wise max fuses them; one shared
segmentor turns any anatomy (own, warped, fused) into masks. Modality 1 is the cine (the one with
masks), modality 2 the LGE (the one we segment).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from crossmodal.nets.blocks import UNet, conv_bn_relu
from crossmodal.nets.tps import ThinPlateSpline


@dataclass(frozen=True)
class MMSDNetConfig:
    """Hyper-parameters; the defaults are the paper's (64 U-Net filters, 8 anatomy channels, 8-d z, 5x5 TPS)."""

    classes: int = 3
    """Segmentor outputs, background included."""
    anatomy_channels: int = 8
    z_dim: int = 8
    filters: int = 64
    """First-level filters of the anatomy U-Nets (doubling per level)."""
    depth: int = 4
    control_points: int = 5
    """The TPS control lattice is control_points x control_points."""
    modalities: tuple[str, str] = ("cine", "LGE")
    max_offset: float | None = None
    """Soft bound on each control-point offset (normalised coordinates, the image spans -1..1): offsets are
    ``max_offset * tanh(raw / max_offset)``, the identity for small ones. None: unbounded, as the paper."""

    def as_dict(self) -> dict:
        return {**asdict(self), "modalities": list(self.modalities)}


def binarise(probabilities: torch.Tensor) -> torch.Tensor:
    """Round to {0, 1} in the forward pass, identity gradient in the backward pass (straight-through)."""
    return probabilities + (probabilities.round() - probabilities).detach()


class AnatomyEncoder(nn.Module):
    """Image -> binary anatomy factor: U-Net, 1x1 to ``channels``, softmax over channels, rounding."""

    def __init__(self, channels: int, filters: int, depth: int) -> None:
        super().__init__()
        self.unet = UNet(1, channels, filters, depth)

    def forward(self, image: torch.Tensor, name: str = "image") -> torch.Tensor:
        return binarise(torch.softmax(self.unet(image, name), dim=1))


class ModalityEncoder(nn.Module):
    """(anatomy, image) -> mean and log-variance of the modality factor z."""

    def __init__(self, anatomy_channels: int, z_dim: int, width: int = 16, strided_convs: int = 4) -> None:
        super().__init__()
        layers = [conv_bn_relu(anatomy_channels + 1 if i == 0 else width, width, stride=2, leaky=True) for i in range(strided_convs)]
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.dense = nn.Sequential(nn.Linear(width * 16, 32), nn.BatchNorm1d(32), nn.LeakyReLU(0.2, inplace=True))
        self.mean = nn.Linear(32, z_dim)
        self.log_variance = nn.Linear(32, z_dim)

    def forward(self, anatomy: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.dense(self.features(torch.cat([anatomy, image], dim=1)))
        return self.mean(hidden), self.log_variance(hidden)


def reparameterise(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """A sample of N(mean, exp(log_variance)) through which gradients flow; the mean at eval time."""
    return mean + torch.randn_like(mean) * torch.exp(0.5 * log_variance)


class FiLMBlock(nn.Module):
    """Convolution whose feature maps are scaled and shifted by (gamma, beta) predicted from z."""

    def __init__(self, in_channels: int, out_channels: int, z_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.film = nn.Sequential(nn.Linear(z_dim, out_channels), nn.LeakyReLU(0.2, inplace=True), nn.Linear(out_channels, 2 * out_channels))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(self.conv1(x), 0.2)
        gamma, beta = self.film(z)[:, :, None, None].chunk(2, dim=1)
        return F.leaky_relu(self.conv2(x) * gamma + beta, 0.2) + x


class FiLMDecoder(nn.Module):
    """(anatomy, z) -> image in 0..1, the range the inputs are normalised to."""

    def __init__(self, anatomy_channels: int, z_dim: int, width: int = 16, blocks: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(FiLMBlock(anatomy_channels if i == 0 else width, width, z_dim) for i in range(blocks))
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, anatomy: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = anatomy
        for block in self.blocks:
            x = block(x, z)
        return torch.sigmoid(self.out(x))


class LocalisationNet(nn.Module):
    """Two stacked anatomies (moving, fixed) -> TPS control-point offsets; zero at start (identity)."""

    def __init__(self, anatomy_channels: int, control_points: int, width: int = 32, max_offset: float | None = None) -> None:
        super().__init__()
        self.points, self.max_offset = control_points**2, max_offset
        self.features = nn.Sequential(
            conv_bn_relu(2 * anatomy_channels, width, stride=2),
            conv_bn_relu(width, 2 * width, stride=2),
            conv_bn_relu(2 * width, 2 * width, stride=2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * width * 16, 128),
            nn.ReLU(inplace=True),
        )
        self.offsets = nn.Linear(128, 2 * self.points)
        nn.init.zeros_(self.offsets.weight)
        nn.init.zeros_(self.offsets.bias)

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> torch.Tensor:
        offsets = self.offsets(self.features(torch.cat([moving, fixed], dim=1))).view(-1, self.points, 2)
        return offsets if self.max_offset is None else self.max_offset * torch.tanh(offsets / self.max_offset)


class Segmentor(nn.Module):
    """Anatomy -> class logits: two 3x3 conv + BN + ReLU and a 1x1 convolution."""

    def __init__(self, anatomy_channels: int, classes: int, width: int = 64) -> None:
        super().__init__()
        self.layers = nn.Sequential(conv_bn_relu(anatomy_channels, width), conv_bn_relu(width, width), nn.Conv2d(width, classes, 1))

    def forward(self, anatomy: torch.Tensor) -> torch.Tensor:
        return self.layers(anatomy)


class MaskDiscriminator(nn.Module):
    """Least-squares GAN critic of mask shapes (softmax or one-hot masks in, a score per sample out)."""

    def __init__(self, classes: int, width: int = 32, strided_convs: int = 4) -> None:
        super().__init__()
        layers = [
            nn.Sequential(nn.Conv2d(classes if i == 0 else width * 2 ** (i - 1), width * 2**i, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True))
            for i in range(strided_convs)
        ]
        self.layers = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width * 2 ** (strided_convs - 1), 1))

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        return self.layers(masks).squeeze(1)


class MMSDNet(nn.Module):
    """Generator side of MMSDNet (the mask discriminator is trained beside it, see the trainer).

    ``forward(cine, lge)`` returns a dict of every factor and output the losses and the user need;
    either input may be ``None`` for single-modality inference (then no alignment or fusion).
    """

    def __init__(self, config: MMSDNetConfig = MMSDNetConfig()) -> None:
        super().__init__()
        self.config = c = config
        self.anatomy = nn.ModuleList(AnatomyEncoder(c.anatomy_channels, c.filters, c.depth) for _ in range(2))
        self.modality = nn.ModuleList(ModalityEncoder(c.anatomy_channels, c.z_dim) for _ in range(2))
        self.decoder = nn.ModuleList(FiLMDecoder(c.anatomy_channels, c.z_dim) for _ in range(2))
        self.localisation = LocalisationNet(c.anatomy_channels, c.control_points, max_offset=c.max_offset)
        self.tps = ThinPlateSpline(c.control_points)
        self.segmentor = Segmentor(c.anatomy_channels, c.classes, c.filters)

    def encode(self, index: int, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Anatomy, modality factor (mean, log-variance, sample) and reconstruction of one modality."""
        anatomy = self.anatomy[index](image, self.config.modalities[index])  # checks the input once, by name
        mean, log_variance = self.modality[index](anatomy, image)
        z = reparameterise(mean, log_variance) if self.training else mean
        return {"anatomy": anatomy, "mean": mean, "log_variance": log_variance, "z": z, "reconstruction": self.decoder[index](anatomy, z)}

    def align(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Warp ``moving`` anatomy onto ``fixed``; returns the warped anatomy and the control-point offsets."""
        offsets = self.localisation(moving, fixed)
        return self.tps(moving, offsets), offsets

    def forward(self, cine: torch.Tensor | None, lge: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Keys: ``anatomy1/2``, ``warped1`` (cine anatomy on the LGE), ``warped2`` (LGE anatomy on the
        cine), ``fused1/2``, ``offsets12/21``, ``z``/``mean``/``log_variance``/``reconstruction`` 1/2,
        and ``logits_<anatomy key>`` for every anatomy."""
        if cine is None and lge is None:
            raise ValueError("MMSDNet needs a cine image, an LGE image or both")
        out: dict[str, torch.Tensor] = {}
        for index, image in enumerate((cine, lge)):
            if image is not None:
                out.update({f"{key}{index + 1}": value for key, value in self.encode(index, image).items()})
        if cine is not None and lge is not None:
            if cine.shape != lge.shape:
                raise ValueError(f"cine and LGE batches must have one shape, got {tuple(cine.shape)} and {tuple(lge.shape)}")
            out["warped1"], out["offsets12"] = self.align(out["anatomy1"], out["anatomy2"])
            out["warped2"], out["offsets21"] = self.align(out["anatomy2"], out["anatomy1"])
            out["fused2"] = torch.maximum(out["warped1"], out["anatomy2"])
            out["fused1"] = torch.maximum(out["warped2"], out["anatomy1"])
        for key in [k for k in ANATOMY_KEYS if k in out]:
            out[f"logits_{key}"] = self.segmentor(out[key])
        return out

    def reencode_z(self, index: int, anatomy: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Decode ``z`` with ``anatomy`` and encode the result again: the z-reconstruction term's input."""
        image = self.decoder[index](anatomy, z)
        return self.modality[index](anatomy, image)[0]


ANATOMY_KEYS = ("anatomy1", "anatomy2", "warped1", "warped2", "fused1", "fused2")
