"""MMSDNet inference on a cine, an LGE, or a pair, with every output back in physical space.

Masks and anatomy factors go back onto the native grid of the modality they belong to (through
:func:`crossmodal.pairing.write_back`); the alignment is returned as TPS control points and a dense
displacement field in millimetres (LPS), so a viewer can show the cine warped onto the LGE as a
transform.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from crossmodal.bundles import ModelCard
from crossmodal.intensity import normalise_mr
from crossmodal.labels import CARDIAC_MYO_LV
from crossmodal.nets.ensemble import LGEEnsemble
from crossmodal.nets.mmsdnet import MMSDNet
from crossmodal.pairing import PairedStack, PairingConfig, heart_centre, pair_volumes, write_back

OUTPUTS = {
    "LGE": ("anatomy2", "LGE"),
    "cine": ("anatomy1", "cine"),
    "cine aligned to LGE": ("warped1", "LGE"),
    "LGE aligned to cine": ("warped2", "cine"),
    "fused LGE": ("fused2", "LGE"),
    "fused cine": ("fused1", "cine"),
}
"""Result name -> (anatomy it is segmented from, modality whose grid it lies on)."""
PREALIGN_MM = 12.0
"""The cine is moved onto the LGE's left ventricle (in the LGE's slice plane) before fusion when the two lie
farther apart than this. Measured on the 10 labelled shared pairs (``crossmodal.benchmarks.misalignment``,
Documentation/measurements/misalignment.json): their own offsets are 4-11 mm and the spatial transformer
handles them (with bundle 2.0.0, moving those from 5 mm on lost 0.008 fused MYO Dice on average, 0.08 on
patient 8, whose LGE-only ventricle is poor); with bundle 2.1.0 and the cine moved 10-30 mm on purpose, moving
it back keeps mean fused MYO at 0.85-0.86 where the cine as given falls to 0.84-0.77."""
CardiacNetwork = MMSDNet | LGEEnsemble
"""What a cardiac bundle loads into: MMSDNet, or MMSDNet with a U-Net joining its LGE results."""
MIN_LV_PIXELS = 20
"""Slices where either modality's left ventricle is smaller than this do not vote on the offset."""


@dataclass
class CardiacResult:
    stack: PairedStack
    masks: dict[str, sitk.Image] = field(default_factory=dict)
    """Per entry of :data:`OUTPUTS` that the inputs allow: file values (200 MYO, 500 LV) on that modality's grid."""
    anatomy: dict[str, sitk.Image] = field(default_factory=dict)
    """Per modality: the binary anatomy factor as one label map (channel index + 1; 0 where no channel is on)."""
    cine_shift_mm: np.ndarray | None = None
    """Where the cine's left ventricle lay relative to the LGE's (LPS mm, in the LGE's slice plane), measured on the
    single-modality masks of the paired slices; None where it could not be measured."""
    prealigned: bool = False
    """The cine was sampled ``cine_shift_mm`` away (moved onto the LGE's heart) before alignment and fusion."""
    control_points: np.ndarray | None = None
    """(slices, points, 2, 3) LPS mm: each TPS control point on the LGE plane and the cine point it samples."""
    displacement: sitk.Image | None = None
    """Vector image on the LGE common grid (mm, LPS): an LGE point p shows the cine at p + d(p) (ITK fixed-to-moving)."""


def pairing_config(card: ModelCard) -> PairingConfig:
    """The slice grid a model was trained on (its card's preprocessing)."""
    return PairingConfig(spacing_mm=card.preprocessing["spacing_mm"], size=card.preprocessing["size"])


def pair_inputs(card: ModelCard, *, lge: sitk.Image | None = None, cine: sitk.Image | None = None, centre: np.ndarray | None = None,
                cine_shift_mm: np.ndarray | None = None) -> PairedStack:
    """The stack of slices the model sees: one per LGE slice (or per cine slice without an LGE), paired in physical space."""
    names = ("LGE", "cine") if lge is not None else ("cine", "LGE")
    return pair_volumes(lge if lge is not None else cine, cine if lge is not None else None, pairing_config(card), names=names,
                        centre=centre, other_shift_mm=cine_shift_mm)


