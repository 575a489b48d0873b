"""MMSDNet: multi-modal spatial disentanglement (Chartsias et al., "Disentangle, align and fuse").

Each modality's image is split into a *spatial anatomy factor* (8 binary channels at input
resolution, one anatomy encoder per modality) and a *modality factor* (an 8-d vector, a VAE). One
modality encoder and one FiLM decoder serve both modalities, as in the authors' code: rebuilding an
image from the *other* modality's warped or fused anatomy (the cross-reconstructions the trainer
asks for) is what ties the two anatomies' channel meanings together and trains the alignment without
masks. A spatial transformer with a thin-plate spline aligns one anatomy onto the other; the
pixel-wise max fuses them; one shared segmentor turns any anatomy (own, warped, fused) into masks.
Modality 1 is the cine (the one with masks), modality 2 the LGE (the one we segment).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from crossmodal.nets.blocks import UNet, conv_bn_relu
from crossmodal.nets.tps import ThinPlateSpline

DESIGN = 2
"""The architecture's generation, kept in every card: 1 had a modality encoder and a decoder per
modality and rounded (possibly empty) anatomies; its bundles are refused, not misread."""
PAPER_SEGMENTOR = "anatomy"
SEGMENTORS = (PAPER_SEGMENTOR, "soft-anatomy", "anatomy+image", "features")
"""What the segmentor may see (:attr:`MMSDNetConfig.segmentor`)."""


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
    segmentor_filters: int = 64
    """Width of the segmentor's two convolutions: the authors fix it at 64 whatever the U-Net width."""
    control_points: int = 5
    """The TPS control lattice is control_points x control_points."""
    modalities: tuple[str, str] = ("cine", "LGE")
    max_offset: float | None = None
    """Soft bound on each control-point offset (normalised coordinates, the image spans -1..1): offsets are
    ``max_offset * tanh(raw / max_offset)``, the identity for small ones. None: unbounded, as the paper."""
    segmentor: str = PAPER_SEGMENTOR
    """What the segmentor sees. ``anatomy`` (the paper): the one-hot anatomy, through two convolutions.
    ``soft-anatomy``: the anatomy's softmax probabilities (the decoder still rebuilds from the one-hot),
    so the segmentor gets the encoder's confidence and an exact gradient. ``anatomy+image``: a U-Net of
    the encoders' width on the one-hot anatomy beside the image it was encoded from (warped with it;
    a fused anatomy beside the image it is fused onto), the segmentation strength of a plain U-Net with
    the cine's anatomy added by fusion. ``features``: the anatomy encoder's last decoder maps, from which
    its anatomy is read, warped and max-fused as the anatomies are; the segmentor gets what a U-Net's head
    gets, and the cine's features by fusion (the anatomies still carry reconstruction and alignment)."""
    design: int = DESIGN

    def __post_init__(self) -> None:
        if self.design != DESIGN:
            raise ValueError(f"MMSDNet design {self.design} is not this version's ({DESIGN}): train the model again with this version")
        if self.segmentor not in SEGMENTORS:
            raise ValueError(f"MMSDNet segmentor {self.segmentor!r} is not one of {', '.join(SEGMENTORS)}")

    def as_dict(self) -> dict:
        return {**asdict(self), "modalities": list(self.modalities)}


def one_hot_straight_through(probabilities: torch.Tensor) -> torch.Tensor:
    """The arg-max channel as a one-hot map in the forward pass, the softmax's gradient in the backward pass.

    The paper's anatomy is one-hot. Rounding each channel (the authors' code) can switch every
    channel off: at the start, with ~1/8 per channel, the whole anatomy is empty and the segmentor
    passes no gradient. The arg-max always keeps one channel on.
    """
    hard = F.one_hot(probabilities.argmax(dim=1), probabilities.shape[1]).movedim(-1, 1).to(probabilities.dtype)
    return probabilities + (hard - probabilities).detach()


