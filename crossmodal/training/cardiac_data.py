"""Paired cardiac training data: MS-CMRSeg patients paired on the common grid, as tensors.

Every LGE slice becomes one sample with its nearest cine slice (see :mod:`crossmodal.pairing`).
Masks become class indices (0 background, 1 myocardium, 2 LV blood pool; RV is background, as in
the paper). Whether a patient's LGE mask may be used for training is decided by the caller (the
semi-supervised fraction), never here: loading keeps every mask so that evaluation can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
from torch.nn import functional as F

from crossmodal.datasets import CardiacCase
from crossmodal.intensity import normalise_mr
from crossmodal.labels import CARDIAC_MYO_LV
from crossmodal.pairing import PairedStack, PairingConfig, pair_volumes

IGNORED_VALUES = (600,)
"""Right ventricle: labelled in MS-CMRSeg, not segmented by MMSDNet (background)."""


@dataclass
class CardiacPatient:
    """One patient's paired stack, normalised images and class masks (``None`` where no mask exists)."""

    patient: int
    stack: PairedStack
    cine: np.ndarray
    lge: np.ndarray
    cine_mask: np.ndarray | None
    lge_mask: np.ndarray | None
    lge_reference: sitk.Image | None
    """The LGE mask as classes on the LGE's own grid: what predictions are scored against."""

    @property
    def paired(self) -> np.ndarray:
        return self.stack.paired


def mask_classes(mask: sitk.Image, source: str) -> sitk.Image:
    """A MS-CMRSeg mask (200/500/600) as classes 0/1/2 on the same grid."""
    classes = CARDIAC_MYO_LV.to_classes(sitk.GetArrayFromImage(mask), source, ignore=IGNORED_VALUES)
    image = sitk.GetImageFromArray(classes)
    image.CopyInformation(mask)
    return image


def load_patient(case: CardiacCase, config: PairingConfig) -> CardiacPatient:
    """Read, pair and normalise one patient (masks when the case has them).

    A patient without a cine (MS-CMRSeg 36-45) gives LGE samples alone, laid out as single-LGE
    inference lays them out; its cine rows are zeros and no sample is paired.
    """
    lge, cine = case.read("DE"), case.read("C0") if case.is_pair else None
    masks = {m: mask_classes(case.read_mask(m), f"patient {case.patient} {m} mask") for m in ("DE", "C0") if case.has_mask(m)}
    stack = pair_volumes(lge, cine, config, reference_mask=masks.get("DE"), other_mask=masks.get("C0"))
    return CardiacPatient(
        patient=case.patient,
        stack=stack,
        cine=normalise_mr(stack.images["cine"], per_slice=True) if cine is not None else np.zeros_like(stack.images["LGE"]),
        lge=normalise_mr(stack.images["LGE"], per_slice=True),
        cine_mask=stack.masks.get("cine"),
        lge_mask=stack.masks.get("LGE"),
        lge_reference=masks.get("DE"),
    )


@dataclass
class SampleSet:
    """Training samples from several patients: images (n, 1, H, W), masks (n, H, W), per-sample flags."""

    cine: torch.Tensor
    lge: torch.Tensor
    cine_mask: torch.Tensor
    lge_mask: torch.Tensor
    has_cine: torch.Tensor
    """The sample has a cine slice (and so a cine mask)."""
    has_lge_mask: torch.Tensor
    """The sample's LGE mask may be used for training."""

    def __len__(self) -> int:
        return len(self.lge)

    def batch(self, index: torch.Tensor) -> SampleSet:
        return SampleSet(*(getattr(self, f)[index] for f in SampleSet.__dataclass_fields__))