def lv_offset_mm(stack: PairedStack, lge_logits: torch.Tensor, cine_logits: torch.Tensor) -> np.ndarray | None:
    """Where the cine's left ventricle lies relative to the LGE's, in the LGE's slice plane (LPS mm): the median over
    the paired slices of the in-plane offset between the two single-modality LV centroids (both are sampled on the
    same lattice, so a pixel offset is a physical one). Comparing slice with slice keeps a cine that covers more of
    the long axis than the LGE from biasing it; None where no paired slice shows both ventricles."""
    lv = CARDIAC_MYO_LV.names.index("left ventricle") + 1
    offsets = []
    for i in np.flatnonzero(stack.paired):
        found = [np.argwhere(logits[i].argmax(0).numpy() == lv) for logits in (lge_logits, cine_logits)]
        if min(len(f) for f in found) >= MIN_LV_PIXELS:
            offsets.append(found[1].mean(0) - found[0].mean(0))  # (row, column) pixels
    if not offsets:
        return None
    row, column = np.median(offsets, axis=0)
    plane = stack.slices[0].grids[stack.reference]
    return plane.matrix[:, :2] @ (np.array([column, row]) * np.asarray(plane.spacing[:2]))


def segment_cardiac(
    network: CardiacNetwork,
    card: ModelCard,
    *,
    lge: sitk.Image | None = None,
    cine: sitk.Image | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 16,
    progress: Progress | None = None,
    prealign_mm: float | None = PREALIGN_MM,
) -> CardiacResult:
    """Segment what is given: an LGE alone, a cine alone, or both (aligned and fused); ``progress(done, total)``
    after each batch of slices through the network (each modality alone, then the paired slices together).

    With both, the cine is first moved onto the LGE's heart when the single-modality masks put the two left
    ventricles more than ``prealign_mm`` apart in the LGE's slice plane (None: never): a far breath-hold or
    a header offset that the spatial transformer alone cannot make up for."""
    if lge is None and cine is None:
        raise ValueError("segment_cardiac needs an LGE image, a cine image or both")
    centre = heart_centre(lge, cine) if lge is not None and cine is not None else None
    stack = pair_inputs(card, lge=lge, cine=cine, centre=centre)
    config = pairing_config(card)
    images = {m: torch.from_numpy(normalise_mr(a, per_slice=True))[:, None] for m, a in stack.images.items()}
    network = network.to(device).eval()
    result = CardiacResult(stack)
    paired = np.flatnonzero(stack.paired)
    counter = _SliceCounter(len(stack.slices) * len(images) + (len(paired) if len(images) == 2 else 0), progress)
    alone: dict[str, dict[str, torch.Tensor]] = {}
    for index, modality in ((1, "cine"), (2, "LGE")):
        if modality in images:
            alone[modality] = out = _run(network, device, batch_size, counter, **{modality.lower(): images[modality]})
            result.masks[modality] = _mask(stack, out[f"logits_anatomy{index}"], modality)
            result.anatomy[modality] = _anatomy(stack, out[f"anatomy{index}"], modality)
    if len(images) == 2 and len(paired):
        result.cine_shift_mm = lv_offset_mm(stack, alone["LGE"]["logits_anatomy2"], alone["cine"]["logits_anatomy1"])
        if prealign_mm is not None and result.cine_shift_mm is not None and np.linalg.norm(result.cine_shift_mm) > prealign_mm:
            # The LGE's planes (the centre is kept) and so its slices and single-modality results stay as they are.
            result.stack = stack = pair_inputs(card, lge=lge, cine=cine, centre=centre, cine_shift_mm=result.cine_shift_mm)
            images["cine"] = torch.from_numpy(normalise_mr(stack.images["cine"], per_slice=True))[:, None]
            paired, result.prealigned = np.flatnonzero(stack.paired), True
        out = _run(network, device, batch_size, counter, cine=images["cine"][paired], lge=images["LGE"][paired])
        single = alone["LGE"]["logits_anatomy2"]  # unpaired LGE slices keep their single-modality masks
        for name, (key, modality) in OUTPUTS.items():
            if key.startswith(("warped", "fused")):
                logits = single.clone() if modality == "LGE" else torch.zeros(len(stack.slices), *out[f"logits_{key}"].shape[1:])
                logits[paired] = out[f"logits_{key}"]
                result.masks[name] = _mask(stack, logits, modality)
        grid = network.tps.sampling_grid(out["offsets12"], config.size, config.size)
        result.displacement, result.control_points = _physical_alignment(stack, paired, grid, out["offsets12"], network)
    return result