class AnatomyEncoder(nn.Module):
    """Image -> anatomy factor: U-Net, 1x1 to ``channels``, softmax over channels, straight-through arg-max
    (``soft``: the softmax itself; whoever needs the one-hot takes :func:`one_hot_straight_through` of it)."""

    def __init__(self, channels: int, filters: int, depth: int, soft: bool = False) -> None:
        super().__init__()
        self.unet, self.soft = UNet(1, channels, filters, depth), soft

    def forward(self, image: torch.Tensor, name: str = "image") -> torch.Tensor:
        return self.encode(image, name)[0]

    def encode(self, image: torch.Tensor, name: str = "image") -> tuple[torch.Tensor, torch.Tensor]:
        """The anatomy and the U-Net's last feature maps it is read from (what the ``features`` segmentor sees)."""
        features = self.unet.features(image, name)
        probabilities = torch.softmax(self.unet.head(features), dim=1)
        return (probabilities if self.soft else one_hot_straight_through(probabilities)), features


def _leaky(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class ModalityEncoder(nn.Module):
    """(anatomy, image) -> mean and log-variance of the modality factor z; shared by both modalities.

    The authors' shape (four stride-2 convolutions of 16-128 filters, no normalisation, a 32-unit
    layer), except that the last map is pooled to 4 x 4 rather than flattened whole, so that one
    encoder serves every image size.
    """

    def __init__(self, anatomy_channels: int, z_dim: int, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        convs = [nn.Conv2d(anatomy_channels + 1 if i == 0 else widths[i - 1], w, 3, stride=2, padding=1) for i, w in enumerate(widths)]
        self.features = nn.Sequential(*(m for conv in convs for m in (conv, nn.LeakyReLU(0.2))), nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.dense = nn.Sequential(nn.Linear(widths[-1] * 16, 32), nn.LeakyReLU(0.2))
        self.mean = nn.Linear(32, z_dim)
        self.log_variance = nn.Linear(32, z_dim)

    def forward(self, anatomy: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.dense(self.features(torch.cat([anatomy, image], dim=1)))
        return self.mean(hidden), self.log_variance(hidden)


def reparameterise(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """A sample of N(mean, exp(log_variance)) through which gradients flow."""
    return mean + torch.randn_like(mean) * torch.exp(0.5 * log_variance)


class FiLMBlock(nn.Module):
    """Residual block whose second convolution's maps are scaled and shifted by (gamma, beta) predicted from z."""

    def __init__(self, width: int, z_dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.gamma = nn.Linear(z_dim, width)
        self.beta = nn.Linear(z_dim, width)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = _leaky(self.conv1(x))
        gamma, beta = _leaky(self.gamma(z))[:, :, None, None], _leaky(self.beta(z))[:, :, None, None]
        return _leaky(self.conv2(x) * gamma + beta) + x


class FiLMDecoder(nn.Module):
    """(anatomy, z) -> image in 0..1 (the range the inputs are normalised to); shared by both modalities."""

    def __init__(self, anatomy_channels: int, z_dim: int, width: int = 8, blocks: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(anatomy_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(FiLMBlock(width, z_dim) for _ in range(blocks))
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, anatomy: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = _leaky(self.stem(anatomy))
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


class ImageAnatomySegmentor(nn.Module):
    """(anatomy, image) -> class logits: a U-Net on the two stacked."""

    def __init__(self, anatomy_channels: int, classes: int, filters: int, depth: int) -> None:
        super().__init__()
        self.unet = UNet(anatomy_channels + 1, classes, filters, depth)

    def forward(self, anatomy: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([anatomy, image], dim=1))


class MaskDiscriminator(nn.Module):
    """Least-squares GAN critic of mask shapes: foreground channels in, a score per sample out.

    The authors' small critic (4-8-16-32 filters of 4 x 4, about 20k weights) with spectrally
    normalised convolutions, so that it judges shape and cannot simply overpower the segmentor; the
    last map is pooled to 8 x 8 and flattened, which keeps where things are and serves every size.
    """

    def __init__(self, channels: int, widths: tuple[int, ...] = (4, 8, 16, 32)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            conv = nn.Conv2d(channels if i == 0 else widths[i - 1], width, 4, stride=2 if i < len(widths) - 1 else 1, padding=1)
            layers += [nn.utils.parametrizations.spectral_norm(conv), nn.LeakyReLU(0.2)]
        self.layers = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(8), nn.Flatten(), nn.Linear(widths[-1] * 64, 1))

    def forward(self, masks: torch.Tensor) -> torch.Tensor:
        return self.layers(masks).squeeze(1)


class MMSDNet(nn.Module):
    """Generator side of MMSDNet (the mask discriminator is trained beside it, see the trainer).

    ``forward(cine, lge)`` returns a dict of every factor and output that the user and the losses
    need; either input may be ``None`` for single-modality inference (then no alignment or fusion).
    Reconstructions are computed for training only (``reconstructions=True``).
    """

    def __init__(self, config: MMSDNetConfig = MMSDNetConfig()) -> None:
        super().__init__()
        self.config = c = config
        self.anatomy = nn.ModuleList(AnatomyEncoder(c.anatomy_channels, c.filters, c.depth, soft=c.segmentor == "soft-anatomy") for _ in range(2))
        self.modality = ModalityEncoder(c.anatomy_channels, c.z_dim)
        self.decoder = FiLMDecoder(c.anatomy_channels, c.z_dim)
        self.localisation = LocalisationNet(c.anatomy_channels, c.control_points, max_offset=c.max_offset)
        self.tps = ThinPlateSpline(c.control_points)
        if c.segmentor == "anatomy+image":
            self.segmentor = ImageAnatomySegmentor(c.anatomy_channels, c.classes, c.filters, c.depth)
        else:
            self.segmentor = Segmentor(c.filters if c.segmentor == "features" else c.anatomy_channels, c.classes, c.segmentor_filters)

    def align(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Warp ``moving`` anatomy onto ``fixed``; returns the warped anatomy and the control-point offsets."""
        offsets = self.localisation(moving, fixed)
        return self.tps(moving, offsets), offsets

    def forward(self, cine: torch.Tensor | None, lge: torch.Tensor | None, *, reconstructions: bool = False) -> dict[str, torch.Tensor]:
        """Keys: ``anatomy1/2``, ``warped1`` (cine anatomy on the LGE), ``warped2`` (LGE anatomy on the
        cine), ``fused1/2``, ``offsets12/21``, and ``logits_<anatomy key>`` for every anatomy.

        ``reconstructions`` (training): also every image-rebuilding term, so that one call (what
        distributed training synchronises) holds all of them: ``rebuilt`` / ``rebuilt_mean`` /
        ``rebuilt_log_variance`` for each (anatomy, image) of :data:`SPACE_OF` that the inputs
        allow, stacked in that order along the batch (``rebuilt_target`` the images), and ``z_prior`` /
        ``z_estimate`` for the z-regression from those anatomies, detached: as in the authors' separate z-regression step it
        trains the decoder and the modality encoder only, never the anatomy encoders or the alignment.
        """
        if cine is None and lge is None:
            raise ValueError("MMSDNet needs a cine image, an LGE image or both")
        out: dict[str, torch.Tensor] = {}
        features: dict[str, torch.Tensor] = {}  # each anatomy's feature maps, warped and fused alike (``features`` segmentor)
        for index, image in enumerate((cine, lge)):
            if image is not None:  # the encoder checks the input, by name
                out[f"anatomy{index + 1}"], features[f"anatomy{index + 1}"] = self.anatomy[index].encode(image, self.config.modalities[index])
        if cine is not None and lge is not None:
            if cine.shape != lge.shape:
                raise ValueError(f"cine and LGE batches must have one shape, got {tuple(cine.shape)} and {tuple(lge.shape)}")
            out["warped1"], out["offsets12"] = self.align(out["anatomy1"], out["anatomy2"])
            out["warped2"], out["offsets21"] = self.align(out["anatomy2"], out["anatomy1"])
            out["fused2"] = torch.maximum(out["warped1"], out["anatomy2"])
            out["fused1"] = torch.maximum(out["warped2"], out["anatomy1"])
            if self.config.segmentor == "features":
                features["warped1"] = self.tps(features["anatomy1"], out["offsets12"])
                features["warped2"] = self.tps(features["anatomy2"], out["offsets21"])
                features["fused2"] = torch.maximum(features["warped1"], features["anatomy2"])
                features["fused1"] = torch.maximum(features["warped2"], features["anatomy1"])
        keys = [k for k in ANATOMY_KEYS if k in out]
        if self.config.segmentor == "features":  # one call on all stacked, for batch norm (see below)
            logits = self.segmentor(torch.cat([features[k] for k in keys]))
            out.update({f"logits_{k}": part for k, part in zip(keys, logits.chunk(len(keys)))})
        elif self.config.segmentor == "anatomy+image":
            # One call on every (anatomy, image) stacked: batch norm then normalises cine and LGE inputs
            # together in training, as its running statistics (what inference uses) do.
            beside = self._segmentor_images(out, cine, lge)
            logits = self.segmentor(torch.cat([out[k] for k in keys]), torch.cat([beside[k] for k in keys]))
            out.update({f"logits_{k}": part for k, part in zip(keys, logits.chunk(len(keys)))})
        else:
            out.update({f"logits_{k}": self.segmentor(out[k]) for k in keys})
        if reconstructions:
            images = {"cine": cine, "lge": lge}
            pairs = [(a, m) for a, m in SPACE_OF.items() if a in out]
            anatomies = torch.cat([out[a] for a, _ in pairs])
            out["rebuilt_target"] = torch.cat([images[m] for _, m in pairs])
            rebuilt = self.reconstruct(anatomies, out["rebuilt_target"])
            out["rebuilt"], out["rebuilt_mean"], out["rebuilt_log_variance"] = rebuilt["reconstruction"], rebuilt["mean"], rebuilt["log_variance"]
            out["z_prior"] = torch.randn(len(anatomies), self.config.z_dim, device=anatomies.device)
            out["z_estimate"] = self.regress_z(anatomies.detach(), out["z_prior"])
        return out

    def _segmentor_images(self, out: dict[str, torch.Tensor], cine: torch.Tensor | None, lge: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The image beside each anatomy for the ``anatomy+image`` segmentor: the one it was encoded from, warped
        as it was; a fused anatomy's, the image it was fused onto (so the LGE's fused masks read the LGE)."""
        images = {"anatomy1": cine, "anatomy2": lge, "fused1": cine, "fused2": lge}
        if "warped1" in out:
            images["warped1"] = self.tps(cine, out["offsets12"])
            images["warped2"] = self.tps(lge, out["offsets21"])
        return images

    def one_hot(self, anatomy: torch.Tensor) -> torch.Tensor:
        """The anatomy as the decoder and modality encoder see it: one-hot (a soft anatomy's arg-max, straight through)."""
        return one_hot_straight_through(anatomy) if self.config.segmentor == "soft-anatomy" else anatomy

    def reconstruct(self, anatomy: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode ``image``'s modality factor given ``anatomy`` and rebuild ``image`` from both.

        With another modality's warped or fused anatomy this is a cross-reconstruction: the image
        can only come back if that anatomy sits where, and means what, this image's own does.
        """
        anatomy = self.one_hot(anatomy)
        mean, log_variance = self.modality(anatomy, image)
        z = reparameterise(mean, log_variance) if self.training else mean
        return {"mean": mean, "log_variance": log_variance, "reconstruction": self.decoder(anatomy, z)}

    def regress_z(self, anatomy: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Decode ``z`` with ``anatomy`` and encode the result again: the z-reconstruction term's estimate of ``z``."""
        anatomy = self.one_hot(anatomy)
        return self.modality(anatomy, self.decoder(anatomy, z))[0]


ANATOMY_KEYS = ("anatomy1", "anatomy2", "warped1", "warped2", "fused1", "fused2")
SPACE_OF = {"anatomy1": "cine", "anatomy2": "lge", "warped1": "lge", "fused2": "lge", "warped2": "cine", "fused1": "cine"}
"""Each anatomy and the image whose space it lies in: the image it is rebuilt into (own, and the four
cross-reconstructions from the other modality's warped and fused anatomy; each also has its KL term)
and the mask it is scored against: the authors' six reconstruction and six Dice targets."""
