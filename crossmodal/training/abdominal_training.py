"""Training the dual-stream FCN: class-balanced 3-D patches, alternating MR and CT batches.

As the paper: every step holds one modality only (MR, then CT, then MR, ...), so each loss is
back-propagated through that modality's stream; patches are drawn class-balanced (a class first,
then one of its voxels as the patch centre); Gaussian noise and intensity offsets augment them,
and where the recipe asks, contrast and gamma too.
With few volumes, :class:`SpatialAugmentation` also rotates, scales and deforms each patch (MONAI's
transforms), drawn from a larger box so that no patch shows an empty border.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import cycle

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from crossmodal.abdominal import PreparedVolume
from crossmodal.devices import volume_layout
from crossmodal.nets.residual_fcn import DualStreamFCN, ResidualFCNConfig
from crossmodal.training.losses import dice_cross_entropy, dice_loss
from crossmodal.training.trainer import NetworkTraining, Stateful


@dataclass(frozen=True)
class PatchBatch:
    stream: int
    images: torch.Tensor
    """(batch, 1, p, p, p) float32."""
    labels: torch.Tensor
    """(batch, p, p, p) int64 classes."""


@dataclass(frozen=True)
class SpatialAugmentation:
    """Random rotation (mostly in the axial plane, where bodies turn on the table), anisotropic scaling (bodies
    differ in size) and, now and then, a smooth elastic deformation, the same for a patch's image and labels."""

    axial_degrees: float = 15.0
    tilt_degrees: float = 5.0
    scale: float = 0.15
    elastic_probability: float = 0.2
    elastic_magnitude: float = 4.0
    """Voxels (2 mm each) of displacement at most."""

    def context(self, patch: int) -> int:
        """Edge of the box drawn around a patch so that rotated and shrunk patches stay inside the volume's data."""
        return int(np.ceil(patch * (1 + self.scale) * 1.3))

    def __call__(self, image: np.ndarray, labels: np.ndarray, patch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``image`` and ``labels`` (a context box, z y x) transformed alike and cropped to ``patch`` at their centre."""
        from monai.transforms import Rand3DElastic, RandAffine

        angles = np.deg2rad((self.axial_degrees, self.tilt_degrees, self.tilt_degrees))  # about z (axial plane), y, x
        affine = RandAffine(prob=1.0, rotate_range=tuple(angles), scale_range=(self.scale,) * 3, spatial_size=(patch,) * 3,
                            padding_mode="border")
        affine.set_random_state(seed)
        moved = [affine(image[None], mode="bilinear"), affine(labels[None].astype(np.float32), mode="nearest", randomize=False)]
        rng = np.random.default_rng(seed)
        if rng.random() < self.elastic_probability:
            elastic = Rand3DElastic(sigma_range=(6, 8), magnitude_range=(0, self.elastic_magnitude), prob=1.0, padding_mode="border")
            elastic.set_random_state(int(rng.integers(2**31)))
            moved = [elastic(moved[0], mode="bilinear"), elastic(moved[1], mode="nearest", randomize=False)]
        return np.asarray(moved[0][0], np.float32), np.asarray(moved[1][0]).astype(labels.dtype)


class PatchSampler:
    """Class-balanced ``patch``^3 patches from the prepared volumes of one modality, spatially augmented when ``spatial``.

    ``mirror`` (a label set's :meth:`~crossmodal.labels.LabelSet.mirrored_classes`): half the patches are flipped
    left-right (the last axis of a prepared volume points to the patient's left), their sided twins swapping
    classes, so that a flipped body is labelled as the body it looks like: what test-time mirroring relies on."""

    def __init__(self, volumes: list[PreparedVolume], patch: int, classes: int, spatial: SpatialAugmentation | None = None,
                 mirror: np.ndarray | None = None) -> None:
        if not volumes or any(v.labels is None for v in volumes):
            raise ValueError("patch sampling needs at least one volume, each with its labels")
        self.patch, self.classes, self.spatial, self.mirror = patch, classes, spatial, mirror
        self.box = spatial.context(patch) if spatial is not None else patch
        self.images, self.labels, self.where = [], [], []
        for volume in volumes:
            pad = [(0, max(0, self.box - n)) for n in volume.image.shape]
            self.images.append(np.pad(volume.image, pad, constant_values=float(volume.image.min())))
            self.labels.append(np.pad(volume.labels, pad))
            # Organ voxels are listed once; background is drawn uniformly (it is most of the volume).
            self.where.append({c: np.flatnonzero(self.labels[-1] == c) for c in range(1, classes)})

    def draw(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for _ in range(count):
            v = int(torch.randint(len(self.images), (1,), generator=generator))
            shape = np.array(self.images[v].shape)
            present = [0] + [c for c, w in self.where[v].items() if len(w)]
            c = present[int(torch.randint(len(present), (1,), generator=generator))]
            if c == 0:
                centre = np.array([int(torch.randint(int(n), (1,), generator=generator)) for n in shape])
            else:
                flat = self.where[v][c][int(torch.randint(len(self.where[v][c]), (1,), generator=generator))]
                centre = np.array(np.unravel_index(flat, shape))
            low = np.clip(centre - self.box // 2, 0, shape - self.box)
            box = tuple(slice(a, a + self.box) for a in low)
            image, label = self.images[v][box], self.labels[v][box]
            if self.spatial is not None:
                image, label = self.spatial(image, label, self.patch, int(torch.randint(2**31, (1,), generator=generator)))
            if self.mirror is not None and int(torch.randint(2, (1,), generator=generator)):
                image, label = np.ascontiguousarray(image[..., ::-1]), self.mirror[label[..., ::-1]].astype(label.dtype)
            images.append(image)
            labels.append(label)
        return torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(labels).astype(np.int64))


def alternating_batches(samplers: dict[int, PatchSampler], batch_size: int) -> Callable[[torch.Generator], PatchBatch]:
    """One stream per step, in turn (stream order of ``samplers``)."""
    if not samplers:
        raise ValueError("no modality has training volumes")
    turns = cycle(sorted(samplers))

    def draw(generator: torch.Generator) -> PatchBatch:
        stream = next(turns)
        return PatchBatch(stream, *samplers[stream].draw(batch_size, generator))

    return draw


@dataclass(frozen=True)
class IntensityAugmentation:
    """Additive Gaussian noise (random strength up to ``noise``) and a global offset up to +/- ``offset`` (z-score units);
    with ``contrast`` and ``gamma`` (nnU-Net's intensity transforms) also each patch's contrast scaled by 1 +/- ``contrast``
    about its mean and a gamma in [1/``gamma``, ``gamma``] applied to its range, mean and spread kept.

    Why the latter: a z-score in the body is only as steady as the body's make-up; an MR with much fluid or fat shifts
    and squeezes every organ's values (CHAOST2_036's liver sits at -1.8 where the others' sit at -0.8..+0.9). Measured
    on the bundle's recipe it did not rescue that volume nor raise validation (``dualstream-training.md``, 2.4.0)."""

    noise: float = 0.1
    offset: float = 0.1
    contrast: float = 0.0
    gamma: float = 1.0

    @classmethod
    def varied_contrast(cls) -> IntensityAugmentation:
        """nnU-Net's ranges (contrast x0.75-1.25, gamma 0.7-1.5) and offsets up to +/-0.3."""
        return cls(offset=0.3, contrast=0.25, gamma=1.5)

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n = len(images)
        per_patch = (n, 1, 1, 1, 1)
        if self.gamma != 1.0:
            images = self._gamma(images, torch.exp((torch.rand(per_patch, generator=generator) * 2 - 1) * np.log(self.gamma)))
        if self.contrast:
            mean = images.mean(dim=(1, 2, 3, 4), keepdim=True)
            images = mean + (images - mean) * (1 + (torch.rand(per_patch, generator=generator) * 2 - 1) * self.contrast)
        strength = torch.rand(per_patch, generator=generator) * self.noise
        shift = (torch.rand(per_patch, generator=generator) * 2 - 1) * self.offset
        return images + strength * torch.randn(images.shape, generator=generator) + shift

    @staticmethod
    def _gamma(images: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """``gamma`` applied to each patch rescaled to [0, 1], then its mean and standard deviation restored."""
        dims = (1, 2, 3, 4)
        low, high = images.amin(dim=dims, keepdim=True), images.amax(dim=dims, keepdim=True)
        mean, std = images.mean(dim=dims, keepdim=True), images.std(dim=dims, keepdim=True)
        curved = ((images - low) / (high - low).clamp_min(1e-6)) ** gamma
        return mean + (curved - curved.mean(dim=dims, keepdim=True)) * std / curved.std(dim=dims, keepdim=True).clamp_min(1e-6)


def moving_average(longest: float) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """An exponential moving average whose decay after ``n`` updates is ``min(longest, (1 + n) / (10 + n))``: early on it
    forgets the random initial weights within a tenth of the steps so far, later it averages over about
    ``1 / (1 - longest)`` steps. Integer buffers (batch counts) take the newest value."""

    def update(averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor) -> torch.Tensor:
        if not averaged.is_floating_point():
            return current
        n = float(updates)
        return averaged.lerp(current, 1 - min(longest, (1 + n) / (10 + n)))

    return update


class DualStreamTrainer(NetworkTraining):
    """The network, Adam at the paper's rate for its variant (1e-3 Individual / Joint, 1e-4 dual-stream), the step.

    With ``weight_average`` (the longest decay of :func:`moving_average`), the trainer also keeps a moving average of the
    weights and batch-norm statistics; that average is what it delivers (:attr:`delivered`): what validation scores,
    the best checkpoint keeps and the bundle stores. Each checkpoint of a short-batch training swings with its last
    few updates; the average does not."""

    def __init__(self, config: ResidualFCNConfig, device: torch.device, learning_rate: float | None = None, bfloat16: bool = False,
                 cross_entropy: bool = False, augment: IntensityAugmentation | None = None, weight_average: float | None = None) -> None:
        rate = learning_rate if learning_rate is not None else (1e-3 if config.variant in ("Individual", "Joint") else 1e-4)
        self.layout = volume_layout(device)
        super().__init__(DualStreamFCN(config).to(memory_format=self.layout), rate, device, adam_eps=1e-5)
        self.name = f"DualStream-{config.variant}"
        self.augment = augment or IntensityAugmentation()
        self.bfloat16 = bfloat16
        self.loss = dice_cross_entropy if cross_entropy else dice_loss
        self.average = None if weight_average is None else AveragedModel(self.module, avg_fn=moving_average(weight_average), use_buffers=True)

    @property
    def delivered(self) -> DualStreamFCN:
        """The weights' moving average where one is kept."""
        return self.module if self.average is None else self.average.module

    def parts(self) -> dict[str, Stateful]:
        return {**super().parts(), **({"average": self.average} if self.average is not None else {})}

    def train_step(self, batch: PatchBatch, generator: torch.Generator) -> dict[str, float]:
        self.network.train()
        images = self.augment(batch.images, generator).to(self.device, memory_format=self.layout)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bfloat16):  # the loss below in float32
            logits = self.network(images, batch.stream).float()
        loss = self.loss(logits, batch.labels.to(self.device))
        self._apply(loss, self.optimiser)
        if self.average is not None:
            self.average.update_parameters(self.module)
        return {"loss": loss.item(), "stream": float(batch.stream)}