Progress = Callable[[int, int], None]
"""``progress(done, total)``: how far a long inference is, for a progress bar."""


class _SliceCounter:
    def __init__(self, total: int, progress: Progress | None) -> None:
        self.done, self.total, self.progress = 0, total, progress

    def add(self, slices: int) -> None:
        self.done += slices
        if self.progress is not None:
            self.progress(self.done, self.total)


@torch.no_grad()
def _run(network: CardiacNetwork, device, batch_size: int, counter: _SliceCounter, cine: torch.Tensor | None = None,
         lge: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The network's outputs for whole stacks, in batches, on the CPU."""
    count = len(cine if cine is not None else lge)
    parts: dict[str, list[torch.Tensor]] = {}
    for start in range(0, count, batch_size):
        chunk = slice(start, start + batch_size)
        out = network(None if cine is None else cine[chunk].to(device), None if lge is None else lge[chunk].to(device))
        for key, value in out.items():
            parts.setdefault(key, []).append(value.cpu())
        counter.add(len(range(count)[chunk]))
    return {key: torch.cat(value) for key, value in parts.items()}


def _mask(stack: PairedStack, logits: torch.Tensor, modality: str) -> sitk.Image:
    probabilities = torch.softmax(logits, dim=1).permute(1, 0, 2, 3).numpy()
    classes = write_back(stack, probabilities, modality, probabilities=True)
    values = sitk.GetImageFromArray(CARDIAC_MYO_LV.to_values(sitk.GetArrayFromImage(classes)).astype(np.uint16))
    values.CopyInformation(classes)
    return values


def _anatomy(stack: PairedStack, anatomy: torch.Tensor, modality: str) -> sitk.Image:
    on = anatomy.sum(dim=1) > 0
    labels = torch.where(on, anatomy.argmax(dim=1) + 1, 0).numpy().astype(np.uint8)
    return write_back(stack, labels, modality)


def _physical_alignment(stack: PairedStack, paired: np.ndarray, grid: torch.Tensor, offsets: torch.Tensor, network: CardiacNetwork):
    """The TPS sampling map of the cine-to-LGE warp as physical displacements and control-point pairs."""
    common = stack.common_grid
    size = common.size[0]
    field = np.zeros((common.size[2], size, size, 3))
    controls = np.zeros((len(stack.slices), network.tps.count, 2, 3))
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    lattice = (network.tps.centres.numpy() + 1) / 2 * (size - 1)
    for sample, i in enumerate(paired):
        lge_plane, cine_plane = stack.slices[i].grids["LGE"], stack.slices[i].grids["cine"]
        source = (grid[sample].numpy().astype(float) + 1) / 2 * (size - 1)  # cine-plane (x, y) pixel per LGE pixel
        cine_points = cine_plane.index_to_point(np.stack([source[..., 0], source[..., 1], np.zeros_like(rows)], -1))
        lge_points = lge_plane.index_to_point(np.stack([cols, rows, np.zeros_like(rows)], -1))
        field[i] = cine_points - lge_points
        targets = lattice + offsets[sample].numpy() / 2 * (size - 1)
        controls[i, :, 0] = lge_plane.index_to_point(np.c_[lattice, np.zeros(len(lattice))])
        controls[i, :, 1] = cine_plane.index_to_point(np.c_[targets, np.zeros(len(targets))])
    image = sitk.GetImageFromArray(field, isVector=True)
    image.SetOrigin(common.origin)
    image.SetSpacing(common.spacing)
    image.SetDirection(common.direction)
    return image, controls


def displacement_transform(result: CardiacResult) -> sitk.Transform:
    """The alignment as an ITK displacement-field transform (LGE space to cine space), to resample the cine onto the LGE."""
    if result.displacement is None:
        raise ValueError("no alignment: the result was computed from a single modality")
    return sitk.DisplacementFieldTransform(sitk.Cast(result.displacement, sitk.sitkVectorFloat64))