def build_samples(patients: list[CardiacPatient], lge_labelled: set[int]) -> SampleSet:
    """Stack every slice of ``patients``; only patients in ``lge_labelled`` contribute LGE masks."""
    if not patients:
        raise ValueError("no patients to build training samples from")
    rows: dict[str, list[np.ndarray]] = {f: [] for f in SampleSet.__dataclass_fields__}
    for p in patients:
        n = len(p.lge)
        labelled = p.patient in lge_labelled
        if labelled and p.lge_mask is None:
            raise ValueError(f"patient {p.patient} has no LGE mask, so it cannot be an LGE-labelled training patient")
        rows["cine"].append(p.cine[:, None])
        rows["lge"].append(p.lge[:, None])
        rows["cine_mask"].append(p.cine_mask if p.cine_mask is not None else np.zeros_like(p.lge, np.uint8))
        rows["lge_mask"].append(p.lge_mask if labelled else np.zeros_like(p.lge, np.uint8))
        rows["has_cine"].append(p.paired & (p.cine_mask is not None))
        rows["has_lge_mask"].append(np.full(n, labelled))
    arrays = {f: np.concatenate(v) for f, v in rows.items()}
    return SampleSet(
        **{f: torch.from_numpy(arrays[f]).float() for f in ("cine", "lge")},
        **{f: torch.from_numpy(arrays[f].astype(np.int64)) for f in ("cine_mask", "lge_mask")},
        **{f: torch.from_numpy(arrays[f]) for f in ("has_cine", "has_lge_mask")},
    )


def balanced_batches(samples: SampleSet, usable: torch.Tensor, batch_size: int, name: str):
    """A batch drawer over the ``usable`` samples, half of each batch LGE-labelled whenever some but not all are.

    With few labelled patients (25 % is one or two of ~25) a uniform draw would put an LGE mask in
    a batch only now and then; balancing gives every step some LGE supervision, for every method alike.
    """
    usable = torch.nonzero(usable).flatten()
    if len(usable) == 0:
        raise ValueError(f"{name}: no training sample has the masks this method learns from")
    labelled = usable[samples.has_lge_mask[usable]]
    pools = [(labelled, batch_size // 2), (usable, batch_size - batch_size // 2)] if 0 < len(labelled) < len(usable) else [(usable, batch_size)]

    def draw(generator: torch.Generator) -> SampleSet:
        return samples.batch(torch.cat([pool[torch.randint(len(pool), (count,), generator=generator)] for pool, count in pools]))

    return draw


def paired_or_lge_only_batches(samples: SampleSet, batch_size: int, name: str):
    """MMSDNet's drawer: a batch of paired slices (drawn as :func:`balanced_batches` draws) or, as often
    as a uniform draw over all slices would pick them, a batch of LGE-labelled slices without a cine.

    A batch is never mixed, so that every step runs the network once on inputs of one kind.
    """
    paired = balanced_batches(samples, samples.has_cine, batch_size, name)
    lge_only = samples.has_lge_mask & ~samples.has_cine
    if not lge_only.any():
        return paired
    alone = balanced_batches(samples, lge_only, batch_size, name)
    share = float(lge_only.sum() / (lge_only.sum() + samples.has_cine.sum()))

    def draw(generator: torch.Generator) -> SampleSet:
        return alone(generator) if torch.rand((), generator=generator) < share else paired(generator)

    return draw


@dataclass(frozen=True)
class Augmentation:
    """Random in-plane rotation, isotropic scale and translation, one draw per sample.

    The images of one paired sample share their draw: the cine-to-LGE misalignment the spatial
    transformer must learn is then the real one between the two breath-holds, not an artificial one.
    """

    rotation_degrees: float = 15.0
    scale: float = 0.1
    translation: float = 0.08
    """Fraction of the field of view (each direction)."""

    def __call__(self, *pairs: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Transform (image batch, class-mask batch) pairs alike: images bilinear, masks nearest."""
        image = pairs[0][0]
        n = len(image)

        def draw(spread: float) -> torch.Tensor:
            return (torch.rand(n, generator=generator) * 2 - 1) * spread

        angle = torch.deg2rad(draw(self.rotation_degrees))
        scale = 1 + draw(self.scale)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, draw(2 * self.translation)], 1), torch.stack([sin, cos, draw(2 * self.translation)], 1)], 1)
        grid = F.affine_grid(theta, list(image.shape), align_corners=False)
        return [
            (
                F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False),
                F.grid_sample(masks[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0].long(),
            )
            for images, masks in pairs
        ]
